"""The Playground's run list follows the runs folder while the page is shown: a run that saves an
adapter appears without Refresh, and the "Train a run first" line goes with the empty list."""
from __future__ import annotations

import json
import shutil

import pytest

from lorastudio.app.playground.playground_page import EMPTY, PlaygroundPage


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_chat_llama):
    from tests.helpers.tiny_models import train_tiny_run
    root = tmp_path_factory.mktemp("follow")
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": '{"ok": true}'}]}
            for q in ["the cat sat on the mat", "a small model learns"] * 8]
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return train_tiny_run(root / "run", tiny_chat_llama, data, quantization="none", training__max_steps=4,
                          training__save_every=2, lora__targets="all-linear")


def test_a_run_that_gets_an_adapter_appears_by_itself(qtbot, tmp_path, trained_run):
    runs = tmp_path / "runs"
    runs.mkdir()
    page = PlaygroundPage(runs, refresh_ms=100)
    qtbot.addWidget(page)
    page.show()
    qtbot.waitExposed(page)
    assert page.run_combo.count() == 0 and page.status.text() == EMPTY
    assert not page.generate_button.isEnabled()

    # a run folder whose training has not saved anything yet: still nothing to try
    run = runs / "2026-11-24_0600_demo"
    run.mkdir()
    shutil.copy(trained_run / "config.yaml", run / "config.yaml")
    qtbot.wait(400)
    assert page.run_combo.count() == 0 and page.status.text() == EMPTY

    # its first checkpoint lands: the run is listed with that checkpoint, the empty line is gone
    shutil.copytree(trained_run / "checkpoints" / "step-000002", run / "checkpoints" / "step-000002")
    qtbot.waitUntil(lambda: page.run_combo.count() == 1, timeout=5000)
    assert page.run_dir() == run and page.status.text() == "" and page.generate_button.isEnabled()
    assert [page.adapter_combo.itemText(i) for i in range(page.adapter_combo.count())] == ["checkpoint step 2"]
    assert page.adapter_pane.subtitle.text() == run.name and page.prompt_list.count() >= 1

    # the training finishes: the final adapter joins the list, the choice made stays
    shutil.copytree(trained_run / "adapter", run / "adapter")
    qtbot.waitUntil(lambda: page.adapter_combo.count() == 2, timeout=5000)
    assert page.adapter_combo.currentText() == "checkpoint step 2"
    assert page.adapter_combo.itemText(0) == "final adapter"

    # hidden (another page), the list stops following; shown again, it catches up at once
    page.hide()
    assert not page.refresher.timer.isActive()
    shutil.rmtree(run / "checkpoints")
    shutil.rmtree(run / "adapter")
    page.show()
    qtbot.waitUntil(lambda: page.run_combo.count() == 0, timeout=5000)
    assert page.status.text() == EMPTY


def test_an_evaluation_that_ends_meanwhile_shows_without_choosing_the_run_again(qtbot, tmp_path, trained_run):
    """The tour's stumble (issue 33): Evaluate finished on the Runs page, the Playground still said
    "No evaluation yet" for that run."""
    runs = tmp_path / "runs"
    run = runs / "2026-12-05_0700_demo"
    shutil.copytree(trained_run, run)
    page = PlaygroundPage(runs, refresh_ms=100)
    qtbot.addWidget(page)
    page.show()
    qtbot.waitExposed(page)
    assert page.run_dir() == run and "No evaluation yet" in page.eval_summary.note.text()
    (run / "eval.json").write_text(json.dumps({
        "data": "heldout.jsonl", "base": {"loss": 2.5, "exact_match": 0.0, "json_valid": 0.0, "prompts": 48},
        "adapter": {"loss": 0.016, "exact_match": 0.85, "json_valid": 1.0, "prompts": 48}}))

    def labels():
        grid = page.eval_summary.grid
        return [grid.itemAt(i).widget().text() for i in range(grid.count())]
    qtbot.waitUntil(lambda: "85%" in labels(), timeout=5000)
    assert "No evaluation yet" not in page.eval_summary.note.text()
