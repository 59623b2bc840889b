"""DPO and ORPO on a tiny real model: the losses against the formulas written out here, held-out
margins that grow, a reference that is the base itself, exact resume and accumulation."""
import random

import pytest
import torch
import torch.nn.functional as F

from lorastudio.core.data.chat_masks import IGNORE_INDEX
from tests.helpers.tiny_models import write_config
from tests.helpers.training import jsonl, train

PROMPTS = ["the cat sat", "a small model", "every step writes", "lora studio trains", "the quick brown fox",
           "numbers and words", "the lazy dog", "a line to the journal"]
GOOD = ["on the mat and looked at the door", "learns a simple pattern quickly"]
BAD = ["quantized base weights let a large", "fine-tuning teaches a model a new style"]


def pair_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"prompt": f"{rng.choice(PROMPTS)} {i}", "chosen": rng.choice(GOOD), "rejected": rng.choice(BAD)}
            for i in range(n)]


@pytest.fixture
def pair_config(tmp_path, tiny_chat_llama):
    train_path = jsonl(tmp_path / "pairs.jsonl", pair_rows(32, 0))
    held_path = jsonl(tmp_path / "held.jsonl", pair_rows(8, 1))

    def make(method="dpo", **overrides):
        base = dict(training__method=method, training__lr=1e-2, training__save_every=0, training__warmup_steps=0,
                    data__validation_path=str(held_path), lora__targets="all-linear", training__seq_len=64)
        return write_config(tmp_path / f"{method}.yaml", tiny_chat_llama, train_path, **{**base, **overrides})
    return make


def token_logps(model, batch) -> torch.Tensor:
    """Σ log p(label) over each row's trained tokens, straight from the model's own logits."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].double()
    labels = batch["labels"][:, 1:]
    mask = labels != IGNORE_INDEX
    picked = logits.log_softmax(-1).gather(2, labels.clamp(min=0)[..., None]).squeeze(-1)
    return (picked * mask).sum(1), mask.sum(1)


def fixed_batch(trainer):
    from lorastudio.core.engine.preference import collate_pairs
    return collate_pairs(trainer.data.validation.items[:4], trainer.data.train.pad_id)


def base_model(folder):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def test_dpo_loss_matches_the_formula(pair_config, tmp_path, tiny_chat_llama):
    trainer, status, _ = train(pair_config("dpo", training__max_steps=3, training__beta=0.5), tmp_path / "run")
    assert status == "completed"
    batch, model = fixed_batch(trainer), trainer.model.eval()
    trainer.objective.begin_step([batch])
    with torch.no_grad():
        loss = float(trainer.objective.loss(model, batch))
        policy, _ = token_logps(model, batch)
        reference, _ = token_logps(base_model(tiny_chat_llama), batch)      # a fresh copy of the base
    b, beta = 4, 0.5
    expected = -F.logsigmoid(beta * ((policy[:b] - reference[:b]) - (policy[b:] - reference[b:]))).mean()
    assert (policy - reference).abs().max() > 1e-3           # trained: the policy has left the base
    assert loss == pytest.approx(float(expected), rel=1e-4, abs=1e-6)
    margins = beta * ((policy[:b] - reference[:b]) - (policy[b:] - reference[b:]))
    stats = trainer.objective.stats.means()
    assert stats["margin"] == pytest.approx(float(margins.mean()), rel=1e-4, abs=1e-6)
    assert stats["accuracy"] == pytest.approx(float((margins > 0).double().mean()))
    assert stats["chosen_logp"] == pytest.approx(float(policy[:b].mean()), rel=1e-4)


def test_orpo_loss_matches_the_formula(pair_config, tmp_path):
    trainer, status, _ = train(pair_config("orpo", training__max_steps=3, training__orpo_lambda=0.3), tmp_path / "run")
    batch, model = fixed_batch(trainer), trainer.model.eval()
    trainer.objective.begin_step([batch])
    b, lam = 4, 0.3
    with torch.no_grad():
        loss = float(trainer.objective.loss(model, batch))
        sums, counts = token_logps(model, batch)
        chosen_only = {k: v[:b] for k, v in batch.items()}
        nll = model(**chosen_only).loss.double()              # the model's own mean token loss on the chosen
    p_chosen, p_rejected = torch.exp(sums[:b] / counts[:b]), torch.exp(sums[b:] / counts[b:])
    log_odds = torch.log(p_chosen / (1 - p_chosen)) - torch.log(p_rejected / (1 - p_rejected))
    expected = nll + lam * (-F.logsigmoid(log_odds)).mean()
    assert loss == pytest.approx(float(expected), rel=1e-4)
    assert trainer.objective.stats.means()["margin"] == pytest.approx(float(log_odds.mean()), rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("method,quantization", [("dpo", "none"), ("dpo", "4bit"), ("orpo", "none")])
def test_held_out_margins_grow(pair_config, tmp_path, method, quantization):
    trainer, status, events = train(pair_config(method, training__max_steps=12, quantization=quantization,
                                                training__eval_every=6), tmp_path / "run")
    assert status == "completed"
    steps = [e for e in events if e["type"] == "step"]
    assert len(steps) == 12 and all({"margin", "accuracy", "chosen_logp", "rejected_logp"} <= e.keys() for e in steps)
    assert all(0 <= e["accuracy"] <= 1 for e in steps)
    evals = [e for e in events if e["type"] == "eval"]
    assert [e["step"] for e in evals] == [0, 6, 12] and all(e["pairs"] == 8 for e in evals)
    if method == "dpo":
        assert evals[0]["margin"] == pytest.approx(0, abs=1e-5)      # policy = reference before training
    assert evals[-1]["margin"] > evals[0]["margin"] + 0.5, [e["margin"] for e in evals]
    assert evals[-1]["accuracy"] == 1.0 and evals[-1]["prefers_chosen"] == 1.0
    assert evals[-1]["loss"] < evals[0]["loss"]
    if method == "orpo":                                         # its NLL term raises the chosen answers
        assert evals[-1]["chosen_logp"] > evals[0]["chosen_logp"]


def test_the_reference_is_the_base_with_the_adapter_off(pair_config, tmp_path, tiny_chat_llama):
    from lorastudio.core.engine.preference import reference_logps, sequence_logps
    trainer, _, _ = train(pair_config("dpo", training__max_steps=6), tmp_path / "run")
    batch = fixed_batch(trainer)
    reference, _ = reference_logps(trainer.model, batch)
    fresh, _ = token_logps(base_model(tiny_chat_llama), batch)
    assert torch.allclose(reference.double(), fresh, atol=1e-4), (reference, fresh)
    with torch.no_grad():
        policy, _ = sequence_logps(trainer.model.eval(), batch)
    assert (policy - reference).abs().max() > 0.1                # the adapter is back on afterwards
    assert trainer.model.training is False and all(p.requires_grad for p in trainer.params)
    # one set of weights: no parameter the policy does not also hold
    assert sum(p.numel() for p in trainer.model.parameters()) == sum(
        p.numel() for p in base_model(tiny_chat_llama).parameters()) + sum(p.numel() for p in trainer.params)


def test_gradient_accumulation_matches_a_larger_batch(pair_config, tmp_path):
    a, _, ev_a = train(pair_config("dpo", training__batch_size=4, training__max_steps=2), tmp_path / "a")
    b, _, ev_b = train(pair_config("dpo", training__batch_size=2, training__grad_accum=2, training__max_steps=2),
                       tmp_path / "b")
    assert a.data.train.indices(0) == b.data.train.indices(0) + b.data.train.indices(1)
    for key in ("loss", "margin", "accuracy", "chosen_logp"):
        assert [e[key] for e in ev_a if e["type"] == "step"] == pytest.approx(
            [e[key] for e in ev_b if e["type"] == "step"], rel=1e-4, abs=1e-6), key


def test_stop_and_resume_matches_uninterrupted_run(pair_config, tmp_path):
    from safetensors.torch import load_file
    config = pair_config("dpo", training__max_steps=6)
    train(config, tmp_path / "full")
    _, status, _ = train(config, tmp_path / "part", stop_after=3)
    assert status == "stopped"
    _, status, events = train(config, tmp_path / "part", resume_from=tmp_path / "part" / "checkpoints" / "step-000003")
    assert status == "completed" and [e["step"] for e in events if e["type"] == "step"][-3:] == [4, 5, 6]
    wa = load_file(tmp_path / "full" / "adapter" / "adapter_model.safetensors")
    wb = load_file(tmp_path / "part" / "adapter" / "adapter_model.safetensors")
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-6


def test_supervised_data_under_dpo_is_a_located_error(tmp_path, tiny_chat_llama):
    from lorastudio.core.data.files import DataError
    data = jsonl(tmp_path / "sft.jsonl", [{"prompt": "p", "completion": "c"}] * 4)
    config = write_config(tmp_path / "c.yaml", tiny_chat_llama, data, training__method="dpo")
    with pytest.raises(DataError, match=r"sft.jsonl, line 1: not a preference pair — no chosen or rejected field"):
        train(config, tmp_path / "run")


def test_pairs_under_sft_name_the_method_to_set(tmp_path, tiny_chat_llama):
    """A pair file with the default method is not an "unknown format": the error says what to set."""
    from lorastudio.core.data.files import DataError
    data = jsonl(tmp_path / "pairs.jsonl", pair_rows(4, 0))
    config = write_config(tmp_path / "c.yaml", tiny_chat_llama, data)
    with pytest.raises(DataError, match=r"pairs.jsonl, line 1: preference pairs .*training.method: sft") as err:
        train(config, tmp_path / "run")
    assert "training.method: dpo or orpo" in err.value.hint


def test_the_inspector_shows_both_sides_of_a_pair(tmp_path, tiny_chat_llama):
    from lorastudio.core.config import DataSection
    from lorastudio.core.engine.inspect_data import inspect_data
    path = jsonl(tmp_path / "pairs.jsonl", pair_rows(6, 0) + [{"prompt": "the cat sat " * 40, "chosen": "a b",
                                                                 "rejected": "c d"}])
    report = inspect_data(DataSection(path=str(path)), str(tiny_chat_llama), 64, example=2)
    assert report["format"] == "pairs" and report["examples"] == 7 and report["usable_examples"] == 6
    assert report["dropped_no_target"] == 1 and any("their prompt fills seq_len=64" in n for n in report["notes"])
    row = pair_rows(6, 0)[1]
    for side in ("chosen", "rejected"):
        trained = "".join(t["text"] for t in report["pair"][side]["tokens"] if t["trained"])
        assert trained == row[side] + "<|im_end|>\n"
    assert report["example"]["tokens"] == report["pair"]["chosen"]["tokens"]
    import io
    from lorastudio.core.cli.inspect_data import print_report
    out = io.StringIO()
    print_report(report, False, out)                      # `lorastudio inspect`: both sides, marked
    text = out.getvalue()
    assert f"⟦{row['chosen']}<|im_end|>\n⟧" in text and f"⟦{row['rejected']}<|im_end|>\n⟧" in text
    assert "Example 2, chosen (line 2, ok)" in text and "Example 2, rejected:" in text
    last = inspect_data(DataSection(path=str(path)), str(tiny_chat_llama), 64, example=7)
    assert last["example"]["status"] == "dropped: the prompt fills seq_len"


@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_chunked_head_log_probs_match_log_softmax_and_its_gradient(chunk):
    """HeadLogProbs works on its chunk's logits in place; its values and its gradient for the hidden
    states equal log_softmax's through the full logits, whatever the chunk (1 row, uneven, all)."""
    from lorastudio.core.engine.preference import HeadLogProbs
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(10, 16, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 16, generator=gen, dtype=torch.float64)
    targets = torch.randint(0, 50, (10,), generator=gen)
    upstream = torch.randn(10, generator=gen, dtype=torch.float64)
    ours = HeadLogProbs.apply(hidden, weight, targets, chunk)
    (grad_ours,) = torch.autograd.grad((ours * upstream).sum(), hidden)
    direct = (hidden @ weight.t()).log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
    (grad_direct,) = torch.autograd.grad((direct * upstream).sum(), hidden)
    assert torch.allclose(ours.double(), direct, atol=1e-5)       # the values are kept in fp32
    assert torch.allclose(grad_ours, grad_direct, atol=1e-5)


def test_an_adapted_head_keeps_the_generic_path():
    """A head with a bias or a trainable weight is not the frozen plain head HeadLogProbs assumes:
    the generic checkpointed chunks score it, with the head's own gradient."""
    from lorastudio.core.engine.preference import head_logps
    head = torch.nn.Linear(8, 20)                        # a bias, and a weight that trains
    hidden = torch.randn(5, 8, requires_grad=True)
    targets = torch.randint(0, 20, (5,))
    out = head_logps(head, hidden, targets)
    out.sum().backward()
    assert head.weight.grad is not None and hidden.grad is not None
    assert torch.allclose(out, head(hidden).log_softmax(-1).gather(1, targets[:, None]).squeeze(1), atol=1e-5)
