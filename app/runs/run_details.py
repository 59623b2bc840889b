"""The selected run in words: its status, figures, and for a failure what happened and what to do,
with "Resume with suggested settings" for an out-of-memory error."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QFrame, QGridLayout, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from lorastudio.app.runs.runs_columns import STATUS_COLORS, describe_overrides, facts, status_text
from lorastudio.core.runs.listing import RunSummary
from lorastudio.core.runs.resume import suggested_overrides


class RunDetails(QFrame):
    resume_requested = Signal(object, object)        # checkpoint step or None (latest), overrides dict

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("Card")
        self.run: RunSummary | None = None
        self.overrides: dict = {}                       # what "Resume with suggested settings" applies
        self.title = QLabel("No run selected", objectName="BannerTitle", wordWrap=True)
        self.status = QLabel("", wordWrap=True)
        self.grid = QGridLayout()
        self.grid.setHorizontalSpacing(10)
        self.grid.setVerticalSpacing(3)
        self.values: dict[str, QLabel] = {}
        for row, (label, _value) in enumerate(facts(_EMPTY)):
            key = QLabel(label)
            key.setProperty("role", "key")
            value = QLabel("—", wordWrap=True, textInteractionFlags=Qt.TextSelectableByMouse)
            self.grid.addWidget(key, row, 0, Qt.AlignTop)
            self.grid.addWidget(value, row, 1)
            self.values[label] = value
        self.grid.setColumnStretch(1, 1)
        self.error = QLabel(wordWrap=True, textInteractionFlags=Qt.TextSelectableByMouse)
        self.error.setProperty("role", "error")
        self.hint = QLabel(wordWrap=True, textInteractionFlags=Qt.TextSelectableByMouse)
        self.hint.setProperty("role", "notice")
        self.suggested = QPushButton("Resume with suggested settings", objectName="SuggestedButton")
        self.suggested.clicked.connect(self._resume_suggested)
        self.suggested_note = QLabel(wordWrap=True)
        self.suggested_note.setProperty("role", "hint")
        self.checkpoint = QComboBox()
        self.checkpoint.setToolTip("The checkpoint Resume continues from")
        self._build()
        self.show_run(None)

    def _build(self) -> None:
        resume_row = QHBoxLayout()
        resume_row.addWidget(QLabel("Resume from"))
        resume_row.addWidget(self.checkpoint, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 10, 12, 10)
        layout.setSpacing(6)
        layout.addWidget(self.title)
        layout.addWidget(self.status)
        layout.addLayout(self.grid)
        layout.addLayout(resume_row)
        layout.addWidget(self.error)
        layout.addWidget(self.hint)
        layout.addWidget(self.suggested, 0, Qt.AlignLeft)
        layout.addWidget(self.suggested_note)
        layout.addStretch(1)

    def show_run(self, run: RunSummary | None, selected: int = 0) -> None:
        self.run = run
        self.title.setText(run.name if run else f"{selected} runs selected" if selected > 1 else "No run selected")
        color = STATUS_COLORS.get(run.status, "#888888") if run else "#888888"
        self.status.setText(f"<b style='color:{color}'>{status_text(run)}</b>" if run else
                            "Their loss curves are overlaid on the left; select one run for its details "
                            "and actions." if selected > 1 else
                            "Select a run to see its details; select several to compare their curves.")
        for label, value in facts(run or _EMPTY):
            self.values[label].setText(value if run else "—")
        error = run.error if run else None
        self.error.setText(f"{error.get('message', '')}" if error else "")
        self.error.setVisible(bool(error))
        hint = error.get("hint") if error else ""
        self.hint.setText(f"What to do: {hint}" if hint else "")
        self.hint.setVisible(bool(hint))
        overrides = suggested_overrides(run.path, error) if run and run.can_resume else {}
        self.overrides = overrides
        self.suggested.setVisible(bool(overrides))
        self.suggested_note.setVisible(bool(overrides))
        if overrides:
            where = f"step {run.checkpoints[-1]}" if run.checkpoints else "the beginning (no checkpoint yet)"
            self.suggested_note.setText(f"Resumes from {where} with {describe_overrides(overrides)}; "
                                        "config.yaml keeps the change, config.previous.yaml the old settings.")
            self.suggested.setToolTip(self.suggested_note.text())
        self._fill_checkpoints(run)

    def _fill_checkpoints(self, run: RunSummary | None) -> None:
        previous = self.checkpoint.currentData()
        self.checkpoint.blockSignals(True)
        self.checkpoint.clear()
        steps = run.checkpoints if run else []
        self.checkpoint.addItem(f"latest checkpoint (step {steps[-1]})" if steps else
                                "the beginning (no checkpoint)", None)
        for step in reversed(steps[:-1]):
            self.checkpoint.addItem(f"step {step}", step)
        index = self.checkpoint.findData(previous)
        self.checkpoint.setCurrentIndex(max(index, 0))
        self.checkpoint.blockSignals(False)
        self.checkpoint.setEnabled(bool(run and run.can_resume and len(steps) > 1))

    def chosen_checkpoint(self) -> int | None:
        return self.checkpoint.currentData()

    def _resume_suggested(self) -> None:
        if self.run and self.overrides:
            self.resume_requested.emit(None, dict(self.overrides))


_EMPTY = RunSummary(path=Path("."), name="", status="")
