"""Start the installed app offscreen, check that the main window appears, and exit cleanly."""
from __future__ import annotations

import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main() -> int:
    from importlib.metadata import version

    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication, QMainWindow

    from lorastudio.app.application import create_app, run

    create_app([])
    seen: list[str] = []

    def check() -> None:
        windows = [w for w in QApplication.topLevelWidgets() if isinstance(w, QMainWindow) and w.isVisible()]
        seen.extend(w.windowTitle() or "(untitled)" for w in windows)
        for w in windows:
            w.close()
        QApplication.instance().exit(0 if windows else 3)
    QTimer.singleShot(3000, check)
    code = run([])
    heavy = [m for m in ("torch", "transformers", "peft", "bitsandbytes") if m in sys.modules]
    print(f"smoke test: lorastudio {version('lorastudio')}; main window: {seen or 'none'}; "
          f"exit {code}; heavy modules in the window process: {heavy or 'none'}")
    return 0 if code == 0 and seen and not heavy else 1


if __name__ == "__main__":
    sys.exit(main())
