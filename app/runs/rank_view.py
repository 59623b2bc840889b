"""The Rank view of a run: what rank the trained update really used.

A heat map of the effective rank (99 % of the energy) per layer × module type, the spectrum of the
selected module (each rank's share of the update and the running total), the suggestion in words
and "Save a smaller adapter…" (app/dialogs/resize_dialog.py). The numbers come from the rank job
(core/jobs/rank.py) followed by a JobProcess; the window only reads the report
(core/runs/rank_report.py). The Runs page opens it.
"""
from __future__ import annotations

from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPainter
from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QHBoxLayout, QLabel, QSizePolicy,
                               QVBoxLayout, QWidget)

from lorastudio.app.widgets.jobs_area import track
from lorastudio.app.job_process import JobProcess
from lorastudio.app.theme import ACCENT, BAD, plot_colors
from lorastudio.app.thread_pool import run_in_background
from lorastudio.core.formatting import format_bytes
from lorastudio.core.runs.export import ExportError
from lorastudio.core.plans.rank import find_target, start_rank
from lorastudio.core.runs.rank_report import adapter_bytes, heat_grid, suggestion

HEAT_KEY = "effective_rank_99"


class RankHeatMap(QWidget):
    """Layers down, module types across; each cell the mean effective rank, shaded by its share of r.
    A click picks the cell's module."""
    cell_clicked = Signal(object, str)          # layer (int or None), module type

    MARGIN_LEFT, MARGIN_TOP, CELL_H, MAX_HEIGHT, LABEL_H = 70, 22, 18, 300, 11

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.layers: list = []
        self.types: list[str] = []
        self.grid: list[list[float | None]] = []
        self.r, self.low = 1, 0.0
        self.selected: tuple | None = None
        self.setMinimumWidth(360)
        self.setMouseTracking(True)
        self.setFixedHeight(self.MARGIN_TOP + 4 * self.CELL_H + 4)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.setToolTip("Effective rank at 99 % energy: the smallest rank holding 99 % of each update. "
                        "Click a cell for its spectrum.")

    def set_report(self, report: dict) -> None:
        self.layers, self.types, self.grid = heat_grid(report, HEAT_KEY)
        self.r = max(m["rank"] for m in report["modules"])
        values = [v for row in self.grid for v in row if v is not None]
        self.low = min(values) if values and min(values) < self.r else 0.0     # the colours span low … r
        self.setFixedHeight(min(self.MARGIN_TOP + self.CELL_H * max(len(self.layers), 2) + 4, self.MAX_HEIGHT))
        self.update()

    def cell_rect(self, row: int, col: int) -> QRectF:
        width = (self.width() - self.MARGIN_LEFT - 6) / max(len(self.types), 1)
        height = min(self.CELL_H, (self.height() - self.MARGIN_TOP - 4) / max(len(self.layers), 1))
        return QRectF(self.MARGIN_LEFT + col * width, self.MARGIN_TOP + row * height, width, height)

    def paintEvent(self, _event) -> None:
        background, foreground = plot_colors()
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(background))
        if not self.types:
            painter.setPen(QColor(foreground))
            painter.drawText(self.rect(), Qt.AlignCenter, "No report yet")
            return
        base, accent = QColor(background), QColor(ACCENT)
        font = painter.font()
        font.setPointSizeF(7.5)
        painter.setFont(font)
        painter.setPen(QColor(foreground))
        for col, kind in enumerate(self.types):
            rect = self.cell_rect(0, col)
            painter.drawText(QRectF(rect.x(), 2, rect.width(), self.MARGIN_TOP - 4), Qt.AlignCenter, kind)
        painter.drawText(QRectF(2, 2, self.MARGIN_LEFT - 8, self.MARGIN_TOP - 4), Qt.AlignRight | Qt.AlignVCenter,
                         f"{self.low:.3g} … {self.r}")
        every = max(1, int(-(-self.LABEL_H // max(self.cell_rect(0, 0).height(), 1))))   # label every n-th row
        for row, layer in enumerate(self.layers):
            rect = self.cell_rect(row, 0)
            painter.setPen(QColor(foreground))
            if row % every == 0:
                painter.drawText(QRectF(2, rect.y() - 3, self.MARGIN_LEFT - 8, rect.height() + 6),
                                 Qt.AlignRight | Qt.AlignVCenter, "–" if layer is None else f"layer {layer}")
            for col, value in enumerate(self.grid[row]):
                cell = self.cell_rect(row, col).adjusted(1, 1, -1, -1)
                if value is None:
                    continue
                t = max(0.0, min(1.0, (value - self.low) / max(self.r - self.low, 1e-9)))
                color = QColor(int(base.red() + (accent.red() - base.red()) * t),
                               int(base.green() + (accent.green() - base.green()) * t),
                               int(base.blue() + (accent.blue() - base.blue()) * t))
                painter.fillRect(cell, color)
                if self.selected == (layer, self.types[col]):
                    painter.setPen(QColor(BAD))
                    painter.drawRect(cell)
                if cell.height() >= self.LABEL_H:
                    painter.setPen(QColor("#ffffff" if t > 0.55 else foreground))
                    painter.drawText(cell, Qt.AlignCenter, f"{value:.3g}")
        painter.end()

    def cell_at(self, pos) -> tuple[int, int] | None:
        for row in range(len(self.layers)):
            for col in range(len(self.types)):
                if self.cell_rect(row, col).contains(pos) and self.grid[row][col] is not None:
                    return row, col
        return None

    def mouseMoveEvent(self, event) -> None:
        cell = self.cell_at(event.position())
        if cell is not None:
            row, col = cell
            self.setToolTip(f"layer {self.layers[row]}, {self.types[col]}: effective rank "
                            f"{self.grid[row][col]:.3g} of {self.r} (99 % of the update)")

    def mousePressEvent(self, event) -> None:
        cell = self.cell_at(event.position())
        if cell is not None:
            layer, kind = self.layers[cell[0]], self.types[cell[1]]
            self.selected = (layer, kind)
            self.update()
            self.cell_clicked.emit(layer, kind)


class SpectrumPlot(pg.PlotWidget):
    """One module's spectrum: each rank's share of the update's energy (bars) and the running total."""

    def __init__(self, parent: QWidget | None = None):
        background, foreground = plot_colors()
        super().__init__(parent=parent, background=background)
        item = self.getPlotItem()
        item.setMenuEnabled(False)
        item.hideButtons()
        for name, label in (("left", "% of the update's energy"), ("bottom", "rank")):
            axis = item.getAxis(name)
            axis.setPen(pg.mkPen(foreground, width=1))
            axis.setTextPen(pg.mkPen(foreground))
            axis.setLabel(label, color=foreground, **{"font-size": "8pt"})
        self.setMouseEnabled(x=False, y=False)
        self.setMinimumHeight(170)
        self.bars = pg.BarGraphItem(x=[], height=[], width=0.7, brush=pg.mkBrush(ACCENT + "b0"))
        self.total = pg.PlotDataItem([], [], pen=pg.mkPen(foreground, width=2), symbol="o", symbolSize=5,
                                     symbolBrush=foreground)
        self.addItem(self.bars)
        self.addItem(self.total)
        for level, where in ((90, 0.82), (99, 0.95)):
            self.addItem(pg.InfiniteLine(level, angle=0, pen=pg.mkPen(BAD, width=1, style=Qt.DashLine),
                                         label=f"{level} %", labelOpts={"position": where, "color": BAD}))
        self.setYRange(0, 105, padding=0)

    def set_module(self, module: dict) -> None:
        energy = module["energy"]
        shares = [100 * (e - (energy[i - 1] if i else 0.0)) for i, e in enumerate(energy)]
        ranks = list(range(1, len(energy) + 1))
        self.bars.setOpts(x=ranks, height=shares, width=0.7)
        self.total.setData(ranks, [100 * e for e in energy])
        self.setXRange(0.4, len(energy) + 0.6, padding=0)


class RankView(QDialog):
    """The rank report of a run's final adapter (or a checkpoint's), computed by the rank job."""

    def __init__(self, run_dir: Path, runs_root: Path | None = None, parent: QWidget | None = None,
                 checkpoint: int | None = None):
        super().__init__(parent)
        self.run_dir, self.checkpoint = Path(run_dir), checkpoint
        self.setWindowTitle(f"Rank — {self.run_dir.name}")
        self.resize(860, 760)
        self.report: dict | None = None
        self.target = None
        self.status: str | None = None
        self.process = JobProcess(self)
        self.process.event.connect(self._event)
        self.process.finished.connect(self._finish)
        self._build()
        self.start()

    def _build(self) -> None:
        self.phase_label = QLabel("Reading the adapter…", wordWrap=True)
        self.phase_label.setProperty("role", "hint")
        self.heat = RankHeatMap()
        self.heat.cell_clicked.connect(self._pick_cell)
        self.module_combo = QComboBox()
        self.module_combo.setToolTip("The module whose spectrum is shown")
        self.module_combo.currentIndexChanged.connect(self._show_module)
        self.module_label = QLabel(wordWrap=True)
        self.module_label.setProperty("role", "hint")
        self.spectrum = SpectrumPlot()
        self.suggestion_label = QLabel(wordWrap=True, textInteractionFlags=Qt.TextSelectableByMouse)
        self.suggestion_label.setProperty("role", "notice")
        self.size_label = QLabel(wordWrap=True)
        buttons = QDialogButtonBox()
        self.save_button = buttons.addButton("&Save a smaller adapter…", QDialogButtonBox.ActionRole)
        self.save_button.setEnabled(False)
        self.save_button.clicked.connect(self.open_resize)
        close = buttons.addButton(QDialogButtonBox.Close)
        close.clicked.connect(self.close)
        heading = QLabel("Effective rank (99 % of each update) per layer × module type; darker uses more of r. "
                         "Click a cell for its spectrum", objectName="CardTitle")
        module_row = QHBoxLayout()
        module_row.addWidget(QLabel("Spectrum of"))
        module_row.addWidget(self.module_combo, 1)
        layout = QVBoxLayout(self)
        for widget in (self.phase_label, heading, self.heat):
            layout.addWidget(widget)
        layout.addLayout(module_row)
        for widget in (self.module_label, self.spectrum, self.suggestion_label, self.size_label, buttons):
            layout.addWidget(widget, 1 if widget is self.spectrum else 0)

    # ---- running --------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.process.running

    def start(self) -> None:
        run_in_background(find_target, self.run_dir, self.checkpoint, on_done=self._launch, on_failed=self._refused)

    def _refused(self, exc: Exception) -> None:
        self.status = "failed"
        self._phase(f"{exc.message}\nWhat to do: {exc.hint}" if isinstance(exc, ExportError) else str(exc), "error")

    def _launch(self, target) -> None:
        self.target = target
        self._phase(f"Computing the singular values of {target.adapter}…", "hint")
        try:
            self.process.attach(start_rank(target))
        except OSError as exc:
            self._refused(exc)

    def _event(self, ev: dict) -> None:
        if ev["type"] == "phase":
            self._phase(ev.get("message") or ev["name"], "hint")
        elif ev["type"] == "report":
            self.set_report(ev["report"])

    def _finish(self, outcome) -> None:
        self.status = outcome.status
        if self.report is None:
            self._phase(f"The rank analysis did not finish: {outcome.words()}", "error")

    def _phase(self, text: str, role: str) -> None:
        self.phase_label.setText(text)
        self.phase_label.setProperty("role", role)
        self.phase_label.style().polish(self.phase_label)

    # ---- showing --------------------------------------------------------------------------
    def set_report(self, report: dict) -> None:
        self.report = report
        modules = report["modules"]
        where = f"checkpoint at step {self.checkpoint}" if self.checkpoint is not None else "final adapter"
        self._phase(f"{self.run_dir.name}, {where}: {len(modules)} modules, r={report['r']}, "
                    f"alpha={report['lora_alpha']:g}{' (rsLoRA)' if report['use_rslora'] else ''}", "hint")
        self.heat.set_report(report)
        self.module_combo.blockSignals(True)
        self.module_combo.clear()
        for m in modules:
            self.module_combo.addItem(m["name"])
        self.module_combo.blockSignals(False)
        top = max(range(len(modules)), key=lambda i: modules[i]["norm"])
        self.module_combo.setCurrentIndex(top)
        self._show_module(top)
        self.suggestion_label.setText(suggestion(report, str(self.run_dir)))
        self.size_label.setText(f"LoRA weights: {format_bytes(adapter_bytes(report))} at r={report['r']}.")
        self.save_button.setEnabled(not report.get("use_dora"))
        if report.get("use_dora"):
            self.save_button.setToolTip("A DoRA adapter cannot be resized: its update also scales the weights")

    def _show_module(self, index: int) -> None:
        if self.report is None or not 0 <= index < len(self.report["modules"]):
            return
        m = self.report["modules"][index]
        self.spectrum.set_module(m)
        self.heat.selected = (m["layer"], m["type"])
        self.heat.update()
        sigma = ", ".join(f"{s:.3g}" for s in m["singular_values"][:8]) + (" …" if len(m["singular_values"]) > 8 else "")
        self.module_label.setText(f"{m['shape'][0]} × {m['shape'][1]}, rank {m['rank']}, scale {m['scale']:.3g}: "
                                  f"90 % of the update in {m['effective_rank_90']} ranks, 99 % in "
                                  f"{m['effective_rank_99']}. σ = {sigma}")

    def _pick_cell(self, layer, kind: str) -> None:
        for i, m in enumerate(self.report["modules"] if self.report else []):
            if m["layer"] == layer and m["type"] == kind:
                self.module_combo.setCurrentIndex(i)
                return

    def open_resize(self):
        from lorastudio.app.dialogs.resize_dialog import ResizeDialog
        if self.report is None or self.target is None:
            return None
        dialog = ResizeDialog(self.target, self.report, self)
        dialog.setAttribute(Qt.WA_DeleteOnClose)
        track(dialog)                   # not modal; its job shows in the status bar's jobs area
        dialog.show()
        return dialog

    def closeEvent(self, event) -> None:
        if self.running:
            self.process.stop()
        super().closeEvent(event)
