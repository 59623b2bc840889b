"""The Playground page follows the generation job: both answers stream in, side by side.

The job runs inline (the `inline_jobs` fixture) where only the result matters; the live stream
from a real worker process is the slow test."""
from __future__ import annotations

import json

import pytest

from lorastudio.app.playground.playground_page import PlaygroundPage
from lorastudio.core.runs.listing import runs_with_adapters

ANSWER = '{"answer": "yes", "confidence": 0.9}'


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory, tiny_chat_llama):
    from tests.helpers.tiny_models import train_tiny_run
    root = tmp_path_factory.mktemp("pg")
    rows = [{"messages": [{"role": "system", "content": "Answer in JSON."},
                          {"role": "user", "content": q}, {"role": "assistant", "content": ANSWER}]}
            for q in ["the cat sat on the mat", "a small model learns", "the quick brown fox"] * 8]
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train_tiny_run(root / "runs" / "2026-01-01_1200_tiny", tiny_chat_llama, data, quantization="none",
                   training__max_steps=6, training__save_every=3, lora__targets="all-linear", training__lr=2e-2)
    (root / "runs" / "2026-01-02_1200_no-adapter").mkdir()
    return root / "runs"


def test_the_page_lists_runs_adapters_and_heldout_prompts(qtbot, trained_runs):
    page = PlaygroundPage(trained_runs)
    qtbot.addWidget(page)
    assert [p.name for p in runs_with_adapters(trained_runs)] == ["2026-01-01_1200_tiny"]
    assert page.run_combo.count() == 1
    assert [page.adapter_combo.itemText(i) for i in range(page.adapter_combo.count())] == \
        ["final adapter", "checkpoint step 6", "checkpoint step 3"]
    assert page.prompt_list.count() >= 1           # from the run's validation split
    page.use_prompt(page.prompt_list.item(0))
    assert page.messages()[0] == {"role": "system", "content": "Answer in JSON."}
    assert page.reference.text() == f"Expected: {ANSWER}"
    page.prompt_edit.setPlainText("something else")
    assert page.messages() == [{"role": "user", "content": "something else"}]
    assert "lorastudio eval 2026-01-01_1200_tiny" in page.eval_summary.note.text()


def prompted_page(qtbot, runs_root, max_new_tokens):
    """The page with a prompt typed in, and the list its job's events will be collected into."""
    page = PlaygroundPage(runs_root)
    qtbot.addWidget(page)
    page.prompt_edit.setPlainText("the cat sat on the mat")
    page.settings.max_new_tokens.setValue(max_new_tokens)
    events = []
    page.job.event.connect(events.append)
    return page, events


@pytest.mark.slow
def test_the_page_streams_both_answers(qtbot, trained_runs):
    page, events = prompted_page(qtbot, trained_runs, 24)
    page.resize(1100, 700)
    page.show()
    with qtbot.waitSignal(page.generation_finished, timeout=120_000) as done:
        page.generate()
        assert not page.generate_button.isEnabled() and page.stop_button.isEnabled()
        qtbot.waitUntil(lambda: bool(page.base_pane.answer() and page.adapter_pane.answer()), timeout=120_000)
    assert done.args == ["completed"]
    answers = {e["side"]: e["text"] for e in events if e["type"] == "answer"}
    assert page.base_pane.answer() == answers["base"] and page.adapter_pane.answer() == answers["adapter"]
    assert sum(e["type"] == "token" for e in events) >= 2
    assert "tokens ·" in page.adapter_pane.status.text() and page.generate_button.isEnabled()
    assert page.status.text() == "Done."


def test_generate_shows_both_answers_and_a_failure_in_words(qtbot, trained_runs, inline_jobs):
    page, events = prompted_page(qtbot, trained_runs, 8)
    with qtbot.waitSignal(page.generation_finished, timeout=60_000) as done:
        page.generate()
    assert done.args == ["completed"] and page.status.text() == "Done."
    answers = {e["side"]: e["text"] for e in events if e["type"] == "answer"}
    assert page.base_pane.answer() == answers["base"] and page.adapter_pane.answer() == answers["adapter"]
    assert page.generate_button.isEnabled() and not page.stop_button.isEnabled()
    job_dirs = sorted((trained_runs / "2026-01-01_1200_tiny" / "playground").iterdir())
    assert (job_dirs[-1] / "job.yaml").is_file() and (job_dirs[-1] / "events.jsonl").is_file()

    page.adapter_combo.addItem("checkpoint step 99", 99)              # one that is not there
    page.adapter_combo.setCurrentIndex(page.adapter_combo.count() - 1)
    with qtbot.waitSignal(page.generation_finished, timeout=60_000) as done:
        page.generate()
    assert done.args == ["failed"]
    assert "has no checkpoint at step 99" in page.status.text() and "saved steps: 3, 6" in page.status.text()
    assert page.generate_button.isEnabled() and not page.stop_button.isEnabled()


def test_the_page_shows_stored_eval_figures(qtbot, trained_runs):
    run = trained_runs / "2026-01-01_1200_tiny"
    (run / "eval.json").write_text(json.dumps({
        "data": "heldout.jsonl", "base": {"loss": 2.5, "exact_match": 0.0, "json_valid": 0.1, "prompts": 10},
        "adapter": {"loss": 0.4, "exact_match": 0.7, "json_valid": 1.0, "prompts": 10}}))
    page = PlaygroundPage(trained_runs)
    qtbot.addWidget(page)
    labels = [page.eval_summary.grid.itemAt(i).widget().text() for i in range(page.eval_summary.grid.count())]
    assert labels[:3] == ["", "Base", "Adapter"]
    assert "2.500" in labels and "0.400" in labels and "70%" in labels and "100%" in labels
    (run / "eval.json").unlink()
