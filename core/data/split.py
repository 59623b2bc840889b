"""The hold-out split: which examples train and which validate. Torch-free, so the trainer, the
playground's held-out prompts and eval all draw the very same line."""
from __future__ import annotations

import random
from typing import Sequence, TypeVar

T = TypeVar("T")


def validation_indices(n: int, fraction: float, seed: int) -> list[int]:
    """The indices held out of n examples (sorted); at least one when fraction > 0 and n ≥ 2."""
    if fraction <= 0 or n < 2:
        return []
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return sorted(order[:min(n - 1, max(1, round(fraction * n)))])


def split(examples: Sequence[T], fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """(train, validation), each in file order."""
    held = set(validation_indices(len(examples), fraction, seed))
    return ([x for i, x in enumerate(examples) if i not in held],
            [x for i, x in enumerate(examples) if i in held])
