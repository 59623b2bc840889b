"""Loss curves of the selected runs on one plot: smoothed train loss as a line, eval as dots."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSlider, QVBoxLayout, QWidget

from lorastudio.app.dashboard.run_state import ema
from lorastudio.app.runs.runs_columns import CURVE_COLORS
from lorastudio.app.widgets.series_plot import SeriesPlot
from lorastudio.core.runs.listing import RunSummary


class RunsOverlay(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.plot = SeriesPlot("Loss of the selected runs", "loss")
        self.plot.setMouseEnabled(x=True, y=True)
        self.smoothing = QSlider(Qt.Horizontal, minimum=0, maximum=99, value=60)
        self.smoothing.setFixedWidth(110)
        self.smoothing.setToolTip("Exponential moving average of the train loss (0 = raw values); "
                                  "dots are eval losses")
        self.smoothing.valueChanged.connect(lambda _v: self.set_runs(self.runs))
        self.empty = QLabel("Select one or more runs (Ctrl+click, Shift+click) to compare their loss curves.")
        self.empty.setProperty("role", "hint")
        bar = QHBoxLayout()
        bar.setContentsMargins(4, 0, 4, 0)
        bar.addWidget(self.empty, 1)
        bar.addWidget(QLabel("Smoothing"))
        bar.addWidget(self.smoothing)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(bar)
        layout.addWidget(self.plot, 1)
        self.runs: list[RunSummary] = []

    def set_runs(self, runs: list[RunSummary]) -> None:
        """Draw these runs (in this order: the colours follow the selection)."""
        self.runs = list(runs)
        weight = self.smoothing.value() / 100
        wanted = set()
        for i, run in enumerate(self.runs):
            color = CURVE_COLORS[i % len(CURVE_COLORS)]
            train, evals = f"train:{i}:{run.path}", f"eval:{i}:{run.path}"
            wanted |= {train, evals}
            self.plot.set_data(train, run.loss_x, ema(run.loss_y, weight), label=run.name, color=color)
            self.plot.set_data(evals, run.eval_x, run.eval_y, label=None, color=color, symbol="o")
            self.plot.curves[evals].setPen(None)          # eval losses as dots, not a second line
        for name in list(self.plot.curves):
            if name not in wanted:
                self.plot.drop(name)
        without = [r.name for r in self.runs if not r.loss_x]
        self.empty.setText("Select one or more runs (Ctrl+click, Shift+click) to compare their loss curves."
                           if not self.runs else f"No training steps yet: {', '.join(without)}" if without else "")
        self.empty.setVisible(not self.runs or bool(without))
        if self.runs:
            self.plot.getPlotItem().enableAutoRange()

    def curve_names(self) -> list[str]:
        return [run.name for i, run in enumerate(self.runs) if self.plot.point_count(f"train:{i}:{run.path}")]
