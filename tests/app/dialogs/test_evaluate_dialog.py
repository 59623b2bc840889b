"""The Evaluate dialog (Runs page, the Train page's final status): the evaluation job with progress,
then base vs base + adapter in a table. The job runs inline where the result is the point; the
live progress and a cancel come from a real worker process (slow)."""
from __future__ import annotations

import json

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from lorastudio.app.dialogs.evaluate_dialog import EvaluateDialog
from lorastudio.core.runs.heldout import read_eval

ANSWER = '{"answer": "yes", "confidence": 0.9}'


@pytest.fixture(scope="module")
def json_run(tmp_path_factory, tiny_chat_llama):
    from tests.helpers.tiny_models import train_tiny_run
    root = tmp_path_factory.mktemp("evalruns")
    questions = ["the cat sat on the mat", "a small model learns", "every step writes a line", "the quick brown fox"]
    rows = [{"messages": [{"role": "user", "content": questions[i % 4]}, {"role": "assistant", "content": ANSWER}]}
            for i in range(32)]
    data, heldout = root / "train.jsonl", root / "heldout.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    heldout.write_text("".join(json.dumps(r) + "\n" for r in rows[:4]))
    return train_tiny_run(root / "runs" / "2026-11-24_0600_json", tiny_chat_llama, data, quantization="none",
                          training__max_steps=12, lora__targets="all-linear", training__lr=2e-2,
                          training__save_every=6, data__validation_path=str(heldout))


def cells(dialog) -> list[str]:
    grid = dialog.summary.grid
    return [grid.itemAt(i).widget().text() for i in range(grid.count())]


def test_evaluate_shows_the_table_when_done(qtbot, json_run, inline_jobs):
    (json_run / "eval.json").unlink(missing_ok=True)
    dialog = EvaluateDialog(json_run, json_run.parent)
    qtbot.addWidget(dialog)
    assert dialog.picker.run_combo.currentText() == json_run.name
    assert dialog.summary.note.text() == "Not evaluated yet: press Evaluate." and cells(dialog) == []
    dialog.limit_spin.setValue(4)
    phases = []
    dialog.process.event.connect(lambda ev: ev["type"] == "phase" and phases.append(ev["fraction"]))
    qtbot.mouseClick(dialog.evaluate_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: dialog.status is not None, timeout=120_000)
    assert dialog.status == "completed", dialog.result_label.text()
    assert phases == sorted(phases) and len(phases) >= 4 and dialog.progress.value() == 100
    stored = read_eval(json_run)
    assert dialog.result == stored and stored["base"]["prompts"] == 4 and stored["checkpoint"] is None
    table = cells(dialog)
    assert table[:3] == ["", "Base", "Adapter"]
    assert {"Held-out loss", "Exact match", "JSON format valid"} <= set(table)
    assert f"{stored['adapter']['loss']:.3f}" in table and f"{stored['adapter']['exact_match']:.0%}" in table
    assert "4 prompts from" in dialog.summary.note.text()
    assert dialog.result_label.text() == f"Saved to {json_run / 'eval.json'}"
    assert not dialog.running and dialog.evaluate_button.isEnabled() and dialog.close_button.text() == "Close"

    again = EvaluateDialog(json_run, json_run.parent)            # opened later: the stored result shows
    qtbot.addWidget(again)
    assert cells(again) == table and again.summary.title.text().startswith("Last evaluation (")
    again.picker.checkpoint_combo.setCurrentIndex(again.picker.checkpoint_combo.findData(6))
    assert cells(again) == [] and again.summary.note.text() == "Not evaluated yet: press Evaluate."


def test_a_checkpoint_that_is_gone_fails_in_words(qtbot, json_run, inline_jobs):
    dialog = EvaluateDialog(json_run, json_run.parent)
    qtbot.addWidget(dialog)
    dialog.picker.checkpoint_combo.addItem("Checkpoint at step 99", 99)
    dialog.picker.checkpoint_combo.setCurrentIndex(dialog.picker.checkpoint_combo.count() - 1)
    dialog.start()
    qtbot.waitUntil(lambda: dialog.status is not None, timeout=60_000)
    assert dialog.status == "failed" and dialog.progress.isHidden()
    assert "has no checkpoint at step 99" in dialog.result_label.text()
    assert "What to do:" in dialog.result_label.text() and dialog.evaluate_button.isEnabled()


def test_the_runs_page_and_the_final_status_open_it(qtbot, json_run):
    from lorastudio.app.runs.runs_page import RunsPage
    page = RunsPage(json_run.parent, refresh_ms=100)
    qtbot.addWidget(page)
    page.show()
    qtbot.waitUntil(lambda: page.model.rowCount() == 1, timeout=10_000)
    page.table.selectRow(0)
    assert page.buttons["evaluate"].isEnabled()
    dialog = page.open_evaluate()
    qtbot.addWidget(dialog)
    assert isinstance(dialog, EvaluateDialog) and dialog.picker.run_dir == json_run
    dialog.close()


@pytest.mark.slow
def test_a_real_evaluation_shows_progress_and_can_be_cancelled(qtbot, json_run, monkeypatch):
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.Yes)
    before = read_eval(json_run)
    dialog = EvaluateDialog(json_run, json_run.parent)
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.limit_spin.setValue(4)
    dialog.start()
    assert dialog.running and dialog.close_button.text() == "Cancel evaluation" and not dialog.picker.isEnabled()
    qtbot.waitUntil(lambda: dialog.progress.value() > 0, timeout=120_000)
    dialog.close()                                   # asks; "Yes" cancels
    qtbot.waitUntil(lambda: dialog.status is not None, timeout=60_000)
    assert dialog.status == "stopped" and "nothing was saved" in dialog.result_label.text()
    assert read_eval(json_run) == before
