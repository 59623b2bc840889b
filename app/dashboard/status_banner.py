"""The run's headline: what is happening, how it ended, the adapter's path or the error and its hint."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QFrame, QLabel, QPushButton, QVBoxLayout, QWidget

from lorastudio.app.widgets.flow_layout import FlowLayout
from lorastudio.app.widgets.jobs_area import track
from lorastudio.core.runs.checkpoints import list_checkpoint_steps
from lorastudio.app.dashboard.run_state import COMPLETED, FAILED, IDLE, RUNNING, STARTING, STOPPED, RunState

TITLES = {IDLE: "Ready to train", STARTING: "Starting…", RUNNING: "Training", COMPLETED: "Training completed",
          STOPPED: "Training stopped", FAILED: "Training failed"}
STOPPING_TITLE = "Stopping…"
STOPPING_MESSAGE = "Stop asked for: the worker saves a checkpoint and the adapter, then exits."
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
        # They sit in rows under the text that wrap when narrow (FlowLayout), not in a column beside
        # it: a finished run's banner stays a few lines tall and leaves the plots their room.
        self.result_buttons = QWidget()
        result_layout = FlowLayout(self.result_buttons, spacing=4)
        result_layout.addWidget(self.open_button)
        for button in (self.export_button, self.merge_button, self.gguf_button, self.evaluate_button):
            result_layout.addWidget(button)
        self.result_buttons.hide()
        self._folder = self._run_dir = ""
        layout = QVBoxLayout(self)
        layout.setContentsMargins(14, 10, 12, 10)
        layout.setSpacing(2)
        layout.addWidget(self.title)
        layout.addWidget(self.message)
        layout.addWidget(self.hint)
        layout.addWidget(self.result_buttons)

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
        title = self._idle[0] if state.status == IDLE else TITLES.get(state.status, state.status.capitalize())
        self.title.setText(STOPPING_TITLE if state.stopping and not state.finished else title)
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
        for button in (self.export_button, self.merge_button, self.gguf_button, self.evaluate_button):
            button.setVisible(has_result)
        self.result_buttons.setVisible(has_result or bool(self._folder))

    def _message(self, state: RunState) -> str:
        if state.status == FAILED and state.error:
            return state.error["message"]
        if state.status == COMPLETED:
            return f"Adapter saved to {state.adapter}" if state.adapter else "Finished."
        if state.status == STOPPED:
            return (f"Stopped at step {state.step}; adapter saved to {state.adapter}" if state.adapter
                    else f"Stopped at step {state.step}.")
        if state.stopping and state.status in (RUNNING, STARTING):
            return STOPPING_MESSAGE
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
        self._show_dialog(ExportDialog(run, run.parent, self.window()))

    def open_merge(self) -> None:
        from lorastudio.app.dialogs.merge_dialog import MergeDialog
        run = Path(self._run_dir)
        self._show_dialog(MergeDialog(run, run.parent, self.window()))

    def open_evaluate(self) -> None:
        from lorastudio.app.dialogs.evaluate_dialog import EvaluateDialog
        run = Path(self._run_dir)
        self._show_dialog(EvaluateDialog(run, run.parent, self.window()))

    def open_gguf_export(self) -> None:
        from lorastudio.app.dialogs.export_gguf_dialog import GgufExportDialog
        run = Path(self._run_dir)
        self._show_dialog(GgufExportDialog(run, run.parent, self.window()))

    @staticmethod
    def _show_dialog(dialog) -> None:
        """Not modal: the window stays usable while the dialog's job runs (shown in the jobs area)."""
        dialog.setAttribute(Qt.WA_DeleteOnClose)
        track(dialog)
        dialog.show()

    def _open(self) -> None:
        if self._folder and Path(self._folder).exists():
            QDesktopServices.openUrl(QUrl.fromLocalFile(self._folder))
