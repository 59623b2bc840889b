"""Export and merge-and-save on a tiny model trained with 4-bit quantization."""
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.helpers.tiny_models import write_config
from test_trainer import train

from lorastudio.core.journal import read_events
from lorastudio.core.runs.export import ExportError, export_adapter
from lorastudio.core.runs.merge_plan import MergeError, parse_size, prepare_job

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_4bit(tmp_path_factory, tiny_llama):
    root = tmp_path_factory.mktemp("exp")
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"the cat {i}", "completion": "sat on the mat"}) + "\n"
                            for i in range(24)))
    config = write_config(root / "c.yaml", tiny_llama, data, quantization="4bit",
                          lora__targets=["q_proj", "v_proj", "down_proj"], lora__r=4, training__lr=2e-2,
                          training__max_steps=6, training__save_every=3)
    from lorastudio.core.config import RunConfig
    from lorastudio.core.runs.folders import prepare_run
    prepare_run(RunConfig.load(config), root / "run")     # config.yaml + status.json, as a real run
    train(config, root / "run")
    return root / "run"


def cli(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "lorastudio.app.launcher", *args], capture_output=True,
                          text=True, timeout=300, env=env, **kw)


def merge_args(run, out, **kw):
    return SimpleNamespace(run=run, out=out, checkpoint=None, dtype="fp32", max_shard_size="5GB",
                           device="cpu", prompts=None, overwrite=False, **kw)


def logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits.float()


# ---- export --------------------------------------------------------------------------------
def test_exported_adapter_loads_in_peft_with_a_true_model_card(run_4bit, tmp_path, tiny_llama):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    result = cli("export", str(run_4bit), str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), out)
    card = (out / "README.md").read_text()
    assert "| Rank (r) / alpha | 4 / 16 |" in card
    assert "| Target modules | q_proj, v_proj, down_proj |" in card
    assert "| Quantization during training | 4bit |" in card and "prompt_completion" in card
    assert "| Steps | 6 " in card and "PeftModel.from_pretrained" in card
    assert (out / "tokenizer.json").is_file()


def test_export_checkpoint_as_zip_and_refusals(run_4bit, tmp_path):
    z = export_adapter(run_4bit, tmp_path / "ck", checkpoint=3, as_zip=True)
    names = zipfile.ZipFile(z).namelist()
    assert z.name == "ck.zip" and "ck/adapter_model.safetensors" in names and "ck/tokenizer.json" in names
    assert "checkpoint at step 3" in zipfile.ZipFile(z).read("ck/README.md").decode()
    with pytest.raises(ExportError, match="no checkpoint at step 4") as err:
        export_adapter(run_4bit, tmp_path / "x", checkpoint=4)
    assert "saved steps: 3, 6" in err.value.hint
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    result = cli("export", str(run_4bit), str(busy))
    assert result.returncode == 2 and "is not empty" in result.stderr
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]


# ---- merge ---------------------------------------------------------------------------------
def test_merged_model_loads_plainly_and_matches_base_plus_adapter(run_4bit, tmp_path, tiny_llama):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    out = tmp_path / "merged"
    result = cli("merge", str(run_4bit), str(out), "--dtype", "fp32", "--device", "cpu")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Fidelity (4 prompts, fp32): max |Δlogit|" in result.stdout and "agree on 4/4" in result.stdout
    merged = AutoModelForCausalLM.from_pretrained(out)             # plain transformers, no peft
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), run_4bit / "adapter")
    ids = [1, 20, 33, 47, 52, 61, 70]
    diff = (logits(merged, ids) - logits(reference, ids)).abs().max()
    assert diff < 1e-4
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    assert (logits(base, ids) - logits(merged, ids)).abs().max() > 1e-3     # the adapter is in there
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    (job,) = (run_4bit / "merges").iterdir()
    fidelity = next(e for e in read_events(job / "events.jsonl") if e["type"] == "fidelity")
    assert fidelity["max_abs_diff"] < 1e-4 and not fidelity["flagged"]


def test_sharded_bf16_merge(run_4bit, tmp_path):
    out = tmp_path / "sharded"
    result = cli("merge", str(run_4bit), str(out), "--dtype", "bf16", "--max-shard-size", "100KB", "--device", "cpu")
    assert result.returncode == 0, result.stdout + result.stderr
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert len(shards) > 1 and (out / "model.safetensors.index.json").is_file()


def test_non_empty_output_is_refused_and_untouched(run_4bit, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "precious.bin").write_bytes(b"x" * 10)
    result = cli("merge", str(run_4bit), str(out), "--dtype", "fp32")
    assert result.returncode == 2 and "is not empty" in result.stderr and "--overwrite" in result.stderr
    assert [p.name for p in out.iterdir()] == ["precious.bin"] and (out / "precious.bin").read_bytes() == b"x" * 10


def test_output_inside_the_base_or_run_folder_is_refused(run_4bit, tiny_llama):
    with pytest.raises(MergeError, match="inside the base model's folder"):
        prepare_job(merge_args(run_4bit, tiny_llama / "merged"))
    with pytest.raises(MergeError, match="inside the run folder"):
        prepare_job(merge_args(run_4bit, run_4bit / "merged"))


def test_not_enough_disk_is_refused_before_anything_is_written(run_4bit, tmp_path, monkeypatch):
    import shutil
    monkeypatch.setattr(shutil, "disk_usage", lambda p: SimpleNamespace(total=10**9, used=10**9 - 1000, free=1000))
    with pytest.raises(MergeError, match=r"needs about .* has 1000 B free"):
        prepare_job(merge_args(run_4bit, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_killed_merge_leaves_no_output_folder(run_4bit, tmp_path):
    out = tmp_path / "killed"
    before = set((run_4bit / "merges").iterdir()) if (run_4bit / "merges").exists() else set()
    env = {**os.environ, "LORASTUDIO_TEST_PAUSE": "checking:60"}
    proc = subprocess.Popen([sys.executable, "-m", "lorastudio.app.launcher", "merge", str(run_4bit), str(out),
                             "--dtype", "fp32", "--device", "cpu"], env=env, stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(tmp_path.glob(".killed.*.partial/model.safetensors")):
        assert time.time() < deadline, "the merge never reached its checking phase"
        time.sleep(0.2)
    (job,) = set((run_4bit / "merges").iterdir()) - before
    pid = _worker_pid(job)
    os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == 1 and not out.exists()


def _worker_pid(job: Path) -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"lorastudio.core.jobs.merge" in cmd and str(job).encode() in cmd:
                return int(entry.name)
    raise AssertionError("merge worker not found")


def test_cancelled_merge_cleans_up(run_4bit, tmp_path):
    out = tmp_path / "cancelled"
    before = set((run_4bit / "merges").iterdir()) if (run_4bit / "merges").exists() else set()
    env = {**os.environ, "LORASTUDIO_TEST_PAUSE": "merging:60"}
    proc = subprocess.Popen([sys.executable, "-m", "lorastudio.app.launcher", "merge", str(run_4bit), str(out),
                             "--dtype", "fp32", "--device", "cpu"], env=env, stdout=subprocess.PIPE, text=True)
    deadline, job = time.time() + 120, None
    while job is None:
        for candidate in set((run_4bit / "merges").iterdir()) - before:
            events = read_events(candidate / "events.jsonl")
            if any(e["type"] == "phase" and e["name"] == "merging" for e in events) and events[-1]["type"] != "end":
                job = candidate
        assert time.time() < deadline
        time.sleep(0.2)
    os.kill(_worker_pid(job), signal.SIGTERM)      # what the dialog's Cancel does
    proc.wait(timeout=90)
    assert proc.returncode == 1 and not out.exists() and not list(tmp_path.glob(".cancelled.*"))
    assert read_events(job / "events.jsonl")[-1]["status"] == "stopped"


def test_parse_size():
    assert parse_size("5GB") == 5 * 10**9 and parse_size("2GiB") == 2 * 2**30 and parse_size("500 MB") == 5 * 10**8
    with pytest.raises(MergeError, match="not a size"):
        parse_size("big")
