"""Preference runs: the dashboard plots margin, accuracy and log-probabilities live; the Training
panel sets the method and its strength; the Dataset panel recognises pairs."""
import json

import pytest

from lorastudio.app.dashboard.preference_plot import PreferenceSeries
from lorastudio.core.journal import JournalWriter


def step(n, margin, accuracy):
    return dict(step=n, total_steps=10, epoch=n / 10, loss=0.69 - 0.05 * n, lr=1e-4, grad_norm=0.5,
                tokens_per_s=100.0, elapsed_s=float(n), eta_s=1.0, margin=margin, accuracy=accuracy,
                chosen_logp=-20.0 + n, rejected_logp=-20.0 - n)


def test_series_fold_preference_fields_only():
    s = PreferenceSeries()
    assert not s.apply({"type": "step", "step": 1, "loss": 2.0})                # a supervised step
    assert s.empty
    assert s.apply({"type": "step", **step(1, 0.2, 0.75)})
    assert s.apply({"type": "eval", "step": 1, "loss": 0.6, "margin": 0.4, "accuracy": 1.0, "prefers_chosen": 0.5})
    assert (s.margin.y, s.accuracy.y, s.chosen.y, s.rejected.y) == ([0.2], [0.75], [-19.0], [-21.0])
    assert (s.eval_margin.y, s.eval_accuracy.y, s.eval_prefers.y) == ([0.4], [1.0], [0.5])


def test_dashboard_shows_the_preference_plots_for_a_dpo_run(qtbot, page, tmp_path):
    run_dir = tmp_path / "run"
    writer = JournalWriter(run_dir / "events.jsonl")
    d = page.dashboard
    d.reset(str(run_dir))
    page.process.follow(run_dir)
    writer.emit("start", config={}, devices=[], versions={}, trainable_params=1, total_params=2, total_steps=10)
    writer.emit("eval", step=0, loss=0.693, margin=0.0, accuracy=0.0, prefers_chosen=0.5, pairs=8,
                chosen_logp=-20.0, rejected_logp=-20.0)
    for n in range(1, 5):
        writer.emit("step", **step(n, 0.1 * n, 0.5 + 0.1 * n))
    writer.emit("eval", step=4, loss=0.4, margin=1.2, accuracy=0.9, prefers_chosen=0.95, pairs=8,
                chosen_logp=-15.0, rejected_logp=-25.0)
    plot = d.preference_plot
    qtbot.waitUntil(lambda: plot.margin_plot.point_count("train") == 4, timeout=5000)
    assert plot.isVisible()
    assert plot.margin_plot.point_count("eval") == 2
    assert plot.accuracy_plot.point_count("prefers") == 2 and plot.logp_plot.point_count("rejected") == 4
    d.resize(1100, 1000)
    qtbot.wait(200)
    d.grab().save("/tmp/pref/dashboard_dpo.png")
    writer.close()
    d.reset(str(tmp_path / "other"))
    assert plot.isHidden() and plot.series.empty


def test_the_training_panel_sets_method_and_strength(qtbot, page):
    panel = page.training_panel
    panel.set_values({"training": {"method": "dpo", "beta": 0.25}})
    values = panel.values()["training"]
    assert (values["method"], values["beta"], values["orpo_lambda"]) == ("dpo", 0.25, 0.1)
    assert panel.strength_label.text() == "DPO β" and panel.widgets["training.beta"].isVisibleTo(panel)
    assert "pairs per step" in panel.summary_label.text()
    panel.widgets["training.method"].setCurrentText("orpo")
    assert panel.strength_label.text() == "ORPO λ" and not panel.widgets["training.beta"].isVisibleTo(panel)
    panel.widgets["training.method"].setCurrentText("sft")
    assert panel.strength_label.text() == "" and "examples per step" in panel.summary_label.text()
    panel.grab().save("/tmp/pref/training_panel.png")


def test_the_dataset_panel_recognises_pairs(qtbot, page, tmp_path):
    from tests.app.conftest import load_data
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"q{i}", "chosen": "good", "rejected": "bad"}) + "\n"
                            for i in range(4)), encoding="utf-8")
    load_data(qtbot, page, path)
    panel = page.dataset_panel
    qtbot.waitUntil(lambda: panel.detection is not None, timeout=5000)
    assert panel.detection.format == "pairs" and panel.local_error() is None
    assert "Preference pairs" in panel.format_label.text()
    same = tmp_path / "same.jsonl"
    same.write_text(json.dumps({"prompt": "q", "chosen": "same", "rejected": "same"}) + "\n", encoding="utf-8")
    load_data(qtbot, page, same)
    qtbot.waitUntil(lambda: panel.local_error() is not None, timeout=5000)
    assert "line 1: chosen and rejected are identical" in panel.local_error()[0]


@pytest.mark.parametrize("side", ["chosen", "rejected"])
def test_the_inspector_highlights_each_sides_trained_tokens(qtbot, side):
    from lorastudio.app.dataset.inspection_view import InspectionView
    view = InspectionView()
    qtbot.addWidget(view)
    tokens = {s: [{"id": 1, "text": "<|im_start|>user\nq<|im_end|>\n", "trained": False},
                  {"id": 2, "text": s.upper(), "trained": True}] for s in ("chosen", "rejected")}
    report = {"format": "pairs", "reason": "preference pairs: fields …", "examples": 1, "usable_examples": 1,
              "tokens": 4, "trained_tokens": 2, "seq_len": 64, "truncated": 0, "dropped_too_long": 0,
              "dropped_no_target": 0, "bad_rows": [], "notes": [], "chat_template": "model",
              "lengths": {"min": 2, "p50": 2, "p90": 2, "p99": 2, "max": 2, "mean": 2.0},
              "histogram": {"edges": [2, 3], "counts": [2]},
              "example": {"index": 1, "where": "line 1", "status": "ok", "tokens": tokens["chosen"], "trained": 1,
                          "total": 2},
              "pair": {s: {"tokens": tokens[s], "trained": 1, "total": 2} for s in ("chosen", "rejected")}}
    view.show_report(report)
    shown = view.token_view if side == "chosen" else view.rejected_view
    assert shown.trained_text() == side.upper()
    assert view.rejected_view.isVisibleTo(view) and "pairs" in view.status_label.text()
    view.resize(700, 600)
    view.grab().save(f"/tmp/pref/inspector_{side}.png")
