"""The live dashboard: banner, progress, figures, loss / LR / memory / throughput plots, log pane.

It folds journal events into a RunState (Qt-free) and redraws at most every REDRAW_MS, so a
worker that logs 50 steps a second costs the window a few redraws, not 50.
"""
from __future__ import annotations

import time
from collections import deque

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (QGridLayout, QHBoxLayout, QLabel, QProgressBar, QSizePolicy, QSplitter, QVBoxLayout, QWidget)

from lorastudio.app.dashboard.log_pane import LogPane
from lorastudio.app.dashboard.loss_plot import LossPlot
from lorastudio.app.dashboard.preference_plot import PreferencePlot
from lorastudio.app.widgets.gpu_readout import GpuReadout
from lorastudio.app.widgets.memory_gauge import MemoryGauge
from lorastudio.app.dashboard.run_state import IDLE, RUNNING, STARTING, RunState, mode_words
from lorastudio.core.formatting import format_bytes, format_count, format_duration, format_rate
from lorastudio.app.widgets.series_plot import SeriesPlot
from lorastudio.app.widgets.stat_card import StatCard
from lorastudio.app.dashboard.status_banner import StatusBanner

REDRAW_MS = 150
CLOCK_MS = 1000
LOG_LINES_MIN = 5           # the log pane shows at least this many lines
GIB = 1024 ** 3
WORKER_TAIL_LINES = 40      # worker.log lines kept for a crash, the only time the pane shows them


class Dashboard(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = RunState()
        self._logged = 0
        self._plot_queue: list = []
        self._worker_tail: deque[str] = deque(maxlen=WORKER_TAIL_LINES)
        self._worker_log_shown = False
        self._redraw_timer = QTimer(self, singleShot=True, interval=REDRAW_MS)
        self._redraw_timer.timeout.connect(self.redraw)
        # Elapsed (and the ETA) move every second while a run is live, not only when a step ends:
        # between steps of a slow CPU run the window would look hung.
        self._clock = QTimer(self, interval=CLOCK_MS)
        self._clock.timeout.connect(self._tick)
        self._build()
        self.redraw()

    def _build(self) -> None:
        self.banner = StatusBanner()
        self.progress = QProgressBar(minimum=0, maximum=1000, value=0, textVisible=False)
        self.progress_label = QLabel("Step — / —")
        self.progress_label.setProperty("role", "value")
        self.time_label = QLabel("Elapsed — · ETA —")
        self.time_label.setProperty("role", "hint")
        progress_row = QHBoxLayout()
        for label in (self.progress_label, self.time_label):     # never clipped by the bar beside them
            label.setSizePolicy(QSizePolicy.Policy.Minimum, QSizePolicy.Policy.Preferred)
        progress_row.addWidget(self.progress_label)
        progress_row.addWidget(self.progress, 1)
        progress_row.addWidget(self.time_label)

        self.cards = {"loss": StatCard("Loss", "Latest train loss"), "eval": StatCard("Eval loss", "Latest eval loss"),
                      "speed": StatCard("Tokens/s", "Training throughput"),
                      "ram": StatCard("System RAM", "Memory in use on this computer, and the worker's share")}
        self.gpu = GpuReadout()                # shown once the worker reports a GPU's figures
        self.gauge = MemoryGauge()
        cards = QHBoxLayout()
        cards.setSpacing(8)
        for card in self.cards.values():
            cards.addWidget(card)
        cards.addWidget(self.gpu)
        cards.addWidget(self.gauge)

        self.loss_plot = LossPlot()
        self.lr_plot = SeriesPlot("Learning rate", "lr")
        self.memory_plot = SeriesPlot("Memory", "GiB", "seconds")
        self.speed_plot = SeriesPlot("Throughput", "tokens/s")
        plots = QWidget()
        grid = QGridLayout(plots)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(8)
        grid.addWidget(self.lr_plot, 1, 0)
        grid.addWidget(self.memory_plot, 1, 1)
        grid.addWidget(self.speed_plot, 1, 2)
        grid.setRowStretch(0, 3)
        grid.setRowStretch(1, 2)
        grid.addWidget(self.loss_plot, 0, 0, 1, 3)
        self.preference_plot = PreferencePlot()        # shown once a dpo / orpo run reports margins
        grid.addWidget(self.preference_plot, 2, 0, 1, 3)
        grid.setRowStretch(2, 0)            # 2 once the preference plot shows: a hidden one leaves no band
        self.plots_grid = grid

        self.log_pane = LogPane()
        self.log_pane.setMinimumHeight(LOG_LINES_MIN * self.log_pane.fontMetrics().lineSpacing() + 16)
        self.splitter = QSplitter(Qt.Vertical)
        self.splitter.addWidget(plots)
        self.splitter.addWidget(self.log_pane)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setChildrenCollapsible(False)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(8)
        layout.addWidget(self.banner)
        layout.addLayout(progress_row)
        layout.addLayout(cards)
        layout.addWidget(self.splitter, 1)

    # ---- input --------------------------------------------------------------------------------
    def reset(self, run_dir: str = "", status: str = STARTING) -> None:
        self.state = RunState(status=status, run_dir=run_dir)
        if status == STARTING:          # Elapsed counts from Start, before the worker writes a line
            self.state.began = time.time()
        self._logged = 0
        self._worker_tail.clear()
        self._worker_log_shown = False
        self.log_pane.clear()
        for plot in (self.loss_plot.plot, self.lr_plot, self.memory_plot, self.speed_plot):
            plot.clear_data()
        self.preference_plot.reset()
        self.redraw()

    def set_stopping(self) -> None:
        """Stop was asked for: the banner says so at once (the worker ends after its current step)."""
        if not self.state.finished and self.state.status != IDLE:
            self.state.stopping = True
            self.redraw()

    def apply(self, event: dict) -> None:
        self.state.apply(event)
        self.preference_plot.apply(event)
        if event["type"] == "error" and event["kind"] == "crashed":
            self._show_worker_tail()
        if event["type"] == "end":          # the final picture at once, not a tick later
            self._redraw_timer.stop()
            self.redraw()
        else:
            self._schedule()

    def add_log_line(self, line: str) -> None:
        self.state.add_log(line)
        self._schedule()

    def add_worker_log_line(self, line: str) -> None:
        """A line of worker.log. Library warnings and the like stay there — the pane shows the run's
        own messages — except after a crash, when the last lines are the only account of why."""
        if self._worker_log_shown:
            self.add_log_line(line)
        else:
            self._worker_tail.append(line)

    def _show_worker_tail(self) -> None:
        if not self._worker_log_shown:
            self._worker_log_shown = True
            self.state.add_log("worker.log ends with:")
            for line in self._worker_tail:
                self.state.add_log(line)

    def _schedule(self) -> None:
        if not self._redraw_timer.isActive():
            self._redraw_timer.start()

    # ---- output -------------------------------------------------------------------------------
    def redraw(self) -> None:
        """The figures at once; the plots one per turn of the event loop (see `_draw_plots`)."""
        for _draw, plot in self._plot_queue:            # a redraw before the last one's turns were over
            if plot is not None:
                plot.setUpdatesEnabled(True)
        s = self.state
        self.banner.update_from(s)
        self._draw_progress(s)
        live = s.status in (RUNNING, STARTING)
        if live != self._clock.isActive():
            self._clock.start() if live else self._clock.stop()
        self.plots_grid.setRowStretch(2, 2 if not self.preference_plot.isHidden() else 0)
        self._draw_cards(s)
        self._plot_queue = [(lambda: self.loss_plot.update_from(s), self.loss_plot.plot),
                            (self.preference_plot.redraw, None),
                            (lambda: self.lr_plot.set_data("lr", s.lr.x, s.lr.y), self.lr_plot),
                            (lambda: self.speed_plot.set_data("throughput", s.tokens_per_s.x, s.tokens_per_s.y),
                             self.speed_plot),
                            (lambda: self._draw_memory(s), self.memory_plot)]
        if not self.isVisible():                        # none on screen: all at once
            while self._plot_queue:
                self._plot_queue.pop(0)[0]()
        elif s.finished:
            # The final picture's data at once (nothing reads it a turn late), its plots painted one per
            # turn all the same: each is held back (updates off) until its turn, or one paint would
            # draw them all together and block input for as long (tests/bench/bench_live_plots.py).
            for draw, plot in self._plot_queue:
                draw()
                if plot is not None:
                    plot.setUpdatesEnabled(False)
            self._plot_queue = [(lambda: None, plot) for _draw, plot in self._plot_queue if plot is not None]
            QTimer.singleShot(1, self, self._draw_plots)
        else:
            self._draw_plots()
        new = s.log[self._logged:] if self._logged <= len(s.log) else s.log[-200:]
        self.log_pane.append_lines(new)
        self._logged = len(s.log)

    def _draw_plots(self) -> None:
        """Give the next plot its data and paint it now, then yield to the event loop: a redraw blocks
        input for one plot's paint at a time, never for all of them (tests/bench/bench_live_plots.py)."""
        if not self._plot_queue:
            return
        draw, plot = self._plot_queue.pop(0)
        draw()
        if plot is not None:
            plot.setUpdatesEnabled(True)                # held back by a final redraw until now
            if plot.built and plot.isVisible():
                plot.repaint()
        if self._plot_queue:        # a timer, not a posted call: input and other timers come first
            QTimer.singleShot(1, self, self._draw_plots)

    def _draw_progress(self, s: RunState) -> None:
        value = int(1000 * s.fraction)
        if value != self.progress.value():
            # QProgressBar.setValue repaints synchronously; let it join the next (batched) paint.
            self.progress.setUpdatesEnabled(False)
            self.progress.setValue(value)
            self.progress.setUpdatesEnabled(True)
        total = f"{s.total_steps:,}" if s.total_steps else "—"
        self.progress_label.setText(f"Step {s.step:,} / {total}" + (f"  ·  {s.fraction:.0%}" if s.total_steps else ""))
        self._draw_time(s)

    def _draw_time(self, s: RunState) -> None:
        now = time.time()
        self.time_label.setText(f"Elapsed {format_duration(s.live_elapsed(now))}"
                                f"  ·  ETA {format_duration(s.live_eta(now))}")

    def _tick(self) -> None:
        self._draw_time(self.state)

    def _draw_cards(self, s: RunState) -> None:
        loss = s.loss.last
        self.cards["loss"].set(f"{loss:.4f}" if loss is not None else "—", f"epoch {s.epoch:.1f}" if s.step else "")
        ev = s.eval_loss.last
        self.cards["eval"].set(f"{ev:.4f}" if ev is not None else "—",
                               f"at step {int(s.eval_loss.x[-1])}" if ev is not None else "")
        self.cards["speed"].set(format_rate(s.tokens_per_s.last),
                                f"{format_count(s.trainable_params)} trainable" if s.trainable_params else "")
        self.cards["speed"].setToolTip(mode_words(s.memory_mode, s.kernels) or "Tokens per second")
        rss, used = s.rss.last, s.ram_used.last
        self.cards["ram"].set(format_bytes(used) if used is not None else "—",
                              f"of {format_bytes(s.ram_total)}" if s.ram_total else "")
        self.cards["ram"].setToolTip(f"Memory in use on this computer; the worker holds {format_bytes(rss)}"
                                     if rss else "Memory in use on this computer")
        gauge = s.memory_gauge()
        if gauge:
            self.gauge.set_value(*gauge)
        self._draw_gpu(s)

    def _draw_gpu(self, s: RunState) -> None:
        if s.has_gpu_figures:
            self.gpu.set_figures(s.device_name, s.gpu_util.last, s.gpu_temp, s.gpu_power, s.gpu_power_limit)
        else:
            self.gpu.hide()

    def _draw_memory(self, s: RunState) -> None:
        p = self.memory_plot
        gib = lambda ys: [y / GIB for y in ys]  # noqa: E731
        if s.has_cuda:
            p.drop("ram")
            p.drop("rss")
            p.set_data("allocated", s.vram_allocated.x, gib(s.vram_allocated.y), label="allocated")
            p.set_data("reserved", s.vram_reserved.x, gib(s.vram_reserved.y), label="reserved")
            if s.device_total and len(s.vram_allocated):
                xs = [s.vram_allocated.x[0], s.vram_allocated.x[-1]]
                p.set_data("total", xs, [s.device_total / GIB] * 2, label="device total", dashed=True)
        else:
            p.set_data("ram", s.ram_used.x, gib(s.ram_used.y), label="system RAM")
            p.set_data("rss", s.rss.x, gib(s.rss.y), label="worker")
