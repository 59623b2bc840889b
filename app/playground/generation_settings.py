"""Generation settings for the playground: max new tokens, temperature, top-p, seed."""
from __future__ import annotations

from PySide6.QtWidgets import QDoubleSpinBox, QFormLayout, QSpinBox, QWidget


class GenerationSettings(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.max_new_tokens = QSpinBox(minimum=1, maximum=2048, value=96)
        self.max_new_tokens.setToolTip("Stop after this many new tokens (or at the end-of-turn token).")
        self.temperature = QDoubleSpinBox(minimum=0.0, maximum=2.0, singleStep=0.1, value=0.0, decimals=2)
        self.temperature.setToolTip("0 = greedy (always the likeliest token); higher = more varied.")
        self.top_p = QDoubleSpinBox(minimum=0.05, maximum=1.0, singleStep=0.05, value=0.9, decimals=2)
        self.top_p.setToolTip("Sample only from the likeliest tokens whose probabilities add up to top-p.")
        self.seed = QSpinBox(minimum=0, maximum=2**31 - 1, value=0)
        self.seed.setToolTip("The same seed and settings give the same answer.")
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Max new tokens", self.max_new_tokens)
        form.addRow("Temperature", self.temperature)
        form.addRow("Top-p", self.top_p)
        form.addRow("Seed", self.seed)

    def values(self) -> dict:
        return {"max_new_tokens": self.max_new_tokens.value(), "temperature": round(self.temperature.value(), 3),
                "top_p": round(self.top_p.value(), 3), "seed": self.seed.value()}
