"""`lorastudio train` and `lorastudio merge` on tiny random vision-language models of each family,
with a generated PNG data set: the loss falls, the adapter keeps the processor, the merged model
saves it and loads back with it."""
from __future__ import annotations

import json

import pytest

from lorastudio.core.cli import main as cli_main
from lorastudio.core.engine.vision.loading import auto_class_and_processor
from lorastudio.core.journal import read_events
from lorastudio.core.models.info import read_safetensors_header
from lorastudio.core.models.vision import adapted_parts
from tests.helpers.tiny_models import write_config
from tests.helpers.tiny_vlms import FAMILIES, make_vlm, write_colour_data


@pytest.mark.parametrize("family", FAMILIES)
def test_train_then_merge_a_vision_language_model(tmp_path, family, inline_jobs, monkeypatch, capsys):
    monkeypatch.setenv("LORASTUDIO_CACHE", str(tmp_path / "cache"))
    model = make_vlm(tmp_path / "model", family)
    data = write_colour_data(tmp_path / "data", 16)
    vision = "all" if family == "gemma3" else "projector"       # Gemma 3's projector is no linear layer
    config = write_config(tmp_path / "c.yaml", model, data, lora__targets="all-linear", lora__vision=vision,
                          training__max_steps=10, training__seq_len=128, training__save_every=0,
                          training__lr=1e-2, data__validation_split=0.0)
    run = tmp_path / "run"
    assert cli_main(["train", str(config), "--run-dir", str(run)]) == 0
    events = read_events(run / "events.jsonl")
    announced = capsys.readouterr().out.split(" trainable")[0].rsplit(": ", 1)[-1]
    start = next(e for e in events if e["type"] == "start")
    from lorastudio.core.formatting import format_count
    assert announced == format_count(start["trainable_params"])     # the count announced is what trains
    losses = [e["loss"] for e in events if e["type"] == "step"]
    assert len(losses) == 10 and losses[-1] < losses[0] - 0.3, losses
    data_event = next(e for e in events if e["type"] == "data")
    assert data_event["packing"] == "fallback" and data_event["examples"] == 16 and data_event["images"] == 16
    adapter = run / "adapter"
    assert (adapter / "processor_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    parts = {part for part, modules in adapted_parts(read_safetensors_header(adapter / "adapter_model.safetensors"))
             .items() if modules}
    assert parts == ({"language", "projector"} if vision == "projector" else {"language", "vision"})

    merged = tmp_path / "merged"
    assert cli_main(["merge", str(run), str(merged), "--device", "cpu", "--dtype", "fp32"]) == 0
    capsys.readouterr()
    assert (merged / "processor_config.json").is_file() and (merged / "chat_template.jinja").is_file()
    fidelity = next(e for e in read_events(next((run / "merges").iterdir()) / "events.jsonl")
                    if e["type"] == "fidelity")
    assert fidelity["greedy_agree"] == fidelity["prompts"]
    auto, processor = auto_class_and_processor(merged)      # the merged folder loads as the base did
    _, base_processor = auto_class_and_processor(model)
    assert type(processor).__name__ == type(base_processor).__name__
    assert processor.image_processor.to_dict() == base_processor.image_processor.to_dict()
    reloaded = auto.from_pretrained(merged)
    assert type(reloaded).__name__.endswith("ForConditionalGeneration")


@pytest.mark.parametrize("family, vision, changed", [("llava", "projector", "all"), ("gemma3", "all", "none"),
                                                     ("qwen2_5_vl", "all", "projector")])
def test_a_run_that_adapts_vision_parts_resumes_and_refuses_a_changed_lora_vision(tmp_path, inline_jobs, monkeypatch,
                                                                                capsys, family, vision, changed):
    import yaml
    monkeypatch.setenv("LORASTUDIO_CACHE", str(tmp_path / "cache"))
    model = make_vlm(tmp_path / "model", family)
    data = write_colour_data(tmp_path / "data", 8)
    config = write_config(tmp_path / "c.yaml", model, data, lora__vision=vision, training__max_steps=4,
                          training__seq_len=128, training__save_every=2, data__validation_split=0.0)
    run = tmp_path / "run"
    assert cli_main(["train", str(config), "--run-dir", str(run)]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    saved["training"]["max_steps"] = 6
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    assert cli_main(["resume", str(run)]) == 0
    steps = [e["step"] for e in read_events(run / "events.jsonl") if e["type"] == "step"]
    assert steps == [1, 2, 3, 4, 5, 6]
    saved["training"]["max_steps"] = 8
    saved["lora"]["vision"] = changed
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    capsys.readouterr()
    assert cli_main(["resume", str(run)]) != 0
    said = capsys.readouterr()
    assert f"lora.vision is {changed} but the checkpoint's adapter adapts" in said.out + said.err


@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_a_quantized_vision_language_base_trains_its_adapter(tmp_path, monkeypatch, quantization):
    from tests.helpers.training import train
    monkeypatch.setenv("LORASTUDIO_CACHE", str(tmp_path / "cache"))
    model = make_vlm(tmp_path / "model", "qwen2_vl")
    data = write_colour_data(tmp_path / "data", 8)
    config = write_config(tmp_path / "c.yaml", model, data, quantization=quantization, lora__vision="projector",
                          training__max_steps=8, training__seq_len=128, training__save_every=0,
                          training__lr=1e-2, data__validation_split=0.0)
    trainer, status, events = train(config, tmp_path / "run")
    losses = [e["loss"] for e in events if e["type"] == "step"]
    assert status == "completed" and losses[-1] < losses[0], losses
    assert (tmp_path / "run" / "adapter" / "processor_config.json").is_file()


def test_images_for_a_text_only_model_are_refused_before_it_loads(tmp_path, tiny_chat_llama, capsys):
    data = write_colour_data(tmp_path / "data", 3, "sharegpt")
    config = write_config(tmp_path / "c.yaml", tiny_chat_llama, data)
    run = tmp_path / "run"
    assert cli_main(["train", str(config), "--run-dir", str(run)]) != 0
    said = capsys.readouterr()
    assert f"{data}, line 1: this example has 1 image(s), but LlamaForCausalLM" in said.out + said.err
    assert not run.exists()


@pytest.mark.parametrize("family", FAMILIES)
def test_eval_scores_base_and_adapter_on_held_out_rows_with_images(tmp_path, family, inline_jobs, monkeypatch, capsys):
    monkeypatch.setenv("LORASTUDIO_CACHE", str(tmp_path / "cache"))
    model = make_vlm(tmp_path / "model", family)
    data = write_colour_data(tmp_path / "data", 12)
    held = write_colour_data(tmp_path / "held", 4, "sharegpt")
    config = write_config(tmp_path / "c.yaml", model, data, training__max_steps=4, training__seq_len=128,
                          training__save_every=0, data__validation_split=0.0)
    run = tmp_path / "run"
    assert cli_main(["train", str(config), "--run-dir", str(run)]) == 0
    assert cli_main(["eval", str(run), "--data", str(held)]) == 0
    capsys.readouterr()
    result = json.loads((run / "eval.json").read_text())
    assert result["examples"] == 4
    for side in ("base", "adapter"):
        assert result[side]["prompts"] == 4 and result[side]["loss"] > 0
    assert result["base"]["loss"] != result["adapter"]["loss"]
    assert result["samples"][0]["reference"] == "It is red." and "<image>" in result["samples"][0]["prompt"]


@pytest.mark.parametrize("layout", ["parquet", "save_to_disk"])
def test_images_held_in_parquet_and_saved_datasets_train(tmp_path, monkeypatch, layout):
    """datasets' Image feature: {"bytes", "path"} structs in Parquet, PIL images once datasets decodes
    a save_to_disk folder; each is written once under the cache by its bytes and trained like a file."""
    import datasets
    from tests.helpers.training import train
    monkeypatch.setenv("LORASTUDIO_CACHE", str(tmp_path / "cache"))
    model = make_vlm(tmp_path / "model", "qwen2_vl")
    write_colour_data(tmp_path / "src", 8)
    pngs = sorted((tmp_path / "src" / "images").iterdir())
    rows = {"image": [{"bytes": p.read_bytes(), "path": None} for p in pngs],
            "messages": [[{"role": "user", "content": "<image>What colour is this?"},
                          {"role": "assistant", "content": f"It is {p.stem.split('-')[1]}."}] for p in pngs]}
    table = datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image())
    data = tmp_path / ("d.parquet" if layout == "parquet" else "saved")
    table.to_parquet(str(data)) if layout == "parquet" else table.save_to_disk(str(data))
    for p in pngs:
        p.unlink()                      # the images now live only inside the data set
    config = write_config(tmp_path / "c.yaml", model, data, training__max_steps=6, training__seq_len=128,
                          training__save_every=0, training__lr=1e-2, data__validation_split=0.0)
    trainer, status, events = train(config, tmp_path / "run")
    losses = [e["loss"] for e in events if e["type"] == "step"]
    assert status == "completed" and losses[-1] < losses[0]
    # 8 rows, 4 colours drawn alike: 4 distinct images, stored once each
    assert next(e for e in events if e["type"] == "data")["images"] == 4
    assert len(list((tmp_path / "cache" / "images").iterdir())) == 4
