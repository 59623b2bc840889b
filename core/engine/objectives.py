"""What a training step minimises: the one thing the trainer calls, whatever training.method is.

An objective counts a step's normalisers over the step's micro-batches (begin_step), gives each
micro-batch's loss (weighted so the micro-batches of a step sum to the step's mean) and reports what
the journal shows next to the loss; the preference objectives also prepare their data (pairs) and
evaluate held-out pairs, where supervised data stays batches.prepare_data and Trainer.evaluate:
  sft         the causal LM loss over trained tokens (`num_items_in_batch` = the step's token count);
  dpo / orpo  preference pairs (core/engine/preference.py): the step event and the eval event gain
              margin, accuracy, chosen_logp, rejected_logp (and eval prefers_chosen, pairs).
"""
from __future__ import annotations

import torch

from lorastudio.core.engine import preference
from lorastudio.core.engine.batches import count_label_tokens


class SupervisedObjective:
    method = "sft"
    pairs = False

    def begin_step(self, batches: list[dict[str, torch.Tensor]]) -> None:
        self.items = sum(count_label_tokens(b) for b in batches)

    def loss(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(**batch, num_items_in_batch=self.items).loss

    def step_fields(self) -> dict:
        return {}


class PreferenceObjective:
    pairs = True

    def __init__(self, method: str, beta: float, orpo_lambda: float):
        self.method, self.beta, self.orpo_lambda = method, beta, orpo_lambda
        self.stats = preference.PairStats()
        self.references: dict = {}          # held-out batches' reference log-probabilities (DPO)

    def prepare_data(self, data_cfg, tokenizer, seq_len: int, batch_size: int, seed: int):
        return preference.prepare_pairs(data_cfg, tokenizer, seq_len, batch_size, seed)

    def begin_step(self, batches: list[dict[str, torch.Tensor]]) -> None:
        self.step_pairs, self.step_chosen_tokens = preference.step_counts(batches)
        self.stats = preference.PairStats()

    def loss(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = preference.pair_forward(model, batch, self.method, self.beta, self.orpo_lambda,
                                      self.step_pairs, self.step_chosen_tokens)
        self.stats.add(out)
        return out.loss

    def step_fields(self) -> dict:
        means = self.stats.means()
        return {k: means[k] for k in ("margin", "accuracy", "chosen_logp", "rejected_logp")}

    def evaluate(self, model, validation, batch_size: int, pad_id: int, device) -> dict:
        return preference.evaluate_pairs(model, validation, batch_size, pad_id, device, self.method,
                                         self.beta, self.orpo_lambda, self.references)


def make_objective(training) -> SupervisedObjective | PreferenceObjective:
    """The objective of training.method (sft, dpo, orpo)."""
    method = getattr(training, "method", "sft")
    if method == "sft":
        return SupervisedObjective()
    return PreferenceObjective(method, training.beta, training.orpo_lambda)
