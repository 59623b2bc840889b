"""One side of the playground: a titled, read-only answer that grows token by token."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPlainTextEdit, QVBoxLayout


class AnswerPane(QFrame):
    def __init__(self, title: str, subtitle: str, parent=None):
        super().__init__(parent, objectName="Card")
        self.title = QLabel(title, objectName="CardTitle")
        self.subtitle = QLabel(subtitle, objectName="Muted")
        self.text = QPlainTextEdit(readOnly=True, objectName="AnswerText")
        self.text.setPlaceholderText("The answer appears here, token by token.")
        self.status = QLabel("", objectName="Muted", minimumWidth=130, alignment=Qt.AlignRight)
        head = QHBoxLayout()
        head.addWidget(self.title)
        head.addStretch(1)
        head.addWidget(self.status)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 10, 12, 10)
        layout.addLayout(head)
        layout.addWidget(self.subtitle)
        layout.addWidget(self.text, 1)

    def clear(self, status: str = "") -> None:
        self.text.clear()
        self.status.setText(status)

    def append(self, piece: str) -> None:
        cursor = self.text.textCursor()
        cursor.movePosition(QTextCursor.End)
        cursor.insertText(piece)
        self.text.setTextCursor(cursor)
        self.status.setText("writing…")

    def finish(self, tokens: int, seconds: float) -> None:
        self.status.setText(f"{tokens} tokens · {seconds:.1f} s")

    def answer(self) -> str:
        return self.text.toPlainText()
