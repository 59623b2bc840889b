"""Training outlives the window: a window started while a worker runs re-attaches to it (curves
from the journal, then new steps); closing asks keep / stop / cancel and does what was chosen."""
import time

import pytest
from tests.helpers.runs_fixtures import answer_next_dialog

from lorastudio.core.config import RunConfig
from lorastudio.core.journal import read_events
from lorastudio.core.runs.folders import pid_alive, prepare_run
from lorastudio.core.plans.train import TrainRequest, start_train

pytestmark = pytest.mark.slow


def open_window(qtbot, settings, runs_home):
    from lorastudio.app.main_window import MainWindow
    win = MainWindow(settings=settings, runs_root=runs_home / "runs")
    qtbot.addWidget(win)
    win.show()
    return win


def test_reattach_then_close_asks_keep_or_stop(qtbot, settings, runs_home, make_config):
    run_dir = runs_home / "runs" / "live"
    prepare_run(RunConfig.load(make_config(training__max_steps=100000, training__save_every=0,
                                           training__warmup_steps=0, data__validation_split=0.0)), run_dir)
    proc = start_train(TrainRequest(run_dir)).process
    try:
        deadline = time.time() + 120
        while not any(e["type"] == "step" and e["step"] >= 3 for e in read_events(run_dir / "events.jsonl")):
            assert time.time() < deadline and proc.poll() is None, (run_dir / "worker.log").read_text()
            time.sleep(0.2)

        win = open_window(qtbot, settings, runs_home)
        page = win.train_page
        qtbot.waitUntil(lambda: page.running and page.dashboard.state.step >= 3, timeout=10_000)
        state = page.dashboard.state
        assert win.pages.currentWidget() is page and state.run_dir == str(run_dir)
        assert state.loss.x[:3] == [1, 2, 3]                         # filled in from the journal
        seen_step = state.step
        qtbot.waitUntil(lambda: page.dashboard.state.step >= seen_step + 3, timeout=60_000)   # new steps

        seen = []
        answer_next_dialog("Cancel", seen)
        assert not win.quit_asking() and win.isVisible()        # Ctrl+Q, as a user
        assert seen == ["live is still training."]
        answer_next_dialog("Keep training in background", seen)
        assert win.quit_asking()
        time.sleep(1.0)
        assert proc.poll() is None                                   # still training

        win2 = open_window(qtbot, settings, runs_home)
        qtbot.waitUntil(lambda: win2.train_page.running and win2.train_page.dashboard.state.step > seen_step + 3,
                        timeout=10_000)
        answer_next_dialog("Stop training", seen)
        assert win2.quit_asking()
        assert proc.wait(timeout=60) == 0
        end = read_events(run_dir / "events.jsonl")[-1]
        assert end["type"] == "end" and end["status"] == "stopped" and end["adapter"]
    finally:
        if pid_alive(proc.pid):
            proc.kill()
