"""Evaluate…: the base model against base + adapter on held-out data, from the window.

The evaluation job (core/jobs/evaluate.py, what `lorastudio eval` runs) does the work in its own
process, started by core.plans.evaluate.start_evaluate and followed by a JobProcess: its phases
drive the progress bar, its `evaluation` event fills the table (held-out loss, exact match, valid
JSON; base and adapter side by side — the Playground's EvalSummary). The Runs page and the Train
page's final status open this dialog; the run's last evaluation (RUN/eval.json) shows at once.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QDialogButtonBox, QFormLayout, QLabel, QSpinBox, QVBoxLayout, QWidget

from lorastudio.app.dialogs.job_dialog import JobDialog
from lorastudio.app.dialogs.adapter_picker import AdapterPicker
from lorastudio.app.job_process import JobProcess
from lorastudio.app.playground.eval_summary import EvalSummary
from lorastudio.core.plans.evaluate import EvaluateRequest, start_evaluate
from lorastudio.core.runs.heldout import read_eval

DEFAULT_PROMPTS = 48


class EvaluateDialog(JobDialog):
    CANCEL_TITLE = 'Cancel the evaluation?'
    CANCEL_QUESTION = 'An evaluation is running. Cancel it? Nothing will be saved.'

    def __init__(self, run_dir: Path | None, runs_root: Path | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Evaluate")
        self.setMinimumWidth(560)
        self.status: str | None = None          # completed / stopped / failed once finished
        self.result: dict | None = None
        self.process = JobProcess(self)
        self.process.event.connect(self._event)
        self.process.finished.connect(self._finish)
        self._build(run_dir, runs_root)
        self._show_stored()
        self._update()

    # ---- layout ---------------------------------------------------------------------------
    def _build(self, run_dir, runs_root) -> None:
        self.picker = AdapterPicker(run_dir, runs_root)
        self.limit_spin = QSpinBox(minimum=1, maximum=10_000, value=DEFAULT_PROMPTS)
        self.limit_spin.setToolTip("How many held-out prompts each side answers (greedy) for exact match")
        form = QFormLayout()
        form.addRow(self.picker)
        form.addRow("Prompts", self.limit_spin)
        note = QLabel("On the run's held-out data (its validation file, else its validation split): the "
                      "loss on the answers, then a greedy answer to each prompt from the base model and "
                      "from base + adapter. An answer ends at end of turn; when the expected answers are "
                      "JSON, also once it holds a complete object (or has begun as prose, which cannot "
                      "score).", wordWrap=True)
        note.setProperty("role", "hint")
        self._make_status_widgets()
        self.summary = EvalSummary()
        self.buttons = QDialogButtonBox()
        self.evaluate_button = self.buttons.addButton("Evaluate", QDialogButtonBox.ActionRole)
        self.evaluate_button.setDefault(True)
        self.close_button = self.buttons.addButton(QDialogButtonBox.Close)
        self.evaluate_button.clicked.connect(self.start)
        self.close_button.clicked.connect(self.close)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        for widget in (note, self.phase_label, self.progress, self.summary, self.result_label, self.buttons):
            layout.addWidget(widget)
        self.picker.changed.connect(self._picked)

    @property
    def running(self) -> bool:
        return self.process.running

    def _update(self) -> None:
        idle = not self.running
        ready = self.picker.run_dir is not None and self.picker.checkpoint_combo.count() > 0
        self.evaluate_button.setEnabled(idle and ready)
        self.picker.setEnabled(idle)
        self.limit_spin.setEnabled(idle)
        self.close_button.setText("Close" if idle else "Cancel evaluation")

    def _picked(self) -> None:
        if not self.running:
            self._show_stored()
            self._update()

    def _show_stored(self) -> None:
        """The run's last evaluation (RUN/eval.json), if it was of the adapter now chosen."""
        run = self.picker.run_dir
        stored = read_eval(run) if run is not None else None
        if stored and stored.get("checkpoint") == self.picker.checkpoint:
            self.summary.show_result(stored, run.name)
            self.summary.title.setText(f"Last evaluation ({stored.get('date', '?').replace('T', ' ')})")
        else:
            self.summary.show_result(None, run.name if run else "")
            self.summary.note.setText("Not evaluated yet: press Evaluate.")
            self.summary.title.setText("Evaluation")

    # ---- running --------------------------------------------------------------------------
    def start(self) -> None:
        run = self.picker.run_dir
        if run is None or self.running:
            return
        self.status, self.result = None, None
        self.result_label.hide()
        self.progress.setValue(0)
        self.progress.show()
        self.phase_label.setText("Starting the evaluation worker…")
        try:
            self.process.attach(start_evaluate(EvaluateRequest(run, self.picker.checkpoint,
                                                              limit=self.limit_spin.value())))
        except OSError as exc:          # the evals folder cannot be written, the worker cannot start
            self.progress.hide()
            self._result(f"The evaluation could not start: {exc}", "error")
        self._update()

    def _event(self, ev: dict) -> None:
        if ev["type"] == "evaluation":
            self.result = ev["result"]
        else:
            super()._event(ev)

    def _finish(self, outcome) -> None:
        """The job ended (an Outcome): completed, stopped, or failed — a crash included, in core's words."""
        self.status = outcome.status
        if outcome.status == "completed" and self.result is not None:
            self.progress.setValue(100)
            self.phase_label.setText(f"Done in {self.result.get('seconds', 0):.0f} s.")
            self.summary.show_result(self.result, Path(self.result.get("run", "")).name)
            self.summary.title.setText("Evaluation")
            self._result(f"Saved to {outcome.output}", "notice")
        else:
            self.progress.hide()
            self.phase_label.setText("")
            if outcome.status == "stopped":
                self._result("Evaluation cancelled; nothing was saved.", "notice")
            else:
                error = outcome.error or {"message": "The evaluation ended without a result.", "hint": ""}
                hint = f"\nWhat to do: {error['hint']}" if error.get("hint") else ""
                self._result(f"{error['message']}{hint}", "error")
        self._update()
