"""Target modules as checkboxes, grouped attention / MLP / shared experts / experts / router /
other (the last three for mixtures of experts), plus the "all linear" shortcut (which leaves the
routers out, as PEFT's does).

Built from a TargetReport (the model's linear modules read from its safetensors headers). Each
box's tooltip shows the arithmetic: layers × r·(d_in + d_out) parameters at the current rank.
"""
from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QCheckBox, QGridLayout, QLabel, QVBoxLayout, QWidget

from lorastudio.core.config import LoraSection, field_help
from lorastudio.core.models.targets import TargetReport
from lorastudio.core.formatting import format_count

GROUP_TITLES = {"attention": "Attention", "mlp": "MLP", "shared_experts": "Shared experts", "experts": "Experts",
                "router": "Router", "other": "Other"}
PREFERRED = (["q_proj", "v_proj"], ["c_attn"], ["query_key_value"], ["qkv_proj"], ["Wqkv"])


class TargetPicker(QWidget):
    changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.report: TargetReport | None = None
        self.boxes: dict[str, QCheckBox] = {}
        self._wanted: list[str] | str = ["q_proj", "v_proj"]
        self.all_linear = QCheckBox("All linear layers")
        self.all_linear.setToolTip(field_help(LoraSection, "targets"))
        self.all_linear.toggled.connect(self._all_linear_toggled)
        self.placeholder = QLabel("Choose a model to see its linear modules.")
        self.placeholder.setProperty("role", "hint")
        self.grid_host = QWidget()
        self.grid = QGridLayout(self.grid_host)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setVerticalSpacing(2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.all_linear)
        layout.addWidget(self.placeholder)
        layout.addWidget(self.grid_host)

    def set_report(self, report: TargetReport | None) -> None:
        """Rebuild the boxes for a new model, keeping the user's selection where it still applies."""
        wanted = self.selection() if self.report is not None else self._wanted
        self.report = report
        for box in self.boxes.values():
            box.deleteLater()
        for i in reversed(range(self.grid.count())):
            self.grid.itemAt(i).widget().deleteLater()
        self.boxes = {}
        self.placeholder.setVisible(report is None)
        if report is not None:
            self._fill(report)
        self.set_selection(wanted)

    def _fill(self, report: TargetReport) -> None:
        col = 0
        for group, targets in report.grouped().items():
            if not targets:
                continue
            title = QLabel(GROUP_TITLES[group])
            title.setProperty("role", "key")
            self.grid.addWidget(title, 0, col)
            for row, target in enumerate(targets, start=1):
                box = QCheckBox(target.name)
                box.setObjectName(f"target_{target.name}")
                box.toggled.connect(lambda _on: self.changed.emit())
                self.boxes[target.name] = box
                self.grid.addWidget(box, row, col)
            col += 1
        self.grid.setColumnStretch(col, 1)

    def set_selection(self, selection: list[str] | str) -> None:
        self._wanted = selection
        if self.report is None:
            self.all_linear.setChecked(selection == "all-linear")
            return
        names = self.report.names()
        chosen = [] if selection == "all-linear" else [t for t in selection if t in names]
        if selection != "all-linear" and not chosen:
            chosen = next((p for p in PREFERRED if all(n in names for n in p)), names[:1])
        for name, box in self.boxes.items():
            box.blockSignals(True)
            box.setChecked(name in chosen)
            box.blockSignals(False)
        self.all_linear.blockSignals(True)
        self.all_linear.setChecked(selection == "all-linear")
        self.all_linear.blockSignals(False)
        self._all_linear_toggled(selection == "all-linear")

    def _all_linear_toggled(self, on: bool) -> None:
        for box in self.boxes.values():
            box.setEnabled(not on)
        self.changed.emit()

    def selection(self) -> list[str] | str:
        if self.all_linear.isChecked():
            return "all-linear"
        if self.report is None:
            return self._wanted
        return [name for name, box in self.boxes.items() if box.isChecked()]

    def update_tooltips(self, r: int, dora: bool) -> None:
        if self.report is None:
            return
        for target in self.report.targets:
            box = self.boxes.get(target.name)
            if box is not None:
                experts = f"{target.experts} experts × " if target.experts > 1 else ""
                box.setToolTip(f"{target.layers} layers × {experts}{r}·({target.d_in} + {target.d_out})"
                               f" = {format_count(target.lora_params(r, dora))} parameters"
                               + (" (with DoRA magnitudes)" if dora else ""))
