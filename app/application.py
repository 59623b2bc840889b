"""`lorastudio` with no arguments: create the QApplication and show the main window."""
from __future__ import annotations

import sys

from PySide6.QtCore import QSettings
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from lorastudio.app.compat import pin_none
from lorastudio.app.system_check import guard_qt_start
from lorastudio.app.theme import apply_style_sheet, apply_theme
from lorastudio.core import package_version as app_version

ORGANIZATION = APPLICATION = "LoRA Studio"
DESKTOP_ID = "io.github.lorastudio.LoRAStudio"      # matches packaging/linux/*.desktop


def app_icon() -> QIcon:
    from importlib.resources import files
    icons = files("lorastudio.resources") / "icons"
    icon = QIcon()
    for size in (16, 24, 32, 48, 64, 128, 256, 512):
        icon.addFile(str(icons / "hicolor" / f"{size}x{size}" / "lorastudio.png"))
    return icon


def create_app(argv: list[str] | None = None, style_sheet: bool = True) -> QApplication:
    """The QApplication, themed; `style_sheet=False` leaves the sheet to the caller (`run`)."""
    pin_none()
    app = QApplication.instance() or QApplication(list(argv if argv is not None else sys.argv))
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setApplicationDisplayName(APPLICATION)
    app.setDesktopFileName(DESKTOP_ID)
    app.setApplicationVersion(app_version())
    app.setWindowIcon(app_icon())
    QSettings.setDefaultFormat(QSettings.IniFormat)
    apply_theme(app, with_style_sheet=style_sheet)
    app.styleHints().colorSchemeChanged.connect(lambda _scheme: apply_theme(app))
    return app


def run(argv: list[str] | None = None) -> int:
    with guard_qt_start():
        app = create_app(argv, style_sheet=False)
    from lorastudio.app.single_instance import SingleInstance, raise_window
    from lorastudio.core.runs.folders import data_home
    instance = SingleInstance(data_home(), parent=app)
    if not instance.claim():            # a window on this data directory is open: it was raised
        print("LoRA Studio is already open for this data folder; its window was raised.", file=sys.stderr)
        return 0
    from lorastudio.app.main_window import MainWindow   # after the QApplication: pyqtgraph reads it
    window = MainWindow()
    instance.on_raise = lambda: raise_window(window)
    apply_style_sheet(app)          # once the window is built, before it is polished (see theme.py)
    window.show()
    return app.exec()


if __name__ == "__main__":
    sys.exit(run())
