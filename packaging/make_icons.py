"""Render resources/icons/lorastudio.svg to the PNG sizes a desktop needs (run after editing the SVG).

python packaging/make_icons.py   ->  resources/icons/hicolor/<N>x<N>/lorastudio.png
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
ICONS = Path(__file__).resolve().parent.parent / "resources" / "icons"


def main() -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    app = QGuiApplication(sys.argv[:1])  # noqa: F841 - a Qt application must exist to paint
    renderer = QSvgRenderer(str(ICONS / "lorastudio.svg"))
    for size in SIZES:
        image = QImage(size, size, QImage.Format_ARGB32)
        image.fill(Qt.transparent)
        painter = QPainter(image)
        renderer.render(painter)
        painter.end()
        target = ICONS / "hicolor" / f"{size}x{size}" / "lorastudio.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(str(target))
        print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
