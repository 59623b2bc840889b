"""The Train page: the setup form on the left, the live dashboard on the right.

Owns the TrainingProcess. Every change in the form runs `check_form` (microseconds: it builds
the config dataclasses) and Start is enabled only when it passes; the reason is shown otherwise.
At Start the file-system checks (`check_config`) run on the thread pool, then the training job starts.

The form is a lossless view of a RunConfig: the page keeps the config it loaded (a run's, a saved
form, the demo preset, or the defaults) and `values()` lays over it what the widgets changed
(train_form.overlay); every key without a widget passes through as it was loaded.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QMessageBox, QScrollArea, QSplitter, QVBoxLayout, QWidget

from lorastudio.app.thread_pool import run_in_background
from lorastudio.app.dashboard.dashboard import Dashboard
from lorastudio.app.dashboard.status_banner import next_step
from lorastudio.app.dataset.dataset_panel import DatasetPanel
from lorastudio.app.train.train_form import FormCheck, base_of, check_form, form_defaults, overlay
from lorastudio.app.train.hardware_panel import HardwarePanel
from lorastudio.app.train.lora_panel import LoraPanel
from lorastudio.app.train.model_panel import READY, ModelPanel
from lorastudio.app.dashboard.run_state import FAILED, STARTING, mode_words
from lorastudio.app.train.start_bar import StartBar
from lorastudio.core.fit.cpu import example_tokens
from lorastudio.app.train.fit_indicator import FitIndicator, confirm_start
from lorastudio.app.train.training_panel import TrainingPanel
from lorastudio.app.train.training_process import TrainingProcess
from lorastudio.core.preflight import check_config
from lorastudio.core.config import ConfigError, RunConfig
from lorastudio.core.journal import make_event
from lorastudio.core.tensorboard import export_run

STEP_MESSAGE_MS = 200


class TrainPage(QWidget):
    message = Signal(str)              # for the status bar
    running_changed = Signal(bool)

    def __init__(self, parent: QWidget | None = None, runs_root: Path | None = None):
        super().__init__(parent)
        self.runs_root = runs_root
        self.check = FormCheck(config=None)
        self.running = self._checking = False
        self._base = form_defaults()            # the config the form shows: every key, RunConfig-shaped
        self._shown_at_load: dict | None = None  # what the widgets showed right after _base was loaded
        self._restoring = False
        self.process = TrainingProcess(self)
        self._step_timer = QTimer(self, singleShot=True, interval=STEP_MESSAGE_MS, timeout=self._show_step)
        self._build()
        self._connect()
        self.validate()

    def _build(self) -> None:
        self.model_panel, self.dataset_panel = ModelPanel(), DatasetPanel()
        self.lora_panel, self.hardware_panel, self.training_panel = LoraPanel(), HardwarePanel(), TrainingPanel()
        inner = QWidget(objectName="SetupInner")
        form = QVBoxLayout(inner)
        form.setContentsMargins(10, 0, 10, 10)
        form.setSpacing(4)
        for panel in (self.model_panel, self.dataset_panel, self.lora_panel, self.hardware_panel, self.training_panel):
            form.addWidget(panel)
        form.addStretch(1)
        self.scroll = QScrollArea(objectName="SetupScroll", widgetResizable=True)
        self.scroll.setWidget(inner)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.start_bar = StartBar()
        self.fit_indicator = FitIndicator()                 # will it fit? (beside Start)
        self.start_bar.layout().insertWidget(0, self.fit_indicator)
        setup = QWidget()
        setup.setMinimumWidth(476)
        column = QVBoxLayout(setup)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(0)
        column.addWidget(self.scroll, 1)
        column.addWidget(self.start_bar)

        self.dashboard = Dashboard()
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(6, 12, 12, 10)
        right_layout.addWidget(self.dashboard)
        self.splitter = QSplitter(Qt.Horizontal)
        self.splitter.addWidget(setup)
        self.splitter.addWidget(right)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.setSizes([520, 900])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.splitter)

    def _connect(self) -> None:
        self.model_panel.model_changed.connect(self._model_changed)
        for signal in (self.dataset_panel.changed, self.lora_panel.changed, self.hardware_panel.changed,
                       self.training_panel.changed, self.start_bar.name_edit.textChanged):
            signal.connect(self.validate)
        seq_len = self.training_panel.widgets["training.seq_len"]
        seq_len.valueChanged.connect(self.dataset_panel.set_seq_len)
        self.dataset_panel.set_seq_len(seq_len.value())
        self.start_bar.start_requested.connect(self.start)
        self.hardware_panel.probed.connect(lambda: self.fit_indicator.set_gpus(self.hardware_panel.gpus))
        self.fit_indicator.apply_requested.connect(self.apply_fit)
        self.start_bar.stop_requested.connect(self.request_stop)
        p = self.process
        p.event.connect(self.dashboard.apply)
        p.event.connect(self._tensorboard)
        p.log_line.connect(self.dashboard.add_worker_log_line)     # shown only after a crash
        p.step.connect(self._step_message)
        p.finished.connect(self._finished)

    def _tensorboard(self, event: dict) -> None:
        """With "TensorBoard files" ticked: RUN/tensorboard/ follows the journal (core/tensorboard.py)."""
        run_dir = self.process.run_dir
        if (self.start_bar.tensorboard_box.isChecked() and run_dir is not None
                and event["type"] in ("eval", "checkpoint", "end")):
            run_in_background(export_run, run_dir, on_failed=lambda exc: self.dashboard.add_log_line(
                f"[warning] TensorBoard files not written: {exc}"))

    def _step_message(self, event: dict) -> None:
        """The status bar's step line, at most every STEP_MESSAGE_MS (a journal read after a restart
        brings a thousand steps at once: one message, not a thousand)."""
        self._last_step = event
        if not self._step_timer.isActive():
            self._step_timer.start()

    def _show_step(self) -> None:
        e = self._last_step
        state = self.dashboard.state
        how = mode_words(state.memory_mode, state.kernels)
        self.message.emit(f"Step {e['step']} / {e['total_steps']} · loss {e['loss']:.4f}" + (f" · {how}" if how else ""))

    # ---- form ---------------------------------------------------------------------------------
    def _model_changed(self) -> None:
        panel = self.model_panel
        self.lora_panel.set_report(panel.report if panel.state == READY else None)
        self.lora_panel.set_vision(panel.info if panel.state == READY else None)
        self.dataset_panel.set_model(panel.source() if panel.state == READY else "")
        if panel.state == READY:
            self.message.emit(f"Model: {panel.info.architecture}, read from {panel.info.path}")
        self.validate()

    def shown(self) -> dict:
        """What the widgets show, RunConfig-shaped: only the keys that have a widget."""
        training = self.training_panel.values()
        return {"model": self.model_panel.source(), "name": self.start_bar.name_edit.text().strip(),
                **self.hardware_panel.values(), "lora": self.lora_panel.values(), "training": training["training"],
                "data": {**self.dataset_panel.values(), **training["data"]}}

    def values(self) -> dict:
        """The form as a RunConfig-shaped dict, every key (the loaded config with what the widgets
        changed laid over), plus the problems the widgets found themselves."""
        values = overlay(self._base, self.shown(), self._shown_at_load)
        problems = [self.model_panel.problem(), self.dataset_panel.problem()]
        problems += self.lora_panel.problems() + self.training_panel.problems()
        values["problems"] = [p for p in problems if p]
        return values

    def validate(self) -> FormCheck:
        if self._restoring:                 # half the widgets set: check once they all are
            return self.check
        self.check = check_form(self.values())
        self.training_panel.show_problems(self.check.for_prefix("training") + self.check.for_prefix("data.validation_split"))
        self.lora_panel.show_problems([p.message for p in self.check.for_prefix("lora")])
        self._update_buttons()
        self._update_fit()
        return self.check

    def _update_fit(self) -> None:
        """The memory estimate needs the model and the settings, not the data: a form without a
        data file yet is estimated with a stand-in path."""
        panel, config = self.model_panel, self.check.config
        if config is None and panel.state == READY:
            values = self.values()
            values["data"] = {**values["data"], "path": values["data"].get("path") or "data.jsonl"}
            values["problems"] = []
            config = check_form(values).config
        ready = panel.state == READY
        preview = self.dataset_panel.preview
        rows = [row.value for row in preview.rows] if preview is not None and preview.ok else []
        self.fit_indicator.update_form(config if ready else None, panel.info if ready else None,
                                       panel.report if ready else None, example_tokens(rows))

    def apply_fit(self, overrides: dict) -> None:
        """Put "Make it fit"'s settings (dotted keys) into the form as they are: the memory mode into
        the Memory choice, the batch shape and length into theirs, the quantization; a key without
        a widget into the config the form keeps."""
        for key, value in overrides.items():
            section, _, name = key.partition(".")
            if name:
                self._base[section][name] = value
            else:
                self._base[key] = value
        training = {k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("training.")}
        self.training_panel.set_values({"training": training})
        if "quantization" in overrides:
            self.hardware_panel.set_values({**self.hardware_panel.values(), "quantization": overrides["quantization"]})
        self.validate()
        self.message.emit("Settings that fit: " + ", ".join(f"{k.split('.')[-1]} {v}" for k, v in overrides.items()))

    def _update_buttons(self) -> None:
        reason = "Checking the model and data…" if self._checking else self.check.reason
        self.start_bar.set_state(self.check.ok and not self._checking, reason, self.running)
        model, data = self.model_panel.problem(), self.dataset_panel.problem()
        self.dashboard.banner.set_next_step(*next_step(model and model[1], data and data[1],
                                                       self.check.reason, self._checking))

    def form_state(self) -> dict:
        v = self.values()
        v.pop("problems")
        return v

    def restore_form(self, v: dict) -> list[str]:
        """Show `v`, a RunConfig-shaped mapping (a saved form, a preset; keys left out take their
        defaults), and keep it as the config the form stands for. Returns the notes of older keys
        mapped on the way (training.gradient_checkpointing)."""
        base, notes = base_of(v)
        self._base, self._shown_at_load, self._restoring = base, None, True
        try:
            self.lora_panel.set_values(base["lora"])
            self.training_panel.set_values(base)
            self.hardware_panel.set_values(base)
            self.dataset_panel.set_values(base["data"])
            if not base["data"]["path"]:
                self.dataset_panel.load("")
            self.start_bar.name_edit.setText(base["name"])
            self.model_panel.load(base["model"])
        finally:
            self._restoring = False
        self._shown_at_load = self.shown()
        device = self._shown_at_load["device"]
        if self.hardware_panel.gpus is not None and device != base["device"]:
            base["device"] = device         # that device is not on this machine: the one shown is used
        self.validate()
        return notes

    def load_config(self, config: RunConfig) -> None:
        """Fill the form from a run's config (the Runs page's "Clone config"): every key is kept,
        those without a widget too. A note of an older key mapped on load goes to the status bar."""
        self.restore_form(config.to_dict())
        if config.notes:
            self.message.emit(" ".join(config.notes))

    def attach(self, run_dir: Path, handle=None) -> None:
        """Show the live view of a run found running (`handle` None) or just resumed (its JobHandle),
        its journal from the start."""
        self.process.detach()
        self.dashboard.reset(str(run_dir), STARTING)
        self.process.follow(Path(run_dir), handle)
        self._set_running(True)
        self.message.emit(f"Following {Path(run_dir).name}")

    # ---- start and stop -----------------------------------------------------------------------
    def start(self) -> None:
        if self.running or self._checking or not self.validate().ok:
            return
        if self.fit_indicator.will_not_fit_on_this_gpu():
            answer = confirm_start(self, self.fit_indicator)
            if answer == "fit":
                self.fit_indicator.make_it_fit()
            if answer != "start":
                return
        config = self.check.config
        self._checking = True
        self._update_buttons()
        self.message.emit("Checking the model and data…")
        run_in_background(check_config, config, on_done=lambda _r: self._launch(config),
                          on_failed=self._check_failed)

    def _check_failed(self, exc: Exception) -> None:
        self._checking = False
        text = str(exc) if isinstance(exc, ConfigError) else f"The checks failed: {exc}"
        self.dashboard.reset(status=FAILED)
        self.dashboard.apply(make_event("error", kind="ConfigError", message=text,
                                        hint="Fix the setting in the form and press Start again."))
        self.dashboard.apply(make_event("end", status="failed", adapter=None))
        self._update_buttons()
        self.message.emit(text)

    def _launch(self, config: RunConfig) -> None:
        self._checking = False
        try:
            run_dir = self.process.start(config, self.runs_root,
                                         background=self.start_bar.background_box.isChecked())
        except OSError as exc:
            self._check_failed(exc)
            return
        self.dashboard.reset(str(run_dir), STARTING)
        self.dashboard.add_log_line(f"run folder: {run_dir}")
        self._set_running(True)
        self.message.emit(f"Started: {run_dir}")

    def request_stop(self) -> None:
        if not self.running:
            return
        answer = QMessageBox.question(self, "Stop training?",
                                      "Stop this run? The worker saves a checkpoint and the adapter "
                                      "before it exits, so nothing trained so far is lost.",
                                      QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
        if answer == QMessageBox.Yes and self.process.stop():
            self.dashboard.set_stopping()
            self.dashboard.add_log_line("— stop requested; waiting for the worker to save and exit")
            self.message.emit("Stopping: saving a checkpoint and the adapter…")

    def _finished(self, status: str, adapter) -> None:
        self._set_running(False)
        self.message.emit(f"Run {status}" + (f": adapter in {adapter}" if adapter else ""))

    def _set_running(self, running: bool) -> None:
        self.running = running
        self.scroll.widget().setEnabled(not running)
        self._update_buttons()
        self.running_changed.emit(running)

