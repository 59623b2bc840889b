"""The Runs page: every run in the runs folder, sortable; actions on the selected run; the loss
curves of all selected runs overlaid; the selected run's details, error and hint.

The history is refreshed off the GUI thread (RunsRefresher); actions that start processes
(resume) or touch the disk (delete) go through core functions that refuse a live run.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QItemSelectionModel, Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (QAbstractItemView, QFrame, QHBoxLayout, QHeaderView, QLabel, QMessageBox,
                               QPushButton, QScrollArea, QSplitter, QTableView, QVBoxLayout, QWidget)

from lorastudio.app.thread_pool import run_in_background
from lorastudio.app.runs.run_details import RunDetails
from lorastudio.app.widgets.flow_layout import FlowLayout
from lorastudio.app.widgets.jobs_area import track
from lorastudio.app.runs.runs_overlay import RunsOverlay
from lorastudio.app.runs.runs_refresher import RunsRefresher
from lorastudio.app.runs.runs_table_model import RunsSortProxy, RunsTableModel
from lorastudio.core.config import ConfigError, RunConfig
from lorastudio.core.formatting import format_bytes
from lorastudio.core.runs.listing import RunSummary, delete_run
from lorastudio.core.plans.train import resume_run
from lorastudio.core.runs.resume import ResumeError
from lorastudio.core.runs.folders import CONFIG_FILE
from lorastudio.core.journal import OK_STATUSES

class RunsPage(QWidget):
    open_live = Signal(object, object)          # run folder, its JobHandle (just resumed) or None
    clone_config = Signal(object)               # RunConfig
    message = Signal(str)

    def __init__(self, runs_root: Path, parent: QWidget | None = None, refresh_ms: int | None = None):
        super().__init__(parent)
        self.runs_root = Path(runs_root)
        self.refresher = RunsRefresher(self.runs_root, self, **({"interval_ms": refresh_ms} if refresh_ms else {}))
        self._build()
        self._connect()
        self._selection_changed()

    # ---- layout -------------------------------------------------------------------------------
    def _build(self) -> None:
        self.model = RunsTableModel(self)
        self.proxy = RunsSortProxy(self)
        self.proxy.setSourceModel(self.model)
        self.table = QTableView(objectName="RunsTable", sortingEnabled=True, alternatingRowColors=True)
        self.table.setModel(self.proxy)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.ExtendedSelection)
        self.table.verticalHeader().hide()
        self.table.setShowGrid(False)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeToContents)
        header.setSectionResizeMode(3, QHeaderView.Stretch)            # the dataset gives way first
        header.setHighlightSections(False)
        self.table.sortByColumn(9, Qt.DescendingOrder)          # newest first
        self.overlay = RunsOverlay()
        self.details = RunDetails()
        details_scroll = QScrollArea(widgetResizable=True, frameShape=QFrame.NoFrame)
        details_scroll.setWidget(self.details)
        details_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        details_scroll.setMinimumWidth(380)
        lower = QSplitter(Qt.Horizontal)
        lower.addWidget(self.overlay)
        lower.addWidget(details_scroll)
        lower.setStretchFactor(0, 3)
        lower.setStretchFactor(1, 2)
        lower.setChildrenCollapsible(False)
        self.splitter = QSplitter(Qt.Vertical)
        self.splitter.addWidget(self.table)
        self.splitter.addWidget(lower)
        self.splitter.setStretchFactor(0, 2)
        self.splitter.setStretchFactor(1, 3)
        self.splitter.setSizes([260, 560])
        self.splitter.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 12, 12, 10)
        layout.setSpacing(8)
        layout.addLayout(self._toolbar())
        layout.addWidget(self.splitter, 1)

    def _toolbar(self) -> QVBoxLayout:
        self.summary_label = QLabel("")
        self.summary_label.setProperty("role", "hint")
        specs = (("live", "Open live view", "Follow this run on the Train page (curves from its journal)"),
                 ("folder", "Open folder", "Open the run folder in the file manager"),
                 ("clone", "Clone config", "Fill the Train form with this run's settings"),
                 ("resume", "Resume", "Continue from the chosen checkpoint (latest by default), in the same folder"),
                 ("export", "Export…", "Export the adapter (PEFT files + tokenizer + model card)"),
                 ("merge", "Merge…", "Merge the adapter into the base model and save the result"),
                 ("gguf", "GGUF…", "Export for Ollama / llama.cpp: one GGUF file (merged, or the adapter alone) "
                  "with a Modelfile"),
                 ("serve", "Serve…", "Serve the selected runs' adapters on their base over an OpenAI-compatible API "
                  "(llama.cpp): any OpenAI client can use them"),
                 ("evaluate", "Evaluate…", "Held-out loss, exact match and valid JSON: base model vs base + adapter"),
                 ("rank", "Rank…", "What rank the trained update really used; save a smaller adapter"),
                 ("delete", "Delete…", "Delete the run folder (asks first; refuses a running run)"))
        self.buttons: dict[str, QPushButton] = {}
        # The title and summary on one line, the buttons below in rows that wrap (FlowLayout): a
        # narrow window gets two rows of buttons instead of a minimum width wider than the screen.
        title_row = QHBoxLayout()
        title_row.addWidget(QLabel("Runs", objectName="BannerTitle"))
        title_row.addSpacing(8)
        self.summary_label.setWordWrap(True)
        title_row.addWidget(self.summary_label, 1)
        self.button_row = FlowLayout()
        for key, text, tip in specs:
            button = QPushButton(text, objectName=f"Runs{key.capitalize()}Button")
            button.setToolTip(tip)
            self.buttons[key] = button
            self.button_row.addWidget(button)
        bar = QVBoxLayout()
        bar.setSpacing(6)
        bar.addLayout(title_row)
        bar.addLayout(self.button_row)
        return bar

    def _connect(self) -> None:
        self.refresher.updated.connect(self.set_runs)
        self.refresher.failed.connect(self.message)
        self.table.selectionModel().selectionChanged.connect(self._selection_changed)
        self.table.doubleClicked.connect(lambda _i: self.open_live_view())
        b = self.buttons
        b["live"].clicked.connect(self.open_live_view)
        b["folder"].clicked.connect(self.open_folder)
        b["clone"].clicked.connect(self.clone)
        b["resume"].clicked.connect(lambda: self.resume(self.details.chosen_checkpoint()))
        b["export"].clicked.connect(self.open_export)
        b["merge"].clicked.connect(self.open_merge)
        b["gguf"].clicked.connect(self.open_gguf_export)
        b["serve"].clicked.connect(self.open_serve)
        b["evaluate"].clicked.connect(self.open_evaluate)
        b["rank"].clicked.connect(self.open_rank)
        b["delete"].clicked.connect(self.delete)
        self.details.resume_requested.connect(self.resume)

    # ---- data ---------------------------------------------------------------------------------
    def showEvent(self, event) -> None:
        super().showEvent(event)
        self.refresher.start()

    def hideEvent(self, event) -> None:
        super().hideEvent(event)
        self.refresher.stop()

    def set_runs(self, runs: list[RunSummary]) -> None:
        self.model.update(runs)
        live = sum(r.live for r in runs)
        total = sum(r.disk_bytes for r in runs)
        self.summary_label.setText(f"{len(runs)} run{'s' * (len(runs) != 1)}"
                                   + (f" · {live} running" if live else "") + f" · {format_bytes(total)} on disk"
                                   + f" · {self.runs_root}")
        self._selection_changed()

    def selected_runs(self) -> list[RunSummary]:
        rows = self.table.selectionModel().selectedRows()
        ordered = sorted(rows, key=lambda i: i.row())
        return [self.model.run_at(self.proxy.mapToSource(i).row()) for i in ordered]

    def current_run(self) -> RunSummary | None:
        runs = self.selected_runs()
        return runs[0] if len(runs) == 1 else None

    def select(self, *paths: Path) -> None:
        """Select these runs (tests and the re-attach on start use it)."""
        selection = self.table.selectionModel()
        selection.clearSelection()
        for path in paths:
            row = self.model.row_of(Path(path))
            if row >= 0:
                index = self.proxy.mapFromSource(self.model.index(row, 0))
                selection.select(index, QItemSelectionModel.Select | QItemSelectionModel.Rows)

    def _selection_changed(self, *_args) -> None:
        runs = self.selected_runs()
        run = runs[0] if len(runs) == 1 else None
        self.overlay.set_runs(runs)
        self.details.show_run(run, len(runs))
        b = self.buttons
        for key in ("live", "folder", "clone"):
            b[key].setEnabled(run is not None)
        b["resume"].setEnabled(bool(run and run.can_resume))
        b["resume"].setToolTip("Continue from the chosen checkpoint, in the same folder" if run and run.can_resume
                               else "Only a stopped, failed or crashed run can be resumed")
        b["delete"].setEnabled(bool(run and not run.live))
        for key in ("export", "merge", "gguf", "rank", "evaluate"):
            b[key].setEnabled(bool(run and run.status in OK_STATUSES or run and run.checkpoints))
        b["serve"].setEnabled(bool(runs) and all(r.status in OK_STATUSES for r in runs))

    # ---- actions ------------------------------------------------------------------------------
    def open_live_view(self) -> None:
        run = self.current_run()
        if run is not None:
            self.open_live.emit(run.path, None)

    def open_folder(self) -> None:
        run = self.current_run()
        if run is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(run.path)))

    def clone(self) -> None:
        run = self.current_run()
        if run is None:
            return
        try:
            config = RunConfig.load(run.path / CONFIG_FILE)
        except ConfigError as exc:
            QMessageBox.warning(self, "Cannot clone", f"The run's config cannot be read: {exc}")
            return
        self.clone_config.emit(config)
        self.message.emit(" — ".join([f"Loaded the settings of {run.name} into the Train form", *config.notes]))

    def resume(self, checkpoint: int | None = None, overrides: dict | None = None) -> None:
        run = self.current_run()
        if run is None:
            return
        try:
            handle, plan = resume_run(run.path, checkpoint, overrides)
        except ResumeError as exc:
            QMessageBox.warning(self, "Cannot resume", exc.message + (f"\n\n{exc.hint}" if exc.hint else ""))
            return
        self.message.emit(plan.describe())
        self.refresher.refresh()
        self.open_live.emit(run.path, handle)

    def delete(self) -> None:
        run = self.current_run()
        if run is None:
            return
        if run.live:
            QMessageBox.information(self, "Run is running", f"{run.name} is still training; stop it first.")
            return
        answer = QMessageBox.question(
            self, "Delete run?", f"Delete {run.path.name} and everything in it — checkpoints, adapter, journal "
            f"({format_bytes(run.disk_bytes)})? This cannot be undone.", QMessageBox.Yes | QMessageBox.No,
            QMessageBox.No)
        if answer != QMessageBox.Yes:
            return
        run_in_background(delete_run, run.path, on_done=lambda _r: self._deleted(run),
                          on_failed=lambda exc: QMessageBox.warning(self, "Cannot delete", str(exc)))

    def _deleted(self, run: RunSummary) -> None:
        self.message.emit(f"Deleted {run.path}")
        self.refresher.refresh()

    def open_export(self):
        """The Export dialog the Train page opens, for the selected run."""
        from lorastudio.app.dialogs.export_dialog import ExportDialog
        return self._open_dialog(ExportDialog)

    def open_merge(self):
        """The Merge dialog the Train page opens, with the selected run preselected."""
        from lorastudio.app.dialogs.merge_dialog import MergeDialog
        return self._open_dialog(MergeDialog)

    def open_evaluate(self):
        """The Evaluate dialog (base vs base + adapter on held-out data) for the selected run."""
        from lorastudio.app.dialogs.evaluate_dialog import EvaluateDialog
        return self._open_dialog(EvaluateDialog)

    def open_gguf_export(self):
        """The Export for Ollama / llama.cpp dialog the Train page opens, for the selected run."""
        from lorastudio.app.dialogs.export_gguf_dialog import GgufExportDialog
        return self._open_dialog(GgufExportDialog)

    def open_serve(self):
        """The Serve panel for the selected runs (one base; each adapter by its run's name)."""
        from lorastudio.app.dialogs.serve_dialog import ServeDialog
        runs = self.selected_runs()
        if not runs:
            return None
        dialog = ServeDialog([r.path for r in runs], self.runs_root, self.window())
        dialog.setAttribute(Qt.WA_DeleteOnClose)
        dialog.show()                   # not modal: the window stays usable while it serves
        return dialog

    def open_rank(self):
        """The Rank view (heat map, spectrum, suggestion, a smaller adapter) of the selected run."""
        from lorastudio.app.runs.rank_view import RankView
        return self._open_dialog(RankView)

    def _open_dialog(self, dialog_class):
        run = self.current_run()
        if run is None:
            return None
        dialog = dialog_class(run.path, self.runs_root, self.window())
        dialog.setAttribute(Qt.WA_DeleteOnClose)
        track(dialog)                   # its job shows in the status bar's jobs area
        dialog.show()                   # not modal: Runs, the Playground and other dialogs stay usable
        return dialog
