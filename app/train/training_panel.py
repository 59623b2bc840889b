"""Training settings: length (epochs or max steps), optimiser, batch shape, schedule, checkpoints,
the memory mode and the method.

Spin boxes accept values the config refuses (a sequence length of 0, warm-up longer than the run)
so that the form can say what is wrong, next to the field, instead of silently clamping.
"""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QButtonGroup, QComboBox, QDoubleSpinBox, QGridLayout, QGroupBox, QLabel, QLineEdit,
                               QRadioButton, QSpinBox, QVBoxLayout, QWidget)

from lorastudio.app.train.train_form import parse_number
from lorastudio.core.config import (MEMORY_MODE_HELP, MEMORY_MODES, METHODS, SCHEDULES, DataSection, TrainingSection,
                                     field_help)

BIG = 10_000_000
# The Memory choice's words; the item's data is the config value, its tooltip the mode's help.
MEMORY_TITLES = {"auto": "auto — the fastest that fits", "none": "none — fastest, most memory",
                 "checkpoint": "checkpoint — less memory, slower", "lean": "lean — least GPU memory"}


def _spin(value: int, tip: str, maximum: int = BIG, minimum: int = 0) -> QSpinBox:
    spin = QSpinBox(minimum=minimum, maximum=maximum, value=value)
    spin.setToolTip(tip)
    spin.setGroupSeparatorShown(True)
    return spin


class TrainingPanel(QGroupBox):
    changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Training", parent)
        h = lambda name: field_help(TrainingSection, name)  # noqa: E731
        self.epochs_radio = QRadioButton("Epochs")
        self.steps_radio = QRadioButton("Max steps")
        self.epochs_radio.setToolTip(h("epochs"))
        self.steps_radio.setToolTip(h("max_steps"))
        self.length_group = QButtonGroup(self)
        self.length_group.addButton(self.epochs_radio)
        self.length_group.addButton(self.steps_radio)
        self.steps_radio.setChecked(True)
        self.epochs_spin = QDoubleSpinBox(decimals=1, minimum=0.0, maximum=1000.0, value=1.0, singleStep=0.5)
        self.epochs_spin.setToolTip(h("epochs"))
        self.widgets: dict[str, QWidget] = {
            "training.epochs": self.epochs_spin,
            "training.max_steps": _spin(200, h("max_steps")),
            "training.lr": QLineEdit("2e-4", toolTip=h("lr")),
            "training.batch_size": _spin(2, h("batch_size"), 4096),
            "training.grad_accum": _spin(4, h("grad_accum"), 4096),
            "training.seq_len": _spin(512, h("seq_len"), 1_048_576),
            "training.warmup_steps": _spin(10, h("warmup_steps")),
            "training.schedule": QComboBox(toolTip=h("schedule")),
            "data.validation_split": QDoubleSpinBox(decimals=2, minimum=0.0, maximum=1.0, value=0.1, singleStep=0.05,
                                                    toolTip=field_help(DataSection, "validation_split")),
            "training.save_every": _spin(100, h("save_every")),
            "training.seed": _spin(0, h("seed"), 2**31 - 1),
            "training.memory_mode": QComboBox(objectName="training_memory_mode", toolTip=h("memory_mode")),
            "training.method": QComboBox(toolTip=h("method")),
            "training.beta": QDoubleSpinBox(decimals=3, minimum=0.0, maximum=100.0, value=0.1, singleStep=0.05,
                                            toolTip=h("beta")),
            "training.orpo_lambda": QDoubleSpinBox(decimals=3, minimum=0.0, maximum=100.0, value=0.1,
                                                   singleStep=0.05, toolTip=h("orpo_lambda")),
        }
        self.widgets["training.schedule"].addItems(SCHEDULES)
        self.widgets["training.method"].addItems(METHODS)
        memory = self.widgets["training.memory_mode"]
        for mode in MEMORY_MODES:
            memory.addItem(MEMORY_TITLES[mode], mode)
            memory.setItemData(memory.count() - 1, f"{mode}: {MEMORY_MODE_HELP[mode]}", Qt.ToolTipRole)
        self.strength_label = QLabel()
        for widget in (*self.widgets.values(), self.epochs_spin):
            widget.setMinimumWidth(64)          # the layout, not the longest possible number, sets the width
        self.summary_label = QLabel()
        self.summary_label.setProperty("role", "hint")
        self.error_label = QLabel(wordWrap=True)
        self.error_label.setProperty("role", "reason")
        self.error_label.hide()
        self._layout()
        self._connect()
        self._mode_changed()

    def _layout(self) -> None:
        w = self.widgets
        grid = QGridLayout()
        grid.setHorizontalSpacing(10)
        grid.addWidget(self.steps_radio, 0, 0)
        grid.addWidget(w["training.max_steps"], 0, 1)
        grid.addWidget(self.epochs_radio, 0, 2)
        grid.addWidget(self.epochs_spin, 0, 3)
        rows = [("Learning rate", "training.lr", "Schedule", "training.schedule"),
                ("Batch size", "training.batch_size", "Grad. accumulation", "training.grad_accum"),
                ("Sequence length", "training.seq_len", "Warm-up steps", "training.warmup_steps"),
                ("Validation split", "data.validation_split", "Save every", "training.save_every")]
        for r, (l1, k1, l2, k2) in enumerate(rows, start=1):
            for c, (label, key) in enumerate(((l1, k1), (l2, k2))):
                caption = QLabel(label, toolTip=w[key].toolTip())
                grid.addWidget(caption, r, c * 2)
                grid.addWidget(w[key], r, c * 2 + 1)
        grid.addWidget(QLabel("Memory", toolTip=w["training.memory_mode"].toolTip()), 5, 0)
        grid.addWidget(w["training.memory_mode"], 5, 1, 1, 3)
        grid.addWidget(QLabel("Seed", toolTip=w["training.seed"].toolTip()), 6, 0)
        grid.addWidget(w["training.seed"], 6, 1)
        grid.addWidget(QLabel("Method", toolTip=w["training.method"].toolTip()), 6, 2)
        grid.addWidget(w["training.method"], 6, 3)
        grid.addWidget(self.strength_label, 7, 2)          # DPO's β or ORPO's λ, under the method
        grid.addWidget(w["training.beta"], 7, 3)
        grid.addWidget(w["training.orpo_lambda"], 7, 3)
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(3, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(grid)
        layout.addWidget(self.summary_label)
        layout.addWidget(self.error_label)

    def _connect(self) -> None:
        self.steps_radio.toggled.connect(self._mode_changed)
        self.epochs_spin.valueChanged.connect(self._changed)
        for widget in self.widgets.values():
            for name in ("valueChanged", "textChanged", "currentIndexChanged"):
                if hasattr(widget, name) and not (name == "textChanged" and isinstance(widget, (QSpinBox, QDoubleSpinBox))):
                    getattr(widget, name).connect(self._changed)
                    break

    def _mode_changed(self, *_args) -> None:
        steps = self.steps_radio.isChecked()
        self.widgets["training.max_steps"].setEnabled(steps)
        self.epochs_spin.setEnabled(not steps)
        self._changed()

    def _changed(self, *_args) -> None:
        v = self.values()["training"]
        # e.g. 2 × 4 = 8 examples per optimizer step, ≤ 8 × 512 = 4,096 tokens (pairs: two sequences each).
        batch = v["batch_size"] * v["grad_accum"]
        pairs = v["method"] != "sft"
        self._show_strength(v["method"])
        self.summary_label.setText(f"Effective batch {v['batch_size']} × {v['grad_accum']} = {batch} "
                                   f"{'pairs' if pairs else 'examples'} per step · up to "
                                   f"{batch * v['seq_len'] * (2 if pairs else 1):,} tokens")
        self.changed.emit()

    def _show_strength(self, method: str) -> None:
        """DPO's β or ORPO's λ next to the method; nothing for SFT."""
        beta, lam = self.widgets["training.beta"], self.widgets["training.orpo_lambda"]
        beta.setVisible(method == "dpo")
        lam.setVisible(method == "orpo")
        self.strength_label.setText({"dpo": "DPO β", "orpo": "ORPO λ"}.get(method, ""))
        self.strength_label.setVisible(method != "sft")
        self.strength_label.setToolTip((beta if method == "dpo" else lam).toolTip())

    def values(self) -> dict:
        """What the widgets show, RunConfig-shaped: {"training": {...}, "data": {"validation_split": …}}."""
        out: dict[str, dict] = {"training": {}, "data": {}}
        for key, widget in self.widgets.items():
            section, name = key.split(".")
            if isinstance(widget, QLineEdit):
                value, _ = parse_number(widget.text(), key)
            elif isinstance(widget, QComboBox):         # the item's data where it has one (Memory)
                value = widget.currentData() if widget.currentData() is not None else widget.currentText()
            else:
                value = widget.value()
            out[section][name] = value
        if not self.steps_radio.isChecked():
            out["training"]["max_steps"] = 0
        return out

    def problems(self) -> list[tuple[str, str]]:
        _, problem = parse_number(self.widgets["training.lr"].text(), "training.lr")
        return [problem] if problem else []

    def set_values(self, v: dict) -> None:
        t = v.get("training", {})
        for key, widget in self.widgets.items():
            section, name = key.split(".")
            value = v.get(section, {}).get(name)
            if value is None:
                continue
            if isinstance(widget, QLineEdit):
                widget.setText(f"{value:g}" if isinstance(value, float) else str(value))
            elif isinstance(widget, QComboBox):
                index = widget.findData(value)
                index = index if index >= 0 else widget.findText(str(value))
                if index >= 0:                          # a value it does not offer leaves it as it was
                    widget.setCurrentIndex(index)
            else:
                widget.setValue(value)
        if "max_steps" in t:
            (self.steps_radio if t["max_steps"] else self.epochs_radio).setChecked(True)
            if not t["max_steps"]:
                self.widgets["training.max_steps"].setValue(200)

    def show_problems(self, problems) -> None:
        keys = {p.key for p in problems}
        for key, widget in self.widgets.items():
            widget.setProperty("invalid", key in keys)
            widget.style().polish(widget)
        self.error_label.setText("\n".join(p.message for p in problems))
        self.error_label.setVisible(bool(problems))
