"""`lorastudio` with no arguments: create the QApplication and show the main window."""
from __future__ import annotations

import sys

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

from lorastudio.app.compat import pin_none
from lorastudio.app.theme import apply_theme

ORGANIZATION = APPLICATION = "LoRA Studio"


def create_app(argv: list[str] | None = None) -> QApplication:
    pin_none()
    app = QApplication.instance() or QApplication(list(argv if argv is not None else sys.argv))
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setApplicationDisplayName(APPLICATION)
    app.setDesktopFileName("lorastudio")
    QSettings.setDefaultFormat(QSettings.IniFormat)
    apply_theme(app)
    app.styleHints().colorSchemeChanged.connect(lambda _scheme: apply_theme(app))
    return app


def run(argv: list[str] | None = None) -> int:
    app = create_app(argv)
    from lorastudio.app.main_window import MainWindow   # after the QApplication: pyqtgraph reads it
    window = MainWindow()
    window.show()
    return app.exec()


if __name__ == "__main__":
    sys.exit(run())
