"""Merge and save…: fold an adapter into its base model, in a worker, with a fidelity check.

The checks (target folder, disk space) run off the GUI thread (core.plans.merge.plan_merge);
the merge itself is the merge job (core/jobs/merge.py) in its own process, followed through its
journal by a JobProcess. The Train page's banner and the Runs page open this same dialog.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (QComboBox, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout,
                               QLabel, QLineEdit, QPushButton, QVBoxLayout, QWidget)

from lorastudio.app.dialogs.job_dialog import JobDialog
from lorastudio.app.dialogs.adapter_picker import AdapterPicker
from lorastudio.app.job_process import JobProcess
from lorastudio.app.thread_pool import run_in_background
from lorastudio.core.formatting import format_bytes
from lorastudio.core.plans.merge import MergeRequest, plan_merge, start_merge

DTYPES = [("bf16 (recommended on GPUs)", "bf16"), ("fp16", "fp16"), ("fp32 (exact, twice the size)", "fp32")]
SHARD_SIZES = ["5GB", "2GB", "1GB", "500MB"]


def fidelity_text(f: dict) -> str:
    verdict = ("⚠ beyond what rounding to {0} explains — compare before shipping".format(f["dtype"])
               if f["flagged"] else "within what rounding to {0} explains".format(f["dtype"]))
    return (f"Fidelity on {f['prompts']} prompts: largest |Δ logit| {f['max_abs_diff']:.3g}, "
            f"mean {f['mean_abs_diff']:.3g} ({verdict}); greedy continuations agree on "
            f"{f['greedy_agree']} of {f['prompts']}.")


class MergeDialog(JobDialog):
    CANCEL_TITLE = 'Cancel the merge?'
    CANCEL_QUESTION = 'A merge is running. Cancel it? Nothing will be written.'

    def __init__(self, run_dir: Path | None, runs_root: Path | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Merge and save")
        self.setMinimumWidth(600)
        self.status: str | None = None          # completed / stopped / failed once finished
        self.fidelity: dict | None = None
        self.output: Path | None = None
        self.process = JobProcess(self)
        self.process.event.connect(self._event)
        self.process.finished.connect(self._finish)
        self._build(run_dir, runs_root)
        self._update()

    # ---- layout ---------------------------------------------------------------------------
    def _build(self, run_dir, runs_root) -> None:
        self.picker = AdapterPicker(run_dir, runs_root)
        self.out_edit = QLineEdit(placeholderText="A new or empty folder for the merged model")
        if run_dir is not None:
            self.out_edit.setText(str(Path.home() / f"{Path(run_dir).name}-merged"))
        browse = QPushButton("Browse…", clicked=self._browse)
        row = QHBoxLayout()
        row.addWidget(self.out_edit, 1)
        row.addWidget(browse)
        self.dtype_combo, self.shard_combo = QComboBox(), QComboBox(editable=True)
        for label, value in DTYPES:
            self.dtype_combo.addItem(label, value)
        self.shard_combo.addItems(SHARD_SIZES)
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cpu", "cuda"])
        form = QFormLayout()
        form.addRow(self.picker)
        form.addRow("Output", row)
        form.addRow("Precision", self.dtype_combo)
        form.addRow("Shard size", self.shard_combo)
        form.addRow("Device", self.device_combo)
        note = QLabel("The base model is loaded unquantized in this precision (even if training used "
                      "4-bit or 8-bit), merged, saved as safetensors shards with its tokenizer, then "
                      "loaded back and compared with base + adapter.", wordWrap=True)
        note.setProperty("role", "hint")
        self._make_status_widgets()
        self.buttons = QDialogButtonBox()
        self.merge_button = self.buttons.addButton("Merge", QDialogButtonBox.ActionRole)
        self.open_button = self.buttons.addButton("Open folder", QDialogButtonBox.ActionRole)
        self.close_button = self.buttons.addButton(QDialogButtonBox.Close)
        self.open_button.hide()
        self.merge_button.clicked.connect(lambda: self.start_merge())
        self.open_button.clicked.connect(self._open)
        self.close_button.clicked.connect(self.close)
        layout = QVBoxLayout(self)
        for item in (form, note, self.phase_label, self.progress, self.result_label, self.buttons):
            (layout.addLayout if isinstance(item, QFormLayout) else layout.addWidget)(item)
        self.out_edit.textChanged.connect(self._update)
        self.picker.changed.connect(self._update)

    @property
    def running(self) -> bool:
        return self.process.running

    def _update(self) -> None:
        idle = not self.running
        ready = self.picker.run_dir is not None and self.picker.checkpoint_combo.count() > 0 \
            and bool(self.out_edit.text().strip())
        self.merge_button.setEnabled(idle and ready)
        self.merge_button.setText("Merge")
        self.close_button.setText("Close" if idle else "Cancel merge")

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Save the merged model into", str(Path.home()))
        if folder:
            self.out_edit.setText(folder)

    # ---- running --------------------------------------------------------------------------
    def job_args(self, overwrite: bool) -> MergeRequest:
        return MergeRequest(self.picker.run_dir, Path(self.out_edit.text().strip()).expanduser(),
                            self.picker.checkpoint, self.dtype_combo.currentData(),
                            self.shard_combo.currentText().strip(), None, self.device_combo.currentText(),
                            overwrite)

    def start_merge(self, overwrite: bool = False) -> None:
        self.merge_button.setEnabled(False)
        self._result("Checking the output folder and the free disk space…", "hint")
        args = self.job_args(overwrite)
        run_in_background(plan_merge, args, on_done=self._launch, on_failed=lambda e: self._refused(e, args))

    def _refused(self, exc: Exception, args) -> None:
        self._refused_output(exc, args.overwrite, "is not empty",
                             lambda e: f"{args.out} is not empty.\n\nReplace its contents with the merged model? "
                                       "(They are removed only once the merge has succeeded.)",
                             "Nothing was written. Choose an empty or new folder.", self.start_merge)

    def _launch(self, job) -> None:
        self.output, self.status, self.fidelity = job.out, None, None
        self.progress.setValue(0)
        self.progress.show()
        self._result(f"About {format_bytes(job.estimate)} to write.", "hint")
        try:
            self.process.attach(start_merge(job))
        except OSError as exc:          # the merges folder cannot be written, the worker cannot start
            self.progress.hide()
            self._result(f"The merge could not start: {exc}", "error")
        self._update()

    def _finish(self, outcome) -> None:
        """The merge ended (an Outcome): completed, stopped, or failed — a crash included, in core's words."""
        self._show_written(outcome, f"Merged model saved to {outcome.output}", "Merge cancelled; nothing was written.",
                           fidelity_text)

    def _open(self) -> None:
        if self.output is not None and self.output.exists():
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.output)))
