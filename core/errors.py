"""The one shape of a user-facing error: what went wrong (naming the file, line or field) and
what to do about it. The CLI prints both; the window shows both; neither shows a traceback."""
from __future__ import annotations


class UserError(Exception):
    def __init__(self, message: str, hint: str = ""):
        self.message, self.hint = message, hint
        super().__init__(message + (f" — {hint}" if hint else ""))
