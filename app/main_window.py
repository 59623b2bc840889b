"""The main window: a sidebar of pages (Train, Runs; Playground later), menus with the keyboard
shortcuts, a status bar, and settings (geometry, last folders, the form) kept across runs.

Training outlives the window: closing it while a run is live asks whether to keep training in the
background or stop; on the next start the window finds live runs (status.json pid + heartbeat)
and re-attaches the Train page's live view, its curves filled in from the journal.

Start-up is the time to the first picture (tests/bench/bench_startup.py): the Runs and Playground
pages, the GPU probe and the live-run search wait until the window has painted (app/first_paint.py),
and the plots import pyqtgraph only after their own first paint (app/widgets/series_plot.py)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QAction, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QMainWindow, QMessageBox,
                               QStackedWidget, QVBoxLayout, QWidget)

from lorastudio.app.first_paint import after_first_paint
from lorastudio.app.train.demo_defaults import apply_demo
from lorastudio.app.train.train_page import TrainPage
from lorastudio.app.widgets.jobs_area import JobsArea
from lorastudio.core.runs.listing import find_live_runs
from lorastudio.core.runs.folders import default_runs_dir
from lorastudio.core import package_version as app_version

if TYPE_CHECKING:
    from lorastudio.app.playground.playground_page import PlaygroundPage
    from lorastudio.app.runs.runs_page import RunsPage

PAGES = (("Train", True, "Set up and run a LoRA / QLoRA fine-tune"),
         ("Runs", True, "Every run: status, curves, resume, clone, delete"),
         ("Playground", True, "Try a prompt on the base model and on an adapter, side by side"))
VERSION = app_version()


class MainWindow(QMainWindow):
    def __init__(self, settings: QSettings | None = None, runs_root: Path | None = None):
        super().__init__()
        self.settings = settings or QSettings()
        self.setWindowTitle("LoRA Studio")
        self.runs_root = runs_root or default_runs_dir()
        self.train_page = TrainPage(runs_root=runs_root)
        self._runs_page: RunsPage | None = None          # built after the first paint (or when asked for)
        self._playground_page: PlaygroundPage | None = None
        self._build()
        self._actions()
        self._status_bar()
        self.restore_settings()
        # What the first picture does not need waits until it is on screen.
        after_first_paint(self, self.build_pages)
        after_first_paint(self, self.train_page.hardware_panel.probe)
        after_first_paint(self, self.reattach_live_run)

    def _build(self) -> None:
        self.sidebar = QListWidget(objectName="Sidebar")
        for title, enabled, tip in PAGES:
            item = QListWidgetItem(title)
            item.setToolTip(tip)
            if not enabled:
                item.setFlags(item.flags() & ~Qt.ItemIsEnabled)
                item.setText(f"{title}")
            self.sidebar.addItem(item)
        self.sidebar.setCurrentRow(0)
        self.pages = QStackedWidget()
        self.pages.addWidget(self.train_page)
        for _later in PAGES[1:]:
            self.pages.addWidget(QWidget())              # stand-ins until build_pages
        self.sidebar.currentRowChanged.connect(self._row_changed)
        side = QWidget(objectName="Side")
        side.setAttribute(Qt.WA_StyledBackground)
        side.setFixedWidth(140)
        side_layout = QVBoxLayout(side)
        side_layout.setContentsMargins(0, 0, 0, 0)
        side_layout.setSpacing(0)
        side_layout.addWidget(QLabel("LoRA Studio", objectName="SidebarTitle"))
        side_layout.addWidget(self.sidebar, 1)
        side_layout.addWidget(QLabel(f"version {VERSION}", objectName="SidebarVersion"))
        central = QWidget()
        layout = QHBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(side)
        layout.addWidget(self.pages, 1)
        self.setCentralWidget(central)

    def _action(self, menu, text: str, shortcut, slot, tip: str = "") -> QAction:
        action = QAction(text, self)
        shortcuts = shortcut if isinstance(shortcut, list) else [shortcut]
        action.setShortcuts([QKeySequence(s) for s in shortcuts])
        action.setStatusTip(tip)
        action.triggered.connect(slot)
        menu.addAction(action)
        self.addAction(action)
        return action

    def _actions(self) -> None:
        page = self.train_page
        file_menu = self.menuBar().addMenu("&File")
        self.open_model_action = self._action(file_menu, "Open &model folder…", "Ctrl+O", page.model_panel.browse)
        self.open_data_action = self._action(file_menu, "Open &dataset…", "Ctrl+Shift+O", page.dataset_panel.browse)
        file_menu.addSeparator()
        self.quit_action = self._action(file_menu, "&Quit", "Ctrl+Q", self.quit_asking)
        run_menu = self.menuBar().addMenu("&Run")
        self.start_action = self._action(run_menu, "&Start training", ["Ctrl+Return", "Ctrl+Enter"], page.start)
        self.stop_action = self._action(run_menu, "S&top training", "Esc", page.request_stop)
        help_menu = self.menuBar().addMenu("&Help")
        self._action(help_menu, "&About LoRA Studio", [], self._about)

    def _status_bar(self) -> None:
        bar = self.statusBar()
        self.run_label = QLabel("")
        self.jobs_area = JobsArea()          # evaluate, merge, GGUF, rank, resize: progress, Cancel, result
        bar.addPermanentWidget(self.jobs_area)
        bar.addPermanentWidget(self.run_label)
        self.train_page.message.connect(lambda text: bar.showMessage(text, 0))
        self.train_page.running_changed.connect(self._running_changed)
        self.train_page.hardware_panel.probed.connect(self._show_devices)
        bar.showMessage("Ready")

    def _show_devices(self) -> None:
        gpus = self.train_page.hardware_panel.gpus or []
        self.run_label.setText(", ".join(g.name for g in gpus) if gpus else "CPU only")

    def _running_changed(self, running: bool) -> None:
        run_dir = self.train_page.process.run_dir
        if run_dir:
            self.run_label.setText(f"{'Running' if running else 'Last run'}: {run_dir.name}")
        self.start_action.setEnabled(not running)

    # ---- the pages after Train: built once the window is on screen ---------------------------
    @property
    def runs_page(self) -> RunsPage:
        self.build_pages()
        return self._runs_page

    @property
    def playground_page(self) -> PlaygroundPage:
        self.build_pages()
        return self._playground_page

    def build_pages(self) -> None:
        """Make the Runs and Playground pages (once): not needed for the first picture."""
        if self._runs_page is not None:
            return
        from lorastudio.app.playground.playground_page import PlaygroundPage
        from lorastudio.app.runs.runs_page import RunsPage
        self._runs_page = RunsPage(self.runs_root)
        self._playground_page = PlaygroundPage(self.runs_root)
        for index, page in ((1, self._runs_page), (2, self._playground_page)):
            stand_in = self.pages.widget(index)
            self.pages.insertWidget(index, page)
            self.pages.removeWidget(stand_in)
            stand_in.deleteLater()
        self._connect_runs()

    def _row_changed(self, row: int) -> None:
        if row > 0:
            self.build_pages()
        self.pages.setCurrentIndex(min(row, self.pages.count() - 1))

    # ---- runs ---------------------------------------------------------------------------------
    def _connect_runs(self) -> None:
        self.runs_page.message.connect(lambda text: self.statusBar().showMessage(text, 0))
        self.runs_page.open_live.connect(self.show_live_view)
        self.runs_page.clone_config.connect(self._clone_config)

    def show_page(self, page: QWidget) -> None:
        self.sidebar.setCurrentRow(self.pages.indexOf(page))

    def show_live_view(self, run_dir, popen=None) -> None:
        self.train_page.attach(Path(run_dir), popen)
        self.show_page(self.train_page)

    def _clone_config(self, config) -> None:
        if self.train_page.running:
            QMessageBox.information(self, "A run is live", "The form is locked while the Train page follows "
                                    "a live run; clone again when it has finished.")
            return
        self.train_page.load_config(config)
        self.show_page(self.train_page)

    def reattach_live_run(self) -> None:
        """At start-up: follow the newest run whose worker is still alive."""
        if self.train_page.running:
            return
        live = find_live_runs(self.runs_root)
        if live:
            self.show_live_view(live[0])
            self.statusBar().showMessage(f"Re-attached to {live[0].name}, still training in the background"
                                         + (f" ({len(live) - 1} more on the Runs page)" if len(live) > 1 else ""), 0)

    def _about(self) -> None:
        QMessageBox.about(self, "About LoRA Studio",
                          f"<b>LoRA Studio {VERSION}</b><p>Local LoRA and QLoRA fine-tuning of language models.</p>"
                          "<p>Apache-2.0 licence.</p>")

    # ---- settings -----------------------------------------------------------------------------
    def restore_settings(self) -> None:
        s = self.settings
        if s.value("window/geometry"):
            self.restoreGeometry(s.value("window/geometry"))    # Qt keeps it on the screen it is on
        else:
            self.resize(1400, 880)
            self.fit_to_screen()
        if s.value("train/splitter"):
            self.train_page.splitter.restoreState(s.value("train/splitter"))
        page = self.train_page
        page.model_panel.last_folder = s.value("folders/model", page.model_panel.last_folder)
        page.dataset_panel.last_folder = s.value("folders/data", page.dataset_panel.last_folder)
        page.start_bar.tensorboard_box.setChecked(s.value("train/tensorboard", "false") == "true")
        page.start_bar.background_box.setChecked(s.value("train/background_priority", "false") == "true")
        try:
            form = json.loads(s.value("train/form", "{}"))
        except (TypeError, ValueError):
            form = {}
        if form:
            page.restore_form(form)
        else:
            apply_demo(page)

    def fit_to_screen(self) -> None:
        """Never larger than the screen's free area (a size saved on a bigger screen, the first start
        on a 1366×768 laptop); every page's minimum size fits 1366×768 (tests/app/test_window_fits.py)."""
        screen = self.screen() or QGuiApplication.primaryScreen()
        if screen is None:
            return
        free = screen.availableGeometry()
        frame = self.frameGeometry().size() - self.geometry().size()     # title bar and borders
        least = self.minimumSizeHint()          # a screen smaller than that: the minimum, no less
        width = max(min(self.width(), free.width() - frame.width()), least.width())
        height = max(min(self.height(), free.height() - frame.height()), least.height())
        if (width, height) != (self.width(), self.height()):
            self.resize(width, height)

    def save_settings(self) -> None:
        s, page = self.settings, self.train_page
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("train/splitter", page.splitter.saveState())
        s.setValue("folders/model", page.model_panel.last_folder)
        s.setValue("folders/data", page.dataset_panel.last_folder)
        s.setValue("train/tensorboard", "true" if page.start_bar.tensorboard_box.isChecked() else "false")
        s.setValue("train/background_priority", "true" if page.start_bar.background_box.isChecked() else "false")
        s.setValue("train/form", json.dumps(page.form_state()))
        s.sync()

    def ask_keep_or_stop(self) -> str:
        """'keep', 'stop' or 'cancel' for closing while a run is live."""
        box = QMessageBox(QMessageBox.Question, "A run is still training",
                          f"{self.train_page.process.run_dir.name} is still training.", parent=self)
        box.setInformativeText("Keep training in the background — LoRA Studio re-attaches to it when you open "
                               "it again — or stop it now (a checkpoint and the adapter are saved first)?")
        keep = box.addButton("Keep training in background", QMessageBox.AcceptRole)
        stop = box.addButton("Stop training", QMessageBox.DestructiveRole)
        box.addButton(QMessageBox.Cancel)
        box.setDefaultButton(keep)
        box.exec()
        return "keep" if box.clickedButton() is keep else "stop" if box.clickedButton() is stop else "cancel"

    def ask_cancel_jobs(self, titles: list[str]) -> bool:
        """True to close and cancel the jobs still running in the background (merge, export …)."""
        box = QMessageBox(QMessageBox.Question, "Jobs are still running",
                          f"Still running: {', '.join(titles)}.", parent=self)
        box.setInformativeText("Closing the window cancels them; nothing half-written is left behind.")
        close = box.addButton("Cancel them and close", QMessageBox.DestructiveRole)
        box.addButton("Keep the window open", QMessageBox.RejectRole)
        box.exec()
        return box.clickedButton() is close

    def quit_asking(self) -> bool:
        """Ctrl+Q: close like the title bar's button does, asking about a live run."""
        self._asked_to_quit = True
        try:
            return self.close()
        finally:
            self._asked_to_quit = False

    def closeEvent(self, event) -> None:
        # Ask only when the user closes the window (title bar, Ctrl+Q); a programmatic close (the
        # desktop session ending, tests) keeps the run training, which is always safe.
        process, by_user = self.train_page.process, event.spontaneous() or getattr(self, "_asked_to_quit", False)
        if by_user and self.train_page.running and process.following() and process.is_running():
            choice = self.ask_keep_or_stop()
            if choice == "cancel":
                event.ignore()
                return
            if choice == "stop":
                self.train_page.process.stop()
        running = self.jobs_area.running()
        if by_user and running:
            if not self.ask_cancel_jobs([entry.title for entry in running]):
                event.ignore()
                return
            for entry in running:           # each cancels cleanly: nothing half-written is left
                entry.cancel()
        self.save_settings()
        # The worker runs in its own session and carries on; its journal stays in the run folder.
        self.train_page.process.detach()
        if self._runs_page is not None:
            self._runs_page.refresher.stop()
        super().closeEvent(event)

