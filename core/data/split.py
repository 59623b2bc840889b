"""The hold-out split: which examples train and which validate. Torch-free, so the trainer, the
playground's held-out prompts and eval all draw the very same line."""
from __future__ import annotations

import random
from typing import Sequence, TypeVar

T = TypeVar("T")


def held_out_count(n: int, fraction: float, cap: int = 0) -> int:
    """How many of n examples `fraction` holds out, at most `cap` (0: no cap; the rest train)."""
    if fraction <= 0 or n < 2:
        return 0
    count = min(n - 1, max(1, round(fraction * n)))
    return min(count, cap) if cap > 0 else count


def validation_indices(n: int, fraction: float, seed: int, cap: int = 0) -> list[int]:
    """The indices held out of n examples (sorted); at least one when fraction > 0 and n ≥ 2, at
    most `cap` (data.max_validation_examples; 0: no cap)."""
    count = held_out_count(n, fraction, cap)
    if not count:
        return []
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return sorted(order[:count])


def split(examples: Sequence[T], fraction: float, seed: int, cap: int = 0) -> tuple[list[T], list[T]]:
    """(train, validation), each in file order."""
    held = set(validation_indices(len(examples), fraction, seed, cap))
    return ([x for i, x in enumerate(examples) if i not in held],
            [x for i, x in enumerate(examples) if i in held])
