"""The bar under the form: run name, the TensorBoard option, Start, Stop, and why Start is disabled."""
from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout, QWidget

from lorastudio.core.config import RunConfig, field_help


class StartBar(QWidget):
    start_requested = Signal()
    stop_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("StartBar")
        self.name_edit = QLineEdit(placeholderText="Run name (optional)")
        self.name_edit.setToolTip(field_help(RunConfig, "name"))
        self.start_button = QPushButton("Start training", objectName="StartButton")
        self.start_button.setToolTip("Write the run folder and start the worker (Ctrl+Return)")
        self.stop_button = QPushButton("Stop", objectName="StopButton", enabled=False)
        self.stop_button.setToolTip("Stop gracefully: the worker saves a checkpoint and the adapter (Esc)")
        self.tensorboard_box = QCheckBox("TensorBoard files")
        self.tensorboard_box.setToolTip("Also write TensorBoard event files into the run folder's tensorboard/ "
                                        "(from the journal, at each eval, checkpoint and the end); compare runs "
                                        "with: tensorboard --logdir RUNS_FOLDER")
        self.background_box = QCheckBox("Background priority")
        self.background_box.setToolTip("Start the trainer at a low CPU priority (nice 10): the rest of the "
                                       "computer stays responsive, and training slows down whenever anything "
                                       "else wants the CPU. Off: normal priority.")
        self.reason_label = QLabel(wordWrap=True)
        self.reason_label.setProperty("role", "reason")
        self.start_button.clicked.connect(self.start_requested)
        self.stop_button.clicked.connect(self.stop_requested)
        row = QHBoxLayout()
        row.addWidget(self.name_edit, 1)
        row.addWidget(self.stop_button)
        row.addWidget(self.start_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 8)
        layout.setSpacing(4)
        layout.addLayout(row)
        options = QHBoxLayout()
        options.addWidget(self.tensorboard_box)
        options.addWidget(self.background_box)
        options.addStretch(1)
        layout.addLayout(options)
        layout.addWidget(self.reason_label)

    def set_state(self, can_start: bool, reason: str, running: bool) -> None:
        self.start_button.setEnabled(can_start and not running)
        self.stop_button.setEnabled(running)
        self.name_edit.setEnabled(not running)
        self.reason_label.setText("" if running or can_start else reason)
        # Waiting (reading, importing, checking: the reason ends in "…") is not an error: grey, not red.
        role = "hint" if reason.rstrip().endswith("…") else "reason"
        if self.reason_label.property("role") != role:
            self.reason_label.setProperty("role", role)
            self.reason_label.style().polish(self.reason_label)
        self.reason_label.setVisible(bool(self.reason_label.text()))
        self.start_button.setToolTip(reason if not can_start and not running else
                                     "Write the run folder and start the worker (Ctrl+Return)")
