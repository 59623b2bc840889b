"""One window per data directory: the first start listens on a local socket named from the data
directory (and the user); a second start finds it, asks it to raise its window, and exits.

Two windows on one data directory would start a second import of the same model, follow the same
runs twice and write the same settings; a second data directory (LORASTUDIO_HOME) is a separate
instance and may run beside the first.
"""
from __future__ import annotations

import getpass
import hashlib
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QObject, Qt
from PySide6.QtNetwork import QLocalServer, QLocalSocket

CONNECT_MS = 500
RAISE = b"raise\n"


def server_name(data_dir: Path) -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "user"
    digest = hashlib.sha1(f"{user}:{Path(data_dir).resolve()}".encode()).hexdigest()[:16]
    return f"lorastudio-{digest}"


def ask_first_to_raise(name: str) -> bool:
    """True when another instance answers on `name` (it was asked to raise its window)."""
    socket = QLocalSocket()
    socket.connectToServer(name)
    if not socket.waitForConnected(CONNECT_MS):
        return False
    socket.write(RAISE)
    socket.flush()
    socket.waitForBytesWritten(CONNECT_MS)
    socket.disconnectFromServer()
    return True


class SingleInstance(QObject):
    """The first instance's listener: `on_raise` runs when a second start knocks."""

    def __init__(self, data_dir: Path, on_raise: Callable[[], None] | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.name = server_name(data_dir)
        self.on_raise = on_raise
        self.server = QLocalServer(self)
        self.server.setSocketOptions(QLocalServer.UserAccessOption)
        self.server.newConnection.connect(self._knock)

    def claim(self) -> bool:
        """Listen as the first instance; False when another one already does (it was asked to raise)."""
        if ask_first_to_raise(self.name):
            return False
        if not self.server.listen(self.name):
            QLocalServer.removeServer(self.name)        # a socket file left by a crashed instance
            self.server.listen(self.name)
        return True

    def _knock(self) -> None:
        while self.server.hasPendingConnections():
            socket = self.server.nextPendingConnection()
            socket.disconnected.connect(socket.deleteLater)
            if self.on_raise is not None:
                self.on_raise()


def raise_window(window) -> None:
    window.setWindowState(window.windowState() & ~Qt.WindowMinimized)
    window.show()
    window.raise_()
    window.activateWindow()
