"""The training job: journal schema, failures as error events, status.json; a graceful SIGTERM and
the traceback in worker.log in a real process (the rest runs in-process: `inline_jobs`)."""
import json
import signal
import time
from pathlib import Path

import pytest

from lorastudio.core.config import RunConfig
from lorastudio.core.journal import read_events, validate
from lorastudio.core.runs.folders import prepare_run, read_status
from lorastudio.core.plans.train import TrainRequest, start_train
from lorastudio.core.runtime.launcher import JobHandle


def launch(config_path: Path, run_dir: Path) -> JobHandle:
    prepare_run(RunConfig.load(config_path), run_dir)
    return start_train(TrainRequest(run_dir))


def wait_for(run_dir: Path, predicate, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        events = read_events(run_dir / "events.jsonl")
        if predicate(events):
            return events
        time.sleep(0.1)
    raise AssertionError(f"timed out; worker.log:\n{(run_dir / 'worker.log').read_text()[-3000:]}")


def test_completed_run_journal_schema(make_config, tmp_path, inline_jobs):
    run_dir = tmp_path / "run"
    job = launch(make_config(quantization="4bit", training__max_steps=6, training__save_every=3), run_dir)
    assert job.returncode() == 0, read_events(run_dir / "events.jsonl")[-3:]
    raw = [json.loads(l) for l in (run_dir / "events.jsonl").read_text().splitlines()]
    assert all(validate(e) is None for e in raw)              # every line the worker wrote is valid
    types = [e["type"] for e in raw]
    assert types[0] == "phase" and types[-1] == "end"
    for required in ("start", "phase", "step", "eval", "memory", "checkpoint", "end"):
        assert required in types, required
    start = next(e for e in raw if e["type"] == "start")
    assert start["devices"] == ["cpu"] and start["trainable_params"] == 3584
    assert set(start["versions"]) == {"torch", "transformers", "peft", "bitsandbytes"}
    assert start["config"]["quantization"] == "4bit"
    assert start["memory_mode"] == "checkpoint" and "liger" not in start["kernels"]      # CPU: no Liger
    memory = next(e for e in raw if e["type"] == "memory")
    assert memory["rss"] > 10_000_000 and memory["ram_total"] >= memory["ram_used"] > 0
    end = raw[-1]
    assert end["status"] == "completed" and Path(end["adapter"]) == run_dir / "adapter"
    status = read_status(run_dir)
    assert status["state"] == "completed" and status["pid"] == job.pid


@pytest.mark.slow
def test_sigterm_stops_gracefully_with_a_loadable_adapter(make_config, tmp_path, tiny_llama):
    run_dir = tmp_path / "run"
    job = launch(make_config(training__max_steps=100000, training__save_every=0, training__warmup_steps=0), run_dir)
    wait_for(run_dir, lambda ev: any(e["type"] == "step" and e["step"] >= 3 for e in ev))
    assert read_status(run_dir)["state"] == "running"
    job.process.send_signal(signal.SIGTERM)
    assert job.process.wait(timeout=60) == 0
    events = read_events(run_dir / "events.jsonl")
    end = events[-1]
    assert end["type"] == "end" and end["status"] == "stopped" and end["adapter"]
    last_step = max(e["step"] for e in events if e["type"] == "step")
    checkpoint = [e for e in events if e["type"] == "checkpoint"][-1]
    assert checkpoint["step"] == last_step and Path(checkpoint["path"]).is_dir()
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), end["adapter"])
    assert not any(p.name.endswith(".partial") for p in run_dir.iterdir())
    status = read_status(run_dir)
    assert status["state"] == "stopped" and status["pid"] == job.pid


def test_bad_data_line_is_an_error_event_naming_the_line(make_config, tmp_path, inline_jobs):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"text": "fine"}\n{"text": "also fine"}\n{"text": broken}\n')
    run_dir = tmp_path / "run"
    job = launch(make_config(data__path=str(data)), run_dir)
    assert job.returncode() == 1
    events = read_events(run_dir / "events.jsonl")
    error = next(e for e in events if e["type"] == "error")
    assert error["kind"] == "data" and "bad.jsonl, line 3" in error["message"]
    assert error["hint"] and "Traceback" not in error["message"]
    assert events[-1]["type"] == "end" and events[-1]["status"] == "failed"
    assert any("Traceback" in e["message"] for e in events if e["type"] == "log")    # the journal keeps it
    assert read_status(run_dir)["state"] == "failed"


def test_a_config_edited_by_hand_fails_with_the_traceback_in_worker_log(make_config, tmp_path):
    """A real process (it fails while reading the config, before torch is imported): its stderr,
    the traceback, goes to worker.log."""
    run_dir = tmp_path / "run"
    prepare_run(RunConfig.load(make_config()), run_dir)
    (run_dir / "config.yaml").write_text("model: m\nlora: {r: 0}\ndata: {path: x}\n")   # edited by hand
    job = start_train(TrainRequest(run_dir))
    assert job.process.wait(timeout=60) == 1
    error = next(e for e in read_events(run_dir / "events.jsonl") if e["type"] == "error")
    assert error["kind"] == "config" and error["message"].startswith("lora.r: 0")
    assert "Traceback" in (run_dir / "worker.log").read_text()
    assert read_status(run_dir)["state"] == "failed"
