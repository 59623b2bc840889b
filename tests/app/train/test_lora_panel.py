"""Target checkboxes come from the model's modules; the Trainable line follows rank and targets."""
from conftest import load_model

from lorastudio.core.models.info import read_model_info
from lorastudio.core.models.targets import discover_targets
from lorastudio.core.formatting import format_count


def expected_line(report, selection, r, dora=False):
    lora = report.lora_params(selection, r, dora)
    total = report.total_params + lora
    return f"Trainable: {format_count(lora)} of {format_count(total)} parameters ({100 * lora / total:.2f} %)"


def test_checkboxes_match_discovered_targets_grouped(qtbot, page, tiny_llama):
    load_model(qtbot, page, tiny_llama)
    report = discover_targets(read_model_info(str(tiny_llama)))
    picker = page.lora_panel.targets
    assert list(picker.boxes) == report.names()
    grouped = {g: [t.name for t in ts] for g, ts in report.grouped().items()}
    assert grouped["attention"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert grouped["mlp"] == ["gate_proj", "up_proj", "down_proj"]
    assert picker.selection() == ["q_proj", "v_proj"]            # the usual default


def test_trainable_line_updates_with_rank_targets_dora_and_all_linear(qtbot, page, tiny_llama):
    load_model(qtbot, page, tiny_llama)
    report = discover_targets(read_model_info(str(tiny_llama)))
    lora = page.lora_panel
    label = lora.trainable_label
    assert label.text() == expected_line(report, ["q_proj", "v_proj"], 8)
    lora.rank_combo.setCurrentText("64")
    assert label.text() == expected_line(report, ["q_proj", "v_proj"], 64)
    assert lora.alpha_spin.value() == 128                     # alpha followed 2·r
    lora.targets.boxes["down_proj"].setChecked(True)
    assert label.text() == expected_line(report, ["q_proj", "v_proj", "down_proj"], 64)
    lora.dora_box.setChecked(True)
    assert label.text() == expected_line(report, ["q_proj", "v_proj", "down_proj"], 64, dora=True)
    lora.targets.all_linear.setChecked(True)
    assert lora.values()["targets"] == "all-linear"
    assert label.text() == expected_line(report, "all-linear", 64, dora=True)
    assert not lora.targets.boxes["q_proj"].isEnabled()


def test_no_target_ticked_disables_start_with_the_reason(qtbot, page, tiny_llama, text_jsonl):
    from conftest import load_data
    load_model(qtbot, page, tiny_llama)
    load_data(qtbot, page, text_jsonl)
    page.hardware_panel.set_values({"quantization": "none", "device": "cpu"})
    assert page.start_bar.start_button.isEnabled()
    for box in page.lora_panel.targets.boxes.values():
        box.setChecked(False)
    assert not page.start_bar.start_button.isEnabled()
    assert page.start_bar.reason_label.text() == "Targets: tick at least one module, or All linear layers."
    assert page.lora_panel.trainable_label.text() == "Trainable: —"


def test_gpt2_offers_per_parent_c_proj_and_defaults_to_c_attn(qtbot, page, tiny_gpt2):
    load_model(qtbot, page, tiny_gpt2)
    picker = page.lora_panel.targets
    assert {"c_attn", "attn.c_proj", "mlp.c_proj", "c_fc"} <= set(picker.boxes)
    assert picker.selection() == ["c_attn"]


def test_tooltips_reuse_the_config_help():
    from lorastudio.app.train.lora_panel import LoraPanel
    from lorastudio.core.config import LoraSection, field_help
    panel = LoraPanel()
    try:
        assert panel.rank_combo.toolTip() == field_help(LoraSection, "r")
        assert panel.alpha_spin.toolTip() == field_help(LoraSection, "alpha")
    finally:
        panel.deleteLater()
