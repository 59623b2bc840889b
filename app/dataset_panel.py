"""The Dataset panel: a file, a preview of its first rows and the number of examples.

The reading lives in `dataset_preview.py` and runs on the thread pool. Format detection and the
token inspector arrive with the datasets issue; `extra_row` is where their controls will go.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtGui import QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QFileDialog, QGroupBox, QHBoxLayout, QHeaderView,
                               QLabel, QLineEdit, QPushButton, QTableView, QVBoxLayout, QWidget)

from lorastudio.app.background import run_in_background
from lorastudio.app.dataset_preview import DatasetPreview, read_preview
from lorastudio.core.config import DataSection, field_help

FILE_FILTER = "Datasets (*.jsonl *.ndjson *.json *.txt *.csv);;All files (*)"


class DatasetPanel(QGroupBox):
    changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Dataset", parent)
        self.preview: DatasetPreview | None = None
        self.last_folder = str(Path.home())
        self._request = 0
        self.setAcceptDrops(True)
        self._build()

    def _build(self) -> None:
        self.path_edit = QLineEdit(placeholderText="A JSONL file with one example a line, e.g. {\"text\": …}")
        self.path_edit.setToolTip(field_help(DataSection, "path"))
        self.path_edit.editingFinished.connect(lambda: self.load(self.path_edit.text()))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self.browse)
        row = QHBoxLayout()
        row.addWidget(self.path_edit, 1)
        row.addWidget(browse)

        self.field_combo = QComboBox()
        self.field_combo.setToolTip(field_help(DataSection, "text_field"))
        self.field_combo.addItem("text")
        self.field_combo.currentTextChanged.connect(lambda _t: self.changed.emit())
        self.count_label = QLabel("")
        self.count_label.setProperty("role", "hint")
        self.extra_row = QHBoxLayout()
        self.extra_row.addWidget(QLabel("Text field"))
        self.extra_row.addWidget(self.field_combo)
        self.extra_row.addStretch(1)
        self.extra_row.addWidget(self.count_label)

        self.error_label = QLabel(wordWrap=True)
        self.error_label.setProperty("role", "error")
        self.error_label.hide()
        self.model = QStandardItemModel(self)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.table.setMinimumHeight(120)
        self.table.setMaximumHeight(170)
        self.table.hide()

        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addLayout(self.extra_row)
        layout.addWidget(self.error_label)
        layout.addWidget(self.table)

    def browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a dataset", self.last_folder, FILE_FILTER)
        if path:
            self.load(path)

    def path(self) -> str:
        return self.path_edit.text().strip()

    def text_field(self) -> str:
        return self.field_combo.currentText() or "text"

    def load(self, path: str) -> None:
        path = path.strip()
        if self.preview is not None and path == self.preview.path:
            return
        self.path_edit.setText(path)
        self._request += 1
        self.preview = None
        if not path:
            self._show(None)
            return
        self.last_folder = str(Path(path).expanduser().parent)
        request = self._request
        self.count_label.setText("Reading…")
        run_in_background(read_preview, path, on_done=lambda p: self._loaded(request, p))

    def _loaded(self, request: int, preview: DatasetPreview) -> None:
        if request == self._request:
            self.preview = preview
            self._show(preview)

    def _show(self, preview: DatasetPreview | None) -> None:
        self.model.clear()
        ok = preview is not None and preview.ok
        self.error_label.setVisible(preview is not None and not preview.ok)
        self.error_label.setText(preview.error if preview and not preview.ok else "")
        self.table.setVisible(ok)
        self.count_label.setText(f"{preview.count:,} examples · {preview.format.upper()}" if ok else "")
        if ok:
            self.model.setHorizontalHeaderLabels(preview.columns)
            for row in preview.rows:
                self.model.appendRow([QStandardItem(cell) for cell in row])
            self._fill_fields(preview.columns)
        self.path_edit.setProperty("invalid", preview is not None and not preview.ok)
        self.path_edit.style().polish(self.path_edit)
        self.changed.emit()

    def _fill_fields(self, columns: list[str]) -> None:
        current = self.field_combo.currentText()
        self.field_combo.blockSignals(True)
        self.field_combo.clear()
        self.field_combo.addItems(columns)
        index = self.field_combo.findText(current if current in columns else "text")
        self.field_combo.setCurrentIndex(max(0, index))
        self.field_combo.blockSignals(False)

    def problem(self) -> tuple[str, str] | None:
        if not self.path():
            return "data.path", "Choose a dataset file."
        if self.preview is None:
            return "data.path", "Reading the dataset…"
        if not self.preview.ok:
            return "data.path", f"Dataset: {self.preview.error}"
        if self.preview.count == 0:
            return "data.path", "Dataset: the file holds no examples."
        return None

    def dragEnterEvent(self, event) -> None:
        urls = event.mimeData().urls()
        if urls and urls[0].isLocalFile() and Path(urls[0].toLocalFile()).is_file():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        self.load(event.mimeData().urls()[0].toLocalFile())
        event.acceptProposedAction()
