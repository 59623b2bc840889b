"""Version and icon come from the package: About, the sidebar, the window icon."""
from importlib.metadata import version

from PySide6.QtWidgets import QApplication, QMessageBox

from lorastudio.app.application import DESKTOP_ID, app_icon, app_version


def test_version_is_the_package_metadata():
    assert app_version() == version("lorastudio")


def test_icon_has_the_desktop_sizes(qapp):
    icon = app_icon()
    assert not icon.isNull()
    assert {s.width() for s in icon.availableSizes()} >= {16, 32, 48, 64, 128, 256}


def test_about_dialog_shows_the_version(qtbot, monkeypatch, tmp_path):
    from PySide6.QtCore import QSettings
    from lorastudio.app.main_window import MainWindow
    shown = []
    monkeypatch.setattr(QMessageBox, "about", lambda parent, title, text: shown.append(text))
    window = MainWindow(QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat), runs_root=tmp_path / "runs")
    qtbot.addWidget(window)
    window._about()
    assert f"LoRA Studio {version('lorastudio')}" in shown[0]
    assert DESKTOP_ID == "io.github.lorastudio.LoRAStudio"
