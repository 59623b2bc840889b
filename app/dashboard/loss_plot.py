"""The loss curve: train (raw, faint, and smoothed) and eval, with smoothing and log-scale toggles."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QSlider, QVBoxLayout, QWidget

from lorastudio.app.dashboard.run_state import RunState, ema
from lorastudio.app.widgets.series_plot import SeriesPlot
from lorastudio.app.theme import SERIES


class LossPlot(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.plot = SeriesPlot("Loss", "loss")
        self.smoothing = QSlider(Qt.Horizontal, minimum=0, maximum=99, value=60)
        self.smoothing.setToolTip("Exponential moving average of the train loss (0 = raw values)")
        self.smoothing.setFixedWidth(110)
        self.smoothing_value = QLabel("0.60")
        self.smoothing_value.setProperty("role", "hint")
        self.log_box = QCheckBox("Log scale")
        bar = QHBoxLayout()
        bar.setContentsMargins(4, 0, 4, 0)
        bar.addStretch(1)
        bar.addWidget(QLabel("Smoothing"))
        bar.addWidget(self.smoothing)
        bar.addWidget(self.smoothing_value)
        bar.addSpacing(8)
        bar.addWidget(self.log_box)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(bar)
        layout.addWidget(self.plot, 1)
        self._state: RunState | None = None
        self.smoothing.valueChanged.connect(self._smoothing_changed)
        self.log_box.toggled.connect(lambda on: self.plot.getPlotItem().setLogMode(y=on))

    def _smoothing_changed(self, value: int) -> None:
        self.smoothing_value.setText(f"{value / 100:.2f}")
        if self._state is not None:
            self.update_from(self._state)

    def update_from(self, state: RunState) -> None:
        self._state = state
        weight = self.smoothing.value() / 100
        x, y = state.loss.x, state.loss.y
        self.plot.set_data("raw", x, y if weight > 0 else [], color=SERIES["train"], width=1, alpha=70)
        self.plot.set_data("train", x, ema(y, weight), label="train")
        self.plot.set_data("eval", state.eval_loss.x, state.eval_loss.y, label="eval", symbol="o")
