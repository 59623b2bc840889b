"""Tiny random vision-language models of each family through the real loading code: the model
info, what LoRA adapts (lora.vision), the masks of examples with images, the image tensors of a
batch, and the located refusals (bad image, text-only model, too many image tokens)."""
from __future__ import annotations

import pytest
import torch

from lorastudio.core.config import RunConfig
from lorastudio.core.data.chat_masks import IGNORE_INDEX
from lorastudio.core.data.files import DataError
from lorastudio.core.engine.batches import prepare_data
from lorastudio.core.engine.model_loading import load_for_training
from lorastudio.core.engine.vision.encoding import image_token_id, image_token_ids
from lorastudio.core.engine.vision.loading import load_processor
from lorastudio.core.models.info import read_model_info
from lorastudio.core.models.targets import discover_targets
from lorastudio.core.models.vision import part_of, vision_family
from tests.helpers.tiny_models import write_config
from tests.helpers.tiny_vlms import FAMILIES, write_colour_data, write_image
from tests.helpers.training import jsonl

FAMILY_NAMES = {"qwen2_vl": "Qwen2-VL / Qwen2.5-VL", "qwen2_5_vl": "Qwen2-VL / Qwen2.5-VL", "qwen3_vl": "Qwen3-VL",
                "gemma3": "Gemma 3", "mllama": "Llama 3.2 Vision (Mllama)", "idefics3": "Idefics3 / SmolVLM",
                "smolvlm": "Idefics3 / SmolVLM", "llava": "LLaVA", "llava_next": "LLaVA", "pixtral": "LLaVA"}


@pytest.fixture(scope="module")
def vlms(tmp_path_factory):
    from tests.helpers.tiny_vlms import make_vlm
    root = tmp_path_factory.mktemp("vlms")
    return {family: make_vlm(root / family, family) for family in FAMILIES}


@pytest.fixture(autouse=True)
def token_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LORASTUDIO_CACHE", str(tmp_path / "cache"))


def config(tmp_path, model, data, **overrides) -> RunConfig:
    settings = {"training__seq_len": 128, "training__batch_size": 2, "data__validation_split": 0.0, **overrides}
    return RunConfig.load(write_config(tmp_path / "c.yaml", model, data, **settings))


def prepared(cfg, loaded):
    return prepare_data(cfg.data, loaded.tokenizer, cfg.training.seq_len, cfg.training.batch_size, 0,
                        model=loaded.model, processor=loaded.processor)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_model_info_says_vision_and_which_parts_are_adaptable(vlms, family):
    info = read_model_info(str(vlms[family]))
    vision = info.summary()["vision"]
    assert vision["family"] == FAMILY_NAMES[family]
    assert vision["parts"]["language"] > 0 and vision["parts"]["vision"] > 0, vision
    if family == "gemma3":      # its projector is a bare matrix: nothing for LoRA, and the words say so
        assert vision["parts"]["projector"] == 0 and "LoRA cannot adapt it" in vision["words"]
    else:
        assert vision["parts"]["projector"] > 0, vision
    assert "vision-language" in vision["words"] and "lora.vision" in vision["words"]
    # lora.targets name layers of the language model: the targets report holds nothing else
    report = discover_targets(info)
    fam = vision_family(info)
    assert report.linear_modules and all(part_of(m, fam) == "language" for m in report.linear_modules)


def test_a_text_only_model_has_no_vision_summary(tiny_llama):
    assert read_model_info(str(tiny_llama)).summary()["vision"] is None


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("vision", ["none", "projector", "all"])
def test_lora_vision_chooses_the_adapted_parts(tmp_path, vlms, family, vision):
    data = write_colour_data(tmp_path / "data", 2)
    cfg = config(tmp_path, vlms[family], data, lora__vision=vision, lora__targets=["q_proj", "v_proj"])
    info = read_model_info(str(vlms[family]))
    loaded = load_for_training(cfg, info)
    assert loaded.processor is not None and loaded.tokenizer is loaded.processor.tokenizer
    fam = vision_family(info)
    adapted = {name.removeprefix("base_model.model.").removesuffix(".lora_A")
               for name, _ in loaded.model.named_modules() if name.endswith(".lora_A")}
    parts = {part_of(m, fam) for m in adapted}
    expected = {"none": {"language"}, "projector": {"language", "projector"},
                "all": {"language", "projector", "vision"}}[vision]
    if family == "gemma3":
        expected = expected - {"projector"}
    assert parts == expected
    if family == "qwen3_vl" and vision != "none":       # its deepstack mergers are projector layers
        assert {m.split("deepstack_merger_list.")[1] for m in adapted if "deepstack" in m} == {
            "0.linear_fc1", "0.linear_fc2"}
    language = [m for m in adapted if part_of(m, fam) == "language"]
    assert language and all(m.split(".")[-1] in ("q_proj", "v_proj") for m in language)
    assert any(f"lora.vision: {vision}" in n for n in loaded.notes)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("train_on", ["completions", "all"])
def test_image_tokens_and_prompts_are_never_trained_and_batches_carry_the_images(tmp_path, vlms, family, train_on):
    data = write_colour_data(tmp_path / "data", 4, "column")
    cfg = config(tmp_path, vlms[family], data, data__train_on=train_on)
    loaded = load_for_training(cfg, read_model_info(str(vlms[family])))
    ready = prepared(cfg, loaded)
    summary = ready.summary()
    assert summary["packing"] == "fallback" and "images are padded, not packed" in summary["packing_note"]
    tok, image_id = loaded.tokenizer, image_token_id(loaded.processor)
    masked = image_token_ids(loaded.processor)
    for row in ready.train_set.items:
        assert row.images and len(row.images) == 1
        assert row.input_ids.count(image_id) >= 1
        assert all(label == IGNORE_INDEX for t, label in zip(row.input_ids, row.labels) if t in masked)
        trained = tok.decode([t for t, label in zip(row.input_ids, row.labels) if label != IGNORE_INDEX])
        if train_on == "completions":
            assert trained.startswith("It is ") and trained.rstrip().endswith("<|im_end|>")
            assert "colour" not in trained and "user" not in trained
        else:
            assert "What colour is this?" in trained and "It is " in trained
    batch = ready.train.batch(0)
    assert "pixel_values" in batch and batch["input_ids"].shape == batch["labels"].shape
    loaded.model.train()
    loss = loaded.model(**batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in loaded.model.named_parameters()
               if "lora_B" in n)


def test_a_missing_image_is_named_by_data_file_line_and_path(tmp_path, vlms):
    data = write_colour_data(tmp_path / "data", 4)
    (tmp_path / "data" / "images" / "002-blue.png").unlink()
    cfg = config(tmp_path, vlms["qwen2_vl"], data)
    loaded = load_for_training(cfg, read_model_info(str(vlms["qwen2_vl"])))
    with pytest.raises(DataError) as err:
        prepared(cfg, loaded)
    assert f"{data}, line 3: image" in err.value.message and "002-blue.png does not exist" in err.value.message


def test_an_unreadable_image_is_named_by_data_file_and_line(tmp_path, vlms):
    data = write_colour_data(tmp_path / "data", 4)
    (tmp_path / "data" / "images" / "001-green.png").write_bytes(b"not an image at all")
    cfg = config(tmp_path, vlms["llava"], data)
    loaded = load_for_training(cfg, read_model_info(str(vlms["llava"])))
    with pytest.raises(DataError) as err:
        prepared(cfg, loaded)
    assert f"{data}, line 2: image" in err.value.message and "cannot be read" in err.value.message


def test_images_in_a_text_only_models_data_are_refused_with_the_line(tmp_path, tiny_chat_llama):
    data = jsonl(tmp_path / "d.jsonl", [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        {"images": ["x.png"], "messages": [{"role": "user", "content": "<image>what?"},
                                           {"role": "assistant", "content": "red"}]}])
    write_image(tmp_path / "x.png", "red")
    cfg = config(tmp_path, tiny_chat_llama, data)
    loaded = load_for_training(cfg, read_model_info(str(tiny_chat_llama)))
    assert loaded.processor is None
    with pytest.raises(DataError) as err:
        prepared(cfg, loaded)
    assert f"{data}, line 2: this example has 1 image(s)" in err.value.message
    assert "text-only model" in err.value.message and "vision-language model" in err.value.hint


def test_too_many_image_tokens_for_seq_len_are_refused_with_the_count(tmp_path, vlms):
    # Idefics3 with image splitting: 4 tiles + the global image, 1 token each, framed by row/col tokens.
    data = write_colour_data(tmp_path / "data", 2)
    cfg = config(tmp_path, vlms["idefics3"], data, training__seq_len=20)
    loaded = load_for_training(cfg, read_model_info(str(vlms["idefics3"])))
    with pytest.raises(DataError) as err:
        prepared(cfg, loaded)
    message = err.value.message
    assert f"{data}, line 1: its 1 image(s) take 5 tokens" in message and "training.seq_len=20" in message
    assert "data.max_image_pixels" in err.value.hint


def test_max_image_pixels_shrinks_an_images_tokens(tmp_path, vlms):
    folder = tmp_path / "data"
    write_image(folder / "big.png", "red", (56, 56))
    data = jsonl(folder / "d.jsonl", [{"images": ["big.png"], "messages": [
        {"role": "user", "content": "<image>colour?"}, {"role": "assistant", "content": "red"}]}] * 2)
    processor = load_processor(read_model_info(str(vlms["qwen2_vl"])))
    image_id = image_token_id(processor)
    counts = {}
    for budget in (0, 900):
        cfg = config(tmp_path, vlms["qwen2_vl"], data, data__max_image_pixels=budget)
        loaded = load_for_training(cfg, read_model_info(str(vlms["qwen2_vl"])))
        ready = prepared(cfg, loaded)
        counts[budget] = ready.train_set.items[0].input_ids.count(image_id)
        batch = ready.train.batch(0)
        assert int(batch["image_grid_thw"].prod(dim=1).sum()) // 4 == int((batch["input_ids"] == image_id).sum())
    assert counts == {0: 4, 900: 1}


def test_the_token_cache_is_keyed_by_the_images_content(tmp_path, vlms):
    data = write_colour_data(tmp_path / "data", 4)
    cfg = config(tmp_path, vlms["qwen2_vl"], data)
    loaded = load_for_training(cfg, read_model_info(str(vlms["qwen2_vl"])))
    assert not prepared(cfg, loaded).table.cache_hit
    assert prepared(cfg, loaded).table.cache_hit
    write_image(tmp_path / "data" / "images" / "000-red.png", "red", (56, 56))    # same name, new pixels
    again = prepared(cfg, loaded)
    assert not again.table.cache_hit
    assert again.train_set.items[0].input_ids.count(image_token_id(loaded.processor)) == 4


@pytest.mark.parametrize("family", FAMILIES)
def test_the_inspector_shows_where_the_image_tokens_sit_and_that_none_is_trained(tmp_path, vlms, family):
    from lorastudio.core.config import DataSection
    from lorastudio.core.engine.inspect_data import inspect_data
    data = write_colour_data(tmp_path / "data", 4, "sharegpt")
    report = inspect_data(DataSection(path=str(data)), str(vlms[family]), 128, example=2)
    assert report["images"] == 4 and report["usable_examples"] == 4
    shown = report["example"]
    assert shown["images"] == [str(tmp_path / "data" / "images" / "001-green.png")]
    positions = shown["image_tokens"]
    assert positions and all(not shown["tokens"][i]["trained"] for i in positions)
    trained = "".join(t["text"] for t in shown["tokens"] if t["trained"])
    assert trained.startswith("It is green.")


@pytest.mark.parametrize("family", FAMILIES)
def test_a_batch_may_mix_rows_with_and_without_images(tmp_path, vlms, family):
    write_image(tmp_path / "data" / "x.png", "blue")
    data = jsonl(tmp_path / "data" / "d.jsonl", [
        {"messages": [{"role": "user", "content": "just text"}, {"role": "assistant", "content": "fine"}]},
        {"images": ["x.png"], "messages": [{"role": "user", "content": "<image>colour?"},
                                           {"role": "assistant", "content": "blue"}]}])
    cfg = config(tmp_path, vlms[family], data)
    loaded = load_for_training(cfg, read_model_info(str(vlms[family])))
    ready = prepared(cfg, loaded)
    batch = ready.train.collate(list(ready.train_set.items))
    assert batch["input_ids"].shape[0] == 2 and "pixel_values" in batch
    image_id = image_token_id(loaded.processor)
    assert [int((row == image_id).sum()) > 0 for row in batch["input_ids"]] == [False, True]
    loaded.model.train()
    assert torch.isfinite(loaded.model(**batch).loss)


def test_lorastudio_targets_says_vision_and_what_lora_vision_adds(vlms, capsys):
    import json
    from lorastudio.core.cli import main as cli_main
    from lorastudio.core.models.vision import part_lora_params
    model = str(vlms["llava"])
    assert cli_main(["targets", model, "--rank", "4"]) == 0
    out = capsys.readouterr().out
    extra = part_lora_params(read_model_info(model), 4)
    assert extra["projector"] > 0 and extra["vision"] > 0
    assert "vision-language (LLaVA)" in out and "vision_tower" not in out     # targets: the language model's
    assert "lora.vision: projector adds" in out
    assert cli_main(["targets", model, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["vision"]["family"] == "LLaVA"
