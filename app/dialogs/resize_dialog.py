"""Save a smaller adapter…: the best rank-K approximation of every update, or per module the
smallest rank holding a share of it, with the size before and after and the error it costs.

Opened by the Rank view (app/runs/rank_view.py) with the rank report in hand: the sizes and errors
shown before saving are computed from the report's singular values (core/runs/rank_report.py,
torch-free). The checks run off the GUI thread (core.plans.resize.plan_resize); the resize is
the resize job (core/jobs/resize.py) in its own process, followed by a JobProcess.
"""
from __future__ import annotations

from pathlib import Path
from statistics import mean

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (QButtonGroup, QDialogButtonBox, QDoubleSpinBox, QFileDialog, QFormLayout,
                               QHBoxLayout, QLabel, QLineEdit, QPushButton, QRadioButton,
                               QSpinBox, QVBoxLayout, QWidget)

from lorastudio.app.dialogs.job_dialog import JobDialog
from lorastudio.app.job_process import JobProcess
from lorastudio.app.thread_pool import run_in_background
from lorastudio.core.formatting import format_bytes
from lorastudio.core.plans.resize import ResizeRequest, plan_resize, start_resize
from lorastudio.core.runs.rank_report import adapter_bytes, new_ranks, suggested_rank, tail_error


def resize_preview(report: dict, rank: int | None, energy: float | None) -> dict:
    """{before, after (bytes), mean_error, max_error, ranks} of a resize, from the report alone."""
    ranks = new_ranks(report, rank, energy)
    errors = [tail_error(m["singular_values"], ranks[m["name"]]) for m in report["modules"]]
    return {"before": adapter_bytes(report), "after": adapter_bytes(report, ranks), "mean_error": mean(errors),
            "max_error": max(errors), "ranks": ranks}


class ResizeDialog(JobDialog):
    CANCEL_QUESTION = None         # closing stops the resize without asking

    def __init__(self, target, report: dict, parent: QWidget | None = None):
        super().__init__(parent)
        self.target, self.report = target, report
        self.setWindowTitle("Save a smaller adapter")
        self.setMinimumWidth(560)
        self.status: str | None = None
        self.output: Path | None = None
        self.process = JobProcess(self)
        self.process.event.connect(self._event)
        self.process.finished.connect(self._finish)
        self.r = max(m["rank"] for m in report["modules"])
        self._build()
        self._update()

    def _build(self) -> None:
        self.by_rank = QRadioButton("&Same rank for every module")
        self.by_energy = QRadioButton("&Per module: the smallest rank holding")
        group = QButtonGroup(self)
        group.addButton(self.by_rank)
        group.addButton(self.by_energy)
        suggested = suggested_rank(self.report)[0]
        default = suggested if suggested < self.r else max(1, self.r // 2)
        self.rank_spin = QSpinBox(minimum=1, maximum=self.r, value=default)
        self.energy_spin = QDoubleSpinBox(minimum=50.0, maximum=100.0, value=99.0, decimals=1, singleStep=0.5,
                                          suffix=" % of its update")
        self.by_rank.setChecked(True)
        self.auto_out = self._default_out()      # the name follows the choice until the user changes it
        self.out_edit = QLineEdit(self.auto_out)
        browse = QPushButton("&Browse…", clicked=self._browse)
        out_row = QHBoxLayout()
        out_row.addWidget(self.out_edit, 1)
        out_row.addWidget(browse)
        form = QFormLayout()
        rank_row, energy_row = QHBoxLayout(), QHBoxLayout()
        for row, radio, spin in ((rank_row, self.by_rank, self.rank_spin),
                                 (energy_row, self.by_energy, self.energy_spin)):
            row.addWidget(radio)
            row.addWidget(spin)
            row.addStretch(1)
            form.addRow(row)
        form.addRow("Output", out_row)
        self.preview_label = QLabel(wordWrap=True)
        self._make_status_widgets()
        note = QLabel("Each update is replaced by its truncated SVD, split back into B and A; the new "
                      "folder gets the tokenizer and a model card listing each module's error. "
                      "Compare it with the original: lorastudio eval RUN --adapter FOLDER.", wordWrap=True)
        note.setProperty("role", "hint")
        self.buttons = QDialogButtonBox()
        self.save_button = self.buttons.addButton("Save", QDialogButtonBox.ActionRole)
        self.open_button = self.buttons.addButton("Open folder", QDialogButtonBox.ActionRole)
        self.close_button = self.buttons.addButton(QDialogButtonBox.Close)
        self.open_button.hide()
        self.save_button.clicked.connect(lambda: self.start_resize())
        self.open_button.clicked.connect(self._open)
        self.close_button.clicked.connect(self.close)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        for widget in (self.preview_label, note, self.phase_label, self.progress, self.result_label, self.buttons):
            layout.addWidget(widget)
        for signal in (self.by_rank.toggled, self.rank_spin.valueChanged, self.energy_spin.valueChanged,
                       self.out_edit.textChanged):
            signal.connect(self._update)

    def choice(self) -> tuple[int | None, float | None]:
        """(rank, energy): one of them set."""
        if self.by_rank.isChecked():
            return self.rank_spin.value(), None
        return None, round(self.energy_spin.value() / 100, 4)

    def _default_out(self) -> str:
        folder = self.target.run_dir if self.target.run_dir is not None else self.target.adapter
        rank, energy = self.choice()
        suffix = f"r{rank}" if rank is not None else f"e{energy * 100:g}"
        return str(Path.home() / f"{Path(folder).name}-{suffix}")

    def _update(self, *_args) -> None:
        rank, energy = self.choice()
        if self.out_edit.text() == self.auto_out and self._default_out() != self.auto_out:
            self.auto_out = self._default_out()
            self.out_edit.setText(self.auto_out)
        self.rank_spin.setEnabled(rank is not None)
        self.energy_spin.setEnabled(energy is not None)
        p = resize_preview(self.report, rank, energy)
        saved = 1 - p["after"] / p["before"] if p["before"] else 0.0
        spread = sorted(set(p["ranks"].values()))
        ranks = f"rank {spread[0]}" if len(spread) == 1 else f"ranks {spread[0]}–{spread[-1]}"
        self.preview_label.setText(
            f"<b>{format_bytes(p['before'])} → {format_bytes(p['after'])}</b> of LoRA weights "
            f"({saved:.0%} smaller; {ranks}). Relative error of the updates ‖ΔW − ΔW<sub>k</sub>‖ / ‖ΔW‖: "
            f"mean {p['mean_error']:.2%}, largest {p['max_error']:.2%}.")
        idle = not self.running
        self.save_button.setEnabled(idle and bool(self.out_edit.text().strip()))
        self.close_button.setText("Close" if idle else "Cancel")

    @property
    def running(self) -> bool:
        return self.process.running

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Save the smaller adapter into", str(Path.home()))
        if folder:
            self.out_edit.setText(folder)

    # ---- running --------------------------------------------------------------------------
    def start_resize(self, overwrite: bool = False) -> None:
        self.save_button.setEnabled(False)
        rank, energy = self.choice()
        out = Path(self.out_edit.text().strip()).expanduser()
        run_in_background(plan_resize, ResizeRequest(self.target, out, rank, energy, overwrite), on_done=self._launch,
                          on_failed=lambda exc: self._refused(exc, out, overwrite))

    def _refused(self, exc: Exception, out: Path, overwrite: bool) -> None:
        self._refused_output(exc, overwrite, "is not empty",
                             lambda e: f"{out} is not empty.\n\nReplace its contents with the smaller adapter? "
                                       "(They are removed only once it is saved.)",
                             None, self.start_resize)

    def _launch(self, job) -> None:
        self.output, self.status = job.out, None
        self.progress.setValue(0)
        self.progress.show()
        try:
            self.process.attach(start_resize(job))
        except OSError as exc:
            self.progress.hide()
            self._result(f"The resize could not start: {exc}", "error")
        self._update()

    def _finish(self, outcome) -> None:
        self.status = outcome.status
        if outcome.status == "completed":
            self.progress.setValue(100)
            self.phase_label.setText("Done.")
            self.open_button.show()
            self._result(f"Saved the smaller adapter to {outcome.output}\nIts README.md lists each module's "
                         "relative error.", "notice")
        else:
            self.progress.hide()
            self._result("Cancelled; nothing was written." if outcome.status == "stopped" else outcome.words(),
                         "error")
        self._update()

    def _open(self) -> None:
        if self.output is not None and self.output.exists():
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.output)))
