"""Which of the file's columns plays which part: one row per role of the chosen format.

Shown when no format is recognised, or when the user asks for it. The roles come from the format
(prompt + completion, instruction + input + output, …); each offers the preview's columns, with a
guess from the column names preselected.
"""
from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QFormLayout, QFrame, QLabel, QVBoxLayout, QWidget

from lorastudio.core.data.formats import FORMAT_ROLES, OPTIONAL_ROLES, guess_column
from lorastudio.core.config import DataSection, field_help

UNSET = "—"


class ColumnMapping(QFrame):
    changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent, objectName="ColumnMapping")
        self.setToolTip(field_help(DataSection, "columns"))
        self.roles: tuple[str, ...] = ()
        self.columns: list[str] = []
        self.combos: dict[str, QComboBox] = {}
        self.hint = QLabel(wordWrap=True)
        self.hint.setProperty("role", "hint")
        self.form = QFormLayout()
        self.form.setContentsMargins(0, 0, 0, 0)
        self.form.setHorizontalSpacing(10)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 2, 0, 2)
        layout.addWidget(self.hint)
        layout.addLayout(self.form)

    def set_target(self, fmt: str, columns: list[str]) -> None:
        """Show the roles of `fmt` ("" when none is known yet) against the file's `columns`."""
        roles = FORMAT_ROLES.get(fmt, ())
        if roles == self.roles and columns == self.columns:
            return
        kept = self.mapping()
        self.roles, self.columns = roles, list(columns)
        while self.form.rowCount():
            self.form.removeRow(0)
        self.combos = {}
        for role in roles:
            self.form.addRow(f"{role}{'' if role in OPTIONAL_ROLES else ' *'}  ←", self._combo(role, kept))
        self.hint.setText("Which column holds each part? (* must be set)" if roles else
                          "Choose the shape of your data under Format, then pick its columns here.")
        self.changed.emit()

    def _combo(self, role: str, kept: dict) -> QComboBox:
        combo = QComboBox(objectName=f"map_{role}")
        combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(10)
        combo.addItem(UNSET)
        combo.addItems(self.columns)
        guess = kept.get(role) if kept.get(role) in self.columns else guess_column(role, self.columns)
        combo.setCurrentText(guess or UNSET)
        combo.currentTextChanged.connect(lambda _t: self.changed.emit())
        self.combos[role] = combo
        return combo

    def mapping(self) -> dict[str, str]:
        """{our role: their column} for every role that has a column."""
        return {role: c.currentText() for role, c in self.combos.items() if c.currentText() != UNSET}

    def missing(self) -> list[str]:
        return [r for r in self.roles if r not in OPTIONAL_ROLES and r not in self.mapping()]

    def set_mapping(self, mapping: dict[str, str]) -> None:
        for role, column in mapping.items():
            if role in self.combos and column in self.columns:
                self.combos[role].setCurrentText(column)
