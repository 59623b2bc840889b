"""Training tiny models in-process through the real loading code: 4bit, 8bit and none."""
import math

import pytest
import torch

from lorastudio.core.engine.trainer import lr_factor
from tests.helpers.training import train



@pytest.mark.parametrize("quantization", ["4bit", "8bit", "none"])
def test_loss_goes_down(make_config, tmp_path, quantization):
    config = make_config(quantization=quantization, lora__targets="all-linear", training__lr=1e-2)
    trainer, status, events = train(config, tmp_path / "run")
    assert status == "completed"
    steps = [e for e in events if e["type"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, 11))
    losses = [e["loss"] for e in steps]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.2, losses   # nats
    # Every step learns, including those after the evaluation at step 5 (bitsandbytes' CPU
    # repacking once zeroed all gradients after an eval pass).
    assert all(e["grad_norm"] and e["grad_norm"] > 0 for e in steps), [e["grad_norm"] for e in steps]
    evals = [e for e in events if e["type"] == "eval"]
    assert [e["step"] for e in evals] == [5, 10] and evals[1]["loss"] < evals[0]["loss"]
    if quantization != "none":
        import bitsandbytes as bnb
        kinds = {type(m) for m in trainer.model.modules()}
        assert (bnb.nn.Linear4bit if quantization == "4bit" else bnb.nn.Linear8bitLt) in kinds


def test_adapter_loads_in_peft_and_changes_output(make_config, tmp_path, tiny_llama):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    _trainer, _status, _ = train(make_config(quantization="4bit"), tmp_path / "run")
    adapter = tmp_path / "run" / "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= {p.name for p in adapter.iterdir()}
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    ids = torch.tensor([[1, 20, 30, 40, 50, 60]])
    with torch.no_grad():
        before = base(ids).logits
        tuned = PeftModel.from_pretrained(base, adapter)
        after = tuned(ids).logits
    assert (after - before).abs().max() > 1e-3


def test_gradient_accumulation_matches_a_larger_batch(make_config, tmp_path):
    """2 × 2 accumulated must take the same step as 1 × 4: the loss is the mean over all tokens."""
    a, _, ev_a = train(make_config(training__batch_size=4, training__grad_accum=1, training__max_steps=2,
                                   data__validation_split=0.0), tmp_path / "a")
    b, _, ev_b = train(make_config(training__batch_size=2, training__grad_accum=2, training__max_steps=2,
                                   data__validation_split=0.0), tmp_path / "b")
    # Same examples per step only if the order agrees: batch 4 at k == batches 2 at 2k, 2k+1.
    assert a.data.train.indices(0) == b.data.train.indices(0) + b.data.train.indices(1)
    loss_a = [e["loss"] for e in ev_a if e["type"] == "step"]
    loss_b = [e["loss"] for e in ev_b if e["type"] == "step"]
    assert loss_a == pytest.approx(loss_b, rel=1e-4)


def test_stop_and_resume_matches_uninterrupted_run(make_config, tmp_path):
    config = make_config(lora__dropout=0.1, training__save_every=0, data__validation_split=0.0)
    full, _, _ = train(config, tmp_path / "full")
    part, status, _ = train(config, tmp_path / "part", stop_after=4)
    assert status == "stopped"
    checkpoint = tmp_path / "part" / "checkpoints" / "step-000004"
    assert checkpoint.is_dir()
    resumed, status, events = train(config, tmp_path / "part", resume_from=checkpoint)
    assert status == "completed" and [e["step"] for e in events if e["type"] == "step"][-6:] == list(range(5, 11))
    from safetensors.torch import load_file
    wa = load_file(tmp_path / "full" / "adapter" / "adapter_model.safetensors")
    wb = load_file(tmp_path / "part" / "adapter" / "adapter_model.safetensors")
    assert wa.keys() == wb.keys()
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-6


def test_keep_checkpoints_prunes_old_ones(make_config, tmp_path):
    train(make_config(training__save_every=2, training__keep_checkpoints=2), tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-000008", "step-000010"]


def test_lr_schedule_shapes():
    assert lr_factor(0, 2, 10, "cosine") == pytest.approx(1 / 3)
    assert lr_factor(2, 2, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(10, 2, 10, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(6, 2, 10, "linear") == pytest.approx(0.5)
    assert lr_factor(9, 0, 10, "constant") == 1.0
    assert math.isclose(lr_factor(6, 2, 10, "cosine"), 0.5)


def test_liger_reports_what_it_applied(monkeypatch):
    """The kernels that ran are the data the applying code returns (LoadedModel.kernels, then the
    start event's `kernels`); its note is for people only."""
    import sys
    import types

    from lorastudio.core.engine.model_loading import apply_liger
    applied = []
    patches = types.ModuleType("liger_kernel.transformers.monkey_patch")
    patches.MODEL_TYPE_TO_APPLY_LIGER_FN = {"llama": lambda: applied.append("llama"),
                                            "broken": lambda: 1 / 0}
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers.monkey_patch", patches)
    notes: list[str] = []
    assert apply_liger("llama", torch.device("cpu"), notes) == () and notes == []      # CUDA only
    assert apply_liger("llama", torch.device("cuda"), notes) == ("liger",) and applied == ["llama"]
    assert apply_liger("gpt2", torch.device("cuda"), notes) == ()
    assert apply_liger("broken", torch.device("cuda"), notes) == ()
    assert notes == ["Liger kernels applied to llama", "Liger kernels have no patch for model type gpt2",
                     "Liger kernels failed to apply (division by zero); continuing without them"]


def test_a_stop_during_a_step_answers_at_the_next_micro_batch_and_resumes_exactly(make_config, tmp_path):
    """Stop asked while step 5's micro-batches run (grad_accum 4): the run stops at once with the
    checkpoint of step 4 (step 5's gradients dropped), and the resumed run ends where the
    uninterrupted one does."""
    from lorastudio.core.config import RunConfig
    from lorastudio.core.engine.trainer import Trainer
    from lorastudio.core.journal import JournalWriter
    from lorastudio.core.preflight import check_config
    config = make_config(training__grad_accum=4, training__batch_size=1, training__save_every=0,
                         data__validation_split=0.0)
    full, _, _ = train(config, tmp_path / "full")
    cfg = RunConfig.load(config)
    info, _ = check_config(cfg)
    run = tmp_path / "part"
    run.mkdir()
    journal = JournalWriter(run / "events.jsonl")
    trainer = Trainer(cfg, info, run, journal)
    losses_seen = []
    original = trainer.objective.loss

    def counting_loss(model, batch):
        losses_seen.append(trainer.step)
        return original(model, batch)
    trainer.objective.loss = counting_loss
    trainer.should_stop = lambda: trainer.step == 4 and losses_seen.count(4) >= 2    # inside step 5
    trainer.setup(None)
    trainer.start_event()
    assert trainer.train() == "stopped"
    journal.close()
    assert losses_seen.count(4) == 2 and trainer.step == 4            # the third micro-batch never ran
    checkpoint = run / "checkpoints" / "step-000004"
    assert checkpoint.is_dir()
    resumed, status, events = train(config, run, resume_from=checkpoint)
    assert status == "completed"
    from safetensors.torch import load_file
    wa = load_file(tmp_path / "full" / "adapter" / "adapter_model.safetensors")
    wb = load_file(run / "adapter" / "adapter_model.safetensors")
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-6
