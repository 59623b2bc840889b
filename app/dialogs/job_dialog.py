"""What every dialog that runs a job shares: the result line, Cancel, and closing while it runs.

A subclass has `process` (an app.job_process.JobProcess or a wrapper with `stop()`), a `running`
property, `progress`, `phase_label` and `result_label` (made by `_make_status_widgets`), connects
the job's events to `_event`, and
names its question: CANCEL_TITLE and CANCEL_QUESTION (None: closing cancels without asking).
"""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog, QLabel, QMessageBox, QProgressBar

from lorastudio.core.runs.export import ExportError


class JobDialog(QDialog):
    CANCEL_TITLE = "Cancel?"
    CANCEL_QUESTION: str | None = "A job is running. Cancel it?"

    def _make_status_widgets(self) -> None:
        """The phase line, the progress bar and the result line (both hidden until a job reports)."""
        self.phase_label = QLabel(wordWrap=True)
        self.progress = QProgressBar(maximum=100, textVisible=True)
        self.progress.hide()
        self.result_label = QLabel(wordWrap=True, textInteractionFlags=Qt.TextSelectableByMouse)
        self.result_label.hide()

    def _event(self, ev: dict) -> None:
        """A job event: phases move the bar and the phase line; a fidelity check is kept for the end."""
        if ev["type"] == "phase":
            if ev.get("fraction") is not None:      # a phase without one keeps the bar where it is
                self.progress.setValue(int(100 * ev["fraction"]))
            self.phase_label.setText(ev.get("message") or ev["name"])
        elif ev["type"] == "fidelity":
            self.fidelity = ev

    def _result(self, text: str, role: str) -> None:
        """Show the outcome in the result line, styled by `role` (notice | error)."""
        self.result_label.setText(text)
        self.result_label.setProperty("role", role)
        self.result_label.style().polish(self.result_label)
        self.result_label.show()

    def _refused_output(self, exc: Exception, overwrite: bool, taken: str, question, decline: str | None,
                        again) -> None:
        """A start refused before the job ran. When the output is taken (`taken` in the message) and
        overwriting was not asked, ask `question(exc)` and start `again(overwrite=True)` on Yes (on No,
        show `decline` if given); anything else is shown with what to do. Calls the subclass's
        `_update` first."""
        self._update()
        if isinstance(exc, ExportError) and taken in exc.message and not overwrite:
            if QMessageBox.question(self, "Replace?", question(exc), QMessageBox.Yes | QMessageBox.No,
                                    QMessageBox.No) == QMessageBox.Yes:
                again(overwrite=True)
            elif decline is not None:
                self._result(decline, "notice")
            return
        self._result(f"{exc.message}\nWhat to do: {exc.hint}" if isinstance(exc, ExportError) else str(exc), "error")

    def _show_written(self, outcome, done: str, cancelled: str, fidelity_text) -> None:
        """A job that writes a result and checks it has ended: `done` plus the fidelity check's text
        (`fidelity_text(check)`), or why nothing was written; a flagged check shows as an error."""
        self.status = outcome.status
        if outcome.status == "completed":
            text = done + ("\n" + fidelity_text(self.fidelity) if self.fidelity else "")
            self.progress.setValue(100)
            self.phase_label.setText("Done.")
            self.open_button.show()
        else:
            if outcome.status == "stopped":
                text = cancelled
            elif outcome.error is not None:
                text = f"{outcome.error['message']}\nWhat to do: {outcome.error.get('hint', '')}"
            else:
                text = "Failed."
            self.progress.hide()
        flagged = bool(self.fidelity and self.fidelity["flagged"])
        self._result(text, "notice" if outcome.status == "completed" and not flagged else "error")
        self._update()

    def cancel(self) -> None:
        if self.process.stop():
            self.phase_label.setText("Cancelling…")

    def closeEvent(self, event) -> None:
        if self.running:
            if self.CANCEL_QUESTION is None:
                self.cancel()
            elif QMessageBox.question(self, self.CANCEL_TITLE, self.CANCEL_QUESTION,
                                      QMessageBox.Yes | QMessageBox.No, QMessageBox.No) == QMessageBox.Yes:
                self.cancel()
            event.ignore()
            return
        super().closeEvent(event)

    def reject(self) -> None:           # Esc: asks like closing does while a job runs
        if not self.running:
            super().reject()
        else:
            self.close()
