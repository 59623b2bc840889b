"""Training data: read any supported file, render and mask it, split, serve micro-batches.

One pipeline for the trainer, the CLI's inspector and the window's inspector:
  data.files.iter_rows -> data.formats.detect_format / to_example -> data.chat_masks.encode -> fit_length.
The order of examples is a pure function of (seed, epoch), so "micro-batch k" names the same
examples in an uninterrupted run and in a resumed one — a checkpoint's data position is just k.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lorastudio.core.data.split import split  # noqa: F401 (the trainer's split)
from lorastudio.core.data.files import BadRow, DataError, Row, iter_rows
from lorastudio.core.data.formats import FORMAT_TITLES, Example, apply_columns, detect_format, to_example
from lorastudio.core.data.chat_masks import (FALLBACK_NOTE, IGNORE_INDEX, Encoded, TemplateError, encode,
                                       fit_length, has_chat_template)

__all__ = ["DataError", "IGNORE_INDEX", "load_examples", "encode_examples", "prepare_data"]


@dataclass
class LoadedExamples:
    source: str
    format: str
    reason: str
    examples: list[Example]
    bad_rows: list[BadRow]


def _columns(data_cfg) -> dict:
    if data_cfg.columns:
        return dict(data_cfg.columns)
    if data_cfg.text_field != "text":
        return {"text": data_cfg.text_field}
    return {}


def load_examples(path: Path, data_cfg) -> LoadedExamples:
    """Read and normalise every example of a file, following data.on_bad_rows."""
    source = str(path)
    bad: list[BadRow] | None = [] if data_cfg.on_bad_rows == "skip" else None
    rows: list[Row] = list(iter_rows(Path(path), bad, data_cfg.text_blocks))
    if not rows:
        raise DataError(f"{source}: no valid examples" + (f" ({len(bad)} bad rows skipped)" if bad else ""),
                        "the file needs at least one valid example")
    columns = _columns(data_cfg)
    if columns:
        rows = [Row(r.where, apply_columns(r.value, columns, r.where, source)) for r in rows]
    if data_cfg.format == "auto":
        fmt, reason = detect_format(rows, source)
    else:
        fmt, reason = data_cfg.format, f"{FORMAT_TITLES[data_cfg.format]}: set by data.format"
    if columns:
        reason += f" (columns mapped: {', '.join(f'{k} <- {v}' for k, v in columns.items())})"
    examples = []
    for row in rows:
        try:
            examples.append(to_example(row, fmt, source))
        except DataError as exc:
            if bad is None:
                raise
            bad.append(BadRow(row.where, exc.message.split(": ", 1)[-1]))
    if not examples:
        raise DataError(f"{source}: every row was bad ({len(bad or [])} skipped)", "fix the file")
    return LoadedExamples(source, fmt, reason, examples, bad or [])


@dataclass
class EncodedSet:
    items: list[Encoded]
    truncated: int = 0
    dropped_too_long: int = 0
    dropped_no_target: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def input_ids(self) -> list[list[int]]:
        return [e.input_ids for e in self.items]

    @property
    def tokens(self) -> int:
        return sum(len(e.input_ids) for e in self.items)

    @property
    def trained_tokens(self) -> int:
        return sum(e.trained_tokens for e in self.items)


def encode_examples(examples: list[Example], tokenizer, data_cfg, seq_len: int) -> EncodedSet:
    out = EncodedSet(items=[])
    if any(e.is_chat for e in examples) and not has_chat_template(tokenizer):
        out.notes.append(FALLBACK_NOTE)
    for ex in examples:
        try:
            enc = encode(ex, tokenizer, data_cfg.train_on)
        except TemplateError as exc:
            raise DataError(f"{ex.where}: {exc}", "use a model with a standard chat template, "
                            "or set data.train_on: all") from None
        fitted = fit_length(enc, seq_len, data_cfg.too_long)
        if fitted is None:
            out.dropped_too_long += 1
        elif fitted.trained_tokens == 0:
            out.dropped_no_target += 1
        else:
            out.truncated += fitted.truncated
            out.items.append(fitted)
    return out




class MicroBatches:
    """Micro-batch k of the whole run: epoch k // per_epoch, position k % per_epoch."""

    def __init__(self, data: EncodedSet, batch_size: int, pad_id: int, seed: int):
        if not data.items:
            raise DataError("no training examples left after tokenization",
                            "add examples with at least two tokens each")
        self.data, self.batch_size, self.pad_id, self.seed = data, batch_size, pad_id, seed
        self.per_epoch = math.ceil(len(data.input_ids) / batch_size)
        self._order_cache: dict[int, list[int]] = {}

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._order_cache:
            order = list(range(len(self.data.input_ids)))
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
            self._order_cache = {epoch: order}
        return self._order_cache[epoch]

    def indices(self, k: int) -> list[int]:
        epoch, pos = divmod(k, self.per_epoch)
        return self._order(epoch)[pos * self.batch_size:(pos + 1) * self.batch_size]

    def batch(self, k: int) -> dict[str, torch.Tensor]:
        return collate([self.data.items[i] for i in self.indices(k)], self.pad_id)

    def epoch_of(self, k: int) -> float:
        return k / self.per_epoch


def collate(rows: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest row; padding is masked from attention and from the loss."""
    width = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r.input_ids)
        ids[i, :n] = torch.tensor(r.input_ids, dtype=torch.long)
        labels[i, :n] = torch.tensor(r.labels, dtype=torch.long)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def count_label_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Tokens that contribute to the loss: labels are shifted by one inside the model."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


@dataclass
class PreparedData:
    train: MicroBatches
    validation: EncodedSet | None
    train_set: EncodedSet
    loaded: LoadedExamples

    @property
    def examples(self) -> int:
        return len(self.train_set.items)

    @property
    def validation_examples(self) -> int:
        return len(self.validation.items) if self.validation else 0

    def summary(self) -> dict:
        t = self.train_set
        return {"format": self.loaded.format, "reason": self.loaded.reason, "examples": self.examples,
                "validation_examples": self.validation_examples, "tokens": t.tokens,
                "trained_tokens": t.trained_tokens, "truncated": t.truncated,
                "dropped_too_long": t.dropped_too_long, "dropped_no_target": t.dropped_no_target,
                "bad_rows": [{"where": b.where, "problem": b.problem} for b in self.loaded.bad_rows],
                "notes": t.notes}


def pad_id_of(tokenizer) -> int:
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise DataError("the tokenizer has neither a pad nor an end-of-sequence token",
                        "use a model whose tokenizer defines eos_token")
    return pad_id


def prepare_data(data_cfg, tokenizer, seq_len: int, batch_size: int, seed: int) -> PreparedData:
    loaded = load_examples(Path(data_cfg.path), data_cfg)
    if data_cfg.validation_path:
        train_ex = loaded.examples
        val_ex = load_examples(Path(data_cfg.validation_path), data_cfg).examples
    else:
        train_ex, val_ex = split(loaded.examples, data_cfg.validation_split, seed)
    train_set = encode_examples(train_ex, tokenizer, data_cfg, seq_len)
    if not train_set.items:
        raise DataError(f"{data_cfg.path}: no example has a token to train on "
                        f"({train_set.dropped_no_target} had none left after masking, "
                        f"{train_set.dropped_too_long} were longer than seq_len={seq_len})",
                        "check that examples have assistant / completion text, raise training.seq_len, "
                        "or set data.train_on: all")
    val_set = encode_examples(val_ex, tokenizer, data_cfg, seq_len) if val_ex else None
    if val_set is not None and not val_set.items:
        val_set = None
    train = MicroBatches(train_set, batch_size, pad_id_of(tokenizer), seed)
    return PreparedData(train=train, validation=val_set, train_set=train_set, loaded=loaded)
