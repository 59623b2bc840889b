"""The Playground page follows its generation worker: both answers stream in, side by side.

The worker runs inline (the `inline_jobs` fixture, ending once its inbox is empty) where only the
result matters; the live stream from a real worker process, kept for a second prompt, is slow."""
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


def prompted_page(qtbot, runs_root, max_new_tokens, **kwargs):
    """The page with a prompt typed in, and the list its requests' events will be collected into."""
    page = PlaygroundPage(runs_root, **kwargs)
    qtbot.addWidget(page)
    page.prompt_edit.setPlainText("the cat sat on the mat")
    page.settings.max_new_tokens.setValue(max_new_tokens)
    events = []
    page.worker.event.connect(events.append)
    return page, events


@pytest.mark.slow
def test_the_page_streams_both_answers_and_keeps_its_worker(qtbot, trained_runs):
    """A real worker process: the first prompt loads the model, the second is answered by the same
    process without loading it again; leaving the page ends the worker."""
    page, events = prompted_page(qtbot, trained_runs, 24)
    page.resize(1100, 700)
    page.show()
    with qtbot.waitSignal(page.generation_finished, timeout=300_000) as done:      # a fresh interpreter imports torch
        page.generate()
        assert not page.generate_button.isEnabled() and page.stop_button.isEnabled()
        qtbot.waitUntil(lambda: bool(page.base_pane.answer() and page.adapter_pane.answer()), timeout=300_000)
    assert done.args == ["completed"]
    answers = {e["side"]: e["text"] for e in events if e["type"] == "answer"}
    assert page.base_pane.answer() == answers["base"] and page.adapter_pane.answer() == answers["adapter"]
    assert sum(e["type"] == "token" for e in events) >= 2
    assert "tokens ·" in page.adapter_pane.status.text() and page.generate_button.isEnabled()
    assert page.status.text() == "Done."
    phases = [e["name"] for e in events if e["type"] == "phase"]
    assert phases.index("loading") < phases.index("generating")     # (llama.cpp, the default: its GGUF files first)

    worker, pid = page.worker, page.worker.process.handle.pid
    events.clear()
    page.prompt_edit.setPlainText("a small model learns")
    with qtbot.waitSignal(page.generation_finished, timeout=60_000) as done:
        page.generate()
        assert page.base_pane.status.text() == "waiting…"
    assert done.args == ["completed"] and worker.process.handle.pid == pid and worker.alive
    assert "loading" not in [e["name"] for e in events if e["type"] == "phase"]
    assert {e["request"] for e in events} == {2}

    job_dir = worker.job_dir
    page.hide()                                            # leaving the page ends the worker
    qtbot.waitUntil(lambda: not worker.alive, timeout=30_000)
    assert worker.process.outcome.status == "stopped" and not job_dir.exists()


def test_generate_shows_both_answers_and_a_failure_in_words(qtbot, trained_runs, inline_jobs):
    page, events = prompted_page(qtbot, trained_runs, 8, worker_idle_s=0)   # inline: ends when its inbox is empty
    with qtbot.waitSignal(page.generation_finished, timeout=60_000) as done:
        page.generate()
    assert done.args == ["completed"] and page.status.text() == "Done."
    answers = {e["side"]: e["text"] for e in events if e["type"] == "answer"}
    assert page.base_pane.answer() == answers["base"] and page.adapter_pane.answer() == answers["adapter"]
    assert page.generate_button.isEnabled() and not page.stop_button.isEnabled()
    assert {e["request"] for e in events if e["type"] == "token"} == {1}
    qtbot.waitUntil(lambda: not page.worker.job_dir.exists())     # an idle worker ended and its folder went
    assert page.worker.job_dir.parent == trained_runs.parent / "playground"

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
