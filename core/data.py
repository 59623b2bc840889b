"""Training data: read, split, tokenize, and serve micro-batches in a resumable order.

For now: JSONL with a text field (raw text, causal-LM loss on every token). The order of
examples is a pure function of (seed, epoch), so "micro-batch k" names the same examples in an
uninterrupted run and in a resumed one — the data position in a checkpoint is just k.
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

IGNORE_INDEX = -100


class DataError(Exception):
    """Bad training data. The message names the file and the 1-based line; `hint` says what to do."""

    def __init__(self, message: str, hint: str = ""):
        self.message, self.hint = message, hint
        super().__init__(message + (f" — {hint}" if hint else ""))


def read_text_jsonl(path: Path, text_field: str = "text") -> list[str]:
    path = Path(path)
    texts = []
    try:
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}, line {lineno}: not valid JSON ({exc.msg}, column {exc.colno})",
                                    "fix or remove that line; each line must be one JSON object") from None
                if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
                    raise DataError(f"{path}, line {lineno}: no text field '{text_field}'",
                                    f"each line needs {{\"{text_field}\": \"...\"}}, or set data.text_field")
                if row[text_field].strip():
                    texts.append(row[text_field])
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})", "save the file as UTF-8") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror})", "check the path and permissions") from None
    if not texts:
        raise DataError(f"{path}: no examples found", f"the file needs lines like {{\"{text_field}\": \"...\"}}")
    return texts


def split(examples: list, fraction: float, seed: int) -> tuple[list, list]:
    """A seeded hold-out split; at least one validation example when fraction > 0."""
    if fraction <= 0 or len(examples) < 2:
        return list(examples), []
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_val = min(len(examples) - 1, max(1, round(fraction * len(examples))))
    val = sorted(order[:n_val])
    train = sorted(order[n_val:])
    return [examples[i] for i in train], [examples[i] for i in val]


@dataclass
class TokenizedSet:
    input_ids: list[list[int]]
    truncated: int = 0
    tokens: int = field(init=False)

    def __post_init__(self):
        self.tokens = sum(len(x) for x in self.input_ids)


def tokenize_texts(texts: list[str], tokenizer, seq_len: int) -> TokenizedSet:
    """BOS (if the tokenizer adds one) + text + EOS, truncated to seq_len tokens."""
    encoded = tokenizer(texts, add_special_tokens=True)["input_ids"]
    eos = tokenizer.eos_token_id
    out, truncated = [], 0
    for ids in encoded:
        ids = list(ids) + ([eos] if eos is not None and (not ids or ids[-1] != eos) else [])
        if len(ids) > seq_len:
            ids, truncated = ids[:seq_len], truncated + 1
        if len(ids) >= 2:
            out.append(ids)
    return TokenizedSet(out, truncated)


class MicroBatches:
    """Micro-batch k of the whole run: epoch k // per_epoch, position k % per_epoch."""

    def __init__(self, data: TokenizedSet, batch_size: int, pad_id: int, seed: int):
        if not data.input_ids:
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
        return collate([self.data.input_ids[i] for i in self.indices(k)], self.pad_id)

    def epoch_of(self, k: int) -> float:
        return k / self.per_epoch


def collate(rows: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest row; padding is masked from attention and from the loss."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def count_label_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Tokens that contribute to the loss: labels are shifted by one inside the model."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


@dataclass
class PreparedData:
    train: MicroBatches
    validation: TokenizedSet | None
    examples: int
    validation_examples: int


def prepare_data(data_cfg, tokenizer, seq_len: int, batch_size: int, seed: int) -> PreparedData:
    texts = read_text_jsonl(Path(data_cfg.path), data_cfg.text_field)
    train_texts, val_texts = split(texts, data_cfg.validation_split, seed)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise DataError("the tokenizer has neither a pad nor an end-of-sequence token",
                        "use a model whose tokenizer defines eos_token")
    train = MicroBatches(tokenize_texts(train_texts, tokenizer, seq_len), batch_size, pad_id, seed)
    val = tokenize_texts(val_texts, tokenizer, seq_len) if val_texts else None
    return PreparedData(train=train, validation=val, examples=len(train_texts),
                        validation_examples=len(val_texts))
