"""How long the training examples are, in tokens: the inspector's histogram, and seq_len as a line.

Lengths are counted after truncation (what the model sees), so with `too_long: truncate` a tall
bar at the seq_len line means many examples were cut there.
"""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QVBoxLayout, QWidget

from lorastudio.app.theme import ACCENT, BAD, plot_colors


class LengthHistogram(QWidget):
    """The histogram's plot is made when the first report arrives: pyqtgraph stays out of start-up."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.counts: list[int] = []
        self.edges: list[int] = []
        self.plot = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.setMinimumHeight(130)
        self.setMaximumHeight(170)

    def _build(self):
        if self.plot is not None:
            return self.plot
        import pyqtgraph as pg

        background, foreground = plot_colors()
        self.plot = plot = pg.PlotWidget(parent=self, background=background)
        item = plot.getPlotItem()
        item.setMenuEnabled(False)
        item.hideButtons()
        item.showGrid(x=False, y=False)
        for name, label in (("left", "examples"), ("bottom", "tokens per example")):
            axis = item.getAxis(name)
            axis.setPen(pg.mkPen(foreground, width=1))
            axis.setTextPen(pg.mkPen(foreground))
            axis.enableAutoSIPrefix(False)
            axis.setLabel(label, color=foreground, **{"font-size": "8pt"})
        plot.setMouseEnabled(x=False, y=False)
        self._bars = pg.BarGraphItem(x=[], height=[], width=1, brush=pg.mkBrush(ACCENT + "b0"),
                                     pen=pg.mkPen(background, width=1))
        plot.addItem(self._bars)
        self._seq_line = pg.InfiniteLine(angle=90, movable=False,
                                         pen=pg.mkPen(BAD, width=1.5, style=Qt.DashLine), label="seq_len {value:.0f}",
                                         labelOpts={"position": 0.88, "color": BAD,
                                                    "anchors": [(1.05, 0), (1.05, 0)]})
        plot.addItem(self._seq_line)
        self.layout().addWidget(plot)
        return plot

    @property
    def bars(self):
        self._build()
        return self._bars

    @property
    def seq_line(self):
        self._build()
        return self._seq_line

    def set_data(self, histogram: dict, seq_len: int) -> None:
        """`histogram` is the inspector's {"edges": [n + 1 ints], "counts": [n ints]}."""
        plot = self._build()
        self.edges, self.counts = list(histogram.get("edges", [])), list(histogram.get("counts", []))
        if self.counts:
            width = self.edges[1] - self.edges[0]
            # A bin holds the whole numbers edge … edge + width - 1: centre the bar on them.
            centres = [e + (width - 1) / 2 for e in self.edges[:-1]]
            self.bars.setOpts(x=centres, height=self.counts, width=width)
            used = [i for i, c in enumerate(self.counts) if c]
            low, high = self.edges[used[0]] - 0.5, self.edges[used[-1] + 1] - 0.5
        else:
            self.bars.setOpts(x=[], height=[], width=1)
            low = high = seq_len
        self.seq_line.setValue(seq_len)
        low, high = min(low, seq_len), max(high, seq_len)
        pad = max(1.0, (high - low) * 0.05)
        plot.setXRange(max(0, low - pad), high + pad, padding=0)
        plot.setYRange(0, max(self.counts or [1]) * 1.15, padding=0)
        # Keep the label inside the plot: left of the line when the line is in the right half.
        right_half = seq_len > (low + high) / 2
        self.seq_line.label.setAnchor((1.05, 0) if right_half else (-0.05, 0))
