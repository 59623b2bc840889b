"""One QObject around a training worker: start it, follow its journal, stop it.

The worker's only channel out is RUN_DIR/events.jsonl; a QTimer polls it (a few hundred bytes per
tick, read without blocking) and re-emits each event as a typed signal. The tail of worker.log is
followed the same way for the log pane. If the process dies without writing `end` (killed, out of
memory, a segfault in a CUDA kernel), we say so instead of waiting forever.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal

from lorastudio.core.runs import folders as runs
from lorastudio.core.config import RunConfig
from lorastudio.core.journal import JournalFollower

POLL_MS = 250
# The worker yields the CPU to the window when both want it (on a 2-core laptop the trainer's
# threads would otherwise delay repaints by 100 ms); alone, it runs at full speed all the same.
WORKER_NICENESS = 5
LOG_TAIL_BYTES = 64 * 1024      # read at most this much new worker.log per tick
PID_CHECK_S = 2.0               # how often to look for a re-attached worker's pid


class TrainingProcess(QObject):
    started = Signal(str)               # run folder
    event = Signal(dict)                # every journal event, in order
    step = Signal(dict)
    evaluated = Signal(dict)
    memory = Signal(dict)
    log_line = Signal(str)              # a line of worker.log (stderr: warnings, tracebacks)
    error = Signal(dict)                # kind, message, hint, traceback?
    finished = Signal(str, object)      # status, adapter path or None

    def __init__(self, parent: QObject | None = None, poll_ms: int = POLL_MS):
        super().__init__(parent)
        self.run_dir: Path | None = None
        self.popen: subprocess.Popen | None = None
        self._follower: JournalFollower | None = None
        self._log_offset = 0
        self._log_partial = b""
        self._ended = self._saw_error = False
        self._last_pid_check = 0.0
        self._timer = QTimer(self)
        self._timer.setInterval(poll_ms)
        self._timer.timeout.connect(self.poll)

    # ---- control ------------------------------------------------------------------------------
    def start(self, config: RunConfig, runs_root: Path | None = None) -> Path:
        """Write the run folder, launch the worker and follow it. Returns the run folder."""
        run_dir = runs.prepare_run(config, runs.new_run_dir(config, runs_root or runs.default_runs_dir()))
        popen = runs.start_worker(run_dir)
        with contextlib.suppress(OSError, AttributeError):     # threads torch starts later inherit it
            os.setpriority(os.PRIO_PROCESS, popen.pid, WORKER_NICENESS)
        self.follow(run_dir, popen)
        return run_dir

    def follow(self, run_dir: Path, popen: subprocess.Popen | None = None) -> None:
        """Follow a run folder's journal from its first line (one we started, one found running, or
        one just resumed: an `end` followed by more events is an earlier segment, not the end)."""
        self.run_dir = Path(run_dir)
        if popen is not None:
            self.popen = popen
        self._follower = JournalFollower(self.run_dir / runs.JOURNAL_FILE)
        self._log_offset, self._log_partial, self._ended, self._saw_error = 0, b"", False, False
        self._timer.start()
        self.started.emit(str(self.run_dir))

    def stop(self) -> bool:
        """Ask the worker to stop gracefully (it saves a checkpoint and the adapter first)."""
        if self.run_dir is None or not self.is_running():
            return False
        pid = self.popen.pid if self.popen else None
        return runs.stop_worker(self.run_dir, pid)

    def is_running(self) -> bool:
        if self._ended or self.run_dir is None:
            return False
        if self.popen is not None:
            return self.popen.poll() is None
        return runs.pid_alive(runs.read_status(self.run_dir).get("pid"))

    def detach(self) -> None:
        """Stop following (the worker, in its own session, carries on)."""
        self._timer.stop()

    def following(self) -> bool:
        return self._timer.isActive()

    # ---- following ----------------------------------------------------------------------------
    def poll(self) -> None:
        if self._follower is None:
            return
        events = self._follower.poll()
        for i, ev in enumerate(events):
            self._dispatch(ev, final=i == len(events) - 1)
        self._read_log()
        if self._ended:
            return
        if self.popen is not None and self.popen.poll() is not None:
            self._worker_vanished(self.popen.returncode)
        elif self.popen is None and self._attached_worker_gone():
            self._worker_vanished(None)

    def _attached_worker_gone(self) -> bool:
        """A worker we did not start: check its pid and heartbeat now and then (not every tick)."""
        now = time.monotonic()
        if now - self._last_pid_check < PID_CHECK_S:
            return False
        self._last_pid_check = now
        status = runs.read_status(self.run_dir)      # no pid recorded: nothing to judge by, keep reading
        return bool(status.get("pid")) and status.get("state") != "resuming" and \
            not runs.worker_alive(self.run_dir, status)

    def _dispatch(self, ev: dict, final: bool = True) -> None:
        kind = ev["type"]
        if self._ended and kind != "end":           # a resumed run's next segment
            self._ended = self._saw_error = False
            self._timer.start()
        self.event.emit(ev)
        if kind == "step":
            self.step.emit(ev)
        elif kind == "eval":
            self.evaluated.emit(ev)
        elif kind == "memory":
            self.memory.emit(ev)
        elif kind == "error":
            self._saw_error = True
            self.error.emit(ev)
        elif kind == "end" and not final:           # an earlier segment's end: more follows
            self._ended = True
        elif kind == "end":
            self._ended = True
            self._read_log()
            self._timer.stop()
            self.finished.emit(ev["status"], ev.get("adapter"))

    def _read_log(self) -> None:
        path = self.run_dir / runs.LOG_FILE
        try:
            with open(path, "rb") as fh:
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

    def _worker_vanished(self, code: int | None) -> None:
        """The process exited and the journal has no `end`: read what is left, then report it."""
        for ev in self._follower.poll():
            self._dispatch(ev)
        if self._ended:
            return
        now = time.time()
        if not self._saw_error:
            how = f"exit code {code}" if code is not None and code >= 0 else \
                (f"killed by signal {-code}" if code is not None else "its process is gone")
            self._dispatch({"v": 1, "type": "error", "time": now, "kind": "WorkerExited",
                            "message": f"The training worker exited unexpectedly ({how}).",
                            "hint": f"Resume it from the Runs page (it continues from the last checkpoint). "
                                    f"See {self.run_dir / runs.LOG_FILE} for what it printed last."})
        self._dispatch({"v": 1, "type": "end", "time": now, "status": "failed", "adapter": None})
