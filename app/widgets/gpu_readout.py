"""Beside the VRAM gauge: the training GPU's utilisation, temperature and power draw (NVML).

Narrow on purpose (one short figure a line) so the row of cards keeps its room; hidden until a
GPU's figures arrive, so a CPU run shows nothing here."""
from __future__ import annotations

from PySide6.QtWidgets import QFrame, QLabel, QSizePolicy, QVBoxLayout, QWidget


class GpuReadout(QFrame):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("Card")
        self.title = QLabel("GPU", objectName="CardTitle")
        self.busy = QLabel("—", objectName="CardValue")
        self.temperature = QLabel("", objectName="CardDetail")
        self.power = QLabel("", objectName="CardDetail")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 8)
        layout.setSpacing(1)
        for label in (self.title, self.busy, self.temperature, self.power):
            layout.addWidget(label)
        self.setSizePolicy(QSizePolicy.Fixed, QSizePolicy.Fixed)
        self.hide()

    def set_figures(self, name: str, busy: float | None, temperature: int | None, power: float | None,
                    power_limit: float | None) -> None:
        """Show one sample; a figure the card does not report reads "—" (busy) or stays empty."""
        self.busy.setText(f"{busy:.0f} %" if busy is not None else "—")
        self.temperature.setText(f"{temperature} °C" if temperature is not None else "")
        self.power.setText("" if power is None else f"{power:.0f} W")
        parts = [f"busy {busy:.0f} % of the last sample" if busy is not None else "",
                 f"{temperature} °C" if temperature is not None else "",
                 "" if power is None else f"drawing {power:.0f} W" + (f" of {power_limit:.0f} W allowed"
                                                                     if power_limit else "")]
        self.setToolTip(f"{name or 'The training GPU'} (NVML): " + ", ".join(p for p in parts if p))
        self.show()
