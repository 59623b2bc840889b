"""Run the token inspector in a child process and hand its report to the window.

The inspector needs the model's tokenizer, hence transformers, which the window never imports:
`python -m lorastudio.core.jobs.inspect_data DATA --model M --json …` runs in a child process, on a pool
thread that waits for it. Requests are debounced (a user dragging the seq_len spin box starts one
inspector, not forty); a newer request kills the older child, and a counter drops any answer to a
question no longer asked.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from dataclasses import dataclass, field, replace

from PySide6.QtCore import QCoreApplication, QObject, QTimer, Signal

from lorastudio.app.thread_pool import run_in_background

DEBOUNCE_MS = 400


@dataclass(frozen=True)
class InspectRequest:
    path: str
    model: str
    seq_len: int = 512
    example: int = 1
    format: str = "auto"
    columns: tuple[tuple[str, str], ...] = ()
    train_on: str = "completions"
    too_long: str = "truncate"
    skip_bad_rows: bool = False

    def with_example(self, example: int) -> "InspectRequest":
        return replace(self, example=example)


def inspector_command(req: InspectRequest) -> list[str]:
    argv = [sys.executable, "-m", "lorastudio.core.jobs.inspect_data", req.path, "--model", req.model, "--json",
            "--example", str(req.example), "--seq-len", str(req.seq_len), "--format", req.format,
            "--train-on", req.train_on, "--too-long", req.too_long]
    if req.columns:
        argv += ["--columns", ",".join(f"{role}={column}" for role, column in req.columns)]
    if req.skip_bad_rows:
        argv.append("--skip-bad-rows")
    return argv


@dataclass
class InspectResult:
    report: dict | None = None
    error: tuple[str, str] | None = None       # (message, hint)


def parse_output(returncode: int, stdout: str, stderr: str) -> InspectResult:
    """The inspector prints one JSON object: a report, or {"error", "hint"} with exit status 2."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and "error" in value:
            return InspectResult(error=(str(value["error"]), str(value.get("hint", ""))))
        if isinstance(value, dict) and "example" in value:
            return InspectResult(report=value)
    last = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit status {returncode}"
    return InspectResult(error=(f"The inspector failed: {last}",
                                "the full message is in the terminal that started LoRA Studio"))


@dataclass
class InspectJob:
    """One child process; `cancel` may be called from the GUI thread at any time."""
    argv: list[str]
    cancelled: bool = False
    proc: subprocess.Popen | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> InspectResult | None:
        with self.lock:
            if self.cancelled:
                return None
            self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         stdin=subprocess.DEVNULL, text=True, encoding="utf-8", errors="replace")
        stdout, stderr = self.proc.communicate()
        if stderr.strip():
            sys.stderr.write(stderr)
        return None if self.cancelled else parse_output(self.proc.returncode, stdout, stderr)

    def cancel(self) -> None:
        with self.lock:
            self.cancelled = True
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()


class DataInspection(QObject):
    report = Signal(dict)
    failed = Signal(str, str)          # message, hint
    busy_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None, debounce_ms: int = DEBOUNCE_MS):
        super().__init__(parent)
        self.pending: InspectRequest | None = None
        self.current: InspectRequest | None = None     # the request whose answer is shown or awaited
        self._job: InspectJob | None = None
        self._generation = 0
        self.busy = False
        self._timer = QTimer(self, singleShot=True, interval=debounce_ms)
        self._timer.timeout.connect(self._launch)
        QCoreApplication.instance().aboutToQuit.connect(self.cancel_running)   # never outlive the window

    def request(self, req: InspectRequest | None) -> None:
        """Inspect `req` after the debounce delay; None cancels (no model or no usable file)."""
        if req == self.pending or (self.pending is None and req == self.current and req is not None):
            return
        self.pending = req
        self._generation += 1
        self.cancel_running()
        if req is None:
            self.current = None
            self._timer.stop()
            self._set_busy(False)
            return
        self._set_busy(True)
        self._timer.start()

    def _launch(self) -> None:
        req, self.pending, self.current = self.pending, None, self.pending
        if req is None:
            return
        generation = self._generation
        job = self._job = InspectJob(inspector_command(req))
        run_in_background(job.run, on_done=lambda result: self._done(generation, result),
                          on_failed=lambda exc: self._done(generation, InspectResult(error=(str(exc), ""))))

    def _done(self, generation: int, result: InspectResult | None) -> None:
        if generation != self._generation or result is None:
            return                              # an answer to a question no longer asked
        self._job = None
        self._set_busy(False)
        if result.report is not None:
            self.report.emit(result.report)
        else:
            self.failed.emit(*result.error)

    def cancel_running(self) -> None:
        if self._job is not None:
            self._job.cancel()
            self._job = None

    def _set_busy(self, busy: bool) -> None:
        if busy != self.busy:
            self.busy = busy
            self.busy_changed.emit(busy)
