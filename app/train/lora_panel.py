"""The LoRA panel: rank (presets 4–256), alpha, dropout, target modules, rsLoRA/DoRA, for a
vision-language model what else is adapted (lora.vision), and the live "Trainable: …" line computed
from shapes as the user changes rank or targets."""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QIntValidator
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel,
                               QVBoxLayout, QWidget)

from lorastudio.app.train.target_picker import TargetPicker
from lorastudio.core.config import LoraSection, field_help
from lorastudio.core.formatting import format_count
from lorastudio.core.models.targets import TargetReport, trainable_line
from lorastudio.core.models.vision import PART_WORDS, part_lora_params, vision_family

VISION_CHOICES = (("Language model only", "none"), ("+ projector", "projector"),
                  ("+ projector and vision tower", "all"))

RANK_PRESETS = (4, 8, 16, 32, 64, 128, 256)


class LoraPanel(QGroupBox):
    changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__("LoRA", parent)
        self._last_rank = 8
        self.vision_info = None         # the ModelInfo of a vision-language model (lora.vision shown), else None
        self._build()
        self._refresh()

    def _build(self) -> None:
        self.rank_combo = QComboBox(editable=True)
        self.rank_combo.addItems([str(r) for r in RANK_PRESETS])
        self.rank_combo.setValidator(QIntValidator(0, 65536, self))
        self.rank_combo.setCurrentText("8")
        self.rank_combo.setToolTip(field_help(LoraSection, "r"))
        self.rank_combo.currentTextChanged.connect(self._rank_changed)
        self.alpha_spin = QDoubleSpinBox(decimals=1, minimum=0.0, maximum=4096.0, value=16.0, singleStep=1.0)
        self.alpha_spin.setToolTip(field_help(LoraSection, "alpha"))
        self.dropout_spin = QDoubleSpinBox(decimals=2, minimum=0.0, maximum=1.0, value=0.05, singleStep=0.05)
        self.dropout_spin.setToolTip(field_help(LoraSection, "dropout"))
        self.rslora_box = QCheckBox("rsLoRA")
        self.rslora_box.setToolTip(field_help(LoraSection, "use_rslora"))
        self.dora_box = QCheckBox("DoRA")
        self.dora_box.setToolTip(field_help(LoraSection, "use_dora"))
        self.targets = TargetPicker()
        self.vision_combo = QComboBox(objectName="LoraVision")
        for text, value in VISION_CHOICES:
            self.vision_combo.addItem(text, value)
        self.vision_combo.setToolTip(field_help(LoraSection, "vision"))
        self.trainable_label = QLabel("Trainable: —", wordWrap=True)    # wraps: lora.vision's part makes it long
        self.trainable_label.setProperty("role", "trainable")
        self.error_label = QLabel(wordWrap=True)
        self.error_label.setProperty("role", "reason")
        self.error_label.hide()

        for widget in (self.rank_combo, self.alpha_spin, self.dropout_spin):
            widget.setMinimumWidth(60)
        numbers = QHBoxLayout()
        for label, widget in (("Rank", self.rank_combo), ("Alpha", self.alpha_spin), ("Dropout", self.dropout_spin)):
            caption = QLabel(label)
            caption.setToolTip(widget.toolTip())
            numbers.addWidget(caption)
            numbers.addWidget(widget, 1)
            numbers.addSpacing(6)
        toggles = QHBoxLayout()
        toggles.addWidget(self.rslora_box)
        toggles.addWidget(self.dora_box)
        toggles.addStretch(1)
        form = QFormLayout()
        form.addRow("Targets", self.targets)
        form.addRow("Vision", self.vision_combo)
        self.vision_label = form.labelForField(self.vision_combo)
        self.vision_label.setToolTip(self.vision_combo.toolTip())
        self._show_vision()
        layout = QVBoxLayout(self)
        layout.addLayout(numbers)
        layout.addLayout(form)
        layout.addLayout(toggles)
        layout.addWidget(self.trainable_label)
        layout.addWidget(self.error_label)
        for signal in (self.alpha_spin.valueChanged, self.dropout_spin.valueChanged, self.rslora_box.toggled,
                       self.dora_box.toggled, self.targets.changed, self.vision_combo.currentIndexChanged):
            signal.connect(self._refresh)

    def _rank_changed(self, text: str) -> None:
        # Keep the common alpha = 2·r pairing when the user had it: 8/16 → 32/64.
        rank = self.rank()
        if rank and self.alpha_spin.value() == 2 * self._last_rank:
            self.alpha_spin.blockSignals(True)
            self.alpha_spin.setValue(2 * rank)
            self.alpha_spin.blockSignals(False)
        if rank:
            self._last_rank = rank
        self._refresh()

    def rank(self) -> int | None:
        text = self.rank_combo.currentText().strip()
        return int(text) if text.isdigit() else None

    def set_report(self, report: TargetReport | None) -> None:
        self.targets.set_report(report)
        self._refresh()

    def set_vision(self, info) -> None:
        """The model read (ModelInfo or None): a vision-language model shows the lora.vision choice."""
        self.vision_info = info if info is not None and vision_family(info) is not None else None
        self._show_vision()
        self._refresh()

    def _show_vision(self) -> None:
        shown = self.vision_info is not None
        self.vision_combo.setVisible(shown)
        self.vision_label.setVisible(shown)
        if shown:
            counts = self.vision_info.vision["parts"]
            for i, (_text, value) in enumerate(VISION_CHOICES):
                adds = {"projector": ("projector",), "all": ("projector", "vision")}.get(value, ())
                layers = sum(counts.get(p, 0) for p in adds)
                self.vision_combo.setItemData(i, f"adds {layers} linear layers" if adds else
                                              "LoRA on the language model only", Qt.ToolTipRole)

    def vision(self) -> str:
        return self.vision_combo.currentData()

    def values(self) -> dict:
        rank = self.rank()
        return {"r": rank if rank is not None else self.rank_combo.currentText(), "alpha": self.alpha_spin.value(),
                "dropout": self.dropout_spin.value(), "targets": self.targets.selection(),
                "use_rslora": self.rslora_box.isChecked(), "use_dora": self.dora_box.isChecked(),
                "vision": self.vision()}

    def set_values(self, v: dict) -> None:
        if "r" in v:
            self.rank_combo.setCurrentText(str(v["r"]))
            self._last_rank = self.rank() or 8
        self.alpha_spin.setValue(float(v.get("alpha", self.alpha_spin.value())))
        self.dropout_spin.setValue(float(v.get("dropout", self.dropout_spin.value())))
        self.rslora_box.setChecked(bool(v.get("use_rslora", False)))
        self.dora_box.setChecked(bool(v.get("use_dora", False)))
        if "targets" in v:
            self.targets.set_selection(v["targets"])
        if "vision" in v:
            self.vision_combo.setCurrentIndex(max(0, self.vision_combo.findData(v["vision"])))
        self._refresh()

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if self.rank() is None:
            out.append(("lora.r", "Rank: type a whole number, e.g. 8 or 16."))
        if self.targets.report is not None and self.targets.selection() == []:
            out.append(("lora.targets", "Targets: tick at least one module, or All linear layers."))
        return out

    def _refresh(self) -> None:
        report, rank, dora = self.targets.report, self.rank(), self.dora_box.isChecked()
        selection = self.targets.selection()
        if report is None or not rank or not selection:
            self.trainable_label.setText("Trainable: —")
        else:
            self.trainable_label.setText(self._trainable_line(report, selection, rank, dora))
            self.targets.update_tooltips(rank, dora)
        self.changed.emit()

    def _trainable_line(self, report: TargetReport, selection, rank: int, dora: bool) -> str:
        """The targets' line, with what lora.vision adds (the projector's, the vision tower's layers)."""
        adds = {"projector": ("projector",), "all": ("projector", "vision")}.get(self.vision(), ())
        if self.vision_info is None or not adds:
            return trainable_line(report, selection, rank, dora)
        extra_by_part = part_lora_params(self.vision_info, rank, dora)
        extra = sum(extra_by_part[p] for p in adds)
        lora = report.lora_params(selection, rank, dora) + extra
        total = report.total_params + lora
        pct = 100.0 * lora / total if total else 0.0
        return (f"Trainable: {format_count(lora)} of {format_count(total)} parameters ({pct:.2f} %), "
                f"{format_count(extra)} of them in the {' and '.join(PART_WORDS[p] for p in adds)}")

    def show_problems(self, messages: list[str]) -> None:
        self.error_label.setText("\n".join(messages))
        self.error_label.setVisible(bool(messages))
