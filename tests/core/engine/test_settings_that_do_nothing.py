"""Issue 27, class 4: settings that make nothing happen. Every numeric setting has an upper bound
with its reason (refused before anything loads, through the real CLI); a run whose updates stay zero
or non-finite stops with "the adapter is not learning: …", as divergence does — shown with a real
model whose attention output projections are zero, so LoRA on q/v gets no gradient at all."""
from __future__ import annotations

import shutil

import pytest

from lorastudio.core.config import ConfigError, RunConfig
from lorastudio.core.journal import read_events
from tests.core.cli.test_cli import lorastudio

ABSURD = [("lora", "alpha", 1e30, "the adapter learns nothing"), ("lora", "r", 10**6, "a larger rank adds nothing"),
          ("training", "batch_size", 10**9, "no device holds more examples"),
          ("training", "grad_accum", 10**9, "wait for that many micro-batches"),
          ("training", "max_steps", 10**12, "never ends"), ("training", "seq_len", 10**9, "context"),
          ("training", "epochs", 1e9, "memorise"), ("training", "warmup_steps", 10**12, "never rise"),
          ("training", "weight_decay", 1e6, "erases every update"), ("training", "seed", 2**40, "32-bit"),
          ("training", "save_every", 10**12, "never comes"), ("training", "max_grad_norm", 1e30, "clips nothing"),
          ("training", "beta", 1e9, "flat"), ("training", "orpo_lambda", 1e9, "drown"),
          ("distributed", "processes", 10**6, "one process a GPU")]


@pytest.mark.parametrize("section, key, value, why", ABSURD)
def test_an_absurd_setting_is_refused_with_its_reason(section, key, value, why):
    raw = {"model": "m", "data": {"path": "d.jsonl"}, section: {key: value}}
    with pytest.raises(ConfigError) as refused:
        RunConfig.from_dict(raw)
    print(f"\n{refused.value}")
    assert refused.value.key == f"{section}.{key}" and "at most" in str(refused.value) and why in str(refused.value)


def test_the_cli_refuses_alpha_1e30_before_loading(make_config, runs_home, capfd, monkeypatch):
    code, out, err = lorastudio(capfd, monkeypatch, "train", make_config(lora__alpha=1e30))
    assert code == 2 and "lora.alpha" in out + err and "learns nothing" in out + err and "Traceback" not in err


@pytest.fixture
def deaf_model(tmp_path, tiny_llama):
    """tiny_llama with every o_proj zero: q_proj and v_proj no longer reach the loss."""
    from safetensors.torch import load_file, save_file
    model = shutil.copytree(tiny_llama, tmp_path / "deaf")
    for path in model.glob("*.safetensors"):
        tensors = load_file(path)
        save_file({k: (v.zero_() if "o_proj" in k else v) for k, v in tensors.items()}, path, metadata={"format": "pt"})
    return model


def test_a_run_whose_updates_stay_zero_stops_with_words(deaf_model, text_jsonl, tmp_path, runs_home, capfd,
                                                        monkeypatch, inline_jobs):
    from lorastudio.core.engine import trainer
    from tests.helpers.tiny_models import write_config
    monkeypatch.setattr(trainer, "NOT_LEARNING_STEPS", 4)
    config = write_config(tmp_path / "c.yaml", deaf_model, text_jsonl, training__max_steps=10,
                          training__save_every=0)
    code, out, err = lorastudio(capfd, monkeypatch, "train", config)
    print(out, err)
    assert code == 1 and "the adapter is not learning: the gradient norm was zero for 4 steps" in out + err
    (run,) = list((runs_home / "runs").iterdir())
    events = read_events(run / "events.jsonl")
    error = next(e for e in events if e["type"] == "error")
    assert error["kind"] == "not_learning" and "lora.alpha" in error["hint"]
    assert events[-1]["type"] == "end" and events[-1]["status"] == "failed"
    assert max(e["step"] for e in events if e["type"] == "step") == 3        # stopped at the 4th dead step


def test_a_learning_run_is_not_stopped(make_config, tmp_path, monkeypatch):
    from lorastudio.core.engine import trainer
    from tests.helpers.training import train
    monkeypatch.setattr(trainer, "NOT_LEARNING_STEPS", 2)
    _, status, _ = train(make_config(training__save_every=0), tmp_path / "run")
    assert status == "completed"
