"""Issue 33, point 3 (the window's side): Elapsed ticks every second, from the run's start before
the first step; the first ETA waits for a representative step (not the warm-up); Stop says
"Stopping…" at once; the trainer runs at normal priority unless Background priority is ticked."""
import time

import pytest
from PySide6.QtWidgets import QMessageBox

from lorastudio.app.dashboard.run_state import STARTING
from lorastudio.app.train.training_process import BACKGROUND_NICENESS, WORKER_NICENESS
from lorastudio.core.config import RunConfig


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def time(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr("lorastudio.app.dashboard.dashboard.time", clock)
    return clock


def step(n, elapsed, when, total=60):
    return {"v": 1, "type": "step", "time": when, "step": n, "total_steps": total, "epoch": n / total, "loss": 2.0,
            "lr": 1e-4, "grad_norm": 1.0, "tokens_per_s": 100.0, "elapsed_s": elapsed, "eta_s": elapsed * (total - n) / n}


def test_elapsed_ticks_from_the_start_and_the_eta_waits_for_a_second_step(qtbot, page, clock):
    board = page.dashboard
    board.reset("/runs/x", STARTING)
    board.apply({"v": 1, "type": "phase", "time": clock.now, "name": "loading", "message": "Loading the model"})
    board.redraw()
    assert board._clock.isActive() and board._clock.interval() == 1000
    clock.now += 125                                    # two minutes of loading, no step yet
    qtbot.waitUntil(lambda: board.time_label.text().startswith("Elapsed 2:05"), timeout=3000)
    assert "ETA —" in board.time_label.text()

    t0 = clock.now
    board.apply(step(1, 150.0, t0))                     # the warm-up step: 150 s
    board.redraw()
    assert board.time_label.text() == "Elapsed 2:30  ·  ETA —"
    clock.now = t0 + 3
    qtbot.waitUntil(lambda: board.time_label.text().startswith("Elapsed 2:33"), timeout=3000)
    board.apply(step(2, 154.0, t0 + 4))                 # a representative step: 4 s
    clock.now = t0 + 4
    board.redraw()
    assert board.time_label.text() == f"Elapsed 2:34  ·  ETA {58 * 4 // 60}:{58 * 4 % 60:02d}"   # 58 steps × 4 s
    clock.now = t0 + 6                                  # counts down between steps
    qtbot.waitUntil(lambda: board.time_label.text().endswith("ETA 3:50"), timeout=3000)
    clock.now = t0 + 100                                # a slow step: by one step's pace at most, never 0:00
    qtbot.waitUntil(lambda: board.time_label.text() == "Elapsed 4:10  ·  ETA 3:48", timeout=3000)


def test_stop_says_stopping_at_once(qtbot, page, monkeypatch):
    board = page.dashboard
    board.reset("/runs/x", STARTING)
    board.apply(step(3, 30.0, time.time()))
    page.running = True
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.Yes)
    monkeypatch.setattr(page.process, "stop", lambda: True)
    page.request_stop()
    assert board.banner.title.text() == "Stopping…" and "saves a checkpoint" in board.banner.message.text()
    board.apply({"v": 1, "type": "end", "time": time.time(), "status": "stopped", "adapter": None})
    assert board.banner.title.text() == "Training stopped"
    page.running = False


@pytest.mark.parametrize("background", [False, True])
def test_the_trainer_runs_at_normal_priority_unless_asked(qtbot, page, runs_home, monkeypatch, background):
    from lorastudio.core.runtime.launcher import JobHandle
    started = []
    monkeypatch.setattr("lorastudio.app.train.training_process.start_train",
                        lambda request: started.append(request.niceness) or JobHandle("train", request.run_dir, None))
    monkeypatch.setattr(page.process, "follow", lambda *a, **k: None)
    page.start_bar.background_box.setChecked(background)
    page._launch(RunConfig.from_dict({"model": "/m", "name": "prio", "data": {"path": "/d.jsonl"}}))
    assert started == [BACKGROUND_NICENESS if background else WORKER_NICENESS]
    assert WORKER_NICENESS == 0 and BACKGROUND_NICENESS > 0
    page._set_running(False)
