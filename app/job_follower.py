"""One QObject around a short job worker (generation, GGUF import): follow its journal, stop it.

The worker writes JOB_DIR/events.jsonl; a QTimer polls it and re-emits each event. A worker that
dies without `end` is reported as failed, pointing at its worker.log.
"""
from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal

from lorastudio.core.journal import JournalFollower

POLL_MS = 60            # tokens arrive a few dozen a second: poll often, the reads are tiny


class JobFollower(QObject):
    event = Signal(dict)
    finished = Signal(str)          # completed | stopped | failed

    def __init__(self, parent: QObject | None = None, poll_ms: int = POLL_MS):
        super().__init__(parent)
        self.job_dir: Path | None = None
        self.popen: subprocess.Popen | None = None
        self._follower: JournalFollower | None = None
        self._timer = QTimer(self)
        self._timer.setInterval(poll_ms)
        self._timer.timeout.connect(self.poll)

    @property
    def running(self) -> bool:
        return self._timer.isActive()

    def follow(self, job_dir: Path, popen: subprocess.Popen) -> None:
        self.job_dir, self.popen = Path(job_dir), popen
        self._follower = JournalFollower(self.job_dir / "events.jsonl")
        self._timer.start()

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)

    def poll(self) -> None:
        if self._follower is None:
            return
        exited = self.popen is not None and self.popen.poll() is not None
        for ev in self._follower.poll():
            self.event.emit(ev)
            if ev["type"] == "end":
                self._finish(ev["status"])
                return
        if exited:
            self.event.emit({"type": "error", "kind": "crashed", "message":
                             f"the worker exited with code {self.popen.returncode} without finishing",
                             "hint": f"see {self.job_dir / 'worker.log'}"})
            self._finish("failed")

    def _finish(self, status: str) -> None:
        self._timer.stop()
        if self.popen is not None:
            self.popen.wait()
        self.finished.emit(status)
