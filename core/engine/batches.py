"""Training data: read any supported source, render and mask it, split, serve micro-batches.

One pipeline for the trainer, the CLI's inspector and the window's inspector:
  data.sources.resolve -> data.examples.stream_examples -> token_cache.encode_bounded -> a token table.
The trainer reads the memory-mapped token table (core/engine/batching/token_cache.py), built once per
(source, tokenizer, seq_len, data options) and reused by later runs and resumes.
The order of examples is a pure function of (seed, epoch), so "micro-batch k" names the same
examples in an uninterrupted run and in a resumed one — a checkpoint's data position is just k.
With data.packing the examples of micro-batch k are laid end to end (core/engine/batching/packing.py):
the same examples, the same trained tokens, no padding.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from lorastudio.core.data.split import held_out_count, split, validation_indices
from lorastudio.core.data.files import BadRow, DataError
from lorastudio.core.data.examples import stream_examples
from lorastudio.core.data.formats import Example
from lorastudio.core.data.chat_masks import FALLBACK_NOTE, IGNORE_INDEX, Encoded, has_chat_template
from lorastudio.core.engine.batching import packing
from lorastudio.core.engine.batching.token_cache import (EMPTY_ANSWER, NO_TARGET, OK, TOO_LONG, TokenTable,
                                                        encode_with_images, load_or_build)

__all__ = ["DataError", "IGNORE_INDEX", "load_examples", "encode_examples", "prepare_data", "split"]


@dataclass
class LoadedExamples:
    source: str
    format: str
    reason: str
    examples: list[Example]
    bad_rows: list[BadRow]


def load_examples(path: Path, data_cfg) -> LoadedExamples:
    """Read and normalise every example of a source, following data.on_bad_rows (in memory:
    for previews, evaluation and tests; training reads the token table)."""
    stream = stream_examples(str(path), data_cfg)
    examples = list(stream.examples)
    return LoadedExamples(stream.source, stream.format, stream.reason, examples, stream.bad_rows)


class TableItems(Sequence):
    """Rows `indices` of a token table, as Encoded items, read on demand from the memory map."""

    def __init__(self, table: TokenTable, indices: np.ndarray):
        self.table, self.indices = table, np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self.table.item(int(j)) for j in self.indices[i]]
        return self.table.item(int(self.indices[i]))

    def lengths(self) -> np.ndarray:
        return self.table.lengths[self.indices]

    def trained(self) -> int:
        return int(self.table.trained[self.indices].sum())


@dataclass
class EncodedSet:
    items: Sequence[Encoded]
    truncated: int = 0
    dropped_too_long: int = 0
    dropped_no_target: int = 0
    notes: list[str] = field(default_factory=list)
    dropped_empty_answer: int = 0        # chat / completion examples whose answers are all blank

    @property
    def input_ids(self) -> list[list[int]]:
        return [e.input_ids for e in self.items]

    @property
    def tokens(self) -> int:
        if isinstance(self.items, TableItems):
            return int(self.items.lengths().sum())
        return sum(len(e.input_ids) for e in self.items)

    @property
    def trained_tokens(self) -> int:
        if isinstance(self.items, TableItems):
            return self.items.trained()
        return sum(e.trained_tokens for e in self.items)


def encode_examples(examples: list[Example], tokenizer, data_cfg, seq_len: int, processor=None,
                    source: str = "the data") -> EncodedSet:
    """Examples in memory as token ids and labels; examples with images through a vision-language
    `processor` (refused, by line, without one)."""
    out = EncodedSet(items=[])
    if any(e.is_chat for e in examples) and not has_chat_template(tokenizer):
        out.notes.append(FALLBACK_NOTE)
    images = None
    if processor is not None and any(e.images for e in examples):
        from lorastudio.core.engine.vision.encoding import ImageEncoder
        images = ImageEncoder(processor, getattr(data_cfg, "max_image_pixels", 0))
    for ex in examples:
        status, fitted = encode_with_images(ex, tokenizer, data_cfg.train_on, seq_len, data_cfg.too_long, images,
                                            source)
        if status == TOO_LONG:
            out.dropped_too_long += 1
        elif status == NO_TARGET:
            out.dropped_no_target += 1
        elif status == EMPTY_ANSWER:
            out.dropped_empty_answer += 1
        else:
            out.truncated += fitted.truncated
            out.items.append(fitted)
    return out


# The held-out set that validation_split takes is bounded (data.max_validation_examples, 512 by
# default, and this many tokens): 512 examples give a mean loss whose standard error is ~4 % of the
# per-example spread — enough to compare steps and runs — while 40,000 (10 % of a 400,000-row file)
# took a CPU 8+ minutes per evaluation. 128 Ki tokens is ~25 s of forward passes for a 135M model on
# a 2-core CPU and well under a second on a GPU. A validation_path file is evaluated whole.
EVAL_TOKEN_CAP = 131_072


def cap_tokens(data: EncodedSet, cap: int) -> EncodedSet:
    """The first examples of `data` (file order) whose tokens add up to at most `cap`; at least one."""
    lengths = data.items.lengths() if isinstance(data.items, TableItems) else \
        np.asarray([len(e.input_ids) for e in data.items], dtype=np.int64)
    keep = max(1, int(np.searchsorted(np.cumsum(lengths), cap, side="right")))
    if keep >= len(lengths):
        return data
    items = TableItems(data.items.table, data.items.indices[:keep]) if isinstance(data.items, TableItems) \
        else list(data.items[:keep])
    return EncodedSet(items, data.truncated, data.dropped_too_long, data.dropped_no_target, list(data.notes),
                      data.dropped_empty_answer)


def table_set(table: TokenTable, indices) -> EncodedSet:
    """The usable examples among rows `indices` of a token table, with the counts of the rest."""
    idx = np.asarray(indices, dtype=np.int64)
    status = table.status[idx]
    ok = idx[status == OK]
    return EncodedSet(items=TableItems(table, ok), truncated=int(table.truncated[ok].sum()),
                      dropped_too_long=int((status == TOO_LONG).sum()),
                      dropped_no_target=int((status == NO_TARGET).sum()), notes=list(table.meta.get("notes", [])),
                      dropped_empty_answer=int((status == EMPTY_ANSWER).sum()))


class MicroBatches:
    """Micro-batch k of the whole run: epoch k // per_epoch, position k % per_epoch.
    `row_budget` > 0 packs each micro-batch into rows of at most that many tokens."""

    def __init__(self, data: EncodedSet, batch_size: int, pad_id: int, seed: int, row_budget: int = 0,
                 images: Callable | None = None):
        if not len(data.items):
            raise DataError("no training examples left after tokenization",
                            "add examples with at least two tokens each")
        self.data, self.batch_size, self.pad_id, self.seed = data, batch_size, pad_id, seed
        self.row_budget = row_budget
        self.images = images        # a batch's image tensors (core/engine/vision/encoding.ImageBatcher), or None
        self.per_epoch = math.ceil(len(data.items) / batch_size)
        self._order_cache: dict[int, list[int]] = {}

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._order_cache:
            order = list(range(len(self.data.items)))
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
            self._order_cache = {epoch: order}
        return self._order_cache[epoch]

    def indices(self, k: int) -> list[int]:
        epoch, pos = divmod(k, self.per_epoch)
        return self._order(epoch)[pos * self.batch_size:(pos + 1) * self.batch_size]

    def batch(self, k: int) -> dict[str, torch.Tensor]:
        return self.collate([self.data.items[i] for i in self.indices(k)])

    def collate(self, rows: list[Encoded]) -> dict[str, torch.Tensor]:
        if self.row_budget:
            return packing.collate_packed(rows, self.pad_id, self.row_budget)
        batch = collate(rows, self.pad_id)
        if self.images is not None:
            batch.update(self.images(rows, batch["input_ids"]))
        return batch

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
    """Tokens that contribute to the loss: labels are shifted by one inside the model (a packed
    batch's first token of every example is -100 already)."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def count_real_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Tokens that are not padding (what tokens/s counts)."""
    if isinstance(batch, packing.PackedBatch):
        return batch.real_tokens
    return int(batch["attention_mask"].sum())


@dataclass
class PreparedData:
    train: MicroBatches
    validation: EncodedSet | None
    train_set: EncodedSet
    table: TokenTable
    packing: str = "off"               # on | off | fallback
    packing_note: str = ""
    heldout: dict = field(default_factory=dict)     # the held-out set's caps (validation_split only)

    @property
    def examples(self) -> int:
        return len(self.train_set.items)

    @property
    def validation_examples(self) -> int:
        return len(self.validation.items) if self.validation else 0

    def collate(self, rows: list[Encoded]) -> dict[str, torch.Tensor]:
        """A batch of these rows the way training batches are made (packed or padded)."""
        return self.train.collate(rows)

    def summary(self) -> dict:
        t, meta, heldout = self.train_set, self.table.meta, self.heldout_summary()
        notes = t.notes + ([heldout["validation_note"]] if "validation_note" in heldout else [])
        return {"format": meta["format"], "reason": meta["reason"], "examples": self.examples,
                "validation_examples": self.validation_examples, "tokens": t.tokens,
                "trained_tokens": t.trained_tokens, "truncated": t.truncated,
                "dropped_too_long": t.dropped_too_long, "dropped_no_target": t.dropped_no_target,
                "dropped_empty_answer": t.dropped_empty_answer,
                "bad_rows": meta["bad_rows"], "notes": notes, "source": meta["source"],
                "cache_hit": self.table.cache_hit, "cache": str(self.table.path),
                "packing": self.packing, "packing_note": self.packing_note, **heldout,
                **({"images": len(meta["images"])} if self.table.has_images else {})}

    def heldout_summary(self) -> dict:
        """The held-out set's caps and, when they bound it, a note saying so (the `data` event)."""
        if not self.heldout or self.validation is None:
            return {}
        v, h = self.validation, self.heldout
        fields = {**h, "validation_tokens": v.tokens}
        if h["validation_uncapped"] > len(v.items):
            fields["validation_note"] = (
                f"held out {len(v.items):,} examples ({v.tokens:,} tokens) for evaluation, not the "
                f"{h['validation_uncapped']:,} that validation_split would take: at most "
                f"{h['validation_cap_examples']:,} examples (data.max_validation_examples; 0 lifts it) and "
                f"{h['validation_cap_tokens']:,} tokens, so an evaluation stays short")
        return fields


def pad_id_of(tokenizer) -> int:
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise DataError("the tokenizer has neither a pad nor an end-of-sequence token",
                        "use a model whose tokenizer defines eos_token")
    return pad_id


def prepare_data(data_cfg, tokenizer, seq_len: int, batch_size: int, seed: int, model=None,
                 progress: Callable[[float | None, str], None] = lambda f, m: None,
                 log: Callable[[str], None] = lambda m: None, processor=None) -> PreparedData:
    """Token tables of data.path (and data.validation_path), the split, and the micro-batches;
    with `model` and data.packing, packed batches if the model keeps packed examples apart; with a
    vision-language `processor`, examples with images and their image tensors (never packed)."""
    table = load_or_build(data_cfg.path, data_cfg, tokenizer, seq_len, progress, log, processor)
    heldout: dict = {}
    if data_cfg.validation_path:
        train_idx = np.arange(len(table))
        vtable = load_or_build(data_cfg.validation_path, data_cfg, tokenizer, seq_len, progress, log, processor)
        val_set = table_set(vtable, np.arange(len(vtable)))
    else:
        cap = getattr(data_cfg, "max_validation_examples", 0)
        held = np.asarray(validation_indices(len(table), data_cfg.validation_split, seed, cap), dtype=np.int64)
        keep = np.ones(len(table), dtype=bool)
        keep[held] = False
        train_idx = np.flatnonzero(keep)
        val_set = table_set(table, held) if len(held) else None
        uncapped = held_out_count(len(table), data_cfg.validation_split)
        if val_set is not None:
            val_set = cap_tokens(val_set, EVAL_TOKEN_CAP)
            heldout = {"validation_uncapped": uncapped, "validation_cap_examples": cap,
                       "validation_cap_tokens": EVAL_TOKEN_CAP}
    train_set = table_set(table, train_idx)
    if not len(train_set.items):
        empty = train_set.dropped_empty_answer
        if empty and not (train_set.dropped_no_target or train_set.dropped_too_long):
            raise DataError(f"{data_cfg.path}: no example has a token to train on: the assistant answer "
                            f"(completion) of every example is empty ({int((table.status == EMPTY_ANSWER).sum()):,} "
                            f"of {len(table):,}), so training would teach nothing",
                            "fill in the assistant / completion text (the answers are what the model learns "
                            "to write), or choose another file")
        why = f"{empty} had an empty assistant answer, " if empty else ""
        raise DataError(f"{data_cfg.path}: no example has a token to train on ({why}"
                        f"{train_set.dropped_no_target} had none left after masking, "
                        f"{train_set.dropped_too_long} were longer than seq_len={seq_len})",
                        "check that examples have assistant / completion text, raise training.seq_len, "
                        "or set data.train_on: all")
    if val_set is not None and not len(val_set.items):
        val_set = None
    budget, mode, note = 0, "off", "data.packing is off: batches are padded to their longest example"
    images = None
    if table.has_images:
        from lorastudio.core.engine.vision.encoding import ImageBatcher
        images = ImageBatcher(processor, getattr(data_cfg, "max_image_pixels", 0), table.meta["source"])
    if getattr(data_cfg, "packing", False) and images is not None:
        mode, note = "fallback", ("examples with images are padded, not packed: a vision-language model places "
                                  "image features and positions per sequence, which packing would mix up")
    elif getattr(data_cfg, "packing", False) and model is not None:
        budget, mode, note = packing.choose(model, seq_len, batch_size)
    train = MicroBatches(train_set, batch_size, pad_id_of(tokenizer), seed, row_budget=budget, images=images)
    return PreparedData(train=train, validation=val_set, train_set=train_set, table=table,
                        packing=mode, packing_note=note, heldout=heldout)
