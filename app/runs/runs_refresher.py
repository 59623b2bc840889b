"""Keeps the run history fresh: `RunHistory.refresh` on the thread pool every few seconds.

One refresh at a time (a slow disk never piles up work); the result arrives in the GUI thread as
`updated(list[RunSummary])`. Reading is incremental (see core/runs/listing.py), so a tick costs a few
`stat` calls per finished run and the new journal lines of live ones.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal

from lorastudio.app.thread_pool import run_in_background
from lorastudio.core.runs.listing import RunHistory

REFRESH_MS = 3000


class RunsRefresher(QObject):
    updated = Signal(list)
    failed = Signal(str)

    def __init__(self, root: Path, parent: QObject | None = None, interval_ms: int = REFRESH_MS):
        super().__init__(parent)
        self.history = RunHistory(root)
        self.busy = self._again = False
        self.timer = QTimer(self, interval=interval_ms)
        self.timer.timeout.connect(self.refresh)

    def start(self) -> None:
        self.timer.start()
        self.refresh()

    def stop(self) -> None:
        self.timer.stop()

    def refresh(self) -> None:
        """Refresh now (or right after the refresh in flight)."""
        if self.busy:
            self._again = True
            return
        self.busy = True
        run_in_background(self.history.refresh, on_done=self._done, on_failed=self._failed)

    def _done(self, runs: list) -> None:
        self.busy = False
        self.updated.emit(runs)
        self._next()

    def _failed(self, exc: Exception) -> None:
        self.busy = False
        self.failed.emit(f"Could not read the runs folder: {exc}")
        self._next()

    def _next(self) -> None:
        if self._again:
            self._again = False
            self.refresh()
