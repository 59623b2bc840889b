"""The status bar's jobs area: each background job a dialog started (evaluate, merge, GGUF export,
rank, resize) as one small entry — its name, a progress bar that follows the job's `phase` events
(their `fraction`, as they come: per batch where the job reports so), Cancel, Show (the dialog
again), and at the end its result in words.

The dialogs are not modal: the window stays usable while they run, and a dialog's Hide button
(added by `track`) puts it away while its job goes on here. `track(dialog)` wants a dialog with a
`process` (app.job_process.JobProcess); a JobDialog's `cancel()` is used when it has one.
"""
from __future__ import annotations

import shiboken6
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QHBoxLayout, QLabel, QProgressBar, QToolButton,
                               QWidget)

RESULT_WORDS = {"completed": "done", "stopped": "cancelled", "failed": "failed"}


def jobs_area_of(widget: QWidget) -> "JobsArea | None":
    """The main window's jobs area, for a dialog parented to it (None outside the main window)."""
    parent = widget.parentWidget()
    while parent is not None:               # a dialog of a dialog (Rank → Resize) finds it too
        area = getattr(parent, "jobs_area", None)
        if area is not None:
            return area
        parent = parent.parentWidget()
    return None


def track(dialog: QDialog) -> None:
    """Show `dialog`'s job in its window's jobs area whenever it starts, and give the dialog a Hide
    button while the job runs. Without a jobs area (a dialog on its own, in tests) nothing changes."""
    area = jobs_area_of(dialog)
    if area is None or not hasattr(dialog, "process") or getattr(dialog, "_jobs_area", None) is not None:
        return
    dialog._jobs_area = area
    box = dialog.findChild(QDialogButtonBox)
    if box is not None:
        hide = box.addButton("Hide", QDialogButtonBox.ActionRole)
        hide.setObjectName("HideJobButton")
        hide.setToolTip("Put this window away; the job goes on, and shows with its progress and Cancel in "
                        "the status bar")
        hide.hide()
        hide.clicked.connect(dialog.hide)
        dialog.process.started.connect(hide.show)
        dialog.process.finished.connect(hide.hide)
        dialog.hide_button = hide
    dialog.process.started.connect(lambda _folder: area.add(dialog))
    if dialog.process.running:
        area.add(dialog)


class JobEntry(QWidget):
    """One job: name, progress, Cancel / Show, then its result and a dismiss button."""

    def __init__(self, dialog: QDialog, area: "JobsArea"):
        super().__init__(area)
        self.dialog, self.area = dialog, area
        self.status: str | None = None
        self.title = dialog.windowTitle() or "Job"
        self.label = QLabel(self.title)
        self.progress = QProgressBar(maximum=100, textVisible=False)
        self.progress.setFixedSize(70, 10)
        self.cancel_button = QToolButton(text="Cancel", toolTip=f"Cancel: {self.title}")
        self.show_button = QToolButton(text="Show", toolTip="Show the dialog of this job")
        self.dismiss_button = QToolButton(text="✕", toolTip="Remove from the status bar")
        self.dismiss_button.hide()
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 0, 4, 0)
        layout.setSpacing(4)
        for widget in (self.label, self.progress, self.cancel_button, self.show_button, self.dismiss_button):
            layout.addWidget(widget)
        self.cancel_button.clicked.connect(self.cancel)
        self.show_button.clicked.connect(self.show_dialog)
        self.dismiss_button.clicked.connect(lambda: self.area.remove(self))
        process = dialog.process
        process.event.connect(self._event)
        process.finished.connect(self._finished)
        dialog.destroyed.connect(self._dialog_gone)

    def _alive(self) -> bool:
        return self.dialog is not None and shiboken6.isValid(self.dialog)

    def _event(self, ev: dict) -> None:
        if ev["type"] != "phase":
            return
        if ev.get("fraction") is not None:
            self.progress.setValue(int(100 * ev["fraction"]))
        self.setToolTip(f"{self.title}: {ev.get('message') or ev['name']}")

    def _finished(self, outcome) -> None:
        self.status = outcome.status
        words = RESULT_WORDS.get(outcome.status, outcome.status)
        error = (outcome.error or {}).get("message") if outcome.status == "failed" else None
        self.label.setText(f"{self.title}: {words}")
        self.label.setStyleSheet("color: #b42318;" if outcome.status == "failed" else "")
        self.setToolTip(error or f"{self.title}: {words}")
        self.progress.setValue(100 if outcome.status == "completed" else self.progress.value())
        self.progress.hide()
        self.cancel_button.hide()
        self.dismiss_button.show()

    def _dialog_gone(self, *_args) -> None:
        self.dialog = None
        self.show_button.hide()
        if self.status is None:             # closed while running: a JobDialog cancels first
            self.area.remove(self)

    def cancel(self) -> None:
        if not self._alive():
            return
        if hasattr(self.dialog, "cancel"):
            self.dialog.cancel()
        else:
            self.dialog.process.stop()
        self.label.setText(f"{self.title}: cancelling…")

    def show_dialog(self) -> None:
        if self._alive():
            self.dialog.show()
            self.dialog.raise_()
            self.dialog.activateWindow()


class JobsArea(QWidget):
    """The entries, side by side, in the status bar (hidden while there are none)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("JobsArea")
        self.entries: list[JobEntry] = []
        self._layout = QHBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(8)
        self._layout.setAlignment(Qt.AlignRight)
        self.hide()

    def add(self, dialog: QDialog) -> JobEntry:
        for entry in list(self.entries):       # a dialog started again: its old entry goes
            if entry.dialog is dialog:
                self.remove(entry)
        entry = JobEntry(dialog, self)
        self.entries.append(entry)
        self._layout.addWidget(entry)
        self.show()
        return entry

    def remove(self, entry: JobEntry) -> None:
        if entry in self.entries:
            self.entries.remove(entry)
            entry.hide()
            entry.deleteLater()
        self.setVisible(bool(self.entries))

    def running(self) -> list[JobEntry]:
        return [e for e in self.entries if e.status is None]
