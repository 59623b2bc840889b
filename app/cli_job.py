"""Run one `lorastudio` CLI command (export, merge) as a child process and report how it ended.

The heavy work happens in that process (and its workers); the window only waits for the exit
code, reading stdout + stderr for the message it shows."""
from __future__ import annotations

import sys

from PySide6.QtCore import QObject, QProcess, Signal


class CliJob(QObject):
    finished = Signal(int, str)          # exit code, the last lines of its output

    def __init__(self, args: list[str], parent: QObject | None = None):
        super().__init__(parent)
        self.args = args
        self.process = QProcess(self)
        self.process.setProcessChannelMode(QProcess.MergedChannels)
        self.process.finished.connect(self._finished)
        self.process.errorOccurred.connect(self._error)

    def start(self) -> None:
        self.process.start(sys.executable, ["-m", "lorastudio.app.launcher", *self.args])

    def _output(self) -> str:
        text = bytes(self.process.readAll().data()).decode("utf-8", errors="replace")
        return "\n".join(text.strip().splitlines()[-3:])

    def _finished(self, code: int, _status) -> None:
        self.finished.emit(code, self._output())

    def _error(self, error) -> None:
        if error == QProcess.FailedToStart:
            self.finished.emit(-1, f"could not start {sys.executable}")
