"""The log pane: the run's own messages (the journal's log, eval, checkpoint and error events).
Library warnings stay in the run folder's worker.log; its last lines are shown only after a crash."""
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
        self.setPlaceholderText("The run's messages appear here (library warnings go to the run folder's "
                                "worker.log).")

    def append_lines(self, lines: list[str]) -> None:
        if not lines:
            return
        bar = self.verticalScrollBar()
        at_bottom = bar.value() >= bar.maximum() - 4
        self.appendPlainText("\n".join(lines))
        if at_bottom:                      # follow the tail unless the user scrolled up to read
            self.moveCursor(QTextCursor.End)
            bar.setValue(bar.maximum())
