"""Out of memory during training: the job saves an emergency checkpoint, the memory model picks
settings that fit, and the run goes on by itself to the end. The error is a real
torch.OutOfMemoryError raised inside the model's forward (LORASTUDIO_FAULT=oom-forward:STEP:BATCH:
a forward pre-hook that refuses micro-batches larger than BATCH from step STEP+1 on), through the
real training job, in-process (`inline_jobs`)."""
import pytest
import yaml

from lorastudio.core.config import RunConfig
from lorastudio.core.journal import read_events, validate
from lorastudio.core.runs.folders import prepare_run, read_status
from lorastudio.core.plans.train import TrainRequest, start_train
from lorastudio.core.runs.listing import summarize
from lorastudio.core.runs.resume import suggested_overrides
from lorastudio.core.fit.advice import oom_hint, settings_after_oom
from lorastudio.core.models.info import read_model_info

@pytest.fixture(autouse=True)
def own_data_home(tmp_path, monkeypatch):
    """The user's calibration file lives in the data directory: a fresh one per test."""
    monkeypatch.setenv("LORASTUDIO_HOME", str(tmp_path / "home"))



def launch(config_path, run_dir, monkeypatch, fault):
    monkeypatch.setenv("LORASTUDIO_FAULT", fault)
    prepare_run(RunConfig.load(config_path), run_dir)
    return start_train(TrainRequest(run_dir))


def test_oom_saves_a_checkpoint_and_retries_with_settings_that_fit(make_config, tmp_path, monkeypatch,
                                                                   inline_jobs):
    config = make_config(training__max_steps=8, training__save_every=0, training__batch_size=4,
                         training__grad_accum=1, data__validation_split=0.0)
    run_dir = tmp_path / "run"
    job = launch(config, run_dir, monkeypatch, "oom-forward:3:2")      # batches above 2 fail from step 4
    assert job.returncode() == 0, [e for e in read_events(run_dir / "events.jsonl") if e["type"] in ("log", "error")][-4:]
    events = read_events(run_dir / "events.jsonl")
    assert all(validate(e) is None for e in events)
    retry = next(e for e in events if e["type"] == "retry")
    changes = {c["key"]: (c["old"], c["new"]) for c in retry["changes"]}
    new_batch = changes["training.batch_size"][1]
    assert changes["training.batch_size"][0] == 4 and new_batch <= 2
    assert changes["training.grad_accum"] == (1, 4 // new_batch)          # the same effective batch
    assert retry["attempt"] == 1 and retry["step"] == 3 and "ran out of memory" in retry["reason"]
    assert retry["checkpoint"].endswith("step-000003")                    # the emergency checkpoint
    assert any(e["type"] == "checkpoint" and e["step"] == 3 for e in events)
    assert not any(e["type"] == "error" for e in events)
    assert [e["resumed_at"] for e in events if e["type"] == "start"] == [0, 3]
    steps = [e["step"] for e in events if e["type"] == "step"]
    assert steps == list(range(1, 9))                                     # nothing lost, nothing repeated
    assert events[-1]["type"] == "end" and events[-1]["status"] == "completed" and events[-1]["adapter"]
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())["training"]
    previous = yaml.safe_load((run_dir / "config.previous.yaml").read_text())["training"]
    assert (saved["batch_size"], saved["grad_accum"]) == (new_batch, 4 // new_batch)
    assert (previous["batch_size"], previous["grad_accum"]) == (4, 1)
    assert read_status(run_dir)["state"] == "completed"
    assert summarize(run_dir).status == "completed"


def test_oom_retry_off_fails_with_the_suggestions(make_config, tmp_path, monkeypatch, inline_jobs):
    """One advisor: the error's hint and the one-click resume's overrides are the memory model's
    settings — the very ones the automatic retry would have trained on."""
    config = make_config(training__max_steps=6, training__oom_retry=False, data__validation_split=0.0)
    run_dir = tmp_path / "run"
    job = launch(config, run_dir, monkeypatch, "oom-forward:2:2")
    assert job.returncode() == 1
    events = read_events(run_dir / "events.jsonl")
    assert not any(e["type"] == "retry" for e in events)
    error = next(e for e in events if e["type"] == "error")
    assert error["kind"] == "oom" and error["overrides"]["training.batch_size"] == 2
    assert error["advisor"] == "memory model"
    cfg = RunConfig.load(run_dir / "config.yaml")
    advice = settings_after_oom(cfg, read_model_info(cfg.model), None, on_gpu=False)
    assert error["overrides"] == advice.overrides and error["hint"] == oom_hint(advice)
    assert error["hint"].startswith("Out of GPU memory. Try batch_size 4 → 2 with grad_accum 1 → 2")
    assert "the memory model estimates a peak of" in error["hint"]
    assert suggested_overrides(run_dir, error) == advice.overrides      # what the Runs page's click applies
    assert events[-1]["status"] == "failed"


def test_a_retry_takes_the_settings_the_error_would_have_suggested(make_config, tmp_path, monkeypatch,
                                                                     inline_jobs):
    """The same run and fault with the retry on and off: the retry's changes are the overrides of
    the error the run without retry ends with."""
    settings = dict(training__max_steps=4, training__save_every=0, data__validation_split=0.0)
    failed, retried = tmp_path / "failed", tmp_path / "retried"
    assert launch(make_config(training__oom_retry=False, **settings), failed, monkeypatch,
                  "oom-forward:1:2").returncode() == 1
    assert launch(make_config(**settings), retried, monkeypatch, "oom-forward:1:2").returncode() == 0
    error = next(e for e in read_events(failed / "events.jsonl") if e["type"] == "error")
    retry = next(e for e in read_events(retried / "events.jsonl") if e["type"] == "retry")
    assert {c["key"]: c["new"] for c in retry["changes"]} == error["overrides"]


def test_an_oom_no_setting_avoids_fails_after_the_retries(make_config, tmp_path, monkeypatch, inline_jobs):
    """Even batch 1 is refused: the job retries while the model finds smaller settings, then the
    out-of-memory error stands — no endless loop."""
    config = make_config(training__max_steps=6, training__batch_size=2, data__validation_split=0.0)
    run_dir = tmp_path / "run"
    job = launch(config, run_dir, monkeypatch, "oom-forward:1:0")
    assert job.returncode() == 1
    events = read_events(run_dir / "events.jsonl")
    retries = [e for e in events if e["type"] == "retry"]
    assert 1 <= len(retries) <= 3
    assert next(e for e in events if e["type"] == "error")["kind"] == "oom"
    assert events[-1]["status"] == "failed"
