"""One QObject around every job process the window starts or re-attaches to (as qutebrowser's
GUIProcess serves all of its children): training, merge, generation, GGUF import, inspection.

It follows a job started by its plan's starter (`core.plans.<verb>.start_<verb>`), polls the job's journal
with core's `JobWatch` from a QTimer, re-emits each event, optionally follows the tail of
worker.log, and ends with one `Outcome` — a process that died without `end` is put into words by
core, not here. A tick reads at most READ_BYTES of journal: re-attaching to a long run's history
(a thousand steps, ~250 KB) takes a few ticks BURST_MS apart instead of one that blocks the event
loop for 100 ms (tests/bench/bench_live_plots.py, `attach`); `finished` comes after the last event
(in the same tick: whoever sees a job's `end` event sees it finished right after).
"""
from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QObject, QTimer, Signal

from lorastudio.core.runtime.follower import JobWatch, Outcome
from lorastudio.core.runtime.launcher import JobHandle

POLL_MS = 250
READ_BYTES = 16 * 1024          # journal read per tick: ~80 events, a few ms of the dashboard's work
BURST_MS = 5                    # the next tick's delay while a long journal is being caught up with
LOG_TAIL_BYTES = 64 * 1024      # read at most this much new worker.log per tick


class JobProcess(QObject):
    started = Signal(str)               # the job folder
    # Events travel as `object`: a `dict` signal converts each one to a QVariantMap and back (~15 µs
    # a hop, a third of the cost of re-reading a long journal); receivers only read them.
    event = Signal(object)              # every journal event (a dict), in order (synthesized crash events too)
    log_line = Signal(str)              # a line of worker.log (with tail_log)
    finished = Signal(object)           # Outcome

    def __init__(self, parent: QObject | None = None, poll_ms: int = POLL_MS, tail_log: bool = False,
                 read_bytes: int = READ_BYTES):
        super().__init__(parent)
        self.handle: JobHandle | None = None
        self.watch: JobWatch | None = None
        self.tail_log = tail_log
        self.poll_ms, self.read_bytes = poll_ms, read_bytes
        self._log_offset, self._log_partial = 0, b""
        self._timer = QTimer(self)
        self._timer.setInterval(poll_ms)
        self._timer.timeout.connect(self.poll)

    # ---- control ------------------------------------------------------------------------------
    def attach(self, handle: JobHandle, alive: Callable[[], bool] | None = None, crash_hint: str = "") -> None:
        """Follow `handle`'s journal from its first line (one we started, one found running, or one
        just resumed: an `end` followed by more events is an earlier segment, not the end)."""
        self.handle = handle
        self.watch = JobWatch(handle, alive=alive, crash_hint=crash_hint)
        self._log_offset, self._log_partial = 0, b""
        self._timer.start(self.poll_ms)
        self.started.emit(str(handle.job_dir))

    def stop(self) -> bool:
        """Ask the job to stop gracefully (SIGTERM)."""
        return self.handle is not None and self.running and self.handle.stop()

    def detach(self) -> None:
        """Stop following (a detached job carries on)."""
        self._timer.stop()

    @property
    def running(self) -> bool:
        return self._timer.isActive()

    @property
    def outcome(self) -> Outcome | None:
        return self.watch.outcome if self.watch else None

    # ---- following ----------------------------------------------------------------------------
    def poll(self) -> None:
        if self.watch is None:
            return
        for ev in self.watch.poll(self.read_bytes):
            self.event.emit(ev)
        if self.tail_log:
            self._read_log()
        if self._timer.isActive():          # more journal waiting: the next tick soon, else at the pace
            self._timer.setInterval(BURST_MS if self.watch.backlog else self.poll_ms)
        if self.watch.ended and self._timer.isActive():
            self._timer.stop()
            self.handle.returncode()            # reap it if it has exited (no zombie left behind)
            self.finished.emit(self.watch.outcome)

    def _read_log(self) -> None:
        try:
            with open(self.handle.log, "rb") as fh:
                fh.seek(self._log_offset)
                chunk = fh.read(LOG_TAIL_BYTES)
        except FileNotFoundError:
            return
        self._log_offset += len(chunk)
        lines = (self._log_partial + chunk).split(b"\n")
        self._log_partial = lines.pop()
        for raw in lines:
            line = raw.decode("utf-8", errors="replace").rstrip()
            if line:
                self.log_line.emit(line)
