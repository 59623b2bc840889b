"""The memory model counts what lora.vision adds (issue 31): its LoRA term's trainable parameters
equal what a real vision-language run trains, for the language model alone, with the projector, and
with the vision tower too."""
from __future__ import annotations

import pytest

from lorastudio.core.cli import main as cli_main
from lorastudio.core.config import RunConfig
from lorastudio.core.fit.memory_model import LORA_STATE_BYTES, estimate
from lorastudio.core.journal import read_events
from lorastudio.core.models.info import read_model_info
from lorastudio.core.models.targets import discover_targets
from tests.helpers.tiny_models import write_config
from tests.helpers.tiny_vlms import make_vlm, write_colour_data


@pytest.mark.parametrize("family, vision", [("qwen2_vl", "none"), ("qwen2_vl", "projector"), ("llava", "all"),
                                            ("idefics3", "projector"),
                                            *((f, v) for f in ("qwen3_vl", "llava_next", "pixtral")
                                              for v in ("none", "projector", "all"))])
def test_the_lora_term_counts_what_the_run_trains(tmp_path, family, vision, inline_jobs, monkeypatch, capsys):
    monkeypatch.setenv("LORASTUDIO_CACHE", str(tmp_path / "cache"))
    model = make_vlm(tmp_path / "model", family)
    data = write_colour_data(tmp_path / "data", 8)
    config_path = write_config(tmp_path / "c.yaml", model, data, quantization="none", lora__vision=vision,
                               lora__targets="all-linear", training__max_steps=2, training__warmup_steps=0, training__seq_len=128,
                               training__save_every=0, data__validation_split=0.0)
    run = tmp_path / "run"
    assert cli_main(["train", str(config_path), "--run-dir", str(run)]) == 0
    capsys.readouterr()
    trained = next(e for e in read_events(run / "events.jsonl") if e["type"] == "start")["trainable_params"]
    config = RunConfig.load(config_path)
    info = read_model_info(model)
    lora = estimate(config, info, "none", report=discover_targets(info)).term("lora")
    assert lora.bytes == trained * LORA_STATE_BYTES, lora.detail
    assert (("projector" in lora.detail) == (vision != "none"))
