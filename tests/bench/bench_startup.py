"""Benchmark: seconds from starting `lorastudio` to the window's first paint (target: median < 1 s).

    python tests/bench/bench_startup.py [--runs 3] [--importtime 25]
    xvfb-run -a python tests/bench/bench_startup.py          # on a real X server (xcb), as users see it

Each run starts a fresh interpreter through the real entry point (`lorastudio.app.launcher.main`,
system check included) with an empty settings folder, and stops it right after the main window's
first paint has been handed to the screen. The clock starts in the parent just before the process
is spawned, so interpreter start-up and every import count. Prints one JSON object: each run's
seconds and CPU seconds (the process's own, up to first paint: what a busy machine cannot inflate),
the medians, the load average, the platform, and which deferred modules were loaded at first paint.
`--importtime N` adds the N slowest imports (cumulative, from `python -X importtime`) of one more run,
counting only the modules loaded before the first paint.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

# Loaded after the first paint on purpose (see app/main_window.py): their presence at first paint
# means something pulled them back into the start-up path.
DEFERRED = ("pyqtgraph", "pynvml", "lorastudio.app.widgets.series_plot", "torch", "transformers")

CHILD = r"""
import sys, time, json
spawned = float(sys.argv[1])
from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QApplication
from lorastudio.app import application, launcher

class FirstPaint(QObject):
    seen = None
    def eventFilter(self, obj, event):
        if (self.seen is None and event.type() == QEvent.Paint and obj.isWidgetType() and obj.isWindow()
                and obj.windowTitle() == "LoRA Studio"):
            self.seen = time.time()
            QTimer.singleShot(0, self.done)       # after this paint (and its children's) has finished
        return False
    def done(self):
        print(json.dumps({"first_paint_s": time.time() - spawned, "cpu_s": time.process_time(),
                          "platform": QApplication.platformName(), "source": application.__file__,
                          "loaded": [m for m in DEFERRED if m in sys.modules],
                          "modules": sorted(sys.modules) if WITH_MODULES else []}), flush=True)
        QApplication.instance().exit(0)

probe = FirstPaint()
create_app = application.create_app
def create_and_probe(argv=None, **options):
    app = create_app(argv, **options)
    app.installEventFilter(probe)
    return app
application.create_app = create_and_probe
sys.exit(launcher.main([]))
"""


def child_env(home: str) -> dict:
    env = {**os.environ, "LORASTUDIO_HOME": os.path.join(home, "data"), "HOME": home,
           "XDG_CONFIG_HOME": os.path.join(home, "config"), "LORASTUDIO_NO_DEMO": "1",
           # as on a user's machine, compiled modules are cached (here outside the source tree)
           "PYTHONPYCACHEPREFIX": os.path.join(tempfile.gettempdir(), "lorastudio-bench-pycache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if not env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY"):
        env.setdefault("QT_QPA_PLATFORM", "offscreen")
    return env


def one_start(extra_args: tuple = ()) -> tuple[dict, str]:
    code = f"DEFERRED = {DEFERRED!r}\nWITH_MODULES = {bool(extra_args)!r}\n" + CHILD
    with tempfile.TemporaryDirectory() as home:
        spawned = time.time()
        result = subprocess.run([sys.executable, *extra_args, "-c", code, repr(spawned)], capture_output=True,
                                text=True, env=child_env(home), timeout=120)
    if result.returncode != 0:
        raise SystemExit(f"the window did not start (exit {result.returncode}):\n{result.stderr[-3000:]}")
    line = [ln for ln in result.stdout.splitlines() if ln.startswith("{")][-1]
    return json.loads(line), result.stderr


def slowest_imports(stderr: str, count: int, before_paint: set[str]) -> list[tuple[str, float]]:
    """(module, cumulative ms) of the `count` slowest imports in `-X importtime` output, counting
    only modules loaded before the first paint (what is imported after it is not start-up)."""
    rows = []
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "cumulative" not in line:
            _self, cumulative, name = (part.strip() for part in line[len("import time:"):].split("|"))
            if name.strip() in before_paint:
                rows.append((name.strip(), int(cumulative) / 1000))
    return sorted(rows, key=lambda r: -r[1])[:count]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--importtime", type=int, default=0, metavar="N")
    args = p.parse_args()
    one_start()                                    # warm the file cache: a first start reads from disk
    runs = [one_start()[0] for _ in range(args.runs)]
    seconds = [round(r["first_paint_s"], 3) for r in runs]
    cpu = [round(r["cpu_s"], 3) for r in runs]
    report = {"first_paint_s": seconds, "median_s": round(statistics.median(seconds), 3),
              "cpu_s": cpu, "median_cpu_s": round(statistics.median(cpu), 3), "load_1min": os.getloadavg()[0],
              "platform": runs[0]["platform"], "source": runs[0]["source"], "loaded_at_first_paint": runs[0]["loaded"],
              "target_s": 1.0, "cpus": os.cpu_count()}
    if args.importtime:
        timed, stderr = one_start(("-X", "importtime"))
        report["modules_at_first_paint"] = len(timed["modules"])
        report["slowest_imports_ms"] = slowest_imports(stderr, args.importtime, set(timed["modules"]))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
