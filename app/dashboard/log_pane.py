"""The log pane: the journal's log events and the tail of worker.log (tracebacks live here)."""
from __future__ import annotations

from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import QPlainTextEdit, QWidget

MAX_BLOCKS = 5000


class LogPane(QPlainTextEdit):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("LogPane")
        self.setReadOnly(True)
        self.setMaximumBlockCount(MAX_BLOCKS)
        self.setLineWrapMode(QPlainTextEdit.WidgetWidth)
        self.setPlaceholderText("The worker's messages appear here.")

    def append_lines(self, lines: list[str]) -> None:
        if not lines:
            return
        bar = self.verticalScrollBar()
        at_bottom = bar.value() >= bar.maximum() - 4
        self.appendPlainText("\n".join(lines))
        if at_bottom:                      # follow the tail unless the user scrolled up to read
            self.moveCursor(QTextCursor.End)
            bar.setValue(bar.maximum())
