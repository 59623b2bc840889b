"""Resume in real worker processes: SIGKILL then `lorastudio resume` ends where an uninterrupted
run ends; an out-of-memory failure resumes with the suggested settings; failures are classified."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lorastudio.core.config import RunConfig
from lorastudio.core.journal import read_events
from lorastudio.core.runs.listing import summarize
from lorastudio.core.runs.folders import prepare_run, read_status, start_worker

pytestmark = pytest.mark.slow


def launch(config_path: Path, run_dir: Path, fault: str = "") -> subprocess.Popen:
    prepare_run(RunConfig.load(config_path), run_dir)
    return start_worker(run_dir, env={"LORASTUDIO_FAULT": fault} if fault else None)


def lorastudio(*args, timeout=300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LORASTUDIO_FAULT"}
    return subprocess.run([sys.executable, "-m", "lorastudio.app.launcher", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def adapter_difference(a: Path, b: Path) -> float:
    from safetensors.torch import load_file
    wa, wb = load_file(a / "adapter" / "adapter_model.safetensors"), load_file(b / "adapter" / "adapter_model.safetensors")
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


def test_sigkill_then_resume_matches_an_uninterrupted_run(make_config, tmp_path):
    config = make_config(lora__dropout=0.1, training__max_steps=12, training__save_every=3)
    full = launch(config, tmp_path / "full")
    killed = launch(config, tmp_path / "killed", fault="kill:7")     # SIGKILL itself before step 8
    assert full.wait(timeout=240) == 0, (tmp_path / "full" / "worker.log").read_text()
    assert killed.wait(timeout=240) == -signal.SIGKILL
    run = summarize(tmp_path / "killed")
    assert run.status == "crashed" and run.step == 7 and run.checkpoints == [3, 6]
    assert "step 6" in run.error["hint"]

    result = lorastudio("resume", str(tmp_path / "killed"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Resuming from checkpoint step-000006 (step 6)" in result.stdout and "12/12" in result.stdout
    diff = adapter_difference(tmp_path / "full", tmp_path / "killed")
    print(f"\nmax |Δ| between the resumed and the uninterrupted adapter: {diff:.3e}")
    assert diff < 1e-6
    run = summarize(tmp_path / "killed")
    assert run.status == "completed" and run.resumes == 1 and run.step == 12
    assert run.loss_x == list(range(1, 13))              # steps 7 (killed) and 7 (redone) counted once
    events = read_events(tmp_path / "killed" / "events.jsonl")
    mark = next(e for e in events if e["type"] == "phase" and e["name"] == "resuming")
    assert mark["step"] == 6 and mark["checkpoint"].endswith("step-000006")
    assert [e["resumed_at"] for e in events if e["type"] == "start"] == [0, 6]


def test_out_of_memory_then_resume_with_the_suggested_settings(make_config, tmp_path):
    config = make_config(training__max_steps=8, training__save_every=2, data__validation_split=0.0)
    full = launch(config, tmp_path / "full")
    oom = launch(config, tmp_path / "oom", fault="oom:3")
    assert full.wait(timeout=240) == 0 and oom.wait(timeout=240) == 1
    run = summarize(tmp_path / "oom")
    assert run.status == "failed" and run.error["kind"] == "oom" and run.checkpoints == [2]
    assert run.error["hint"] == ("Out of GPU memory. Try: batch_size 4 → 2 with grad_accum 1 → 2 "
                                 "(same effective batch); quantization none → 4bit")
    assert run.error["overrides"] == {"training.batch_size": 2, "training.grad_accum": 2}

    sets = [f"--set={k}={v}" for k, v in run.error["overrides"].items()]
    result = lorastudio("resume", str(tmp_path / "oom"), *sets)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "training.batch_size 4 → 2, training.grad_accum 1 → 2" in result.stdout
    saved = yaml.safe_load((tmp_path / "oom" / "config.yaml").read_text())["training"]
    previous = yaml.safe_load((tmp_path / "oom" / "config.previous.yaml").read_text())["training"]
    assert (saved["batch_size"], saved["grad_accum"]) == (2, 2) and (previous["batch_size"], previous["grad_accum"]) == (4, 1)
    events = read_events(tmp_path / "oom" / "events.jsonl")
    assert any("data position 2 → 4" in e.get("message", "") for e in events if e["type"] == "log")
    # 2 × 2 accumulated is the same step as 1 × 4 (the loss is a mean over all tokens) on the same
    # examples, so the adapter agrees with the uninterrupted run up to float summation order.
    assert adapter_difference(tmp_path / "full", tmp_path / "oom") < 1e-4
    assert summarize(tmp_path / "oom").status == "completed"


def test_an_exception_marks_the_run_failed_with_its_message(make_config, tmp_path):
    proc = launch(make_config(training__save_every=1), tmp_path / "run", fault="exception:2")
    assert proc.wait(timeout=240) == 1
    run = summarize(tmp_path / "run")
    assert run.status == "failed" and run.error["message"] == "RuntimeError: injected failure at step 2"
    assert run.error["hint"] == "see worker.log for the full traceback" and run.checkpoints == [1, 2]


def test_a_segfault_is_listed_as_crashed_and_keeps_its_checkpoints(make_config, tmp_path):
    proc = launch(make_config(training__save_every=2), tmp_path / "run", fault="segfault:3")
    assert proc.wait(timeout=240) == -signal.SIGSEGV
    run = summarize(tmp_path / "run")
    assert run.status == "crashed" and run.checkpoints == [2]
    assert "segmentation fault" in run.error["message"] and "step 2" in run.error["hint"]
    assert "Fatal Python error: Segmentation fault" in (tmp_path / "run" / "worker.log").read_text()


def test_resume_refuses_a_live_run_and_an_unknown_checkpoint(make_config, tmp_path):
    run_dir = tmp_path / "run"
    proc = launch(make_config(training__max_steps=100000, training__save_every=0, training__warmup_steps=0), run_dir)
    try:
        deadline = time.time() + 120
        while summarize(run_dir).step < 1 and time.time() < deadline:
            time.sleep(0.2)
        result = lorastudio("resume", str(run_dir))
        assert result.returncode == 2 and "is still running" in result.stderr
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert summarize(run_dir).status == "crashed"
        result = lorastudio("resume", str(run_dir), "--checkpoint", "5")
        assert result.returncode == 2 and "no checkpoint at step 5" in result.stderr
        result = lorastudio("resume", str(run_dir), "--set", "lora.r=4", "--detach")
        assert result.returncode == 0        # no checkpoint: a fresh start may change anything
    finally:
        if proc.poll() is None:
            proc.kill()
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["lora"]["r"] == 4
    new_pid = read_status(run_dir)["pid"]            # written by start_worker before the CLI returned
    assert new_pid and new_pid != proc.pid
    os.kill(new_pid, signal.SIGKILL)
