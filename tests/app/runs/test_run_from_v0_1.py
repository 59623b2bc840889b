"""A run folder written by LoRA Studio 0.1 (before the job runtime and the new layout) still opens:
tests/data/run_v0_1 is a real one — its journal, status and config exactly as 0.1 wrote them
(a tiny Llama trained 10 steps through 0.1's CLI and worker)."""
import shutil
from pathlib import Path

from lorastudio.app.dashboard.run_state import RunState
from lorastudio.core.journal import read_events
from lorastudio.core.runs.listing import summarize

V01 = Path(__file__).resolve().parents[2] / "data" / "run_v0_1"


def test_a_0_1_journal_reads_whole():
    events = read_events(V01 / "events.jsonl")
    assert len(events) == 33 and events[-1]["type"] == "end" and events[-1]["status"] == "completed"


def test_a_0_1_run_is_summarized_as_it_was():
    run = summarize(V01)
    assert (run.status, run.step, run.total_steps, run.rank) == ("completed", 10, 10, 8)
    assert len(run.loss_y) == 10 and run.eval_x == [5, 10] and round(run.best_eval, 4) == 5.6662


def test_a_0_1_run_shows_in_the_runs_page_and_its_dashboard(qtbot, window, runs_home):
    shutil.copytree(V01, runs_home / "runs" / V01.name)
    window.show_page(window.runs_page)
    qtbot.waitUntil(lambda: window.runs_page.model.rowCount() == 1, timeout=10_000)
    (run,) = window.runs_page.model.runs
    assert run.name == V01.name and run.status == "completed" and run.step == 10
    state = RunState()
    for ev in read_events(V01 / "events.jsonl"):
        state.apply(ev)
    assert (state.step, state.status, len(state.loss.y), len(state.checkpoints)) == (10, "completed", 10, 2)
