"""The export and merge-and-save dialogs, driven with pytest-qt on a real 4-bit tiny run.

Merges run inline (the `inline_jobs` fixture) where the result is the point; cancelling one needs
a real worker process (slow)."""

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from tests.app.conftest import set_cpu_merge
from tests.helpers.tiny_models import train_tiny_run

from lorastudio.app.dialogs.export_dialog import ExportDialog
from lorastudio.app.dialogs.merge_dialog import MergeDialog


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_llama):
    import json
    root = tmp_path_factory.mktemp("runs")
    data = root / "d.jsonl"
    data.write_text("".join(json.dumps({"text": f"the cat sat on the mat {i}"}) + "\n" for i in range(16)))
    return train_tiny_run(root / "2026-11-22_1200_tiny", tiny_llama, data, training__lr=2e-2)


def test_merge_dialog_merges_and_shows_fidelity(qtbot, run_dir, tmp_path, inline_jobs):
    dialog = MergeDialog(run_dir, run_dir.parent)
    qtbot.addWidget(dialog)
    assert dialog.picker.run_combo.currentText() == run_dir.name
    assert [dialog.picker.checkpoint_combo.itemText(i) for i in range(dialog.picker.checkpoint_combo.count())] == [
        "Final adapter", "Checkpoint at step 4", "Checkpoint at step 2"]
    set_cpu_merge(dialog, tmp_path / "merged")
    qtbot.mouseClick(dialog.merge_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: dialog.status is not None, timeout=180_000)
    assert dialog.status == "completed", dialog.result_label.text()
    assert dialog.progress.value() == 100
    text = dialog.result_label.text()
    assert f"Merged model saved to {tmp_path / 'merged'}" in text and "Fidelity on 4 prompts" in text
    assert dialog.fidelity["max_abs_diff"] < 1e-4 and "within what rounding to fp32 explains" in text
    assert (tmp_path / "merged" / "config.json").is_file() and not dialog.open_button.isHidden()
    assert not dialog.running and dialog.merge_button.isEnabled() and dialog.close_button.text() == "Close"


@pytest.mark.slow
def test_cancelling_a_merge_stops_its_worker_and_writes_nothing(qtbot, run_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LORASTUDIO_TEST_PAUSE", "merging:60")          # the worker waits there
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.No)
    dialog = MergeDialog(run_dir, run_dir.parent)
    qtbot.addWidget(dialog)
    dialog.show()
    set_cpu_merge(dialog, tmp_path / "cancelled")
    dialog.start_merge()
    qtbot.waitUntil(lambda: dialog.phase_label.text() == "Merging the adapter into the weights", timeout=120_000)
    assert dialog.running and dialog.close_button.text() == "Cancel merge" and 0 < dialog.progress.value() < 100
    dialog.close()                                  # asks; "No" keeps the merge going
    assert dialog.isVisible() and dialog.running
    dialog.cancel()
    qtbot.waitUntil(lambda: dialog.status is not None, timeout=60_000)
    assert dialog.status == "stopped" and dialog.result_label.text() == "Merge cancelled; nothing was written."
    assert not (tmp_path / "cancelled").exists() and not list(tmp_path.glob(".cancelled.*"))
    assert dialog.process.handle.process.wait(timeout=30) == 0


def test_merge_dialog_asks_before_touching_a_non_empty_folder(qtbot, run_dir, tmp_path, monkeypatch):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep me")
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a[2]) or QMessageBox.No)
    dialog = MergeDialog(run_dir, run_dir.parent)
    qtbot.addWidget(dialog)
    dialog.out_edit.setText(str(busy))
    dialog.start_merge()
    qtbot.waitUntil(lambda: bool(asked) and "Nothing was written" in dialog.result_label.text(), timeout=30_000)
    assert "is not empty" in asked[0]
    assert [p.name for p in busy.iterdir()] == ["mine.txt"] and not dialog.running


def test_merge_dialog_refuses_the_base_model_folder(qtbot, run_dir, tiny_llama):
    dialog = MergeDialog(run_dir, run_dir.parent)
    qtbot.addWidget(dialog)
    dialog.out_edit.setText(str(tiny_llama / "merged"))
    dialog.start_merge()
    qtbot.waitUntil(lambda: "inside the base model's folder" in dialog.result_label.text(), timeout=30_000)
    assert "What to do:" in dialog.result_label.text() and not (tiny_llama / "merged").exists()


def test_export_dialog_exports_a_checkpoint_as_zip(qtbot, run_dir, tmp_path):
    dialog = ExportDialog(run_dir, run_dir.parent)
    qtbot.addWidget(dialog)
    dialog.picker.checkpoint_combo.setCurrentIndex(2)          # step 2
    dialog.out_edit.setText(str(tmp_path / "ck"))
    dialog.zip_box.setChecked(True)
    dialog.start_export()
    qtbot.waitUntil(lambda: dialog.result_path is not None, timeout=30_000)
    assert dialog.result_path == tmp_path / "ck.zip" and dialog.result_path.is_file()
    assert "Exported to" in dialog.status.text()


def test_banner_offers_export_and_merge_after_a_run(qtbot, run_dir):
    from lorastudio.app.dashboard.run_state import RunState
    from lorastudio.app.dashboard.status_banner import StatusBanner
    from lorastudio.core.journal import read_events
    banner = StatusBanner()
    qtbot.addWidget(banner)
    banner.show()
    state = RunState()
    state.run_dir = str(run_dir)
    for ev in read_events(run_dir / "events.jsonl"):
        state.apply(ev)
    banner.update_from(state)
    assert banner.export_button.isVisible() and banner.merge_button.isVisible()
