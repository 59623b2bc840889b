"""The run history from journals and status files (no workers): statuses, segments, cheap refresh;
and the torch-free resume helpers (overrides, the one-click resume's out-of-memory settings)."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lorastudio.core.config import ConfigError, RunConfig
from lorastudio.core.journal import JournalWriter
from lorastudio.core.atomic_files import atomic_write_json
from lorastudio.core.runs.listing import STATUSES, RunHistory, find_live_runs, runs_with_adapters, summarize
from lorastudio.core.runs.resume import apply_overrides, parse_overrides, suggested_overrides

CFG = {"model": "/m/tiny", "data": {"path": "/d/train.jsonl"}, "lora": {"r": 4}, "quantization": "8bit",
       "training": {"max_steps": 10}}


def write_run(root: Path, name: str, steps=3, end: str | None = None, pid=None, heartbeat=None,
              error: dict | None = None) -> Path:
    run_dir = root / name
    RunConfig.from_dict({**CFG, "name": name}).save(run_dir / "config.yaml") if run_dir.mkdir(parents=True) is None else None
    journal = JournalWriter(run_dir / "events.jsonl")
    journal.emit("start", config={}, devices=["cpu"], versions={}, trainable_params=1, total_params=2,
                 total_steps=10, resumed_at=0)
    for s in range(1, steps + 1):
        journal.emit("step", step=s, total_steps=10, epoch=0.1, loss=3.0 - s * 0.1, lr=1e-4, grad_norm=None,
                     tokens_per_s=1.0, elapsed_s=1.0, eta_s=1.0)
    journal.emit("eval", step=steps, loss=2.5)
    if error:
        journal.emit("error", **error)
    if end:
        journal.emit("end", status=end, adapter=None)
    journal.close()
    atomic_write_json(run_dir / "status.json", {"pid": pid, "state": "running",
                                                "heartbeat": heartbeat or time.time()})
    return run_dir


@pytest.fixture
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "lorastudio.core.jobs.train"])
    yield proc
    proc.kill()
    proc.wait()


def test_statuses_from_journal_and_status_file(tmp_path, sleeper):
    root = tmp_path / "runs"
    write_run(root, "done", end="completed")
    write_run(root, "stopped", end="stopped")
    write_run(root, "failed", end="failed", error={"kind": "exception", "message": "ValueError: x", "hint": "h"})
    write_run(root, "live", pid=sleeper.pid)
    write_run(root, "gone", pid=2 ** 22 + 12345)                       # no such process
    write_run(root, "stale", pid=sleeper.pid, heartbeat=time.time() - 3600)
    write_run(root, "not-a-worker", pid=os.getpid())                   # alive, but not our worker
    runs = {r.name: r for r in RunHistory(root).refresh()}
    assert {n: r.status for n, r in runs.items()} == {
        "done": "completed", "stopped": "stopped", "failed": "failed", "live": "running", "gone": "crashed",
        "stale": "crashed", "not-a-worker": "crashed"}
    r = runs["failed"]
    assert r.error == {"kind": "exception", "message": "ValueError: x", "hint": "h"}
    assert (r.model, r.dataset, r.rank, r.quantization, r.step, r.total_steps, r.best_eval) == \
        ("tiny", "train.jsonl", 4, "8bit", 3, 10, 2.5)
    assert r.disk_bytes > 0 and r.started_at and runs["done"].error is None
    assert "No checkpoint was saved" in runs["gone"].error["hint"]
    assert find_live_runs(root) == [root / "live"]


def test_runs_with_adapters_are_the_run_folders_with_something_to_load(tmp_path):
    root = tmp_path / "runs"
    final = write_run(root, "2026-01-02_0900_final", end="completed")
    (final / "adapter").mkdir()
    (final / "adapter" / "adapter_config.json").write_text("{}")            # a whole adapter: both files
    (final / "adapter" / "adapter_model.safetensors").write_bytes(b"")
    checkpointed = write_run(root, "2026-01-03_0900_checkpointed", pid=2 ** 22 + 12345)
    (checkpointed / "checkpoints" / "step-000002").mkdir(parents=True)
    (checkpointed / "checkpoints" / "step-000002" / "state.json").write_text('{"step": 2}')
    write_run(root, "2026-01-04_0900_nothing-yet", end="failed")
    (root / ".trash" / "adapter").mkdir(parents=True)
    (root / "notes").mkdir()
    assert runs_with_adapters(root) == [checkpointed, final]            # newest first
    assert runs_with_adapters(tmp_path / "missing") == []
    assert {r.status for r in RunHistory(root).refresh()} <= set(STATUSES)


def test_a_resumed_journal_is_read_by_its_last_segment(tmp_path):
    run_dir = write_run(tmp_path, "run", steps=5, pid=2 ** 22 + 12345)      # crashed after step 5
    with open(run_dir / "events.jsonl", "a") as fh:
        fh.write('{"v": 1, "type": "step", "ti')                          # killed mid-line
    from lorastudio.core.runs.resume import _end_partial_line
    _end_partial_line(run_dir / "events.jsonl")
    journal = JournalWriter(run_dir / "events.jsonl")
    journal.emit("phase", name="resuming", message="Resuming from step 3")
    journal.emit("start", config={}, devices=["cpu"], versions={}, trainable_params=1, total_params=2,
                 total_steps=10, resumed_at=3)
    for s in range(4, 11):
        journal.emit("step", step=s, total_steps=10, epoch=0.1, loss=1.0, lr=1e-4, grad_norm=None,
                     tokens_per_s=1.0, elapsed_s=1.0, eta_s=1.0)
    journal.emit("end", status="completed", adapter="a")
    journal.close()
    run = summarize(run_dir)
    assert run.status == "completed" and run.resumes == 1 and run.step == 10
    assert run.loss_x == list(range(1, 11)) and run.loss_y[3:] == [1.0] * 7


def test_refresh_reads_only_what_changed(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    write_run(root, "a", end="completed")
    history = RunHistory(root)
    first = history.refresh()
    polls = []
    from lorastudio.core.runs import listing as module
    monkeypatch.setattr(module.JournalFollower, "poll", lambda self: polls.append(self.path) or [])
    again = history.refresh()
    assert again[0] is first[0] and polls == []                       # unchanged: no journal read
    write_run(root, "b", steps=1, end="stopped")
    assert [r.name for r in history.refresh()][-1] in ("a", "b") and len(polls) == 1


def test_overrides():
    cfg = RunConfig.from_dict({**CFG, "training": {"batch_size": 8, "grad_accum": 2, "seq_len": 2048}})
    assert parse_overrides(["training.batch_size=2", "quantization=4bit", "training.lr=1e-4"]) == \
        {"training.batch_size": 2, "quantization": "4bit", "training.lr": "1e-4"}
    new, changes = apply_overrides(cfg, {"training.batch_size": 4, "training.lr": "1e-4"})
    assert new.training.batch_size == 4 and new.training.lr == 1e-4 and changes[0] == ("training.batch_size", 8, 4)
    with pytest.raises(ConfigError, match="training.batch_sise"):
        apply_overrides(cfg, {"training.batch_sise": 4})
    with pytest.raises(ConfigError, match="training.batch_size"):
        apply_overrides(cfg, {"training.batch_size": 0})


def test_data_position_maps_to_a_new_batch_size():
    from lorastudio.core.engine.trainer import map_data_position
    # 45 examples: 12 micro-batches of 4 per epoch, 23 of 2. Epoch 1, position 6 = 24 examples seen.
    assert map_data_position(12 + 6, 4, 12, 2, 23) == 23 + 12
    assert map_data_position(5, 2, 23, 4, 12) == 2                     # 10 seen -> 8 (re-train 2, skip none)
    assert map_data_position(0, 4, 12, 2, 23) == 0


def test_the_one_click_resume_takes_the_advisors_settings(tmp_path, tiny_llama):
    """The error's overrides when the advisor wrote them; for an error of 0.1 / 0.2 (an older rule of
    thumb's, without `advisor`) the advisor answers again: the memory model's with the model folder,
    the rule of thumb without it."""
    from lorastudio.core.fit.advice import settings_after_oom
    from lorastudio.core.models.info import read_model_info
    written = {"kind": "oom", "message": "CUDA out of memory", "hint": "h", "advisor": "memory model",
               "overrides": {"training.batch_size": 2, "training.grad_accum": 4}}
    old = {"kind": "oom", "message": "CUDA out of memory", "hint": "Out of GPU memory. Try: …",
           "overrides": {"training.batch_size": 4, "training.gradient_checkpointing": True}}
    gone = write_run(tmp_path, "gone", error=old, end="failed")              # /m/tiny does not exist
    assert suggested_overrides(gone, written) == written["overrides"]
    assert suggested_overrides(gone, old) == {"training.batch_size": 1, "training.grad_accum": 2}   # of 2 × 1
    assert suggested_overrides(gone, {**old, "kind": "data"}) == {} and suggested_overrides(gone, None) == {}
    here = write_run(tmp_path, "here", error=old, end="failed")
    cfg = RunConfig.from_dict({**CFG, "model": str(tiny_llama), "name": "here",
                               "training": {"max_steps": 10, "batch_size": 4}})
    cfg.save(here / "config.yaml")
    advice = settings_after_oom(cfg, read_model_info(tiny_llama), None, on_gpu=False)
    assert advice.advisor == "memory model" and advice.fits
    assert suggested_overrides(here, old) == advice.overrides
    (here / "config.yaml").write_text("model: [")
    assert suggested_overrides(here, old) == {}                           # no config: no button


def test_without_model_information_a_rule_of_thumb_advises():
    from lorastudio.core.fit.advice import oom_hint, settings_after_oom

    def advice(**training):
        cfg = RunConfig.from_dict({**CFG, "training": {"max_steps": 10, **training}})
        return settings_after_oom(cfg, None, 24 << 30)
    first = advice(batch_size=8, grad_accum=2, seq_len=2048, memory_mode="none")
    assert first.advisor == "rule of thumb" and first.estimate is None
    assert first.overrides == {"training.batch_size": 4, "training.grad_accum": 4,
                               "training.memory_mode": "checkpoint"}
    assert oom_hint(first).startswith("Out of GPU memory. Try batch_size 8 → 4 with grad_accum 2 → 4 (same "
                                      "effective batch); memory_mode none → checkpoint — a rule of thumb")
    assert advice(batch_size=6).overrides == {"training.batch_size": 3, "training.grad_accum": 2}
    assert advice(batch_size=1, memory_mode="checkpoint").overrides == {"training.memory_mode": "lean"}
    assert advice(batch_size=1, seq_len=2048).overrides == {"training.seq_len": 1024}     # nothing exact left
    assert advice(batch_size=1, seq_len=128).overrides == {"quantization": "4bit"}        # CFG's base is 8-bit
    nothing = RunConfig.from_dict({**CFG, "quantization": "4bit",
                                   "training": {"batch_size": 1, "seq_len": 128, "memory_mode": "lean"}})
    last = settings_after_oom(nothing, None, None)
    assert not last.fits and last.overrides == {} and "nothing smaller to try" in oom_hint(last)
