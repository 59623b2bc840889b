"""Light and dark palettes that follow the system, the style sheet, and plot colours.

Fusion draws the same on every platform; the palette comes from the system colour scheme
(Qt ≥ 6.5 reports it) and the style sheet refers to palette roles, so one sheet serves both.
"""
from __future__ import annotations

from importlib import resources

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

ACCENT = "#4f6bed"
SERIES = {"train": "#4f6bed", "eval": "#e8833a", "lr": "#2aa876", "allocated": "#4f6bed",
          "reserved": "#9b59b6", "total": "#d64545", "ram": "#2aa876", "rss": "#e8833a",
          "throughput": "#17a2b8"}
OK, WARN, BAD = "#2aa876", "#e0a100", "#d64545"


def is_dark() -> bool:
    hints = QGuiApplication.styleHints()
    return hints.colorScheme() == Qt.ColorScheme.Dark


def dark_palette() -> QPalette:
    p = QPalette()
    colors = {QPalette.Window: "#1f2228", QPalette.WindowText: "#e6e6e6", QPalette.Base: "#181a1f",
              QPalette.AlternateBase: "#23262d", QPalette.Text: "#e6e6e6", QPalette.Button: "#2a2e36",
              QPalette.ButtonText: "#e6e6e6", QPalette.ToolTipBase: "#2a2e36", QPalette.ToolTipText: "#e6e6e6",
              QPalette.Highlight: ACCENT, QPalette.HighlightedText: "#ffffff", QPalette.Link: "#8ea2ff",
              QPalette.PlaceholderText: "#8a8f98", QPalette.Mid: "#3a3f48", QPalette.Midlight: "#333740",
              QPalette.Dark: "#14161a", QPalette.Shadow: "#000000", QPalette.Light: "#3a3f48"}
    for role, color in colors.items():
        p.setColor(role, QColor(color))
    for role in (QPalette.Text, QPalette.WindowText, QPalette.ButtonText):
        p.setColor(QPalette.Disabled, role, QColor("#6b7079"))
    return p


def light_palette() -> QPalette:
    p = QApplication.style().standardPalette()
    p.setColor(QPalette.Window, QColor("#f3f4f7"))
    p.setColor(QPalette.Base, QColor("#ffffff"))
    p.setColor(QPalette.AlternateBase, QColor("#f6f7fa"))
    p.setColor(QPalette.Button, QColor("#fbfbfc"))
    p.setColor(QPalette.Highlight, QColor(ACCENT))
    p.setColor(QPalette.ToolTipBase, QColor("#ffffff"))
    p.setColor(QPalette.ToolTipText, QColor("#1f2228"))
    return p


def style_sheet() -> str:
    return resources.files("lorastudio.resources").joinpath("style.qss").read_text(encoding="utf-8")


def apply_theme(app: QApplication, with_style_sheet: bool = True) -> None:
    """Fusion, the palette and (unless told to wait) the style sheet; see `apply_style_sheet`."""
    app.setStyle("Fusion")
    app.setPalette(dark_palette() if is_dark() else light_palette())
    if with_style_sheet:
        apply_style_sheet(app)


def apply_style_sheet(app: QApplication) -> None:
    """The application's style sheet. At start-up it is set once the main window is built: while an
    application sheet is set, every widget put into a layout re-resolves the sheet for its whole
    subtree, which made building the Train page ~4 times slower (~200 ms of the start-up)."""
    icons = resources.files("lorastudio.resources").joinpath("icons")
    app.setStyleSheet(style_sheet().replace("@ACCENT", ACCENT).replace("@ICONS", str(icons).replace("\\", "/")))


def plot_colors() -> tuple[str, str]:
    """(background, foreground) for pyqtgraph, from the current palette."""
    pal = QApplication.palette()
    return pal.color(QPalette.Base).name(), pal.color(QPalette.Text).name()
