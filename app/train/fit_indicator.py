"""Will it fit? Beside Start: "Estimated peak 7.2 GiB of 24.0 GiB — fits", a bar of where the memory
goes, the GPU (or a consumer card, as a what-if) to compare with, and "Make it fit".

The estimate is core/fit/memory_model.py, torch-free and a few milliseconds (headers were read
when the model was chosen), so it runs on the UI thread at each change of the form. The search
behind "Make it fit" tries dozens of settings and runs on the thread pool; its answer is applied
to the form only if the form has not changed meanwhile.
"""
from __future__ import annotations

from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QMessageBox, QPushButton, QVBoxLayout, QWidget

from lorastudio.app.theme import BAD, OK
from lorastudio.app.thread_pool import run_in_background
from lorastudio.core.config import RunConfig
from lorastudio.core.fit.advice import Advice, choose_memory_mode, fit_settings
from lorastudio.core.fit.cpu import CpuEstimate, cpu_estimate, measure_rate
from lorastudio.core.fit.memory_model import Estimate, as_on_gpu, estimate, with_settings
from lorastudio.core.fit.targets import CARDS, Target
from lorastudio.core.formatting import format_bytes

TERM_COLORS = {"weights": "#4f6bed", "lora": "#9b59b6", "activations": "#e8833a", "loss": "#e0a100",
               "scratch": "#17a2b8", "context": "#8a8f98", "slack": "#b8bcc4", "runtime": "#8a8f98",
               "experts": "#c0392b", "images": "#27ae60"}
DEFAULT_CARD = 3            # 24 GiB: the what-if card while no probe has answered
RAM_TARGET = "This computer's RAM"


def system_ram() -> int:
    import psutil
    return int(psutil.virtual_memory().total)


def step_time_words(seconds: float | None, at_most: bool = False) -> str:
    """ "about 40 s a step", "about 3 min a step"; "up to about …" when it is of a full token budget
    (`at_most`: the data's lengths unknown); "" when unknown."""
    if seconds is None:
        return ""
    if seconds < 1:
        return "under a second a step"
    about = "up to about" if at_most else "about"
    if seconds < 90:
        return f"{about} {seconds:.0f} s a step"
    if seconds < 5400:
        return f"{about} {seconds / 60:.0f} min a step"
    return f"{about} {seconds / 3600:.1f} h a step"


def tokens_words(config: RunConfig, per_example: float | None) -> str:
    t = config.training
    if per_example is None:
        return "the step's token budget, batch × seq_len × accumulation, which a step holds at most"
    return (f"{t.batch_size * t.grad_accum} examples a step at about {min(per_example, t.seq_len):.0f} tokens each, "
            "as the data's first rows suggest")


class MemoryBar(QWidget):
    """One horizontal bar: a segment per term, scaled so the GPU's capacity is a marked line."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("MemoryBar")
        self.setMinimumHeight(14)
        self.setMaximumHeight(14)
        self.terms: list[tuple[str, int]] = []
        self.capacity: int | None = None

    def set_terms(self, estimate: Estimate | None, capacity: int | None) -> None:
        self.terms = [(t.key, t.bytes) for t in estimate.terms] if estimate else []
        self.capacity = capacity
        self.setToolTip("\n".join(f"{t.label}: {format_bytes(t.bytes)} — {t.detail}" for t in estimate.terms)
                        if estimate else "")
        self.update()

    def paintEvent(self, _event) -> None:        # noqa: N802 (Qt's name)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        rect = QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5)
        painter.setPen(QPen(self.palette().mid().color()))
        painter.setBrush(self.palette().base())
        painter.drawRoundedRect(rect, 3, 3)
        total = sum(b for _k, b in self.terms)
        scale = max(total, self.capacity or 0)
        if not scale:
            return
        x = rect.left()
        painter.setPen(Qt.NoPen)
        for key, size in self.terms:
            width = rect.width() * size / scale
            painter.setBrush(QColor(TERM_COLORS.get(key, "#888888")))
            painter.drawRect(QRectF(x, rect.top() + 1, width, rect.height() - 2))
            x += width
        if self.capacity:
            cap_x = rect.left() + rect.width() * self.capacity / scale
            painter.setPen(QPen(QColor(BAD if total > self.capacity else OK), 2))
            painter.drawLine(int(cap_x), int(rect.top()), int(cap_x), int(rect.bottom()))


class FitIndicator(QWidget):
    """The verdict, the bar, the target and the button. `apply_requested(overrides)` asks the page
    to put settings into the form (dotted keys: training.batch_size, quantization, …)."""

    apply_requested = Signal(dict)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("FitIndicator")
        self.config: RunConfig | None = None
        self.info = self.report = None
        self.per_example: float | None = None     # tokens an example of the data holds (None: unknown)
        self.estimate: Estimate | None = None
        self.mode_reason = ""
        self._generation = 0                  # bumped at each change: a late search answer is dropped
        self.verdict = QLabel("Estimated peak: choose a model", objectName="FitVerdict", wordWrap=True)
        self.verdict.setProperty("role", "hint")
        self.target_combo = QComboBox(objectName="FitTarget")
        self.target_combo.setToolTip("The GPU to compare with: the one found, or a common card as a what-if")
        self.fit_button = QPushButton("Make it fit", objectName="MakeItFit", enabled=False)
        self.fit_button.setToolTip("Apply the fastest settings that fit (the same as `lorastudio fit --auto`)")
        self.bar = MemoryBar()
        self.legend = QLabel(objectName="FitLegend")
        self.legend.setProperty("role", "hint")
        self.legend.setWordWrap(True)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.bar, 1)
        row.addWidget(self.target_combo)
        row.addWidget(self.fit_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 4)
        layout.setSpacing(3)
        layout.addWidget(self.verdict)
        layout.addLayout(row)
        layout.addWidget(self.legend)
        self.set_gpus([], probed=False)
        self.target_combo.currentIndexChanged.connect(lambda _i: self.refresh())
        self.fit_button.clicked.connect(self.make_it_fit)
        self.cpu_estimate: CpuEstimate | None = None
        self._timing = False

    # ---- inputs ---------------------------------------------------------------------------
    def set_gpus(self, gpus, probed: bool = True) -> None:
        """The GPUs found (core.devices.GpuInfo); the cards follow as what-if targets. With none
        found (after the probe), the estimate speaks of this computer's RAM and the time a step
        takes on its CPU, and the card selector is hidden (the cards stay what-ifs behind it)."""
        cpu = probed and not gpus
        targets = ([Target(RAM_TARGET, system_ram(), True)] if cpu else []) + \
            [Target(f"cuda:{g.index} — {g.name}", g.total, True) for g in gpus or []] + list(CARDS)
        self.target_combo.blockSignals(True)
        self.target_combo.clear()
        for t in targets:
            label = t.name if t.detected else t.name.split(" (")[0]
            self.target_combo.addItem(f"{label} ({format_bytes(t.bytes)})" if t.detected else label, t)
            self.target_combo.setItemData(self.target_combo.count() - 1, t.name, Qt.ToolTipRole)
        self.target_combo.setCurrentIndex(0 if gpus or cpu else DEFAULT_CARD)
        self.target_combo.setVisible(not cpu)
        self.target_combo.blockSignals(False)
        self.refresh()

    def target(self) -> Target:
        return self.target_combo.currentData()

    def update_form(self, config: RunConfig | None, info, report, per_example: float | None = None) -> None:
        """The form changed: estimate again (milliseconds; on this thread)."""
        self.config, self.info, self.report, self.per_example = config, info, report, per_example
        self.refresh()

    def refresh(self) -> None:
        self._generation += 1
        target = self.target()
        if self.config is None or self.info is None or target is None:
            self.estimate = None
            self._show("Estimated peak: choose a model and valid settings", None, "hint")
            return
        capacity = target.bytes
        if self.on_cpu():
            self._refresh_cpu(capacity)
            return
        config = self.gpu_config()
        mode, self.mode_reason = choose_memory_mode(config, self.info, capacity, report=self.report)
        self.estimate = estimate(config, self.info, mode, report=self.report)
        self._show(self.estimate.verdict(capacity), capacity, "fits" if self.fits() else "nofit")

    def on_cpu(self) -> bool:
        """The estimate is of this computer's RAM and CPU (no GPU found, no what-if card chosen)."""
        target = self.target()
        return target is not None and target.name == RAM_TARGET

    def _refresh_cpu(self, ram: int) -> None:
        config = self.config if self.config.device == "cpu" else with_settings(self.config, {"device": "cpu"})
        self.cpu_estimate = cpu_estimate(config, self.info, self.report, per_example=self.per_example)
        self.estimate = self.cpu_estimate.memory
        need = self.estimate.peak
        fits = need <= ram
        text = (f"Estimated RAM {format_bytes(need)} of {format_bytes(ram)} — "
                + ("fits" if fits else "does not fit"))
        seconds = self.cpu_estimate.seconds_per_step
        if seconds is not None:
            text += f" · {step_time_words(seconds, self.per_example is None)} on this CPU"
        elif not self._timing:          # time this CPU once per machine (a child process, ~3 s), then again
            self._timing = True
            run_in_background(measure_rate, on_done=lambda rate: self.refresh() if rate else None,
                              on_failed=lambda _exc: None)
        self._show(text, ram, "fits" if fits else "cpu_nofit")
        self.fit_button.hide()
        self.bar.setToolTip(self.bar.toolTip() + (
            f"\n\nTime a step: {self.cpu_estimate.flops_per_step:.3g} FLOPs ({tokens_words(self.config, self.per_example)} "
            f"× parameters × 4, or × 6 when layers are recomputed) at this CPU's "
            f"{(self.cpu_estimate.rate or 0) / 1e9:.0f} GFLOP/s, {self.cpu_estimate.rate_source}: an estimate"
            if seconds else ""))

    def gpu_config(self) -> RunConfig:
        """The form's config as it would train on the target GPU (a CPU choice is a what-if too)."""
        return as_on_gpu(self.config)

    def _show(self, text: str, capacity: int | None, state: str) -> None:
        self.verdict.setText(text)
        self.verdict.setProperty("role", {"fits": "value", "nofit": "reason", "cpu_nofit": "reason"}.get(state, "hint"))
        self.verdict.style().polish(self.verdict)
        self.bar.set_terms(self.estimate, capacity)
        self.fit_button.setEnabled(state == "nofit")
        self.fit_button.setVisible(not self.on_cpu())
        if self.estimate is None:
            self.legend.setText("")
            return
        parts = [f"<span style='color:{TERM_COLORS.get(t.key, '#888888')}'>■</span> {t.label.split(' (')[0]} {format_bytes(t.bytes)}"
                 for t in self.estimate.terms if t.bytes] + [f"memory mode {self.estimate.mode}"]
        self.legend.setText(" · ".join(p.replace(" ", "&nbsp;").replace("<span&nbsp;", "<span ") for p in parts))

    def fits(self) -> bool:
        return self.estimate is not None and self.estimate.fits(self.target().bytes)

    def will_not_fit_on_this_gpu(self) -> bool:
        """True when the estimate exceeds a GPU that is really here (not a what-if card)."""
        return (self.estimate is not None and self.target() is not None and self.target().detected
                and self.config is not None and self.config.device != "cpu" and not self.fits())

    # ---- make it fit ----------------------------------------------------------------------
    def make_it_fit(self) -> None:
        if self.config is None or self.info is None:
            return
        generation = self._generation
        self.fit_button.setEnabled(False)
        self.fit_button.setText("Searching…")
        run_in_background(fit_settings, self.gpu_config(), self.info, self.target().bytes,
                          on_done=lambda advice: self._advice(advice, generation),
                          on_failed=lambda exc: self._advice(None, generation))

    def _advice(self, advice: Advice | None, generation: int) -> None:
        self.fit_button.setText("Make it fit")
        if generation != self._generation:
            self.refresh()
            return
        if advice is None or not advice.fits:
            self.legend.setText(advice.reason if advice else "The search failed")
            self.fit_button.setEnabled(False)
            return
        if advice.overrides:
            self.apply_requested.emit(dict(advice.overrides))
        else:
            self.refresh()


def confirm_start(parent: QWidget, indicator: FitIndicator) -> str:
    """Before Start, when the estimate exceeds this machine's GPU: "fit", "start" or "cancel"."""
    box = QMessageBox(QMessageBox.Warning, "It will probably not fit",
                      f"{indicator.verdict.text()}.\n\nTraining would likely run out of GPU memory. "
                      "Make it fit applies the fastest settings that fit; Start anyway keeps yours "
                      "(if memory runs out, the run retries with smaller settings by itself).",
                      QMessageBox.Cancel, parent)
    fit = box.addButton("Make it fit", QMessageBox.AcceptRole)
    start = box.addButton("Start anyway", QMessageBox.DestructiveRole)
    box.setDefaultButton(fit)
    box.exec()
    return "fit" if box.clickedButton() is fit else "start" if box.clickedButton() is start else "cancel"
