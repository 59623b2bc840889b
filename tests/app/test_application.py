"""`lorastudio` with no arguments: the window comes up fast, without the heavy libraries (its
speed: tests/bench/bench_startup.py)."""
import os
import subprocess
import sys

HEAVY = ("torch", "transformers", "peft", "bitsandbytes", "datasets", "accelerate")
DEFERRED = ("pyqtgraph", "pynvml", "lorastudio.app.runs.runs_page", "lorastudio.app.playground.playground_page")


def run_python(code: str, tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "LORASTUDIO_HOME": str(tmp_path / "home"),
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "HOME": str(tmp_path)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_the_app_package_imports_without_torch(tmp_path):
    code = ("import sys, lorastudio.app.application, lorastudio.app.main_window\n"
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_run_paints_the_window_before_the_deferred_imports_and_returns_the_exit_code(tmp_path):
    # Start-up speed is measured by tests/bench/bench_startup.py (target: median < 1 s to the first
    # paint); here, what keeps it fast: at the first paint neither the heavy libraries nor pyqtgraph
    # (the plots build after it) nor NVML (the GPU probe starts after it) have been imported.
    code = (
        "import sys\n"
        "from PySide6.QtCore import QEvent, QObject, QTimer\n"
        "from PySide6.QtWidgets import QApplication\n"
        "from lorastudio.app import application\n"
        "class FirstPaint(QObject):\n"
        "    def eventFilter(self, obj, event):\n"
        "        if event.type() == QEvent.Paint and obj.isWidgetType() and obj.windowTitle() == 'LoRA Studio':\n"
        "            QApplication.instance().removeEventFilter(self)\n"
        f"            print('deferred', [m for m in {HEAVY + DEFERRED!r} if m in sys.modules])\n"
        "            print('styled', bool(QApplication.instance().styleSheet()))\n"
        "            QTimer.singleShot(500, check)\n"
        "        return False\n"
        "probe = FirstPaint()\n"
        "def check():\n"
        "    shown = [w for w in QApplication.topLevelWidgets() if w.isVisible() and w.windowTitle() == 'LoRA Studio']\n"
        "    print('shown', len(shown))\n"
        "    print('plots', 'pyqtgraph' in sys.modules)\n"
        "    QApplication.instance().exit(7)\n"
        "create_app = application.create_app\n"
        "def create(argv=None, **options):\n"
        "    app = create_app(argv, **options)\n"
        "    app.installEventFilter(probe)\n"
        "    return app\n"
        "application.create_app = create\n"
        "sys.exit(application.run([]))\n")
    result = run_python(code, tmp_path)
    assert result.returncode == 7, result.stderr           # run() returns the event loop's exit code
    lines = dict(line.split(" ", 1) for line in result.stdout.strip().splitlines())
    assert lines["deferred"] == "[]"
    assert lines["styled"] == "True"                      # the style sheet, set after the window is built
    assert lines["shown"] == "1"
    assert lines["plots"] == "True"                        # built right after the first paint


def test_shortcuts_are_wired(window):
    actions = {a.text().replace("&", ""): a.shortcut().toString() for a in window.actions()}
    assert actions["Start training"] == "Ctrl+Return"
    assert actions["Stop training"] == "Esc"
    assert actions["Open model folder…"] == "Ctrl+O"
    assert actions["Quit"] == "Ctrl+Q"


def test_sidebar_keeps_room_for_later_pages(window):
    items = [window.sidebar.item(i) for i in range(window.sidebar.count())]
    assert [i.text() for i in items] == ["Train", "Runs", "Playground"]
    assert window.pages.currentWidget() is window.train_page
