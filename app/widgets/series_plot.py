"""A plot of named series that follows the palette, with a legend and lazy curves.

pyqtgraph (with numpy) is most of the window's start-up time, and no plot has anything to show at
start-up, so the plot is built after the window's first paint: until then `SeriesPlot` is a plain
widget that paints its title on the plot's background and keeps the data it is given. Its first
paint schedules the real plot (the next turn of the event loop), and anything that needs the real
plot (`getPlotItem()`, `curves` once there is data) builds it at once. A plot never shown (a page not visited) never
imports pyqtgraph.

Long series are thinned before drawing (`MAX_POINTS`, keeping each bucket's extremes) and lines are
drawn without antialiasing past a few hundred points: a 1,000-step run redraws as cheaply as a
100-step one.
"""
from __future__ import annotations

import math

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QColor, QFont, QPainter
from PySide6.QtWidgets import QVBoxLayout, QWidget

from lorastudio.app.theme import SERIES, plot_colors

MAX_POINTS = 600            # per curve on screen; a bucket keeps its first, min, max and last point
ANTIALIAS_POINTS = 300      # above this many points a line is drawn without antialiasing
TICK_DIGITS = 5             # significant digits of a tick label at most


def thin(x: list[float], y: list[float], limit: int = MAX_POINTS) -> tuple[list[float], list[float]]:
    """At most about `limit` points that keep the curve's shape: the series in equal buckets, each
    giving its first, lowest, highest and last point in order (spikes survive, unlike striding)."""
    n = len(x)
    if n <= limit:
        return list(x), list(y)
    buckets = max(1, limit // 4)
    size = n / buckets
    keep: list[int] = []
    for b in range(buckets):
        lo, hi = int(b * size), min(n, int((b + 1) * size))
        if lo >= hi:
            continue
        chunk = range(lo, hi)
        low = min(chunk, key=y.__getitem__)
        high = max(chunk, key=y.__getitem__)
        keep.extend(sorted({lo, low, high, hi - 1}))
    return [x[i] for i in keep], [y[i] for i in keep]


def tick_label(value: float, spacing: float) -> str:
    """A tick's label with as many digits as the ticks' spacing needs and never more than
    TICK_DIGITS significant ones: one point's degenerate axis reads 2.5966, not 2.596585035324100."""
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    magnitude = abs(value)
    if magnitude >= 1e6 or magnitude < 1e-3:
        return f"{value:.{TICK_DIGITS - 2}g}"
    decimals = max(0, math.ceil(-math.log10(spacing))) if spacing > 0 else TICK_DIGITS
    decimals = min(decimals, max(0, TICK_DIGITS - 1 - math.floor(math.log10(magnitude))))
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


_TICK_AXIS = None


def tick_axis_class(pg):
    """pyqtgraph's AxisItem with `tick_label`'s labels (made once pyqtgraph is imported)."""
    global _TICK_AXIS
    if _TICK_AXIS is None:
        class TickAxis(pg.AxisItem):
            def tickStrings(self, values, scale, spacing):      # noqa: N802 (pyqtgraph's name)
                if self.logMode:
                    return super().tickStrings(values, scale, spacing)
                return [tick_label(v * scale, spacing * scale) for v in values]
        _TICK_AXIS = TickAxis
    return _TICK_AXIS


class SeriesPlot(QWidget):
    def __init__(self, title: str, y_label: str = "", x_label: str = "step", parent: QWidget | None = None):
        super().__init__(parent)
        self.title, self.labels = title, (y_label, x_label)
        self.widget = None                      # the pyqtgraph PlotWidget, once built
        self.legend = None
        self._curves: dict = {}
        self._pending: dict[str, tuple[list, list, dict]] = {}      # data given before the plot exists
        self._mouse = {"x": True, "y": False}
        self._scheduled = False
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.setMinimumSize(150, 110)          # small enough that the dashboard fits 1366×768

    # ---- the real plot, built late ------------------------------------------------------------
    @property
    def built(self) -> bool:
        return self.widget is not None

    def paintEvent(self, event) -> None:
        if self.widget is not None:
            return
        background, foreground = plot_colors()
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(background))
        p.setPen(QColor(foreground))
        font = QFont(self.font())
        font.setPointSizeF(10)
        font.setBold(True)
        p.setFont(font)
        p.drawText(self.rect().adjusted(0, 6, 0, 0), Qt.AlignHCenter | Qt.AlignTop, self.title)
        p.end()
        if not self._scheduled:                 # the window is on screen: build the plot next
            self._scheduled = True
            QTimer.singleShot(0, self, self.build)

    def build(self) -> None:
        """Import pyqtgraph and make the plot (once), then draw what was given meanwhile."""
        if self.widget is not None:
            return
        import pyqtgraph as pg

        background, foreground = plot_colors()
        self._pg, self._foreground = pg, foreground
        axes = {name: tick_axis_class(pg)(orientation=name) for name in ("left", "bottom")}
        self.widget = pg.PlotWidget(parent=self, background=background, axisItems=axes)
        item = self.widget.getPlotItem()
        item.setTitle(f"<span style='font-size:10pt;font-weight:600'>{self.title}</span>", color=foreground)
        # No grid: alpha-blended grid lines cost 5× the paint time of the rest of the plot.
        item.showGrid(x=False, y=False)
        item.setMenuEnabled(False)
        for name, label in zip(("left", "bottom"), self.labels):
            axis = item.getAxis(name)
            axis.setPen(pg.mkPen(foreground, width=1))
            axis.setTextPen(pg.mkPen(foreground))
            axis.enableAutoSIPrefix(False)      # "GiB (x0.001)" reads worse than 0.8
            if label:
                axis.setLabel(label, color=foreground)
        self.legend = item.addLegend(offset=(-8, 8), labelTextColor=foreground, brush=pg.mkBrush(background + "c0"))
        self.widget.setMouseEnabled(**self._mouse)
        self.layout().addWidget(self.widget)
        pending, self._pending = self._pending, {}
        for name, (x, y, style) in pending.items():
            self.set_data(name, x, y, **style)

    # ---- what the dashboard and the Runs page use ----------------------------------------------
    @property
    def curves(self) -> dict:
        """The curves by name (the real plot is built for them, if it holds any data yet)."""
        if self._pending:
            self.build()
        return self._curves

    def getPlotItem(self):
        self.build()
        return self.widget.getPlotItem()

    def setMouseEnabled(self, x: bool = True, y: bool = True) -> None:
        self._mouse = {"x": x, "y": y}
        if self.widget is not None:
            self.widget.setMouseEnabled(x=x, y=y)

    def curve(self, name: str, label: str | None = None, color: str | None = None, width: float = 2.0,
              dashed: bool = False, symbol: str | None = None, alpha: int = 255):
        """The curve called `name`, created on first use (label None keeps it out of the legend)."""
        self.build()
        if name not in self._curves:
            pg = self._pg
            qcolor = pg.mkColor(color or SERIES.get(name, self._foreground))
            qcolor.setAlpha(alpha)
            pen = pg.mkPen(qcolor, width=width, style=Qt.DashLine if dashed else Qt.SolidLine)
            kwargs = dict(pen=pen, name=label, antialias=True)
            if symbol:
                kwargs.update(symbol=symbol, symbolSize=7, symbolBrush=qcolor, symbolPen=qcolor)
            self._curves[name] = self.widget.plot([], [], **kwargs)
            if label is None:
                self.legend.removeItem(self._curves[name])
        return self._curves[name]

    def set_data(self, name: str, x, y, **style) -> None:
        if self.widget is None:
            earlier = self._pending.get(name)
            self._pending[name] = (list(x), list(y), earlier[2] if earlier else style)   # first style wins
            return
        x, y = list(x), list(y)
        curve = self.curve(name, **style)
        curve.source_points = len(x)
        x, y = thin(x, y)
        curve.setData(x, y, antialias=len(x) <= ANTIALIAS_POINTS)

    def drop(self, name: str) -> None:
        """Remove a curve and its legend entry (RAM lines once GPU figures arrive)."""
        self._pending.pop(name, None)
        curve = self._curves.pop(name, None)
        if curve is not None:
            self.legend.removeItem(curve)
            self.widget.removeItem(curve)

    def point_count(self, name: str) -> int:
        """How many points the curve holds (before thinning for the screen)."""
        if self.widget is None:
            return len(self._pending[name][0]) if name in self._pending else 0
        curve = self._curves.get(name)
        return getattr(curve, "source_points", 0) if curve is not None else 0

    def clear_data(self) -> None:
        for name, (_x, _y, style) in self._pending.items():
            self._pending[name] = ([], [], style)
        for curve in self._curves.values():
            curve.setData([], [])
            curve.source_points = 0
