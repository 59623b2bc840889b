"""The one shape of a user-facing error: what went wrong (naming the file, line or field) and
what to do about it. The CLI prints both; the window shows both; neither shows a traceback.

`kind` names the class of failure in the journal's `error` events ("data", "model", "export"…);
subclasses set it."""
from __future__ import annotations

import sys


class UserError(Exception):
    kind = "error"

    def __init__(self, message: str, hint: str = ""):
        self.message, self.hint = message, hint
        super().__init__(message + (f" — {hint}" if hint else ""))


class ModelError(UserError):
    """A model cannot be used. `hint` says what to do."""
    kind = "model"


def error_lines(message: str, hint: str = "", kind: str = "") -> str:
    """The terminal's form: `error: …` (or `error (kind): …`) and, on the next line, `  hint: …`."""
    return f"error{f' ({kind})' if kind else ''}: {message}" + (f"\n  hint: {hint}" if hint else "")


def event_error_lines(ev: dict) -> str:
    """A journal `error` event in the terminal's form."""
    return error_lines(ev["message"], ev.get("hint", ""), ev.get("kind", ""))


def print_error(message: str, hint: str = "", stream=None) -> None:
    print(error_lines(message, hint), file=stream or sys.stderr, flush=True)
