"""Training on several processes (gloo on CPU): N × b trains exactly like 1 × N·b; only rank 0
writes into the run folder; a dead rank fails the run with its name; SIGTERM stops all with a
checkpoint; a 2-process checkpoint resumes on 1 process exactly. Rank 0 runs in this process
(`inline_jobs`) where the process itself is not the point; the other ranks are real processes."""
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lorastudio.core.config import ConfigError, RunConfig
from lorastudio.core.engine.distributed import Ranks, rank_rows
from lorastudio.core.journal import read_events
from lorastudio.core.runs.folders import prepare_run, read_status
from lorastudio.core.plans.train import TrainRequest, start_train

pytestmark = pytest.mark.slow      # each multi-process run starts interpreters that import torch

SETTINGS = dict(training__max_steps=6, training__save_every=3, training__warmup_steps=0,
                training__memory_mode="none")


def run(make_config, run_dir: Path, processes: int, batch: int, resume_from=None, env=None, **extra):
    config = make_config(training__batch_size=batch, distributed={"processes": processes},
                         **{**SETTINGS, **extra})
    if resume_from is None:
        prepare_run(RunConfig.load(config), run_dir)
    else:
        (run_dir / "config.yaml").write_text(Path(config).read_text())
    return start_train(TrainRequest(run_dir, resume_from=resume_from, env=env))


def steps(run_dir: Path) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in read_events(run_dir / "events.jsonl") if e["type"] == "step"}


def adapter(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "adapter_model.safetensors"))


def assert_same_adapter(a: Path, b: Path) -> None:
    ta, tb = adapter(a), adapter(b)
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.allclose(ta[key], tb[key], atol=1e-4), key


def wait_for(run_dir: Path, predicate, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        events = read_events(run_dir / "events.jsonl")
        if predicate(events):
            return events
        time.sleep(0.1)
    raise AssertionError(f"timed out; worker.log:\n{(run_dir / 'worker.log').read_text()[-3000:]}")


def test_ranks_take_contiguous_slices_and_a_short_batch_leaves_a_rank_a_zero_weight_row():
    rows = list(range(8))
    assert rank_rows(rows, Ranks(0, 2)) == ([0, 1, 2, 3], True)
    assert rank_rows(rows, Ranks(1, 2)) == ([4, 5, 6, 7], True)
    assert rank_rows([9], Ranks(1, 2)) == ([9], False)
    assert rank_rows(rows, Ranks(0, 1)) == (rows, True)


def test_distributed_section_is_validated_and_optional(make_config):
    assert RunConfig.load(make_config()).distributed.processes == 1      # no section: as before
    for bad, words in (({"processes": 0}, "≥ 1"), ({"processes": "2"}, "≥ 1"),
                       ({"strategy": "fsdp"}, "FSDP needs several CUDA GPUs"), ({"strategy": "zero"}, "ddp")):
        with pytest.raises(ConfigError, match=words) as err:
            RunConfig.load(make_config(distributed=bad))
        assert err.value.key.startswith("distributed.")


def test_two_processes_of_four_train_like_one_of_eight(make_config, tmp_path, inline_jobs):
    one, two = tmp_path / "one", tmp_path / "two"
    assert run(make_config, one, 1, 8).returncode() == 0
    assert run(make_config, two, 2, 4).returncode() == 0, (two / "worker-rank1.log").read_text()[-2000:]
    assert list(steps(two)) == list(range(1, 7))
    for step, loss in steps(one).items():
        assert abs(steps(two)[step] - loss) < 1e-4, (step, loss, steps(two)[step])
    assert_same_adapter(one / "adapter", two / "adapter")
    assert_same_adapter(one / "checkpoints" / "step-000003", two / "checkpoints" / "step-000003")
    # Only rank 0 wrote into the run folder: rank 1 left its log and nothing else.
    ends = [e for e in read_events(two / "events.jsonl") if e["type"] == "end"]
    assert len(ends) == 1 and ends[0]["status"] == "completed"
    assert sorted(p.name for p in two.iterdir()) == sorted([p.name for p in one.iterdir()] + ["worker-rank1.log"])
    assert "rank 1: completed at step 6" in (two / "worker-rank1.log").read_text()


def test_exact_with_accumulation_checkpointing_and_a_one_row_micro_batch(make_config, tmp_path, inline_jobs):
    """43 training examples in micro-batches of 6: micro-batch 7 holds one row, so rank 1 only
    takes part (a zero-weight row); gradient accumulation and gradient checkpointing on."""
    one, two = tmp_path / "one", tmp_path / "two"
    extra = dict(training__grad_accum=2, training__memory_mode="checkpoint")
    assert run(make_config, one, 1, 6, **extra).returncode() == 0
    data = next(e for e in read_events(one / "events.jsonl") if e["type"] == "data")
    assert data["examples"] % 6 == 1
    assert run(make_config, two, 2, 3, **extra).returncode() == 0, (two / "worker-rank1.log").read_text()[-2000:]
    assert len(steps(two)) == 6
    for step, loss in steps(one).items():
        assert abs(steps(two)[step] - loss) < 1e-4, (step, loss, steps(two)[step])
    assert_same_adapter(one / "adapter", two / "adapter")


def test_resume_on_one_process_from_a_two_process_checkpoint(make_config, tmp_path, inline_jobs):
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert run(make_config, whole, 1, 8).returncode() == 0
    assert run(make_config, split, 2, 4, training__max_steps=6).returncode() == 0
    checkpoint = split / "checkpoints" / "step-000003"
    assert run(make_config, split, 1, 8, resume_from=checkpoint).returncode() == 0
    resumed = [e for e in read_events(split / "events.jsonl") if e["type"] == "step"][-3:]
    assert [e["step"] for e in resumed] == [4, 5, 6]
    for e in resumed:
        assert abs(e["loss"] - steps(whole)[e["step"]]) < 1e-4
    assert_same_adapter(whole / "adapter", split / "adapter")


def test_a_killed_rank_fails_the_run_naming_it(make_config, tmp_path):
    run_dir = tmp_path / "run"
    job = run(make_config, run_dir, 2, 4, env={"LORASTUDIO_FAULT": "kill:2", "LORASTUDIO_FAULT_RANK": "1"})
    assert job.process.wait(timeout=180) == 1
    events = read_events(run_dir / "events.jsonl")
    error = next(e for e in events if e["type"] == "error")
    assert "rank 1 of 2 exited (killed by signal 9 (SIGKILL))" in error["message"], error
    assert "worker-rank1.log" in error["message"]
    assert events[-1]["type"] == "end" and events[-1]["status"] == "failed"
    assert read_status(run_dir)["state"] == "failed"


def test_a_rank_that_raises_fails_the_run_with_its_last_words(make_config, tmp_path):
    run_dir = tmp_path / "run"
    job = run(make_config, run_dir, 2, 4, env={"LORASTUDIO_FAULT": "exception:1", "LORASTUDIO_FAULT_RANK": "1"})
    assert job.process.wait(timeout=180) == 1
    error = next(e for e in read_events(run_dir / "events.jsonl") if e["type"] == "error")
    assert error["kind"] == "crashed"
    assert "rank 1 of 2 exited (exit code 1: RuntimeError: injected failure at step 1)" in error["message"], error
    assert "Traceback" in (run_dir / "worker-rank1.log").read_text()


def test_a_rank_that_dies_before_joining_ends_the_run_at_once(make_config, tmp_path):
    run_dir = tmp_path / "run"
    job = run(make_config, run_dir, 2, 4, env={"LORASTUDIO_FAULT": "start", "LORASTUDIO_FAULT_RANK": "1"})
    assert job.process.wait(timeout=120) == 1          # not the process group's 10-minute start-up timeout
    error = next(e for e in read_events(run_dir / "events.jsonl") if e["type"] == "error")
    assert error["message"].startswith("Training could not start: rank 1 of 2 exited (exit code 1: "), error
    assert "injected failure before joining" in error["message"]


def test_sigterm_stops_every_rank_with_a_checkpoint(make_config, tmp_path):
    run_dir = tmp_path / "run"
    job = run(make_config, run_dir, 2, 4, training__max_steps=100000, training__save_every=0)
    wait_for(run_dir, lambda ev: any(e["type"] == "step" and e["step"] >= 2 for e in ev))
    job.process.send_signal(signal.SIGTERM)
    assert job.process.wait(timeout=120) == 0
    events = read_events(run_dir / "events.jsonl")
    assert events[-1]["type"] == "end" and events[-1]["status"] == "stopped"
    last = max(e["step"] for e in events if e["type"] == "step")
    assert [e["step"] for e in events if e["type"] == "checkpoint"] == [last]
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert f"rank 1: stopped at step {last}" in (run_dir / "worker-rank1.log").read_text()
