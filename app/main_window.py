"""The main window: a sidebar of pages (Train now; Runs and Playground later), menus with the
keyboard shortcuts, a status bar, and settings (geometry, last folders, the form) kept across runs."""
from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QMainWindow, QMessageBox,
                               QStackedWidget, QVBoxLayout, QWidget)

from lorastudio.app.train_page import TrainPage

PAGES = (("Train", True, "Set up and run a LoRA / QLoRA fine-tune"),
         ("Runs", False, "Past runs, their curves and adapters — coming soon"),
         ("Playground", False, "Chat with a base model and its adapters — coming soon"))
VERSION = "0.1.0"


class MainWindow(QMainWindow):
    def __init__(self, settings: QSettings | None = None, runs_root: Path | None = None):
        super().__init__()
        self.settings = settings or QSettings()
        self.setWindowTitle("LoRA Studio")
        self.train_page = TrainPage(runs_root=runs_root)
        self._build()
        self._actions()
        self._status_bar()
        self.restore_settings()

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
        self.sidebar.currentRowChanged.connect(lambda row: self.pages.setCurrentIndex(min(row, self.pages.count() - 1)))
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
        self.quit_action = self._action(file_menu, "&Quit", "Ctrl+Q", self.close)
        run_menu = self.menuBar().addMenu("&Run")
        self.start_action = self._action(run_menu, "&Start training", ["Ctrl+Return", "Ctrl+Enter"], page.start)
        self.stop_action = self._action(run_menu, "S&top training", "Esc", page.request_stop)
        help_menu = self.menuBar().addMenu("&Help")
        self._action(help_menu, "&About LoRA Studio", [], self._about)

    def _status_bar(self) -> None:
        bar = self.statusBar()
        self.run_label = QLabel("")
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

    def _about(self) -> None:
        QMessageBox.about(self, "About LoRA Studio",
                          f"<b>LoRA Studio {VERSION}</b><p>Local LoRA and QLoRA fine-tuning of language models.</p>")

    # ---- settings -----------------------------------------------------------------------------
    def restore_settings(self) -> None:
        s = self.settings
        if s.value("window/geometry"):
            self.restoreGeometry(s.value("window/geometry"))
        else:
            self.resize(1400, 880)
        if s.value("train/splitter"):
            self.train_page.splitter.restoreState(s.value("train/splitter"))
        page = self.train_page
        page.model_panel.last_folder = s.value("folders/model", page.model_panel.last_folder)
        page.dataset_panel.last_folder = s.value("folders/data", page.dataset_panel.last_folder)
        try:
            form = json.loads(s.value("train/form", "{}"))
        except (TypeError, ValueError):
            form = {}
        if form:
            page.restore_form(form)

    def save_settings(self) -> None:
        s, page = self.settings, self.train_page
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("train/splitter", page.splitter.saveState())
        s.setValue("folders/model", page.model_panel.last_folder)
        s.setValue("folders/data", page.dataset_panel.last_folder)
        s.setValue("train/form", json.dumps(page.form_state()))
        s.sync()

    def closeEvent(self, event) -> None:
        self.save_settings()
        if self.train_page.running:
            # The worker runs in its own session and carries on; its journal stays in the run folder.
            self.train_page.process.detach()
        super().closeEvent(event)

