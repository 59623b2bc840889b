"""A vision-language model on the Train page: the Model panel says "vision" and which parts LoRA can
adapt; the LoRA panel offers lora.vision (only then), bound to the config, and counts what it adds."""
import pytest
from conftest import load_model

from lorastudio.core.formatting import format_count
from lorastudio.core.models.info import read_model_info
from lorastudio.core.models.targets import discover_targets
from lorastudio.core.models.vision import part_lora_params


@pytest.fixture(scope="module")
def tiny_qwen2_vl(tmp_path_factory):
    from tests.helpers.tiny_vlms import make_vlm
    return make_vlm(tmp_path_factory.mktemp("vlm") / "tiny-qwen2-vl", "qwen2_vl")


@pytest.fixture(scope="module")
def tiny_gemma3(tmp_path_factory):
    from tests.helpers.tiny_vlms import make_vlm
    return make_vlm(tmp_path_factory.mktemp("vlm") / "tiny-gemma3", "gemma3")


def test_a_vlm_is_said_vision_with_its_adaptable_parts_and_offers_lora_vision(qtbot, page, tiny_qwen2_vl):
    load_model(qtbot, page, tiny_qwen2_vl)
    panel, lora = page.model_panel, page.lora_panel
    assert panel.state == "ready"
    parts = read_model_info(str(tiny_qwen2_vl)).vision["parts"]
    text = panel.values["vision"].text()
    assert panel.values["vision"].isVisible() and panel.vision_key.isVisible()
    assert text.startswith("vision-language (Qwen2-VL / Qwen2.5-VL)")
    assert (f"language model ({parts['language']} linear layers), projector ({parts['projector']}), "
            f"vision tower ({parts['vision']})") in text
    assert "lora.vision" in panel.values["vision"].toolTip()
    assert lora.vision_combo.isVisible() and lora.vision_label.isVisible()
    assert [lora.vision_combo.itemData(i) for i in range(lora.vision_combo.count())] == ["none", "projector", "all"]
    assert lora.values()["vision"] == "none"


def test_lora_vision_is_bound_to_the_config_and_counted_in_the_trainable_line(qtbot, page, tiny_qwen2_vl):
    load_model(qtbot, page, tiny_qwen2_vl)
    lora = page.lora_panel
    info = read_model_info(str(tiny_qwen2_vl))
    report = discover_targets(info)
    selection = lora.targets.selection()
    base = report.lora_params(selection, 8)
    assert lora.trainable_label.text().startswith(f"Trainable: {format_count(base)} of")
    lora.vision_combo.setCurrentIndex(lora.vision_combo.findData("all"))
    extra = part_lora_params(info, 8)
    added = extra["projector"] + extra["vision"]
    assert lora.trainable_label.text().startswith(f"Trainable: {format_count(base + added)} of")
    assert lora.trainable_label.text().endswith(f"{format_count(added)} of them in the projector and vision tower")
    assert page.form_state()["lora"]["vision"] == "all"
    # a config that says projector shows it, and the form gives it back
    state = page.form_state()
    state["lora"]["vision"] = "projector"
    page.restore_form(state)
    qtbot.waitUntil(lambda: page.model_panel.state == "ready", timeout=10_000)
    assert lora.vision() == "projector"
    assert page.form_state()["lora"]["vision"] == "projector"


def test_gemma3_says_its_projector_cannot_be_adapted(qtbot, page, tiny_gemma3):
    load_model(qtbot, page, tiny_gemma3)
    text = page.model_panel.values["vision"].text()
    assert "vision-language (Gemma 3)" in text and "not adaptable: projector" in text
    assert "LoRA cannot adapt it" in page.model_panel.values["vision"].toolTip()


def test_a_text_model_shows_neither_vision_line_nor_choice(qtbot, page, tiny_qwen2_vl, tiny_llama):
    load_model(qtbot, page, tiny_qwen2_vl)
    load_model(qtbot, page, tiny_llama)
    qtbot.waitUntil(lambda: page.model_panel.info is not None and page.model_panel.info.model_type == "llama",
                    timeout=10_000)
    assert not page.model_panel.values["vision"].isVisible()
    assert not page.model_panel.vision_key.isVisible()
    assert not page.lora_panel.vision_combo.isVisible()
    assert "of them in the" not in page.lora_panel.trainable_label.text()
