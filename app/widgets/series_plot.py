"""A pyqtgraph plot of named series that follows the palette, with a legend and lazy curves."""
from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtWidgets import QWidget

from lorastudio.app.theme import SERIES, plot_colors


class SeriesPlot(pg.PlotWidget):
    def __init__(self, title: str, y_label: str = "", x_label: str = "step", parent: QWidget | None = None):
        background, foreground = plot_colors()
        super().__init__(parent=parent, background=background)
        self.curves: dict[str, pg.PlotDataItem] = {}
        self._foreground = foreground
        item = self.getPlotItem()
        item.setTitle(f"<span style='font-size:10pt;font-weight:600'>{title}</span>", color=foreground)
        # No grid: alpha-blended grid lines cost 5× the paint time of the rest of the plot.
        item.showGrid(x=False, y=False)
        item.setMenuEnabled(False)
        for name, label in (("left", y_label), ("bottom", x_label)):
            axis = item.getAxis(name)
            axis.setPen(pg.mkPen(foreground, width=1))
            axis.setTextPen(pg.mkPen(foreground))
            axis.enableAutoSIPrefix(False)      # "GiB (x0.001)" reads worse than 0.8
            if label:
                axis.setLabel(label, color=foreground)
        self.legend = item.addLegend(offset=(-8, 8), labelTextColor=foreground, brush=pg.mkBrush(background + "c0"))
        self.setMinimumSize(150, 140)
        self.setMouseEnabled(x=True, y=False)

    def curve(self, name: str, label: str | None = None, color: str | None = None, width: float = 2.0,
              dashed: bool = False, symbol: str | None = None, alpha: int = 255) -> pg.PlotDataItem:
        """The curve called `name`, created on first use (label None keeps it out of the legend)."""
        if name not in self.curves:
            qcolor = pg.mkColor(color or SERIES.get(name, self._foreground))
            qcolor.setAlpha(alpha)
            pen = pg.mkPen(qcolor, width=width, style=pg.QtCore.Qt.DashLine if dashed else pg.QtCore.Qt.SolidLine)
            kwargs = dict(pen=pen, name=label, antialias=True)
            if symbol:
                kwargs.update(symbol=symbol, symbolSize=7, symbolBrush=qcolor, symbolPen=qcolor)
            self.curves[name] = self.plot([], [], **kwargs)
            if label is None:
                self.legend.removeItem(self.curves[name])
        return self.curves[name]

    def set_data(self, name: str, x, y, **style) -> None:
        self.curve(name, **style).setData(list(x), list(y))

    def drop(self, name: str) -> None:
        """Remove a curve and its legend entry (RAM lines once GPU figures arrive)."""
        curve = self.curves.pop(name, None)
        if curve is not None:
            self.legend.removeItem(curve)
            self.removeItem(curve)

    def point_count(self, name: str) -> int:
        curve = self.curves.get(name)
        if curve is None or curve.xData is None:
            return 0
        return len(curve.xData)

    def clear_data(self) -> None:
        for curve in self.curves.values():
            curve.setData([], [])
