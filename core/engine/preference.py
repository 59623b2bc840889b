"""Preference tuning on pairs: batches, answer log-probabilities, the DPO and ORPO losses.

A micro-batch of B pairs is one forward pass over 2B rows (the B chosen sequences, then the B
rejected ones). Only answer tokens are scored: the decoder's hidden states at the positions that
predict an answer token go through the output head a chunk at a time, each chunk recomputed in the
backward pass, so no tokens × vocabulary logits exist for the prompt and at most a chunk's for
the answers (`HeadLogProbs`: about 32 M logits at a time, whatever the vocabulary, computed in place —
fixed chunks of 512 tokens through logsumexp and its backward had cost 0.8 GiB at a 128k vocabulary).

DPO (Rafailov et al., 2023) needs the reference model's log-probabilities: with LoRA that is the same
frozen base with the adapter switched off (PEFT's `disable_adapter()`), run without gradients in eval
mode — no second copy of the weights. ORPO (Hong et al., 2024) needs no reference:
    loss = NLL(chosen) + λ·(−log σ(log odds(chosen) − log odds(rejected))),
    odds(y) = P(y|x) / (1 − P(y|x)) with P the length-normalised (mean per-token) probability.
Under gradient accumulation each micro-batch is weighted by its share of the step's pairs (and
ORPO's NLL by its share of the step's chosen tokens), so the step's loss is the mean of the whole step.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from lorastudio.core.data.chat_masks import IGNORE_INDEX
from lorastudio.core.data.files import DataError
from lorastudio.core.data.pairs import EncodedPair, LoadedPairs, PairSet, encode_pairs, load_pairs, pair_summary
from lorastudio.core.data.split import split
from lorastudio.core.engine.batches import MicroBatches, collate, pad_id_of
from lorastudio.core.fit.memory_model import PAIR_LOGIT_ELEMENTS as LOGIT_ELEMENTS   # 128 MB of fp32 logits


# ---- data --------------------------------------------------------------------------------------
class PairBatches(MicroBatches):
    """Micro-batch k of pairs, in the same seeded order as supervised micro-batches."""

    def batch(self, k: int) -> dict[str, torch.Tensor]:
        return collate_pairs([self.data.items[i] for i in self.indices(k)], self.pad_id)


def collate_pairs(pairs: list[EncodedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """One batch of 2B rows: the chosen sides, then the rejected sides."""
    return collate([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id)


@dataclass
class PreparedPairs:
    train: PairBatches
    validation: PairSet | None
    train_set: PairSet
    loaded: LoadedPairs

    @property
    def examples(self) -> int:
        return len(self.train_set.items)

    @property
    def validation_examples(self) -> int:
        return len(self.validation.items) if self.validation else 0

    def summary(self) -> dict:
        return pair_summary(self.loaded, self.train_set, self.validation_examples)


def prepare_pairs(data_cfg, tokenizer, seq_len: int, batch_size: int, seed: int) -> PreparedPairs:
    loaded = load_pairs(Path(data_cfg.path), data_cfg)
    if data_cfg.validation_path:
        train_pairs, val_pairs = loaded.pairs, load_pairs(Path(data_cfg.validation_path), data_cfg).pairs
    else:
        train_pairs, val_pairs = split(loaded.pairs, data_cfg.validation_split, seed, data_cfg.max_validation_examples)
    train_set = encode_pairs(train_pairs, tokenizer, seq_len, data_cfg.too_long)
    if not train_set.items:
        raise DataError(f"{data_cfg.path}: no pair is left to train on ({train_set.dropped_prompt_too_long} "
                        f"had prompts filling seq_len={seq_len}, {train_set.dropped_too_long} were longer "
                        "and dropped)", "raise training.seq_len, shorten the prompts, or set data.too_long: truncate")
    val_set = encode_pairs(val_pairs, tokenizer, seq_len, data_cfg.too_long) if val_pairs else None
    if val_set is not None and not val_set.items:
        val_set = None
    train = PairBatches(train_set, batch_size, pad_id_of(tokenizer), seed)
    return PreparedPairs(train=train, validation=val_set, train_set=train_set, loaded=loaded)


# ---- log-probabilities of the answers ----------------------------------------------------------
def _decoder_and_head(model):
    """(decoder, output head) when answer logits can be computed from hidden states, else None."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = getattr(base, "config", None)
    if cfg is None or getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None):
        return None          # the model post-processes its logits: use its own forward
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    head = base.get_output_embeddings()
    if decoder is None or decoder is base or head is None:
        return None
    return decoder, head


def _chunk_logps(head, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = head(hidden).float()        # no log_softmax copy: the target's logit − logsumexp
    return logits.gather(1, targets[:, None]).squeeze(1) - torch.logsumexp(logits, -1)


class HeadLogProbs(torch.autograd.Function):
    """log p(target) of each row of `hidden` through a frozen, bias-free output head, chunked: the
    logits of a chunk of rows exist in the forward pass and again in the backward pass, are worked
    on in place (no log-softmax, exp or gradient copies) and are never saved. Only the gradient for
    `hidden` is returned: the head is frozen."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
        n = targets.shape[0]
        out = torch.empty(n, dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(out)
        for i in range(0, n, chunk):
            logits = (hidden[i:i + chunk] @ weight.t()).float()
            target = logits.gather(1, targets[i:i + chunk, None]).squeeze(1)
            top = logits.amax(-1, keepdim=True)
            lse[i:i + chunk] = logits.sub_(top).exp_().sum(-1).log_().add_(top.squeeze(1))
            out[i:i + chunk] = target - lse[i:i + chunk]
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.chunk = chunk
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        hidden, weight, targets, lse = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        grad_hidden = torch.empty_like(hidden)
        grad = grad.float()
        for i in range(0, targets.shape[0], ctx.chunk):
            g = grad[i:i + ctx.chunk, None]
            dlogits = (hidden[i:i + ctx.chunk] @ weight.t()).float()
            dlogits.sub_(lse[i:i + ctx.chunk, None]).exp_().mul_(-g)         # −g · softmax
            dlogits.scatter_add_(1, targets[i:i + ctx.chunk, None], g)        # + g at the target
            grad_hidden[i:i + ctx.chunk] = dlogits.to(hidden.dtype) @ weight
        return grad_hidden, None, None, None


def _frozen_plain_head(head) -> torch.Tensor | None:
    """The head's weight when it is a frozen, bias-free dense linear layer (what HeadLogProbs can
    compute through), else None (an adapted or quantized head keeps the generic path)."""
    weight = getattr(head, "weight", None)
    if type(head) is not torch.nn.Linear or head.bias is not None or weight is None or weight.requires_grad:
        return None
    return weight


def head_logps(head, picked: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) of each picked hidden state, a bounded number of logits at a time."""
    weight = _frozen_plain_head(head)
    vocab = weight.shape[0] if weight is not None else getattr(head, "out_features", 32768)
    chunk = max(16, LOGIT_ELEMENTS // max(vocab, 1))
    if weight is not None and picked.dtype == weight.dtype:
        return HeadLogProbs.apply(picked, weight, targets, chunk)
    chunks = [checkpoint(_chunk_logps, head, picked[i:i + chunk], targets[i:i + chunk], use_reentrant=False)
              if torch.is_grad_enabled() else _chunk_logps(head, picked[i:i + chunk], targets[i:i + chunk])
              for i in range(0, len(targets), chunk)]
    return torch.cat(chunks) if chunks else picked.new_zeros(0, dtype=torch.float32)


def sequence_logps(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-probability of each row's trained tokens, how many there are), one value a row."""
    labels = batch["labels"][:, 1:]
    rows, cols = torch.nonzero(labels != IGNORE_INDEX, as_tuple=True)
    targets = labels[rows, cols]
    parts = _decoder_and_head(model)
    if parts is None:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
        token_logps = _chunk_logps(lambda h: h, logits[:, :-1][rows, cols], targets)
    else:
        decoder, head = parts
        hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         use_cache=False).last_hidden_state
        token_logps = head_logps(head, hidden[:, :-1][rows, cols], targets)
    n = labels.shape[0]
    sums = torch.zeros(n, dtype=torch.float32, device=token_logps.device).index_add(0, rows, token_logps)
    counts = torch.bincount(rows, minlength=n).to(sums.dtype)
    return sums, counts


@torch.no_grad()
def reference_logps(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen base's log-probabilities: the adapter disabled, eval mode (no dropout)."""
    was_training = model.training
    model.eval()
    try:
        with model.disable_adapter():
            return sequence_logps(model, batch)
    finally:
        model.train(was_training)


# ---- the losses ----------------------------------------------------------------------------------
def dpo_losses(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor,
               ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss of each pair, chosen rewards, rejected rewards); rewards are β·(policy − reference)."""
    chosen_rewards = beta * (chosen - ref_chosen)
    rejected_rewards = beta * (rejected - ref_rejected)
    return -F.logsigmoid(chosen_rewards - rejected_rewards), chosen_rewards.detach(), rejected_rewards.detach()


def log1m_exp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − exp(x)) for x < 0, accurate near 0 and far below it."""
    x = x.clamp(max=-1e-7)
    return torch.where(x > -0.6931, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def orpo_log_odds(mean_chosen: torch.Tensor, mean_rejected: torch.Tensor) -> torch.Tensor:
    """log(odds(chosen) / odds(rejected)) from mean per-token log-probabilities."""
    return (mean_chosen - log1m_exp(mean_chosen)) - (mean_rejected - log1m_exp(mean_rejected))


@dataclass
class PairOutput:
    loss: torch.Tensor              # this micro-batch's part of the step's loss
    margins: torch.Tensor           # per pair: chosen − rejected reward (DPO) or log odds ratio (ORPO)
    chosen_logps: torch.Tensor      # per pair: the policy's summed log-probability of each answer
    rejected_logps: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected_tokens: torch.Tensor
    reference: torch.Tensor | None = None   # DPO: the reference's log-probabilities of every row


def pair_forward(model, batch: dict[str, torch.Tensor], method: str, beta: float, orpo_lambda: float,
                 step_pairs: int, step_chosen_tokens: int, reference: torch.Tensor | None = None) -> PairOutput:
    """The loss of a micro-batch of pairs (weighted for the whole step) and its per-pair numbers;
    `reference` gives DPO's reference log-probabilities when they are known already."""
    logps, counts = sequence_logps(model, batch)
    b = logps.shape[0] // 2
    chosen, rejected = logps[:b], logps[b:]
    if method == "dpo":
        ref = reference if reference is not None else reference_logps(model, batch)[0]
        losses, chosen_rewards, rejected_rewards = dpo_losses(chosen, rejected, ref[:b], ref[b:], beta)
        loss = losses.sum() / step_pairs
        margins = chosen_rewards - rejected_rewards
    elif method == "orpo":
        log_odds = orpo_log_odds(chosen / counts[:b].clamp(min=1), rejected / counts[b:].clamp(min=1))
        nll = -chosen.sum() / max(step_chosen_tokens, 1)
        loss = nll + orpo_lambda * (-F.logsigmoid(log_odds)).sum() / step_pairs
        margins = log_odds.detach()
    else:
        raise ValueError(f"unknown preference method {method!r}")
    return PairOutput(loss, margins, chosen.detach(), rejected.detach(), counts[:b], counts[b:],
                      ref if method == "dpo" else None)


def step_counts(batches: list[dict[str, torch.Tensor]]) -> tuple[int, int]:
    """(pairs, trained tokens of the chosen answers) of a step's micro-batches."""
    pairs = tokens = 0
    for batch in batches:
        b = batch["input_ids"].shape[0] // 2
        pairs += b
        tokens += int((batch["labels"][:b, 1:] != IGNORE_INDEX).sum())
    return pairs, tokens


class PairStats:
    """Per-pair numbers summed over a step or an evaluation: means for the journal."""

    def __init__(self):
        self.pairs = 0
        self.sums = {"margin": 0.0, "accuracy": 0.0, "chosen_logp": 0.0, "rejected_logp": 0.0,
                     "prefers_chosen": 0.0}

    def add(self, out: PairOutput) -> None:
        self.pairs += len(out.margins)
        values = torch.stack([out.margins.sum(), (out.margins > 0).float().sum(), out.chosen_logps.sum(),
                              out.rejected_logps.sum(), (out.chosen_logps > out.rejected_logps).float().sum()])
        for key, value in zip(self.sums, values.tolist()):
            self.sums[key] += value

    def means(self) -> dict:
        n = max(self.pairs, 1)
        return {key: value / n for key, value in self.sums.items()}


@torch.no_grad()
def evaluate_pairs(model, validation: PairSet, batch_size: int, pad_id: int, device, method: str,
                   beta: float, orpo_lambda: float, references: dict | None = None) -> dict:
    """The held-out pairs' mean loss, margin, accuracy and log-probabilities (eval mode).
    `references` keeps DPO's reference log-probabilities of each held-out batch from one
    evaluation to the next (the base does not change), halving the cost of every later one."""
    references = {} if references is None else references
    was_training = model.training
    model.eval()
    stats, loss_sum = PairStats(), 0.0
    try:
        for i in range(0, len(validation.items), batch_size):
            batch = collate_pairs(validation.items[i:i + batch_size], pad_id)
            pairs, chosen_tokens = step_counts([batch])
            batch = {k: v.to(device) for k, v in batch.items()}
            out = pair_forward(model, batch, method, beta, orpo_lambda, pairs, chosen_tokens, references.get(i))
            if out.reference is not None:
                references[i] = out.reference
            loss_sum += float(out.loss) * pairs
            stats.add(out)
    finally:
        model.train(was_training)
    return {"loss": loss_sum / max(stats.pairs, 1), "pairs": stats.pairs, **stats.means()}
