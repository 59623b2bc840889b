"""Export and merge-and-save on a tiny model trained with 4-bit quantization.

The CLI runs in this process and the merge job inline (the `inline_jobs` fixture): the same code
and files without a fresh interpreter. Only a killed or SIGTERM-cancelled worker needs a real
process (marked slow).
"""
import json
import os
import signal
import threading
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.helpers.tiny_models import write_config
from tests.helpers.training import train

from lorastudio.core import cli
from lorastudio.core.jobs import merge as merge_job
from lorastudio.core.journal import read_events
from lorastudio.core.runs.export import ExportError, export_adapter
from lorastudio.core.plans.merge import MergeError, MergeRequest, parse_size, plan_merge as prepare_job


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


def run_cli(capfd, *args) -> tuple[int, str, str]:
    """`lorastudio ARGS` in this process: (exit status, stdout, stderr)."""
    code = cli.main([str(a) for a in args])
    out, err = capfd.readouterr()
    return code, out, err


def merge_jobs(run: Path) -> set[Path]:
    return set((run / "merges").iterdir()) if (run / "merges").exists() else set()


def merge_args(run, out, **kw):
    return MergeRequest(run, out, **{"dtype": "fp32", "device": "cpu", **kw})


def logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits.float()


# ---- export --------------------------------------------------------------------------------
def test_exported_adapter_loads_in_peft_with_a_true_model_card(run_4bit, tmp_path, tiny_llama, capfd):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    code, out_text, err = run_cli(capfd, "export", run_4bit, tmp_path / "out")
    assert code == 0, err
    assert f"Exported the adapter to {tmp_path / 'out'}" in out_text and "load with peft.PeftModel" in out_text
    out = tmp_path / "out"
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), out)
    card = (out / "README.md").read_text()
    assert "| Rank (r) / alpha | 4 / 16 |" in card
    assert "| Target modules | q_proj, v_proj, down_proj |" in card
    assert "| Quantization during training | 4bit |" in card and "prompt_completion" in card
    assert "| Steps | 6 " in card and "PeftModel.from_pretrained" in card
    assert (out / "tokenizer.json").is_file()


def test_export_checkpoint_as_zip_and_refusals(run_4bit, tmp_path, capfd):
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
    code, _out, err_text = run_cli(capfd, "export", run_4bit, busy)
    assert code == 2 and "is not empty" in err_text
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]


# ---- merge ---------------------------------------------------------------------------------
def test_merged_model_loads_plainly_and_matches_base_plus_adapter(run_4bit, tmp_path, tiny_llama, capfd,
                                                                  inline_jobs):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    out = tmp_path / "merged"
    before = merge_jobs(run_4bit)
    code, printed, err = run_cli(capfd, "merge", run_4bit, out, "--dtype", "fp32", "--device", "cpu")
    assert code == 0, printed + err
    lines = printed.splitlines()
    assert lines[0].startswith(f"Merging {run_4bit / 'adapter'} into ") and "(fp32); about " in lines[0]
    assert "[  5%] Loading the base model unquantized (fp32, cpu)" in lines
    assert "Fidelity (4 prompts, fp32): max |Δlogit|" in printed and "agree on 4/4" in printed
    assert lines[-1] == f"Merged model saved to {out}"
    merged = AutoModelForCausalLM.from_pretrained(out)             # plain transformers, no peft
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), run_4bit / "adapter")
    ids = [1, 20, 33, 47, 52, 61, 70]
    diff = (logits(merged, ids) - logits(reference, ids)).abs().max()
    assert diff < 1e-4
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    assert (logits(base, ids) - logits(merged, ids)).abs().max() > 1e-3     # the adapter is in there
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    (job,) = merge_jobs(run_4bit) - before
    events = read_events(job / "events.jsonl")
    fidelity = next(e for e in events if e["type"] == "fidelity")
    assert fidelity["max_abs_diff"] < 1e-4 and not fidelity["flagged"]
    assert [e["name"] for e in events if e["type"] == "phase"] == [
        "loading", "adapter", "reference", "merging", "saving", "checking", "finishing"]
    assert events[-1]["type"] == "end" and events[-1]["status"] == "completed" and events[-1]["output"] == str(out)


def test_sharded_bf16_merge(run_4bit, tmp_path, capfd, inline_jobs):
    out = tmp_path / "sharded"
    code, printed, err = run_cli(capfd, "merge", run_4bit, out, "--dtype", "bf16", "--max-shard-size", "100KB",
                                 "--device", "cpu")
    assert code == 0, printed + err
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert len(shards) > 1 and (out / "model.safetensors.index.json").is_file()


def test_non_empty_output_is_refused_and_untouched(run_4bit, tmp_path, capfd):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "precious.bin").write_bytes(b"x" * 10)
    code, _printed, err = run_cli(capfd, "merge", run_4bit, out, "--dtype", "fp32")
    assert code == 2 and "is not empty" in err and "--overwrite" in err
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


def test_a_failing_merge_reports_the_error_and_leaves_nothing(run_4bit, tmp_path, capfd, inline_jobs, monkeypatch):
    def broken(*_args):
        raise RuntimeError("the comparison broke")
    monkeypatch.setattr(merge_job, "compare", broken)            # after the hidden folder is written
    out = tmp_path / "failing"
    before = merge_jobs(run_4bit)
    code, printed, _err = run_cli(capfd, "merge", run_4bit, out, "--dtype", "fp32", "--device", "cpu")
    assert code == 1
    assert "error (exception): RuntimeError: the comparison broke" in printed
    assert printed.splitlines()[-1] == f"Merge failed; nothing was written to {out}"
    assert not out.exists() and not list(tmp_path.glob(".failing.*"))
    (job,) = merge_jobs(run_4bit) - before
    events = read_events(job / "events.jsonl")
    assert [e["type"] for e in events[-2:]] == ["error", "end"] and events[-1]["status"] == "failed"


def test_a_stop_request_mid_merge_cleans_up(run_4bit, tmp_path, capfd, inline_jobs, monkeypatch):
    """SIGTERM reaches the job's own handler (inline: in this process) once the hidden folder exists."""
    real_pause = merge_job.pause_at

    def stop_when_checking(phase, cancelled):
        if phase == "checking":
            os.kill(os.getpid(), signal.SIGTERM)
        real_pause(phase, cancelled)
    monkeypatch.setattr(merge_job, "pause_at", stop_when_checking)
    out = tmp_path / "stopped"
    before = merge_jobs(run_4bit)
    code, printed, _err = run_cli(capfd, "merge", run_4bit, out, "--dtype", "fp32", "--device", "cpu")
    assert code == 1 and printed.splitlines()[-1] == f"Merge stopped; nothing was written to {out}"
    assert not out.exists() and not list(tmp_path.glob(".stopped.*"))
    (job,) = merge_jobs(run_4bit) - before
    events = read_events(job / "events.jsonl")
    assert events[-1]["status"] == "stopped" and "finishing" not in [e.get("name") for e in events]


# ---- real worker processes: what only a process shows ------------------------------------------
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


def _signal_worker_when(run: Path, before: set[Path], ready, sig: int, seen: dict) -> threading.Thread:
    """In a thread: once `ready(job_dir)` holds for the new merge job, send its worker `sig`."""
    def watch():
        deadline = time.time() + 120
        while time.time() < deadline:
            for job in merge_jobs(run) - before:
                if ready(job):
                    seen["job"] = job
                    os.kill(_worker_pid(job), sig)
                    return
            time.sleep(0.2)
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_killed_merge_leaves_no_output_folder(run_4bit, tmp_path, capfd, monkeypatch):
    out = tmp_path / "killed"
    monkeypatch.setenv("LORASTUDIO_TEST_PAUSE", "checking:60")
    seen: dict = {}
    watcher = _signal_worker_when(run_4bit, merge_jobs(run_4bit),
                                  lambda _job: bool(list(tmp_path.glob(".killed.*.partial/model.safetensors"))),
                                  signal.SIGKILL, seen)
    code, printed, _err = run_cli(capfd, "merge", run_4bit, out, "--dtype", "fp32", "--device", "cpu")
    watcher.join(timeout=5)
    assert "job" in seen, "the merge never reached its checking phase"
    assert code == 1 and not out.exists()
    assert "error (crashed): The merge worker exited unexpectedly (killed by signal 9 (SIGKILL))." in printed
    assert printed.splitlines()[-2] == f"Merge failed; nothing was written to {out}"
    # the dead worker's hidden folder (the whole merged model) is removed, and the message says so
    assert printed.splitlines()[-1].startswith("Removed the merge's unfinished hidden files beside it (.killed.")
    assert not list(tmp_path.glob(".killed.*"))


@pytest.mark.slow
def test_cancelled_merge_cleans_up(run_4bit, tmp_path, capfd, monkeypatch):
    out = tmp_path / "cancelled"
    monkeypatch.setenv("LORASTUDIO_TEST_PAUSE", "merging:60")

    def merging(job: Path) -> bool:
        events = read_events(job / "events.jsonl")
        return any(e["type"] == "phase" and e["name"] == "merging" for e in events) and events[-1]["type"] != "end"
    seen: dict = {}
    watcher = _signal_worker_when(run_4bit, merge_jobs(run_4bit), merging, signal.SIGTERM, seen)  # the dialog's Cancel
    code, printed, _err = run_cli(capfd, "merge", run_4bit, out, "--dtype", "fp32", "--device", "cpu")
    watcher.join(timeout=5)
    assert "job" in seen, "the merge never reached its merging phase"
    assert code == 1 and not out.exists() and not list(tmp_path.glob(".cancelled.*"))
    assert read_events(seen["job"] / "events.jsonl")[-1]["status"] == "stopped"


def test_parse_size():
    assert parse_size("5GB") == 5 * 10**9 and parse_size("2GiB") == 2 * 2**30 and parse_size("500 MB") == 5 * 10**8
    with pytest.raises(MergeError, match="not a size"):
        parse_size("big")
