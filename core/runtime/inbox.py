"""A job's channel in, for jobs that serve more than one request (the playground's generation worker).

    JOB_DIR/inbox.jsonl    one JSON object a line, appended by whoever started the job

`send(job_dir, message)` appends one line in a single write (the window is the only writer);
`Inbox(job_dir).poll()` in the job returns the messages that arrived since the last poll — only
complete lines: a line still being written waits for the next poll, a malformed one is dropped.
The journal stays the job's only channel out. Torch-free.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

INBOX_FILE = "inbox.jsonl"


def send(job_dir: Path, message: dict) -> None:
    """Append `message` to JOB_DIR/inbox.jsonl (one write of one line, flushed)."""
    line = (json.dumps(message, ensure_ascii=False) + "\n").encode("utf-8")
    fd = os.open(Path(job_dir) / INBOX_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


class Inbox:
    """The reading end: new complete messages since the last poll, in order."""

    def __init__(self, job_dir: Path):
        self.path = Path(job_dir) / INBOX_FILE
        self.offset = 0

    def poll(self) -> list[dict]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except FileNotFoundError:
            return []
        complete = chunk[:chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        messages = []
        for raw in complete.splitlines():
            try:
                value = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(value, dict):
                messages.append(value)
        return messages
