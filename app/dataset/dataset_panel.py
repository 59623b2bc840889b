"""The Dataset panel: a file, its first rows and format, the options that shape it into examples,
and — once a model is chosen — exactly what the model will be trained on.

Two readers feed it, neither on the GUI thread. The preview (`core.data.preview.read_preview`, on
the thread pool, torch-free) shows the first rows and the detected format in a blink. The inspector
(`data_inspection`, a child process with the tokenizer) renders every example through the model's
chat template and reports the token counts, lengths and example N with its loss mask — the very
code the trainer runs, so what is shown is what is trained.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QEvent, QTimer, Signal
from PySide6.QtGui import QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (QAbstractItemView, QFileDialog, QGroupBox, QHBoxLayout, QHeaderView, QLabel,
                               QLineEdit, QMenu, QPushButton, QScrollArea, QTableView, QToolButton, QVBoxLayout, QWidget)

from lorastudio.app.first_paint import after_first_paint
from lorastudio.app.thread_pool import run_in_background
from lorastudio.app.dataset.column_mapping import ColumnMapping
from lorastudio.app.dataset.data_inspection import DataInspection, InspectRequest
from lorastudio.app.dataset.dataset_options import FILE_FILTER, DatasetOptions
from lorastudio.app.dataset.inspection_text import error_text, plural
from lorastudio.app.dataset.inspection_view import InspectionView
from lorastudio.app.dataset.thumbnails import put_thumbnails, read_preview_images
from lorastudio.core.config import DataSection, field_help
from lorastudio.core.data.preview import DatasetPreview, Detection, detect, read_preview, short_message
from lorastudio.core.data.sources import datasets_cache_dir, is_hf_spec, list_cached_datasets
from lorastudio.core.formatting import format_bytes
from lorastudio.core.models.info import hf_cache_dir


class DatasetPanel(QGroupBox):
    changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Dataset", parent)
        self.preview: DatasetPreview | None = None
        self.detection: Detection | None = None
        self.inspection_error: tuple[str, str] | None = None
        self.model_path, self.seq_len = "", 512
        self.last_folder = str(Path.home())
        self._request = 0
        self._pending_columns: dict = {}
        self._examples_key: tuple | None = None
        self._thumbs_for, self._thumbs = None, None      # the preview whose images are read, and them
        self.inspector = DataInspection(self)
        self.setAcceptDrops(True)
        self._build()
        self._connect()
        after_first_paint(self, self.refresh_cache)      # the hub cache's scan waits until the panel is on screen

    def _build(self) -> None:
        self.path_edit = QLineEdit(placeholderText="A data file (.jsonl, .json, .csv, .tsv, .parquet, .txt), "
                                   "a dataset folder, or hf:NAME")
        self.path_edit.setToolTip(field_help(DataSection, "path") + "\nYou can also drop a file here.")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self.browse)
        self.cache_button = QToolButton(text="Cached ▾", objectName="CachedDatasets")
        self.cache_button.setPopupMode(QToolButton.InstantPopup)
        self.cache_menu = QMenu(self.cache_button)
        self.cache_button.setMenu(self.cache_menu)
        self.cache_button.setEnabled(False)
        row = QHBoxLayout()
        row.addWidget(self.path_edit, 1)
        row.addWidget(browse)
        row.addWidget(self.cache_button)
        self.options = DatasetOptions()
        self.mapping = ColumnMapping()
        self.mapping.hide()
        self.format_label = QLabel(wordWrap=True, objectName="DetectedFormat")
        self.error_label = QLabel(wordWrap=True, objectName="DatasetError")
        self.error_label.setProperty("role", "error")
        self.error_label.hide()
        self.inspection = InspectionView()
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.options)
        layout.addWidget(self.mapping)
        layout.addWidget(self.format_label)
        layout.addWidget(self.error_label)
        layout.addWidget(self._table())
        layout.addWidget(self.inspection)
        self._show_preview()

    def _table(self) -> QTableView:
        self.model = QStandardItemModel(self)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.table.setMinimumHeight(110)
        self.table.setMaximumHeight(160)
        return self.table

    def _connect(self) -> None:
        self.path_edit.editingFinished.connect(lambda: self.load(self.path_edit.text()))
        self.options.changed.connect(self._refresh)
        self.mapping.changed.connect(self._refresh)
        self.inspection.example_changed.connect(lambda _n: self._inspect())
        self.inspector.busy_changed.connect(self._busy)
        self.inspector.report.connect(self._inspected)
        self.inspector.failed.connect(self._inspection_failed)

    # ---- the file -----------------------------------------------------------------------------
    def browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a dataset", self.last_folder, FILE_FILTER)
        if path:
            self.load(path)

    def path(self) -> str:
        return self.path_edit.text().strip()

    def refresh_cache(self) -> None:
        """Datasets in the local Hugging Face caches, listed off the GUI thread like cached models (the
        hub cache through huggingface_hub, whose import waits for the first paint)."""
        run_in_background(list_cached_datasets, on_done=self._show_cache, on_failed=lambda _e: self._show_cache([]))

    def _show_cache(self, datasets: list[dict]) -> None:
        self.cache_menu.clear()
        self.cached_datasets = datasets
        for d in datasets:
            action = self.cache_menu.addAction(f"{d['id']}    {format_bytes(d['size'])}")
            action.setToolTip(d["path"])
            action.triggered.connect(lambda _=False, spec=d["spec"]: self.load(spec))
        self.cache_button.setEnabled(bool(datasets))
        where = f"{hf_cache_dir()} and {datasets_cache_dir()}"
        self.cache_button.setToolTip(f"Datasets in the local Hugging Face caches ({where})" if datasets
                                     else f"No datasets in the local Hugging Face caches ({where})")

    def load(self, path: str) -> None:
        path = path.strip()
        if self.preview is not None and path == self.preview.path:
            return
        self.path_edit.setText(path)
        self._request += 1
        self.preview = None
        self.inspection.show_report(None)
        if path and not is_hf_spec(path):
            self.last_folder = self.options.last_folder = str(Path(path).expanduser().parent)
        if path:
            request = self._request
            self.format_label.setText("Reading…")
            run_in_background(read_preview, path, on_done=lambda p: self._loaded(request, p))
        self._refresh()

    def _loaded(self, request: int, preview: DatasetPreview) -> None:
        if request == self._request:
            self.preview = preview
            self._refresh()

    # ---- options, format and errors -----------------------------------------------------------
    def _refresh(self) -> None:
        """Recompute what follows from the preview and the options; ask the inspector again."""
        self.detection = None
        p = self.preview
        if p is not None and p.ok:
            self._update_mapping(p)
            self.detection = detect(p, self.options.value("format"), self.columns(),
                                    self.options.value("on_bad_rows") == "skip")
        self._show_preview()
        self._inspect()

    def _update_mapping(self, p: DatasetPreview) -> None:
        fmt = self.options.value("format")
        plain = detect(p, "auto")                  # the file as it is: does it need a mapping?
        target = fmt if fmt != "auto" else plain.format
        self.mapping.blockSignals(True)
        self.mapping.set_target(target, p.columns)
        if self._pending_columns:
            self.mapping.set_mapping(self._pending_columns)
            self._pending_columns = {}
        self.mapping.blockSignals(False)
        self.mapping.setVisible(self.options.map_box.isChecked() or plain.unknown)

    def columns(self) -> dict[str, str]:
        return self.mapping.mapping() if self.mapping.isVisibleTo(self) else {}

    def local_error(self) -> tuple[str, str] | None:
        """What the preview alone shows is wrong (the file, a bad row under 'stop', the format)."""
        p, d = self.preview, self.detection
        if p is None:
            return None
        if not p.ok:
            return p.error
        if p.strict_error and self.options.value("on_bad_rows") == "error":
            return p.strict_error
        if d is not None and d.error:
            return d.error
        return None

    def error(self) -> tuple[str, str] | None:
        return self.local_error() or self.inspection_error

    def _show_preview(self) -> None:
        p, d = self.preview, self.detection
        self.model.clear()
        self.table.setVisible(bool(p and p.rows))
        if p and p.rows:
            self.model.setHorizontalHeaderLabels(p.columns)
            for cells, row in zip(p.cells(), p.rows):
                self.model.appendRow([QStandardItem(c) for c in cells])
                self.model.setVerticalHeaderItem(self.model.rowCount() - 1, QStandardItem(row.where.split()[-1]))
            self._show_thumbnails(p)
        if p is not None:
            self.format_label.setText(self._format_text(p, d))
        elif not self.path():
            self.format_label.setText("Choose a file, or drop one here.")
        self._show_error()

    def _show_thumbnails(self, p: DatasetPreview) -> None:
        """The rows' images, read once per preview on the thread pool (thumbnails.py)."""
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.setMaximumHeight(160)
        if self._thumbs_for is p:
            if self._thumbs is not None:
                put_thumbnails(self.model, self.table, self._thumbs)
            return
        self._thumbs_for, self._thumbs = p, None
        run_in_background(read_preview_images, p, on_done=self._thumbnails_read)   # bound: never a dead panel

    def _thumbnails_read(self, answer: tuple) -> None:
        shown, thumbs = answer
        if shown is self._thumbs_for and shown is self.preview:
            self._thumbs = thumbs
            put_thumbnails(self.model, self.table, thumbs)

    @staticmethod
    def _format_text(p: DatasetPreview, d: Detection | None) -> str:
        if d is None or not d.format:
            return ""
        title, _, why = d.reason.partition(": ")
        bad = len(d.bad_rows) + len(p.bad_rows)
        extra = f" · {plural(bad, 'bad row')} left out of the table" if bad else ""
        return (f"<b>{title[0].upper()}{title[1:]}</b> — {why}<br><span style='color:gray'>First "
                f"{len(p.rows)} rows of {Path(p.path).name}{extra}</span>")

    def _show_error(self) -> None:
        err = self.error()
        path = self.preview.path if self.preview else self.path()
        self.error_label.setText(error_text(short_message(err[0], path), err[1]) if err else "")
        self.error_label.setToolTip(err[0] if err else "")
        self.error_label.setVisible(err is not None)
        self.path_edit.setProperty("invalid", bool(self.preview and not self.preview.ok))
        self.path_edit.style().polish(self.path_edit)
        if err is not None:             # once laid out: scrolled into view where the form scrolls (1366×768)
            QTimer.singleShot(0, self._reveal_error)

    def _reveal_error(self) -> None:
        area = self.parentWidget()
        while area is not None and not isinstance(area, QScrollArea):
            area = area.parentWidget()
        if area is not None and self.error_label.isVisible():
            area.ensureWidgetVisible(self.error_label, 0, 12)

    # ---- the inspector ------------------------------------------------------------------------
    def set_model(self, path: str) -> None:
        """The model whose tokenizer renders the examples ("" while none is ready)."""
        if path != self.model_path:
            self.model_path = path
            self._inspect()

    def set_seq_len(self, seq_len: int) -> None:
        if seq_len != self.seq_len:
            self.seq_len = seq_len
            self._inspect()

    def inspect_request(self) -> InspectRequest | None:
        p = self.preview
        if not (self.model_path and p and p.ok and self.seq_len >= 8) or self.local_error() or self.mapping_missing():
            return None
        o = self.options
        key = (p.path, o.value("format"), tuple(self.columns().items()), o.value("on_bad_rows"))
        if key != self._examples_key:            # another set of examples: start again at the first
            self._examples_key = key
            self.inspection.reset_example()
        return InspectRequest(p.path, self.model_path, self.seq_len, self.inspection.example(), o.value("format"),
                              key[2], o.value("train_on"), o.value("too_long"), key[3] == "skip")

    def _inspect(self) -> None:
        req = self.inspect_request()
        if req is None or req != self.inspector.current:
            self.inspection_error = None
        self.inspector.request(req)
        self.inspection.setVisible(self.preview is not None and self.local_error() is None)
        if req is None and not self.model_path:
            self.inspection.status_label.setText("Choose a model to see the tokens it will train on.")
        self._show_error()
        self.changed.emit()

    def _busy(self, busy: bool) -> None:
        self.inspection.set_busy(busy, f"Tokenizing with {Path(self.model_path).name}…")

    def _inspected(self, report: dict) -> None:
        self.inspection_error = None
        self.inspection.show_report(report)
        self._show_error()
        self.changed.emit()

    def _inspection_failed(self, message: str, hint: str) -> None:
        self.inspection_error = (message, hint)
        self.inspection.show_report(None)
        self._show_error()
        self.changed.emit()

    # ---- the form -----------------------------------------------------------------------------
    def mapping_missing(self) -> list[str]:
        return self.mapping.missing() if self.mapping.isVisibleTo(self) else []

    def values(self) -> dict:
        """The DataSection fields this panel sets (the split lives under Training)."""
        return {"path": self.path(), "columns": self.columns(), **self.options.values()}

    def set_values(self, data: dict) -> None:
        self._pending_columns = dict(data.get("columns") or {})
        self.options.set_values(data)
        if data.get("path"):
            self.load(data["path"])

    def problem(self) -> tuple[str, str] | None:
        if not self.path():
            return "data.path", "Choose a dataset file."
        if self.preview is None:
            return "data.path", "Reading the dataset…"
        err = self.error()
        if err:
            return "data.path", "Dataset: " + short_message(err[0], self.preview.path)
        missing = self.mapping_missing()
        if missing:
            return "data.columns", f"Dataset: choose the column that holds {' and '.join(missing)}."
        return None

    def changeEvent(self, event) -> None:
        # The form is disabled while a run trains: the inspector would only compete with it for CPU.
        super().changeEvent(event)
        if event.type() == QEvent.EnabledChange:
            if self.isEnabled():
                self._inspect()
            else:
                self.inspector.request(None)

    def dragEnterEvent(self, event) -> None:
        urls = event.mimeData().urls()
        if urls and urls[0].isLocalFile() and Path(urls[0].toLocalFile()).is_file():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        self.load(event.mimeData().urls()[0].toLocalFile())
        event.acceptProposedAction()
