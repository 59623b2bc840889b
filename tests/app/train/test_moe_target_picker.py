"""The target picker on a mixture of experts (issue 28): experts and the router get their own
columns, the tooltips count E pairs per expert parameter, and all-linear's Trainable line is the
report's (routers left out)."""
from __future__ import annotations

from lorastudio.app.train.target_picker import GROUP_TITLES, TargetPicker
from lorastudio.core.models.info import read_model_info
from lorastudio.core.models.targets import discover_targets, trainable_line
from tests.helpers.tiny_families import make_family


def test_experts_and_router_columns_with_counted_tooltips(qtbot, tmp_path):
    report = discover_targets(read_model_info(str(make_family(tmp_path / "m", "DeepSeek-V3"))))
    picker = TargetPicker()
    qtbot.addWidget(picker)
    picker.set_report(report)
    titles = [picker.grid.itemAtPosition(0, c).widget().text() for c in range(picker.grid.columnCount())
              if picker.grid.itemAtPosition(0, c) is not None]
    assert titles == [GROUP_TITLES[g] for g in ("attention", "mlp", "shared_experts", "experts", "router", "other")]
    assert picker.selection() == ["q_proj"]                  # MLA has no v_proj: the first target
    picker.update_tooltips(8, False)
    tip = picker.boxes["mlp.experts.gate_up_proj"].toolTip()
    assert tip.startswith("1 layers × 4 experts × 8·(64 + 64)") and "4.10 K parameters" in tip
    picker.boxes["mlp.experts.down_proj"].setChecked(True)
    assert "mlp.experts.down_proj" in picker.selection()
    picker.all_linear.setChecked(True)
    assert picker.selection() == "all-linear"
    assert trainable_line(report, "all-linear", 8) == trainable_line(
        report, [t.name for t in report.targets if t.group not in ("router", "other")], 8)
