"""Export adapter…: a run's final adapter or a checkpoint, as a folder or one zip file."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (QCheckBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout,
                               QLabel, QLineEdit, QMessageBox, QPushButton, QVBoxLayout, QWidget)

from lorastudio.app.dialogs.adapter_picker import AdapterPicker
from lorastudio.app.thread_pool import run_in_background
from lorastudio.core.runs.export import ExportError, export_adapter


class ExportDialog(QDialog):
    def __init__(self, run_dir: Path | None, runs_root: Path | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Export adapter")
        self.setMinimumWidth(560)
        self.result_path: Path | None = None
        self.picker = AdapterPicker(run_dir, runs_root)
        self.out_edit = QLineEdit(placeholderText="A new or empty folder")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.out_edit, 1)
        row.addWidget(browse)
        self.zip_box = QCheckBox("As one .zip file")
        form = QFormLayout()
        form.addRow(self.picker)
        form.addRow("Output", row)
        form.addRow("", self.zip_box)
        self.note = QLabel("The adapter (adapter_config.json, adapter_model.safetensors), the tokenizer and a "
                           "model card (README.md) are written; the run folder is not changed.", wordWrap=True)
        self.note.setProperty("role", "hint")
        self.status = QLabel(wordWrap=True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.status.hide()
        self.buttons = QDialogButtonBox(QDialogButtonBox.Close)
        self.export_button = self.buttons.addButton("Export", QDialogButtonBox.AcceptRole)
        self.open_button = self.buttons.addButton("Open folder", QDialogButtonBox.ActionRole)
        self.open_button.hide()
        self.export_button.clicked.disconnect()
        self.export_button.clicked.connect(self.start_export)
        self.open_button.clicked.connect(self._open)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.note)
        layout.addWidget(self.status)
        layout.addWidget(self.buttons)
        if run_dir is not None:
            self.out_edit.setText(str(Path.home() / f"{Path(run_dir).name}-adapter"))
        self.out_edit.textChanged.connect(self._update)
        self.picker.changed.connect(self._update)
        self._update()

    def _update(self) -> None:
        ready = self.picker.run_dir is not None and self.picker.checkpoint_combo.count() > 0 \
            and bool(self.out_edit.text().strip())
        self.export_button.setEnabled(ready)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export into folder", str(Path.home()))
        if folder:
            self.out_edit.setText(folder)

    def start_export(self, overwrite: bool = False) -> None:
        out = Path(self.out_edit.text().strip()).expanduser()
        self.export_button.setEnabled(False)
        self._show("Exporting…", "hint")
        run_in_background(export_adapter, self.picker.run_dir, out, self.picker.checkpoint,
                          self.zip_box.isChecked(), overwrite,
                          on_done=self._done, on_failed=lambda exc: self._failed(exc, out))

    def _failed(self, exc: Exception, out: Path) -> None:
        self.export_button.setEnabled(True)
        if isinstance(exc, ExportError) and ("not empty" in exc.message or "already exists" in exc.message):
            answer = QMessageBox.question(self, "Replace?", f"{out} is not empty.\n\nReplace its contents "
                                          "with the exported adapter?", QMessageBox.Yes | QMessageBox.No,
                                          QMessageBox.No)
            if answer == QMessageBox.Yes:
                self.start_export(overwrite=True)
                return
            self._show("Nothing was written. Choose an empty or new folder.", "notice")
            return
        message = f"{exc.message}\nWhat to do: {exc.hint}" if isinstance(exc, ExportError) else str(exc)
        self._show(message, "error")

    def _done(self, path: Path) -> None:
        self.result_path = Path(path)
        self._show(f"Exported to {path}", "notice")
        self.open_button.show()
        self.export_button.setEnabled(True)

    def _show(self, text: str, role: str) -> None:
        self.status.setText(text)
        self.status.setProperty("role", role)
        self.status.style().polish(self.status)
        self.status.show()

    def _open(self) -> None:
        if self.result_path is not None:
            target = self.result_path if self.result_path.is_dir() else self.result_path.parent
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(target)))
