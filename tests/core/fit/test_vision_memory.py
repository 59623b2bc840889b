"""The memory model's images term (core/fit/vision_memory.py): patches from the data's own images and
the processor's budget, what lora.vision and the memory mode keep of them, and no term for text."""
from __future__ import annotations

import pytest

from lorastudio.core.config import RunConfig
from lorastudio.core.fit.memory_model import estimate
from lorastudio.core.fit.vision_memory import ImageLoad, micro_batch_patches, patches_per_image, tower_of
from lorastudio.core.models.info import read_model_info
from tests.helpers.tiny_models import make_tiny_model, write_config
from tests.helpers.tiny_vlms import make_vlm, write_colour_data, write_image


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    return make_vlm(tmp_path_factory.mktemp("qwen") / "m", "qwen2_5_vl")


def _estimate(tmp_path, model, data, mode="checkpoint", **settings):
    config = RunConfig.load(write_config(tmp_path / "c.yaml", model, data, quantization="none", **settings))
    return estimate(config, read_model_info(model), mode)


def test_qwen_patches_follow_the_image_size_within_the_processor_budget(qwen):
    tower = tower_of(read_model_info(qwen))
    assert (tower.width, tower.layers, tower.merge, tower.budget) == (32, 2, 2, 3136)    # the tiny processor's 56²
    assert patches_per_image(tower, 28 * 28) == 4                  # one 28-px cell: 2 × 2 patches
    assert patches_per_image(tower, 56 * 56) == 16
    assert patches_per_image(tower, 4000 * 3000) == 16             # scaled down to the budget


def test_a_fixed_size_tower_counts_its_patches_per_image(tmp_path):
    tower = tower_of(read_model_info(make_vlm(tmp_path / "m", "llava")))
    assert tower.fixed_patches == 4 + 1                            # 28 / 14 squared, and CLIP's class token
    assert patches_per_image(tower, 10) == patches_per_image(tower, 10 ** 7) == 5


def test_the_images_term_grows_with_the_data_images_and_with_what_lora_vision_adapts(tmp_path, qwen):
    small = tmp_path / "small"
    write_colour_data(small, 4)                                    # 40 × 32 images
    large = tmp_path / "large"
    write_colour_data(large, 4)
    for png in (large / "images").glob("*.png"):
        write_image(png, png.stem.split("-")[1], size=(56, 56))
    terms = {}
    for name, folder in (("small", small), ("large", large)):
        for vision in ("none", "projector", "all"):
            est = _estimate(tmp_path, qwen, folder / "colours.jsonl", lora__vision=vision, training__batch_size=2)
            terms[name, vision] = est.term("images")
    assert terms["large", "none"].bytes > terms["small", "none"].bytes
    assert "32 patches" in terms["large", "none"].detail           # 2 rows × 16 patches of a 56-px image
    for name in ("small", "large"):
        assert terms[name, "none"].bytes < terms[name, "projector"].bytes < terms[name, "all"].bytes
    assert "keeps nothing" in terms["large", "none"].detail
    assert "1 image an example" in terms["large", "all"].detail


def test_checkpointing_keeps_less_of_the_tower_than_mode_none(tmp_path, qwen):
    data = write_colour_data(tmp_path / "d", 4)
    kept = {mode: _estimate(tmp_path, qwen, data, mode, lora__vision="all").term("images").bytes
            for mode in ("none", "checkpoint", "lean")}
    assert kept["none"] > kept["checkpoint"] >= kept["lean"]


def test_image_tokens_cannot_outnumber_a_rows_positions(qwen):
    tower = tower_of(read_model_info(qwen))
    three = ImageLoad(images=3, pixels=56 * 56, words="")          # 3 × 16 patches = 12 image tokens a row
    assert micro_batch_patches(tower, three, batch=2, seq_len=64)[0] == 2 * 48
    assert micro_batch_patches(tower, three, batch=2, seq_len=8)[0] == 2 * 8 * 4     # 8 positions × 2 × 2 patches


def test_unread_data_counts_one_image_at_the_budget_and_says_so(tmp_path, qwen):
    est = _estimate(tmp_path, qwen, tmp_path / "missing.jsonl", training__batch_size=1)
    assert "16 patches" in est.term("images").detail and "up to" in est.term("images").detail


def test_a_text_model_and_text_data_have_no_images_term(tmp_path, qwen):
    text = tmp_path / "t.jsonl"
    text.write_text('{"text": "hello there"}\n')
    model = make_tiny_model(tmp_path / "text-model")
    assert "images" not in {t.key for t in _estimate(tmp_path, model, text).terms}
    assert "images" not in {t.key for t in _estimate(tmp_path, qwen, text).terms}
