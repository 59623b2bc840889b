"""Resume: SIGKILL then `lorastudio resume` ends where an uninterrupted run ends; an out-of-memory
failure resumes with the suggested settings; failures are classified; a live run is refused.

Runs that only have to produce results train in-process (`inline_jobs`); what only a real process
can do (be killed, segfault, outlive the command that started it) runs in one, marked slow."""
import os
import signal
import sys
from pathlib import Path

import pytest
import yaml
from tests.helpers.runs_fixtures import fake_worker

from lorastudio.core.config import RunConfig
from lorastudio.core.journal import read_events
from lorastudio.core.runs.folders import prepare_run, read_status, write_status
from lorastudio.core.plans.train import TrainRequest, start_train
from lorastudio.core.runs.listing import summarize
from lorastudio.core.runtime.launcher import JobHandle
from lorastudio.core.runtime.launcher import inline_jobs as in_process


def launch(config_path: Path, run_dir: Path, fault: str = "") -> JobHandle:
    prepare_run(RunConfig.load(config_path), run_dir)
    return start_train(TrainRequest(run_dir, env={"LORASTUDIO_FAULT": fault} if fault else None))


def run_inline(config_path: Path, run_dir: Path, fault: str = "") -> JobHandle:
    with in_process():
        return launch(config_path, run_dir, fault)


def lorastudio(capfd, monkeypatch, *args) -> tuple[int, str, str]:
    """`lorastudio ARGS` in this process: (exit status, stdout, stderr)."""
    from lorastudio.core.cli import main
    from lorastudio.core.cli import output, train
    # ProgressPrinter's default stream is the sys.stdout of when it was imported; print to this test's.
    monkeypatch.setattr(train, "ProgressPrinter", lambda: output.ProgressPrinter(sys.stdout))
    monkeypatch.delenv("LORASTUDIO_FAULT", raising=False)
    capfd.readouterr()
    code = main(list(map(str, args)))
    out, err = capfd.readouterr()
    return code, out, err


def adapter_difference(a: Path, b: Path) -> float:
    from safetensors.torch import load_file
    wa, wb = load_file(a / "adapter" / "adapter_model.safetensors"), load_file(b / "adapter" / "adapter_model.safetensors")
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(make_config, tmp_path, capfd, monkeypatch):
    config = make_config(lora__dropout=0.1, training__max_steps=12, training__save_every=3)
    killed = launch(config, tmp_path / "killed", fault="kill:7")     # SIGKILL itself before step 8
    full = run_inline(config, tmp_path / "full")
    assert full.returncode() == 0, read_events(tmp_path / "full" / "events.jsonl")[-3:]
    assert killed.process.wait(timeout=240) == -signal.SIGKILL
    run = summarize(tmp_path / "killed")
    assert run.status == "crashed" and run.step == 7 and run.checkpoints == [3, 6]
    assert "step 6" in run.error["hint"]

    with in_process():
        code, out, err = lorastudio(capfd, monkeypatch, "resume", tmp_path / "killed")
    assert code == 0, out + err
    assert "Resuming from checkpoint step-000006 (step 6)" in out and "12/12" in out
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


def test_out_of_memory_then_resume_with_the_suggested_settings(make_config, tmp_path, capfd, monkeypatch,
                                                               inline_jobs):
    config = make_config(training__max_steps=8, training__save_every=2, data__validation_split=0.0,
                         training__oom_retry=False)          # the automatic retry: tests/core/fit
    full = launch(config, tmp_path / "full")
    oom = launch(config, tmp_path / "oom", fault="oom:3")
    assert full.returncode() == 0 and oom.returncode() == 1
    assert "LORASTUDIO_FAULT" not in os.environ                    # an inline job's env is its own
    run = summarize(tmp_path / "oom")
    assert run.status == "failed" and run.error["kind"] == "oom" and run.checkpoints == [2]
    # The memory model's settings (core/fit/advice.settings_after_oom), in the hint and the overrides.
    assert run.error["advisor"] == "memory model"
    assert run.error["hint"].startswith("Out of GPU memory. Try batch_size 4 → 2 with grad_accum 1 → 2 "
                                        "(same effective batch)")
    assert {k: run.error["overrides"][k] for k in ("training.batch_size", "training.grad_accum")} == \
        {"training.batch_size": 2, "training.grad_accum": 2}
    assert all(f"{k.split('.')[-1]} " in run.error["hint"] for k in run.error["overrides"])

    sets = [f"--set={k}={v}" for k, v in run.error["overrides"].items()]
    code, out, err = lorastudio(capfd, monkeypatch, "resume", tmp_path / "oom", *sets)
    assert code == 0, out + err
    assert "training.batch_size 4 → 2, training.grad_accum 1 → 2" in out
    saved = yaml.safe_load((tmp_path / "oom" / "config.yaml").read_text())["training"]
    previous = yaml.safe_load((tmp_path / "oom" / "config.previous.yaml").read_text())["training"]
    assert (saved["batch_size"], saved["grad_accum"]) == (2, 2) and (previous["batch_size"], previous["grad_accum"]) == (4, 1)
    events = read_events(tmp_path / "oom" / "events.jsonl")
    assert any("data position 2 → 4" in e.get("message", "") for e in events if e["type"] == "log")
    # 2 × 2 accumulated is the same step as 1 × 4 (the loss is a mean over all tokens) on the same
    # examples, so the adapter agrees with the uninterrupted run up to float summation order.
    assert adapter_difference(tmp_path / "full", tmp_path / "oom") < 1e-4
    assert summarize(tmp_path / "oom").status == "completed"


def test_an_exception_marks_the_run_failed_with_its_message(make_config, tmp_path, inline_jobs):
    job = launch(make_config(training__save_every=1), tmp_path / "run", fault="exception:2")
    assert job.returncode() == 1
    run = summarize(tmp_path / "run")
    assert run.status == "failed" and run.error["message"] == "RuntimeError: injected failure at step 2"
    assert run.error["hint"] == "see worker.log for the full traceback" and run.checkpoints == [1, 2]


@pytest.mark.slow
def test_a_segfault_is_listed_as_crashed_and_a_detached_resume_records_its_pid(make_config, tmp_path, capfd,
                                                                               monkeypatch):
    run_dir = tmp_path / "run"
    job = launch(make_config(training__save_every=2), run_dir, fault="segfault:3")
    assert job.process.wait(timeout=240) == -signal.SIGSEGV
    run = summarize(run_dir)
    assert run.status == "crashed" and run.checkpoints == [2]
    assert "segmentation fault" in run.error["message"] and "step 2" in run.error["hint"]
    assert "Fatal Python error: Segmentation fault" in (run_dir / "worker.log").read_text()

    code, out, err = lorastudio(capfd, monkeypatch, "resume", run_dir, "--detach")
    new_pid = read_status(run_dir)["pid"]           # written by start_train before the CLI returned
    try:
        assert code == 0, out + err
        assert f"Worker started (pid {new_pid})" in out and new_pid != job.pid
        assert "Resuming from checkpoint step-000002 (step 2)" in out
    finally:
        os.kill(new_pid, signal.SIGKILL)


def test_resume_refuses_a_live_run_and_an_unknown_checkpoint(make_config, tmp_path, capfd, monkeypatch,
                                                             inline_jobs):
    run_dir = tmp_path / "run"
    prepare_run(RunConfig.load(make_config(training__max_steps=2, data__validation_split=0.0)), run_dir)
    worker = fake_worker()                      # stands in for a live training worker
    try:
        write_status(run_dir, state="running", pid=worker.pid)
        code, _out, err = lorastudio(capfd, monkeypatch, "resume", run_dir)
        assert code == 2 and "is still running" in err
    finally:
        worker.kill()
        worker.wait()
    assert summarize(run_dir).status == "crashed"
    code, _out, err = lorastudio(capfd, monkeypatch, "resume", run_dir, "--checkpoint", "5")
    assert code == 2 and "no checkpoint at step 5" in err
    code, out, err = lorastudio(capfd, monkeypatch, "resume", run_dir, "--set", "lora.r=4")
    assert code == 0, out + err                  # no checkpoint: a fresh start may change anything
    assert "Resuming from the beginning (no checkpoint was saved) with lora.r 8 → 4" in out
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["lora"]["r"] == 4
    assert summarize(run_dir).status == "completed"
