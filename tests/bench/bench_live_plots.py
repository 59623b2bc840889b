"""Benchmark: how late the window's event loop runs while the live dashboard follows a long run
(target: worst lateness < 50 ms with a 1,000-step run on screen).

    python tests/bench/bench_live_plots.py [--steps 1000] [--rate 100]
    xvfb-run -a python tests/bench/bench_live_plots.py          # on a real X server (xcb)

The main window is shown at its default size on the Train page. Two scenarios:
  stream  — a separate process writes a training journal (step events at --rate a second, memory
            every 5 steps, eval every 50, a log line every 100) and the page follows it live;
  attach  — the journal of a finished --steps run is already on disk and the page re-attaches to it
            (the whole history is there at once, as after a restart; JobProcess reads it a capped
            amount per tick).
A 20 ms probe timer records how late each of its ticks fires (`worst_late_ms`, `p99_late_ms`), and
how much CPU the window's main thread used between two ticks (`worst_busy_ms`: the longest stretch
of work that blocked the event loop), and the longest single call (CPU ms of the main thread) of the
journal poll, the figures' redraw and one plot's draw — figures a busy machine cannot inflate much.
One JSON line per scenario.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LORASTUDIO_NO_DEMO", "1")
if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

FEEDER = r"""
import sys, time
from lorastudio.core.journal import JournalWriter
run_dir, steps, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
w = JournalWriter(run_dir + "/events.jsonl")
t0 = time.time()
w.emit("start", config={}, devices=[], versions={}, trainable_params=4_200_000, total_params=1_240_000_000,
       total_steps=steps)
w.emit("phase", name="training", message=f"Training {steps} steps")
for n in range(1, steps + 1):
    if rate:
        time.sleep(max(0.0, t0 + n / rate - time.time()))
    w.emit("step", step=n, total_steps=steps, epoch=n / steps, loss=2.5 / n ** 0.3 + 0.05 * ((n * 7919) % 13) / 13,
           lr=2e-4 * min(1, n / 50), grad_norm=0.7, tokens_per_s=3400.0 + (n % 17) * 10, elapsed_s=n * 0.5,
           eta_s=(steps - n) * 0.5)
    if n % 5 == 0:
        w.emit("memory", step=n, rss=2 * 1024**3, ram_used=9 * 1024**3, ram_total=32 * 1024**3)
    if n % 50 == 0:
        w.emit("eval", step=n, loss=2.6 / n ** 0.3)
    if n % 100 == 0:
        w.emit("log", level="info", message=f"step {n}: all is well")
w.emit("end", status="completed", adapter=run_dir + "/adapter")
w.close()
"""


def measure(window, app, run_dir: Path, feeder: subprocess.Popen | None, steps: int) -> dict:
    from PySide6.QtCore import QElapsedTimer, QEventLoop, Qt, QTimer

    late, busy = [], []
    clock = QElapsedTimer()
    cpu = [time.thread_time()]

    def tick():
        late.append(max(0, clock.restart() - 20))
        now = time.thread_time()
        busy.append((now - cpu[0]) * 1000)
        cpu[0] = now

    # The longest single piece of main-thread work (CPU ms) in each of the dashboard's callbacks.
    worst: dict[str, float] = {}
    dashboard, job = window.train_page.dashboard, window.train_page.process.job

    def timed(name, fn):
        def call(*args):
            t = time.thread_time()
            try:
                return fn(*args)
            finally:
                worst[name] = max(worst.get(name, 0.0), (time.thread_time() - t) * 1000)
        return call

    job.poll = timed("journal poll + events", job.poll)
    job._timer.timeout.disconnect()
    job._timer.timeout.connect(job.poll)
    dashboard.redraw = timed("redraw (figures)", dashboard.redraw)
    dashboard._redraw_timer.timeout.disconnect()
    dashboard._redraw_timer.timeout.connect(dashboard.redraw)
    if hasattr(dashboard, "_draw_plots"):
        dashboard._draw_plots = timed("one plot (data + paint)", dashboard._draw_plots)

    timer = QTimer(interval=20)
    timer.setTimerType(Qt.PreciseTimer)
    timer.timeout.connect(tick)
    page = window.train_page
    loop = QEventLoop()
    started = time.time()

    def check():
        if page.dashboard.state.finished and page.dashboard.loss_plot.plot.point_count("train") == steps:
            QTimer.singleShot(1000, loop.quit)             # the last redraws and paints
        elif time.time() - started > 600:
            raise SystemExit("the dashboard did not reach the end of the run")
        else:
            QTimer.singleShot(100, check)

    clock.start()
    timer.start()
    window.show_live_view(run_dir)
    QTimer.singleShot(100, check)
    loop.exec()
    timer.stop()
    if feeder is not None:
        feeder.wait()
    late.sort()
    return {"seconds": round(time.time() - started, 1), "ticks": len(late), "worst_late_ms": late[-1],
            "p99_late_ms": late[int(0.99 * (len(late) - 1))], "worst_busy_ms": round(max(busy), 1),
            "p99_busy_ms": round(sorted(busy)[int(0.99 * (len(busy) - 1))], 1),
            "worst_callback_cpu_ms": {k: round(v, 1) for k, v in worst.items()}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--rate", type=float, default=100.0, help="step events a second in the stream scenario")
    p.add_argument("--scenario", choices=["stream", "attach", "both"], default="both")
    p.add_argument("--grab", help="also save the window at the end of each scenario as GRAB-SCENARIO.png")
    args = p.parse_args()
    home = tempfile.mkdtemp(prefix="bench-live-")
    os.environ.update(LORASTUDIO_HOME=home, HOME=home, XDG_CONFIG_HOME=os.path.join(home, "config"))

    from PySide6.QtCore import QSettings
    from lorastudio.app.application import create_app
    app = create_app([])
    from lorastudio.app.main_window import MainWindow

    for scenario in (["stream", "attach"] if args.scenario == "both" else [args.scenario]):
        window = MainWindow(QSettings(os.path.join(home, f"{scenario}.ini"), QSettings.IniFormat),
                            runs_root=Path(home) / "runs")
        window.resize(1400, 880)
        window.show()
        t = time.time() + 3
        while time.time() < t:                 # the window settles: plots built, GPU probe answered
            app.processEvents()
            time.sleep(0.01)
        run_dir = Path(home) / "runs" / scenario
        run_dir.mkdir(parents=True)
        command = [sys.executable, "-c", FEEDER, str(run_dir), str(args.steps)]
        feeder = None
        if scenario == "attach":
            subprocess.run(command + ["0"], check=True)
        else:
            feeder = subprocess.Popen(command + [str(args.rate)])
        result = measure(window, app, run_dir, feeder, args.steps)
        print(json.dumps({"scenario": scenario, "steps": args.steps, "rate": args.rate if feeder else None,
                          **result, "platform": app.platformName(), "load_1min": round(os.getloadavg()[0], 1)}),
              flush=True)
        if args.grab:
            window.grab().save(f"{args.grab}-{scenario}.png")
        window.train_page.process.detach()
        window.close()
        window.deleteLater()
        app.processEvents()
    return 0


if __name__ == "__main__":
    sys.exit(main())
