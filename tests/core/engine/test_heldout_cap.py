"""A bounded held-out set and an evaluation that shows it moves (issue 33, point 13): validation_split
holds out at most data.max_validation_examples examples (and EVAL_TOKEN_CAP tokens), the `data` event
says so, every piece that draws the split draws the same capped line, and evaluation emits a
`phase` (evaluating, fraction) per held-out batch."""
from __future__ import annotations

import pytest

from tests.helpers.tiny_models import write_config, write_text_jsonl
from tests.helpers.training import train
from lorastudio.core.data.split import held_out_count, split, validation_indices


def test_the_default_split_of_a_large_file_is_capped():
    assert held_out_count(400_000, 0.1) == 40_000
    assert held_out_count(400_000, 0.1, cap=512) == 512
    assert held_out_count(48, 0.1, cap=512) == 5                   # small files: the split as before
    held = validation_indices(400_000, 0.1, seed=0, cap=512)
    assert len(held) == 512 and held == sorted(held)
    assert validation_indices(48, 0.1, 0, 512) == validation_indices(48, 0.1, 0)   # unchanged below the cap
    train_part, val = split(list(range(2000)), 0.5, 0, cap=10)
    assert len(val) == 10 and len(train_part) == 1990               # the rest trains


def test_the_config_key_defaults_to_512_and_zero_lifts_it():
    from lorastudio.core.config import ConfigError, RunConfig
    assert RunConfig.from_dict({"model": "m", "data": {"path": "d"}}).data.max_validation_examples == 512
    assert RunConfig.from_dict({"model": "m", "data": {"path": "d", "max_validation_examples": 0}})
    with pytest.raises(ConfigError, match="data.max_validation_examples"):
        RunConfig.from_dict({"model": "m", "data": {"path": "d", "max_validation_examples": -1}})


def test_a_capped_run_states_the_cap_and_reports_evaluation_batches(tmp_path, tiny_llama):
    data = write_text_jsonl(tmp_path / "train.jsonl", 48)
    config = write_config(tmp_path / "c.yaml", tiny_llama, data, data__validation_split=0.5,
                          data__max_validation_examples=6, training__batch_size=2, training__max_steps=4,
                          training__save_every=2)
    trainer, status, events = train(config, tmp_path / "run")
    assert status == "completed"
    (data_event,) = [e for e in events if e["type"] == "data"]
    assert data_event["validation_examples"] == 6 and data_event["validation_uncapped"] == 24
    assert data_event["validation_cap_examples"] == 6 and data_event["validation_cap_tokens"] > 0
    assert "data.max_validation_examples" in data_event["validation_note"]
    assert data_event["validation_note"] in data_event["notes"]
    assert data_event["examples"] == 42                              # the rest of the file trains
    evaluating = [e for e in events if e["type"] == "phase" and e["name"] == "evaluating"]
    evals = [e for e in events if e["type"] == "eval"]
    assert evals and len(evaluating) >= len(evals)                   # at least the first batch of each
    first = evaluating[0]
    assert first["fraction"] == 0 and "batch 1 of 3" in first["message"] and first["step"] == evals[0]["step"]


def test_every_batch_is_reported_when_batches_are_slow(tmp_path, tiny_llama, monkeypatch):
    from lorastudio.core.engine import trainer as trainer_module
    monkeypatch.setattr(trainer_module, "EVAL_PROGRESS_S", 0.0)
    data = write_text_jsonl(tmp_path / "train.jsonl", 48)
    config = write_config(tmp_path / "c.yaml", tiny_llama, data, data__validation_split=0.25,
                          training__batch_size=4, training__max_steps=2, training__save_every=0,
                          training__eval_every=2)
    _trainer, _status, events = train(config, tmp_path / "run")
    fractions = [e["fraction"] for e in events if e["type"] == "phase" and e["name"] == "evaluating"]
    assert fractions[:3] == [0.0, pytest.approx(1 / 3, abs=1e-3), pytest.approx(2 / 3, abs=1e-3)]


def test_the_token_cap_keeps_a_prefix_of_at_least_one_example():
    import numpy as np
    from lorastudio.core.engine.batches import EncodedSet, cap_tokens

    class Item:
        def __init__(self, n):
            self.input_ids = list(range(n))
    data = EncodedSet(items=[Item(100), Item(100), Item(100)])
    assert len(cap_tokens(data, 250).items) == 2
    assert len(cap_tokens(data, 50).items) == 1
    assert cap_tokens(data, 10_000) is data
    assert np.sum([len(i.input_ids) for i in cap_tokens(data, 200).items]) == 200


def test_the_eval_jobs_loss_phase_moves_batch_by_batch(tmp_path, tiny_llama, monkeypatch):
    """`lorastudio eval` / Evaluate…: the held-out loss is measured batch by batch, and says so."""
    from tests.helpers.tiny_models import train_tiny_run
    from lorastudio.core.engine import evaluate as evaluate_module
    monkeypatch.setattr(evaluate_module, "LOSS_PROGRESS_S", 0.0)
    data = write_text_jsonl(tmp_path / "train.jsonl", 48)
    run = train_tiny_run(tmp_path / "run", tiny_llama, data, quantization="none", data__validation_split=0.25,
                         training__batch_size=4, training__max_steps=2, training__save_every=0)
    seen = []
    evaluate_module.evaluate_run(run, limit=2, progress=lambda name, f, message: seen.append((name, f, message)))
    loss = [(f, m) for name, f, m in seen if name == "loss" and "batch" in m]
    assert [m.split(", ")[-1] for _, m in loss[:3]] == ["batch 1 of 3", "batch 2 of 3", "batch 3 of 3"]
    fractions = [f for _, f, _ in seen]
    assert fractions == sorted(fractions)
