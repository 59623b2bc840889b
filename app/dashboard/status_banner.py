"""The run's headline: what is happening, how it ended, the adapter's path or the error and its hint."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from lorastudio.core.runs.checkpoints import list_checkpoint_steps
from lorastudio.app.dashboard.run_state import COMPLETED, FAILED, IDLE, RUNNING, STARTING, STOPPED, RunState

TITLES = {IDLE: "Ready to train", STARTING: "Starting…", RUNNING: "Training", COMPLETED: "Training completed",
          STOPPED: "Training stopped", FAILED: "Training failed"}
SET_UP = "Set up a run"
FIRST_STEP = "Choose a model and a dataset, then press Start (Ctrl+Return)."


def next_step(model_problem: str | None, data_problem: str | None, form_problem: str = "",
              checking: bool = False) -> tuple[str, str]:
    """(title, message) for the banner before a run: what the user does next. `model_problem` and
    `data_problem` are the panels' reasons to block Start (None when that part is ready)."""
    choose_model, choose_data = model_problem == "Choose a model.", data_problem == "Choose a dataset file."
    if checking:
        return TITLES[IDLE], "Checking the model and data…"
    if choose_model and choose_data:
        return SET_UP, FIRST_STEP
    if choose_data:
        return SET_UP, ("Model ready — now choose a dataset (Ctrl+Shift+O), then press Start." if not model_problem
                        else f"{model_problem} Then choose a dataset (Ctrl+Shift+O).")
    if choose_model:
        return SET_UP, ("Dataset ready — now choose a model (Ctrl+O), then press Start." if not data_problem
                        else f"{data_problem} Then choose a model (Ctrl+O).")
    for problem in (model_problem, data_problem):
        if problem:
            return SET_UP, problem
    if form_problem:
        return SET_UP, f"Model and dataset ready — one setting to fix before Start: {form_problem}"
    return TITLES[IDLE], "Model and dataset chosen: press Start (Ctrl+Return)."


class StatusBanner(QFrame):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("Banner")
        self._idle = (SET_UP, FIRST_STEP)
        self._status = IDLE
        self.title = QLabel(SET_UP, objectName="BannerTitle")
        self.message = QLabel(FIRST_STEP, wordWrap=True)
        self.message.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.hint = QLabel(wordWrap=True)
        self.hint.setProperty("role", "hint")
        self.hint.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.hint.hide()
        self.open_button = QPushButton("Open folder")
        self.open_button.hide()
        self.open_button.clicked.connect(self._open)
        self.export_button = QPushButton("Export adapter…", clicked=self.open_export)
        self.merge_button = QPushButton("Merge and save…", clicked=self.open_merge)
        self.gguf_button = QPushButton("Export for Ollama / llama.cpp…", clicked=self.open_gguf_export)
        self.gguf_button.setToolTip("One GGUF file (merged, or the adapter alone) with an Ollama Modelfile")
        self.evaluate_button = QPushButton("Evaluate…", clicked=self.open_evaluate)
        self.evaluate_button.setToolTip("Held-out loss, exact match and valid JSON: base model vs base + adapter")
        # What can be done with a run's result, shown and hidden together: one widget to show at the
        # end of a run costs half as much as four (the end's redraw is one tick of the event loop).
        self.result_buttons = QWidget()
        result_layout = QVBoxLayout(self.result_buttons)
        result_layout.setContentsMargins(0, 0, 0, 0)
        result_layout.setSpacing(4)
        for button in (self.export_button, self.merge_button, self.gguf_button, self.evaluate_button):
            result_layout.addWidget(button)
        self.result_buttons.hide()
        self._folder = self._run_dir = ""
        text = QVBoxLayout()
        text.setSpacing(2)
        text.addWidget(self.title)
        text.addWidget(self.message)
        text.addWidget(self.hint)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(14, 10, 12, 10)
        layout.addLayout(text, 1)
        buttons = QVBoxLayout()
        buttons.setSpacing(4)
        buttons.addWidget(self.open_button)
        buttons.addWidget(self.result_buttons)
        buttons.addStretch(1)
        layout.addLayout(buttons)

    def set_next_step(self, title: str, message: str) -> None:
        """What the banner says while no run is shown (see `next_step`)."""
        self._idle = (title, message)
        if self._status == IDLE:
            self.title.setText(title)
            self.message.setText(message)

    def update_from(self, state: RunState) -> None:
        if self.property("state") != state.status:      # re-styling costs a few ms: only on change
            self.setProperty("state", state.status)
            self.style().polish(self)
        self._status = state.status
        self.title.setText(self._idle[0] if state.status == IDLE else TITLES.get(state.status, state.status.capitalize()))
        self.message.setText(self._message(state))
        error = state.error if state.status in (FAILED, RUNNING, STOPPED) else None
        hint = error.get("hint", "") if error else ""
        self.hint.setText(f"What to do: {hint}" if hint else "")
        self.hint.setVisible(bool(hint))
        self._folder = state.adapter or (state.run_dir if state.finished else "")
        self.open_button.setText("Open adapter folder" if state.adapter else "Open run folder")
        self.open_button.setVisible(bool(self._folder))
        self._run_dir = state.run_dir if state.finished else ""
        has_result = self._has_result(self._run_dir, state.adapter)
        self.result_buttons.setVisible(has_result)

    def _message(self, state: RunState) -> str:
        if state.status == FAILED and state.error:
            return state.error["message"]
        if state.status == COMPLETED:
            return f"Adapter saved to {state.adapter}" if state.adapter else "Finished."
        if state.status == STOPPED:
            return (f"Stopped at step {state.step}; adapter saved to {state.adapter}" if state.adapter
                    else f"Stopped at step {state.step}.")
        if state.status in (RUNNING, STARTING):
            return state.phase or f"Run folder: {state.run_dir}"
        return self._idle[1]

    def _has_result(self, run_dir: str, adapter: str | None) -> bool:
        """An adapter or a checkpoint to export; the folder is listed once per finished run,
        not on every redraw."""
        if not run_dir:
            return False
        key = (run_dir, bool(adapter))
        if getattr(self, "_result_key", None) != key:
            self._result_key = key
            self._result_found = bool(adapter) or bool(list_checkpoint_steps(Path(run_dir)))
        return self._result_found

    def open_export(self) -> None:
        from lorastudio.app.dialogs.export_dialog import ExportDialog
        run = Path(self._run_dir)
        ExportDialog(run, run.parent, self.window()).open()

    def open_merge(self) -> None:
        from lorastudio.app.dialogs.merge_dialog import MergeDialog
        run = Path(self._run_dir)
        MergeDialog(run, run.parent, self.window()).open()

    def open_evaluate(self) -> None:
        from lorastudio.app.dialogs.evaluate_dialog import EvaluateDialog
        run = Path(self._run_dir)
        EvaluateDialog(run, run.parent, self.window()).open()

    def open_gguf_export(self) -> None:
        from lorastudio.app.dialogs.export_gguf_dialog import GgufExportDialog
        run = Path(self._run_dir)
        GgufExportDialog(run, run.parent, self.window()).open()

    def _open(self) -> None:
        if self._folder and Path(self._folder).exists():
            QDesktopServices.openUrl(QUrl.fromLocalFile(self._folder))
