"""Issue 31's goal, window side: a vision-language model trains from the Train page, then is evaluated
and merged from the Runs page, for five families (tiny random models with their processors, data
with images). The jobs run in this process (`inline_jobs`): the same plans, jobs and files as the
worker processes, without five interpreters importing torch."""
import pytest
from PySide6.QtCore import Qt

from tests.app.conftest import fill_cpu_run, set_cpu_merge
from tests.helpers.tiny_vlms import make_vlm, write_colour_data

from lorastudio.core.journal import read_events

pytestmark = pytest.mark.slow
FIVE = ("qwen2_vl", "idefics3", "llava", "gemma3", "mllama")


@pytest.mark.parametrize("family", FIVE)
def test_a_vision_language_model_trains_evaluates_and_merges_from_the_window(qtbot, window, page, tmp_path, family,
                                                                            inline_jobs, monkeypatch):
    monkeypatch.setenv("LORASTUDIO_CACHE", str(tmp_path / "cache"))
    model = make_vlm(tmp_path / "model", family)
    data = write_colour_data(tmp_path / "data", 16)
    fill_cpu_run(qtbot, page, model, data, lr="1e-2", max_steps=8, seq_len=128, batch_size=4, grad_accum=1,
                 warmup_steps=1, save_every=0)
    assert page.model_panel.state == "ready"
    assert page.model_panel.values["vision"].text().startswith("vision-language")
    assert page.lora_panel.vision_combo.isVisibleTo(page)
    assert page.start_bar.start_button.isEnabled(), page.start_bar.reason_label.text()

    qtbot.mouseClick(page.start_bar.start_button, Qt.LeftButton)
    dash = page.dashboard
    qtbot.waitUntil(lambda: dash.state.finished, timeout=300_000)
    assert dash.state.status == "completed", dash.log_pane.toPlainText()[-2000:]
    run = next((window.runs_root).iterdir())
    events = read_events(run / "events.jsonl")
    losses = [e["loss"] for e in events if e["type"] == "step"]
    assert len(losses) == 8 and losses[-1] < losses[0]
    assert next(e for e in events if e["type"] == "data")["images"] >= 14      # 16, less the held-out split
    assert (run / "adapter" / "processor_config.json").is_file()

    runs = window.runs_page
    window.show_page(runs)
    qtbot.waitUntil(lambda: runs.model.rowCount() == 1, timeout=10_000)
    runs.select(run)
    evaluate = runs.open_evaluate()
    qtbot.mouseClick(evaluate.evaluate_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not evaluate.running and "Saved to" in evaluate.result_label.text(), timeout=300_000)
    assert (run / "eval.json").is_file()
    evaluate.close()

    merge = runs.open_merge()
    set_cpu_merge(merge, tmp_path / "merged")
    qtbot.mouseClick(merge.merge_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: merge.status is not None, timeout=300_000)
    assert merge.status == "completed", merge.result_label.text()
    assert (tmp_path / "merged" / "processor_config.json").is_file()
    merge.close()
