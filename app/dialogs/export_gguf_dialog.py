"""Export for Ollama / llama.cpp…: a run as one GGUF file (merged, or the adapter alone), with a
Modelfile and README beside it, and a fidelity check of the written file.

The sizes per type and the checks (architecture, tokenizer, target, disk space) run off the GUI
thread (core.plans.export_gguf.export_choices / plan_export_gguf); the export is the export_gguf job
(core/jobs/export_gguf.py) in its own process, followed by a JobProcess. The Train page's banner
and the Runs page open this same dialog.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialogButtonBox, QFileDialog, QFormLayout,
                               QHBoxLayout, QLabel, QLineEdit, QPushButton,
                               QVBoxLayout, QWidget)

from lorastudio.app.dialogs.job_dialog import JobDialog
from lorastudio.app.dialogs.adapter_picker import AdapterPicker
from lorastudio.app.dialogs.merge_dialog import fidelity_text
from lorastudio.app.job_process import JobProcess
from lorastudio.app.thread_pool import run_in_background
from lorastudio.core.atomic_files import tidy
from lorastudio.core.formatting import format_bytes
from lorastudio.core.models.gguf_arch import ADAPTER_TYPES, TYPE_NOTES
from lorastudio.core.plans.export_gguf import (TYPES, ExportGgufRequest, export_choices, plan_export_gguf,
                                               start_export_gguf)

DEFAULT_TYPE = "q8_0"


def gguf_fidelity_text(f: dict) -> str:
    if f.get("checked_by") == "gguf-py":
        return (f"Not checked in llama.cpp: there is no base GGUF of this family to load the adapter on. "
                f"{f['tensors']} adapter tensors read back, largest difference {f['tensor_max_abs_diff']:.3g}"
                f"{' ⚠ more than rounding explains' if f['flagged'] else ''}.")
    if f.get("checked_by") == "llama.cpp":
        text = (f"Checked in llama.cpp on {f['prompts']} prompts: the next token agrees with base + adapter at "
                f"{100 * f['top1_agree']:.1f}% of {f['positions']} positions (top-5 set {100 * f['top5_agree']:.1f}%); "
                f"greedy answers through the file's chat template are the same on {f['greedy_agree']} of {f['prompts']}.")
        if f["flagged"]:
            text += f" ⚠ {f.get('difference') or 'beyond what rounding explains'} — compare before shipping."
        else:
            text += f" Within what rounding to {f['dtype']} explains."
        if "tensor_max_abs_diff" in f:
            text += f" {f['tensors']} adapter tensors read back, largest difference {f['tensor_max_abs_diff']:.3g}."
        return text
    text = fidelity_text(f)
    if "tokens_agree" in f:
        text += f" The tokenizer read from the file splits {f['tokens_agree']} of {f['prompts']} prompts identically."
    if "tensor_max_abs_diff" in f:
        text += f" {f['tensors']} adapter tensors read back, largest difference {f['tensor_max_abs_diff']:.3g}."
    return text


class GgufExportDialog(JobDialog):
    CANCEL_TITLE = 'Cancel the export?'
    CANCEL_QUESTION = 'An export is running. Cancel it? Nothing will be written.'

    def __init__(self, run_dir: Path | None, runs_root: Path | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Export for Ollama / llama.cpp")
        self.setMinimumWidth(640)
        self.status: str | None = None
        self.fidelity: dict | None = None
        self.output: Path | None = None
        self.choices = None
        self._chosen = {False: DEFAULT_TYPE, True: "f16"}
        self.process = JobProcess(self)
        self.process.event.connect(self._event)
        self.process.finished.connect(self._finish)
        self._build(run_dir, runs_root)
        self._load_choices()

    # ---- layout ---------------------------------------------------------------------------
    def _build(self, run_dir, runs_root) -> None:
        self.picker = AdapterPicker(run_dir, runs_root)
        self.adapter_only = QCheckBox("Adapter only — a GGUF LoRA file to load on top of the base model's GGUF")
        self.type_combo = QComboBox()
        self.type_combo.setMinimumContentsLength(40)
        self.out_edit = QLineEdit(placeholderText="The .gguf file to write")
        browse = QPushButton("Browse…", clicked=self._browse)
        row = QHBoxLayout()
        row.addWidget(self.out_edit, 1)
        row.addWidget(browse)
        form = QFormLayout()
        form.addRow(self.picker)
        form.addRow("", self.adapter_only)
        form.addRow("Type", self.type_combo)
        form.addRow("Output", row)
        self.note = QLabel(wordWrap=True)
        self.note.setProperty("role", "hint")
        self._make_status_widgets()
        self.buttons = QDialogButtonBox()
        self.export_button = self.buttons.addButton("Export", QDialogButtonBox.ActionRole)
        self.export_button.setDefault(True)         # Return exports
        self.open_button = self.buttons.addButton("Open folder", QDialogButtonBox.ActionRole)
        self.close_button = self.buttons.addButton(QDialogButtonBox.Close)
        self.open_button.hide()
        self.export_button.clicked.connect(lambda: self.start_export())
        self.open_button.clicked.connect(self._open)
        self.close_button.clicked.connect(self.close)
        layout = QVBoxLayout(self)
        for item in (form, self.note, self.phase_label, self.progress, self.result_label, self.buttons):
            (layout.addLayout if isinstance(item, QFormLayout) else layout.addWidget)(item)
        self.picker.changed.connect(self._load_choices)
        self.adapter_only.toggled.connect(self._fill_types)
        self.type_combo.currentIndexChanged.connect(self._type_changed)
        self.out_edit.textChanged.connect(self._update)

    @property
    def running(self) -> bool:
        return self.process.running

    def _load_choices(self) -> None:
        self.choices = None
        self._fill_types()
        run = self.picker.run_dir
        if run is not None and self.picker.checkpoint_combo.count():
            run_in_background(export_choices, run, self.picker.checkpoint, on_done=self._got_choices,
                              on_failed=lambda exc: self._result(str(exc), "error"))

    def _got_choices(self, choices) -> None:
        self.choices = choices
        self._fill_types()

    def _fill_types(self) -> None:
        adapter_only = self.adapter_only.isChecked()
        previous = self._chosen.get(adapter_only)          # each mode keeps its own choice
        self.type_combo.blockSignals(True)
        self.type_combo.clear()
        for name in (ADAPTER_TYPES if adapter_only else TYPES):
            size = ""
            if self.choices is not None and self.choices.estimates:
                size = format_bytes(self.choices.adapter_bytes * (2 if name == "f32" else 1) if adapter_only
                                    else self.choices.estimates[name])
                size = f" — about {size}"
            self.type_combo.addItem(f"{name}  ({TYPE_NOTES[name]}){size}", name)
        index = self.type_combo.findData(previous)
        self.type_combo.setCurrentIndex(index if index >= 0 else self.type_combo.findData(
            "f16" if adapter_only else DEFAULT_TYPE))
        self.type_combo.blockSignals(False)
        self._type_changed()

    def _type_changed(self) -> None:
        run, name = self.picker.run_dir, self.type_combo.currentData()
        if name:
            self._chosen[self.adapter_only.isChecked()] = name
        if run is not None and name and (not self.out_edit.text() or self.out_edit.text() == getattr(self, "_auto", "")):
            suffix = "lora-" + name if self.adapter_only.isChecked() else name
            self._auto = str(Path.home() / f"{run.name}-{suffix}.gguf")
            self.out_edit.setText(self._auto)
        self._update()

    def _update(self) -> None:
        idle = not self.running
        problem = self.choices.problem if self.choices is not None else None
        blocked = bool(problem) and not self.adapter_only.isChecked()
        ready = self.picker.run_dir is not None and self.picker.checkpoint_combo.count() > 0 \
            and bool(self.out_edit.text().strip()) and not blocked
        self.export_button.setEnabled(idle and ready)
        self.close_button.setText("Close" if idle else "Cancel export")
        if blocked:
            self.note.setText(f"This run cannot be exported as one GGUF file: {problem}")
        elif self.adapter_only.isChecked():
            self.note.setText("Writes the LoRA adapter as a GGUF LoRA file, an Ollama Modelfile (FROM the base "
                              "GGUF, ADAPTER this file) and a README. It is read back, applied to the base and "
                              "compared with base + adapter.")
        else:
            self.note.setText("Merges the adapter into the unquantized base, writes one GGUF file with the "
                              "tokenizer and the chat template the run trained with, an Ollama Modelfile and a "
                              "README; then loads the file back with transformers and compares it with "
                              "base + adapter.")

    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save the GGUF file as", self.out_edit.text() or str(Path.home()),
                                              "GGUF files (*.gguf)")
        if path:
            self.out_edit.setText(path if path.endswith(".gguf") else path + ".gguf")

    # ---- running --------------------------------------------------------------------------
    def job_args(self, overwrite: bool) -> ExportGgufRequest:
        return ExportGgufRequest(self.picker.run_dir, Path(self.out_edit.text().strip()).expanduser(),
                                 self.type_combo.currentData(), self.picker.checkpoint,
                                 self.adapter_only.isChecked(), overwrite)

    def start_export(self, overwrite: bool = False) -> None:
        self.export_button.setEnabled(False)
        self._result("Checking the model, its tokenizer, the output file and the free disk space…", "hint")
        args = self.job_args(overwrite)
        run_in_background(plan_export_gguf, args, on_done=self._launch, on_failed=lambda e: self._refused(e, args))

    def _refused(self, exc: Exception, args) -> None:
        self._refused_output(exc, args.overwrite, "already exists",
                             lambda e: f"{e.message}.\n\nReplace it? (The old file is replaced only once the new one "
                                       "is written and checked.)",
                             "Nothing was written. Choose another file name.", self.start_export)

    def _launch(self, job) -> None:
        self.output, self.status, self.fidelity = job.out, None, None
        self.progress.setValue(0)
        self.progress.show()
        self.open_button.hide()
        self._result(f"About {format_bytes(job.estimate)} to write.", "hint")
        try:
            self.process.attach(start_export_gguf(job))
        except OSError as exc:
            self.progress.hide()
            self._result(f"The export could not start: {exc}", "error")
        self._update()

    def _finish(self, outcome) -> None:
        end = outcome.end or {}
        done = f"Wrote {outcome.output} ({format_bytes(end.get('size', 0))})"
        if end.get("modelfile"):
            done += f"\nOllama: ollama create {Path(outcome.output).stem.lower()} -f {end['modelfile']}"
        if outcome.status != "completed" and self.output is not None:
            tidy(self.output.parent)            # a killed worker's hidden file beside the target
        self._show_written(outcome, done, "Export cancelled; nothing was written.", gguf_fidelity_text)

    def _result(self, text: str, role: str) -> None:
        super()._result(text, role)
        self.adjustSize()               # room for the longer texts (the fidelity result)

    def _open(self) -> None:
        if self.output is not None and self.output.parent.exists():
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.output.parent)))
