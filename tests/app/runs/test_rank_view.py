"""The Rank view and "Save a smaller adapter…", driven with pytest-qt on a real tiny run (all-linear,
two layers); the rank and resize jobs run inline. Screenshots go to /tmp when RANK_SHOTS is set."""
from __future__ import annotations

import json
import os

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QMessageBox

from lorastudio.app.dialogs.resize_dialog import resize_preview
from lorastudio.app.runs.rank_view import RankView


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_llama):
    from tests.helpers.tiny_models import train_tiny_run, write_text_jsonl
    root = tmp_path_factory.mktemp("rankruns")
    return train_tiny_run(root / "2026-11-24_0500_tiny", tiny_llama, write_text_jsonl(root / "train.jsonl"),
                          quantization="none", training__max_steps=6, training__lr=2e-2, training__save_every=3,
                          lora__targets="all-linear")


def shoot(widget, name: str) -> None:
    if os.environ.get("RANK_SHOTS"):
        widget.grab().save(f"/tmp/rank16/{name}.png")


def open_view(qtbot, run_dir, **kwargs) -> RankView:
    view = RankView(run_dir, run_dir.parent, **kwargs)
    qtbot.addWidget(view)
    view.show()
    qtbot.waitUntil(lambda: view.status is not None, timeout=120_000)
    return view


def test_rank_view_shows_heat_map_spectrum_and_suggestion(qtbot, run_dir, inline_jobs):
    view = open_view(qtbot, run_dir)
    assert view.status == "completed" and view.report is not None, view.phase_label.text()
    assert view.heat.types == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert view.heat.layers == [0, 1] and all(1 <= v <= 8 for row in view.heat.grid for v in row)
    assert view.module_combo.count() == 14 and "r=8, alpha=16" in view.phase_label.text()
    assert "99 %" in view.suggestion_label.text() and "LoRA weights:" in view.size_label.text()
    assert view.save_button.isEnabled()
    # a click on the heat map's cell (layer 1, v_proj) shows that module's spectrum
    rect = view.heat.cell_rect(1, 2)
    qtbot.mouseClick(view.heat, Qt.LeftButton, pos=QPoint(int(rect.center().x()), int(rect.center().y())))
    assert view.module_combo.currentText() == "model.layers.1.self_attn.v_proj"
    module = view.report["modules"][view.module_combo.currentIndex()]
    x, y = view.spectrum.total.getData()
    assert list(x) == list(range(1, 9)) and y[-1] == pytest.approx(100.0) and list(y) == sorted(y)
    assert f"99 % in {module['effective_rank_99']}" in view.module_label.text()
    shoot(view, "rank_view")


def test_rank_view_reads_a_checkpoint_and_says_when_there_is_none(qtbot, run_dir, inline_jobs):
    view = open_view(qtbot, run_dir, checkpoint=3)
    assert view.report["adapter"].endswith("step-000003") and "checkpoint at step 3" in view.phase_label.text()
    missing = open_view(qtbot, run_dir, checkpoint=5)
    assert missing.report is None and "has no checkpoint at step 5" in missing.phase_label.text()
    assert "What to do: saved steps: 3, 6" in missing.phase_label.text() and not missing.save_button.isEnabled()


def test_save_a_smaller_adapter(qtbot, run_dir, tmp_path, inline_jobs):
    view = open_view(qtbot, run_dir)
    dialog = view.open_resize()             # a child of the view: closed and deleted with it
    dialog.rank_spin.setValue(2)
    before, after = resize_preview(view.report, 2, None)["before"], resize_preview(view.report, 2, None)["after"]
    assert after * 4 == before
    assert "75% smaller; rank 2" in dialog.preview_label.text()
    dialog.by_energy.setChecked(True)
    dialog.energy_spin.setValue(90.0)
    assert not dialog.rank_spin.isEnabled() and "ranks " in dialog.preview_label.text()
    shoot(dialog, "resize_dialog")
    dialog.by_rank.setChecked(True)
    dialog.out_edit.setText(str(tmp_path / "small"))
    qtbot.mouseClick(dialog.save_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: dialog.status is not None, timeout=120_000)
    assert dialog.status == "completed", dialog.result_label.text()
    assert f"Saved the smaller adapter to {tmp_path / 'small'}" in dialog.result_label.text()
    cfg = json.loads((tmp_path / "small" / "adapter_config.json").read_text())
    assert cfg["r"] == 2 and not dialog.open_button.isHidden() and dialog.close_button.text() == "Close"


def test_resize_dialog_refuses_in_words_and_asks_before_replacing(qtbot, run_dir, tmp_path, inline_jobs, monkeypatch):
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a[2]) or QMessageBox.No)
    view = open_view(qtbot, run_dir)
    dialog = view.open_resize()             # a child of the view: closed and deleted with it
    dialog.out_edit.setText(str(run_dir / "inside"))
    dialog.start_resize()
    qtbot.waitUntil(lambda: not dialog.result_label.isHidden(), timeout=30_000)
    assert "inside or around the run folder" in dialog.result_label.text() and "What to do:" in dialog.result_label.text()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep me")
    dialog.out_edit.setText(str(busy))
    dialog.start_resize()
    qtbot.waitUntil(lambda: bool(asked), timeout=30_000)
    assert "is not empty" in asked[0] and [p.name for p in busy.iterdir()] == ["mine.txt"]
    assert dialog.status is None and dialog.save_button.isEnabled()


def test_runs_page_opens_the_rank_view(qtbot, run_dir, inline_jobs):
    from lorastudio.app.runs.runs_page import RunsPage
    page = RunsPage(run_dir.parent, refresh_ms=0)
    qtbot.addWidget(page)
    page.refresher.refresh()
    qtbot.waitUntil(lambda: page.model.rowCount() == 1, timeout=30_000)
    page.select(run_dir)
    assert page.buttons["rank"].isEnabled()
    view = page.open_rank()
    qtbot.addWidget(view)
    qtbot.waitUntil(lambda: view.status is not None, timeout=120_000)
    assert view.report is not None and view.windowTitle() == f"Rank — {run_dir.name}"
