"""`lorastudio train` end to end: a run folder, a progress display, the worker's exit status."""
import subprocess
import sys
from pathlib import Path

import pytest

from lorastudio.core.journal import read_events

pytestmark = pytest.mark.slow


def lorastudio(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "lorastudio.app.launcher", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_train_writes_a_run_whose_loss_decreases(make_config, runs_home, tiny_llama):
    import os
    config = make_config(quantization="8bit", lora__targets="all-linear", training__lr=1e-2)
    result = lorastudio("train", str(config), env={**os.environ, "LORASTUDIO_HOME": str(runs_home)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Completed. Adapter:" in result.stdout and "10/10" in result.stdout
    (run_dir,) = list((runs_home / "runs").iterdir())
    losses = [e["loss"] for e in read_events(run_dir / "events.jsonl") if e["type"] == "step"]
    assert losses[-1] < losses[0]
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), run_dir / "adapter")


def test_relative_paths_resolve_against_the_config_folder(tmp_path, tiny_llama, text_jsonl):
    import shutil
    (tmp_path / "proj").mkdir()
    shutil.copy(text_jsonl, tmp_path / "proj" / "data.jsonl")
    (tmp_path / "proj" / "c.yaml").write_text(
        f"model: {tiny_llama}\nquantization: none\ndevice: cpu\n"
        "data: {path: data.jsonl}\ntraining: {max_steps: 2, seq_len: 32}\n")
    result = lorastudio("train", str(tmp_path / "proj" / "c.yaml"), "--run-dir", str(tmp_path / "r"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "r" / "adapter" / "adapter_model.safetensors").is_file()


def test_bad_config_exits_2_before_starting(make_config, tmp_path):
    result = lorastudio("train", str(make_config(lora__r=0)), "--run-dir", str(tmp_path / "r"))
    assert result.returncode == 2
    assert "lora.r: 0 is not allowed" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "r").exists()


def test_failed_run_exits_non_zero(make_config, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"txt": "wrong field"}\n')
    result = lorastudio("train", str(make_config(data__path=str(bad))), "--run-dir", str(tmp_path / "r"))
    assert result.returncode == 1
    assert "error (data)" in result.stdout and "line 1" in result.stdout


def test_version(tmp_path):
    result = lorastudio("--version")
    assert result.returncode == 0 and result.stdout.startswith("lorastudio ")
