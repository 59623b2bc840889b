"""A small card: a caption, a big figure and a detail line ("LOSS / 1.234 / eval 1.301")."""
from __future__ import annotations

from PySide6.QtWidgets import QFrame, QLabel, QSizePolicy, QVBoxLayout, QWidget


class StatCard(QFrame):
    def __init__(self, title: str, tooltip: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("Card")
        self.setToolTip(tooltip)
        self.title = QLabel(title.upper(), objectName="CardTitle")
        self.value = QLabel("—", objectName="CardValue")
        self.detail = QLabel("", objectName="CardDetail")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 8)
        layout.setSpacing(1)
        layout.addWidget(self.title)
        layout.addWidget(self.value)
        layout.addWidget(self.detail)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.setMinimumWidth(80)

    def set(self, value: str, detail: str = "") -> None:
        self.value.setText(value)
        self.detail.setText(detail)
