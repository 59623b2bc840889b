"""Run the token inspector as a job and hand its report to the window.

The inspector needs the model's tokenizer, hence transformers, which the window never imports: the
`inspect_data` job (core/jobs/inspect_data.py) runs in a child process through the window's one
job wrapper (app/job_process.py), in a fresh folder under DATA_HOME/inspections that is removed
once its answer is read (kept when the inspector itself failed: its worker.log says why). Its
report arrives as the journal's `report` event; input it refuses (bad data, a model without a
usable tokenizer) as an `error` event with message and hint. Requests are debounced (a user
dragging the seq_len spin box starts one inspector, not forty); a newer request kills the older
job, and a counter drops any answer to a question no longer asked.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QObject, QTimer, Signal

from lorastudio.app.job_process import JobProcess
from lorastudio.core.config import ConfigError
from lorastudio.core.plans.inspect_data import InspectRequest, start_inspect_data
from lorastudio.core.runtime.failures import INPUT_KINDS
from lorastudio.core.runtime.follower import Outcome
from lorastudio.core.runtime.launcher import JobHandle

DEBOUNCE_MS = 400
POLL_MS = 100


@dataclass
class InspectResult:
    report: dict | None = None
    error: tuple[str, str] | None = None       # (message, hint)
    unexpected: bool = False                   # the inspector failed, not the input: keep its worker.log


def result_of(outcome: Outcome, report: dict | None, log: Path) -> InspectResult:
    """The job's answer: its report, the input's fault in its words, or its own failure."""
    if outcome.ok and report is not None:
        return InspectResult(report=report)
    error = outcome.error
    if error is None:
        return InspectResult(error=(f"The inspector ended without a report ({outcome.status}).", ""))
    if error["kind"] in INPUT_KINDS:              # the input is at fault: say it as the job said it
        return InspectResult(error=(error["message"], error.get("hint", "")))
    hint = error.get("hint", "") if error["kind"] == "crashed" else f"the full message is in {log}"
    return InspectResult(error=(f"The inspector failed: {error['message']}", hint), unexpected=True)


class _Live:
    """The running job's handle, held outside Qt, so that the job is ended (killed, its folder
    removed) when the window quits, when a newer question comes, and when the DataInspection is
    deleted with its panel — a child never outlives the question it answers."""

    def __init__(self):
        self.handle: JobHandle | None = None

    def end(self, *_args) -> None:
        handle, self.handle = self.handle, None
        if handle is not None:
            handle.kill()                       # and waits for it: a dying job may still write
            shutil.rmtree(handle.job_dir, ignore_errors=True)


class DataInspection(QObject):
    """One JobProcess, reused for every question (no QObject is made or deleted per request)."""
    report = Signal(dict)
    failed = Signal(str, str)          # message, hint
    busy_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None, debounce_ms: int = DEBOUNCE_MS):
        super().__init__(parent)
        self.pending: InspectRequest | None = None
        self.current: InspectRequest | None = None     # the request whose answer is shown or awaited
        self._running: tuple[int, Path] | None = None  # (generation, job folder) of the job followed now
        self._report: dict | None = None
        self._live = _Live()
        self._generation = 0
        self.busy = False
        self._job = JobProcess(self, poll_ms=POLL_MS)
        self._job.event.connect(self._event)
        self._job.finished.connect(self._finished)
        self._timer = QTimer(self, singleShot=True, interval=debounce_ms)
        self._timer.timeout.connect(self._launch)
        QCoreApplication.instance().aboutToQuit.connect(self.cancel_running)   # never outlive the window
        live = self._live                       # a lambda holds it strongly (a bound method would not)
        self.destroyed.connect(lambda *_args: live.end())                       # nor the panel

    @property
    def handle(self) -> JobHandle | None:
        """The running inspection job's handle (its folder and process), or None."""
        return self._job.handle if self._running is not None else None

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
        try:
            handle = start_inspect_data(req)
        except ConfigError as exc:
            self._done(generation, InspectResult(error=(str(exc), "")))
            return
        except OSError as exc:                  # a read-only or full data directory; no interpreter
            self._done(generation, InspectResult(error=(f"The inspector could not start: {exc}", "")))
            return
        self._running, self._report = (generation, handle.job_dir), None
        self._live.handle = handle
        self._job.attach(handle)

    def _event(self, ev: dict) -> None:
        if ev["type"] == "report":
            self._report = ev["report"]

    def _finished(self, outcome: Outcome) -> None:
        if self._running is None:
            return                              # a job given up on (cancel_running already ended it)
        (generation, job_dir), self._running, self._live.handle = self._running, None, None
        result = result_of(outcome, self._report, job_dir / "worker.log")
        if not result.unexpected:
            shutil.rmtree(job_dir, ignore_errors=True)
        self._done(generation, result)

    def _done(self, generation: int, result: InspectResult) -> None:
        if generation != self._generation:
            return                              # an answer to a question no longer asked
        self._set_busy(False)
        if result.report is not None:
            self.report.emit(result.report)
        else:
            self.failed.emit(*result.error)

    def cancel_running(self) -> None:
        """Kill the running inspection (a newer question, or the window closes)."""
        self._running = None
        self._job.detach()
        self._live.end()

    def _set_busy(self, busy: bool) -> None:
        if busy != self.busy:
            self.busy = busy
            self.busy_changed.emit(busy)
