"""How the file becomes training examples: format, column mapping switch, loss masking, length,
bad rows and validation. Plain combo boxes whose items carry the config's values."""
from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QGridLayout, QHBoxLayout, QLabel, QLineEdit,
                               QPushButton, QWidget)

from lorastudio.core.config import DataSection, field_help
from lorastudio.core.data.files import SUFFIX_KINDS
from lorastudio.core.data.formats import FORMAT_TITLES, FORMATS

FILE_FILTER = f"Datasets ({' '.join('*' + suffix for suffix in SUFFIX_KINDS)});;All files (*)"
CHOICES = {
    "format": [("auto", "Auto-detect")] + [(f, FORMAT_TITLES[f].capitalize()) for f in FORMATS],
    "train_on": [("completions", "Completions only"), ("all", "Every token")],
    "too_long": [("truncate", "Truncate"), ("drop", "Drop the example")],
    "on_bad_rows": [("error", "Stop with an error"), ("skip", "Skip and count them")],
}
SPLIT, FILE = "split", "file"


def _narrow(combo: QComboBox) -> QComboBox:
    # Let the layout, not the longest item, decide the width: the form column is narrow.
    combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(8)
    return combo


def _combo(name: str) -> QComboBox:
    combo = _narrow(QComboBox(objectName=f"data_{name}", toolTip=field_help(DataSection, name)))
    for value, title in CHOICES[name]:
        combo.addItem(title, value)
    return combo


class DatasetOptions(QWidget):
    changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.combos = {name: _combo(name) for name in CHOICES}
        self.map_box = QCheckBox("Map columns", toolTip=field_help(DataSection, "columns"))
        self.packing_box = QCheckBox("Pack examples (no padding)", objectName="data_packing",
                                     toolTip=field_help(DataSection, "packing"))
        self.packing_box.setChecked(True)
        self.validation_combo = _narrow(QComboBox(objectName="data_validation"))
        self.validation_combo.addItem("Hold out a split (fraction under Training)", SPLIT)
        self.validation_combo.addItem("A separate file", FILE)
        self.validation_combo.setToolTip(field_help(DataSection, "validation_path"))
        self.validation_edit = QLineEdit(placeholderText="validation file", toolTip=field_help(DataSection, "validation_path"))
        self.validation_browse = QPushButton("Browse…")
        self.validation_browse.clicked.connect(self._browse_validation)
        self.last_folder = ""
        self._layout()
        for combo in (*self.combos.values(), self.validation_combo):
            combo.currentIndexChanged.connect(self._changed)
        self.map_box.toggled.connect(self._changed)
        self.packing_box.toggled.connect(self._changed)
        self.validation_edit.editingFinished.connect(self._changed)
        self._changed()

    def _layout(self) -> None:
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setHorizontalSpacing(10)
        c = self.combos
        rows = [(("Format", c["format"]), (None, self.map_box)),
                (("Train on", c["train_on"]), ("Too long", c["too_long"])),
                (("Bad rows", c["on_bad_rows"]), (None, self.packing_box))]
        for r, pairs in enumerate(rows):
            for col, (label, widget) in enumerate(pairs):
                if label:
                    grid.addWidget(QLabel(label, toolTip=widget.toolTip()), r, col * 2)
                if widget:
                    span = 3 if pairs[1] == (None, None) else 1 if label else 2
                    grid.addWidget(widget, r, col * 2 + 1 if label else col * 2, 1, span)
        file_row = QHBoxLayout()
        file_row.addWidget(self.validation_edit, 1)
        file_row.addWidget(self.validation_browse)
        grid.addWidget(QLabel("Validation", toolTip=self.validation_combo.toolTip()), 3, 0)
        grid.addWidget(self.validation_combo, 3, 1, 1, 3)
        grid.addLayout(file_row, 4, 1, 1, 3)
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(3, 1)

    def _changed(self, *_args) -> None:
        separate = self.validation_combo.currentData() == FILE
        self.validation_edit.setVisible(separate)
        self.validation_browse.setVisible(separate)
        self.changed.emit()

    def _browse_validation(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a validation file", self.last_folder, FILE_FILTER)
        if path:
            self.validation_edit.setText(path)
            self._changed()

    def value(self, name: str) -> str:
        return self.combos[name].currentData()

    def validation_path(self) -> str:
        return self.validation_edit.text().strip() if self.validation_combo.currentData() == FILE else ""

    def values(self) -> dict:
        """The DataSection fields these widgets set (no path, columns or split)."""
        return {**{name: self.value(name) for name in CHOICES}, "validation_path": self.validation_path(),
                "packing": self.packing_box.isChecked()}

    def set_values(self, data: dict) -> None:
        for name, combo in self.combos.items():
            index = combo.findData(data.get(name))
            if index >= 0:
                combo.setCurrentIndex(index)
        path = data.get("validation_path") or ""
        self.validation_edit.setText(path)
        self.validation_combo.setCurrentIndex(self.validation_combo.findData(FILE if path else SPLIT))
        self.map_box.setChecked(bool(data.get("columns")))
        self.packing_box.setChecked(bool(data.get("packing", True)))
        self._changed()
