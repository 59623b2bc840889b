"""A ring gauge for memory in use: green below 75 %, amber below 90 %, red above."""
from __future__ import annotations

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from lorastudio.app.theme import BAD, OK, WARN
from lorastudio.core.formatting import format_bytes

START_ANGLE, SPAN = 225, -270          # degrees: a ring open at the bottom


class MemoryGauge(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.label, self.used, self.total = "VRAM", 0, 0
        self.setMinimumSize(96, 96)
        self.setSizePolicy(QSizePolicy.Fixed, QSizePolicy.Fixed)
        self.setFixedSize(104, 104)

    def set_value(self, label: str, used: int, total: int) -> None:
        self.label, self.used, self.total = label, used, total
        self.setToolTip(f"{label}: {format_bytes(used)} of {format_bytes(total)}" if total else "")
        self.update()

    @property
    def fraction(self) -> float:
        return min(1.0, self.used / self.total) if self.total else 0.0

    def paintEvent(self, _event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.Antialiasing)
        side = min(self.width(), self.height()) - 12
        rect = QRectF((self.width() - side) / 2, (self.height() - side) / 2, side, side)
        pal = self.palette()
        p.setPen(QPen(pal.mid().color(), 9, Qt.SolidLine, Qt.RoundCap))
        p.drawArc(rect, START_ANGLE * 16, SPAN * 16)
        if self.total:
            color = QColor(OK if self.fraction < 0.75 else WARN if self.fraction < 0.9 else BAD)
            p.setPen(QPen(color, 9, Qt.SolidLine, Qt.RoundCap))
            p.drawArc(rect, START_ANGLE * 16, int(SPAN * 16 * self.fraction))
        p.setPen(pal.text().color())
        big = QFont(self.font())
        big.setPointSizeF(big.pointSizeF() * 1.25)
        big.setBold(True)
        p.setFont(big)
        p.drawText(rect.adjusted(0, -10, 0, -10), Qt.AlignCenter, f"{self.fraction:.0%}" if self.total else "—")
        small = QFont(self.font())
        small.setPointSizeF(small.pointSizeF() * 0.8)
        p.setFont(small)
        p.setPen(pal.placeholderText().color())
        p.drawText(rect.adjusted(0, 14, 0, 14), Qt.AlignCenter, self.label)
        p.drawText(rect.adjusted(0, 0, 0, -2), Qt.AlignHCenter | Qt.AlignBottom,
                   format_bytes(self.used) if self.total else "")
        p.end()
