"""Run a plain function on the global thread pool and get its result back as a Qt signal.

File and header reading (model info, dataset preview, the NVML probe) goes through here so the
window never waits on a disk. The result arrives in the GUI thread through a queued signal.
"""
from __future__ import annotations

import traceback
from typing import Any, Callable

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal


class TaskSignals(QObject):
    done = Signal(object)          # the function's return value
    failed = Signal(object)        # the exception it raised


class Task(QRunnable):
    def __init__(self, fn: Callable[..., Any], *args: Any):
        super().__init__()
        self.fn, self.args = fn, args
        self.signals = TaskSignals()

    def run(self) -> None:
        try:
            result = self.fn(*self.args)
        except Exception as exc:            # delivered to the window as a message, never raised
            exc.formatted = traceback.format_exc()   # type: ignore[attr-defined]
            self.signals.failed.emit(exc)
        else:
            self.signals.done.emit(result)


def run_in_background(fn: Callable[..., Any], *args: Any,
                      on_done: Callable[[Any], None] | None = None,
                      on_failed: Callable[[Exception], None] | None = None) -> Task:
    """Queue `fn(*args)`; `on_done(result)` or `on_failed(exc)` is then called in the GUI thread."""
    task = Task(fn, *args)
    task.setAutoDelete(False)          # keep the signals object alive until the slot has run
    if on_done:
        task.signals.done.connect(on_done)
    if on_failed:
        task.signals.failed.connect(on_failed)
    _pending.add(task)
    task.signals.done.connect(lambda _r: _pending.discard(task))
    task.signals.failed.connect(lambda _e: _pending.discard(task))
    QThreadPool.globalInstance().start(task)
    return task


_pending: set[Task] = set()


def wait_for_background(ms: int = 5000) -> bool:
    """Block until queued tasks finish (used when the window closes, and by tests)."""
    return QThreadPool.globalInstance().waitForDone(ms)
