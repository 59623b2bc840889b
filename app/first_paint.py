"""Work the first picture does not need runs after it: `after_first_paint(window, callback)`.

Start-up is judged by when the window appears, so the main window hands what can wait (the GPU
probe, the runs folder's listing, live runs to re-attach to) to this: the callbacks run one per
turn of the event loop, starting right after the window's first paint has been handed to the
screen — the window is visible and answers input between them."""
from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QWidget


class _FirstPaint(QObject):
    def __init__(self, window: QWidget):
        super().__init__(window)
        self.window = window
        self.callbacks: list[Callable[[], None]] = []
        self.painted = False
        window.installEventFilter(self)

    def eventFilter(self, obj, event) -> bool:
        if obj is self.window and event.type() == QEvent.Paint and not self.painted:
            self.painted = True
            self.window.removeEventFilter(self)
            QTimer.singleShot(0, self, self._next)
        return False

    def _next(self) -> None:
        if self.callbacks:
            self.callbacks.pop(0)()
            QTimer.singleShot(0, self, self._next)


def after_first_paint(window: QWidget, callback: Callable[[], None]) -> None:
    """Run `callback` once `window` has painted for the first time (at once, queued, if it has)."""
    hook = window.findChild(_FirstPaint)
    if hook is None:
        hook = _FirstPaint(window)
    hook.callbacks.append(callback)
    if hook.painted and len(hook.callbacks) == 1:
        QTimer.singleShot(0, hook, hook._next)
