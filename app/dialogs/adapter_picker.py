"""Choose a run and which of its adapters: the final one or a saved checkpoint (export and merge)."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QFormLayout, QWidget

from lorastudio.core.runs.checkpoints import adapter_steps
from lorastudio.core.runs.listing import runs_with_adapters

FINAL = None


class AdapterPicker(QWidget):
    changed = Signal()

    def __init__(self, run_dir: Path | None, runs_root: Path | None, parent: QWidget | None = None):
        super().__init__(parent)
        self.run_combo, self.checkpoint_combo = QComboBox(), QComboBox()
        self.run_combo.setMinimumContentsLength(28)
        self.run_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        runs = runs_with_adapters(Path(runs_root)) if runs_root else []
        if run_dir is not None and Path(run_dir) not in runs:
            runs.insert(0, Path(run_dir))
        for run in runs:
            self.run_combo.addItem(run.name, str(run))
        if run_dir is not None:
            self.run_combo.setCurrentIndex(self.run_combo.findData(str(run_dir)))
        layout = QFormLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addRow("Run", self.run_combo)
        layout.addRow("Adapter", self.checkpoint_combo)
        self.run_combo.currentIndexChanged.connect(self._fill_checkpoints)
        self.checkpoint_combo.currentIndexChanged.connect(lambda _i: self.changed.emit())
        self._fill_checkpoints()

    @property
    def run_dir(self) -> Path | None:
        data = self.run_combo.currentData()
        return Path(data) if data else None

    @property
    def checkpoint(self) -> int | None:
        return self.checkpoint_combo.currentData()

    def _fill_checkpoints(self) -> None:
        self.checkpoint_combo.blockSignals(True)
        self.checkpoint_combo.clear()
        run = self.run_dir
        if run is not None:
            for step in adapter_steps(run):
                self.checkpoint_combo.addItem("Final adapter" if step is FINAL else f"Checkpoint at step {step}", step)
        self.checkpoint_combo.blockSignals(False)
        self.changed.emit()
