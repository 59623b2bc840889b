"""Padding-free batches: the examples of a micro-batch laid end to end, attention kept inside each.

A packed micro-batch has no attention_mask. Each row holds several examples back to back;
`position_ids` restart at 0 where an example starts, which is how transformers (5.x) recognises
packed sequences: its mask builder (masking_utils.find_packed_sequence_indices) turns the restarts
into a block-diagonal causal mask for sdpa, eager and flex attention, and its flash-attention path
turns them into varlen cu_seqlens (batch of one row only). The first token of each example gets
label -100, so it is never predicted from the previous example's last token; the loss is then the
very same sum over the very same trained tokens as with padding.

Rows: for flash attention one row (the varlen kernels cost what the tokens cost); for the others
rows of at most `seq_len` tokens, filled first-fit by decreasing length, because their attention
costs the row's width squared whatever the mask. Whether a loaded model honours packed positions
is measured, not assumed (`probe`): a model that lets attention cross the boundary falls back to
padding, and the journal says so.
"""
from __future__ import annotations

import torch

from lorastudio.core.data.chat_masks import IGNORE_INDEX, Encoded


class PackedBatch(dict):
    """The model's inputs; `real_tokens` counts the tokens that are not padding."""
    real_tokens: int = 0


def fill_rows(lengths: list[int], budget: int) -> list[list[int]]:
    """Indices into `lengths` grouped into rows of at most `budget` tokens (first fit, longest first).
    An example longer than the budget gets a row of its own."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        n = lengths[i]
        for r, left in enumerate(room):
            if n <= left:
                rows[r].append(i)
                room[r] -= n
                break
        else:
            rows.append([i])
            room.append(budget - n)
    return rows


def collate_packed(items: list[Encoded], pad_id: int, row_budget: int) -> PackedBatch:
    rows = fill_rows([len(e.input_ids) for e in items], row_budget)
    width = max(sum(len(items[i].input_ids) for i in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            e = items[i]
            n = len(e.input_ids)
            ids[r, at:at + n] = torch.tensor(e.input_ids, dtype=torch.long)
            labels[r, at + 1:at + n] = torch.tensor(e.labels[1:], dtype=torch.long)
            positions[r, at:at + n] = torch.arange(n)
            at += n
        positions[r, at:] = torch.arange(width - at)      # the tail is a block of its own
    batch = PackedBatch(input_ids=ids, position_ids=positions, labels=labels)
    batch.real_tokens = sum(len(e.input_ids) for e in items)
    return batch


def row_budget(model, seq_len: int, batch_size: int) -> int:
    """One row for flash attention's varlen path; rows of seq_len for everything else."""
    impl = str(getattr(getattr(model, "config", None), "_attn_implementation", "") or "")
    return seq_len * batch_size if impl.startswith("flash") else seq_len


@torch.no_grad()
def probe(model, device) -> tuple[bool, str]:
    """(exact, why): does this model keep attention inside each packed example?

    Two short fixed sequences A and B: B's logits packed after A (positions restarting) must match
    B alone, to within a tenth of how much they move when B simply follows A. Deterministic ids and
    eval mode: no random number is drawn, so resumed runs stay exact."""
    vocab = int(getattr(getattr(model, "config", None), "vocab_size", 0) or 0)
    if vocab < 8:
        return False, "the model's vocabulary size is unknown"
    a = [3 + (7 * i) % (vocab - 3) for i in range(12)]
    b = [3 + (11 * i + 5) % (vocab - 3) for i in range(10)]
    was_training = model.training
    model.eval()
    try:
        alone = model(input_ids=torch.tensor([b], device=device), use_cache=False).logits[0].float()
        both = torch.tensor([a + b], device=device)
        packed_pos = torch.tensor([list(range(len(a))) + list(range(len(b)))], device=device)
        packed = model(input_ids=both, position_ids=packed_pos, use_cache=False).logits[0, len(a):].float()
        crossed = model(input_ids=both, use_cache=False).logits[0, len(a):].float()
    except Exception as exc:            # a model whose forward refuses position_ids
        return False, f"the model refused packed inputs ({type(exc).__name__}: {str(exc)[:120]})"
    finally:
        model.train(was_training)
    leak = float((packed - alone).abs().max())
    signal = float((crossed - alone).abs().max())
    if signal > 0 and leak <= 0.1 * signal:
        return True, f"attention stays inside each example (difference {leak:.2g} vs {signal:.2g})"
    return False, (f"this model's attention ({getattr(model.config, '_attn_implementation', '?')}) crosses "
                   f"example boundaries when packed (difference {leak:.2g} vs {signal:.2g})")


def choose(model, seq_len: int, batch_size: int) -> tuple[int, str, str]:
    """(row budget, mode, why): budget 0 means padded batches. Packing needs the model to run
    without a key/value cache (transformers only reads packed positions when there is none)."""
    config = getattr(model, "config", None)
    if config is None:
        return 0, "fallback", "the model has no config to check"
    device = next(model.parameters()).device
    use_cache = getattr(config, "use_cache", None)
    config.use_cache = False
    exact, why = probe(model, device)
    if not exact:
        config.use_cache = use_cache
        return 0, "fallback", why
    return row_budget(model, seq_len, batch_size), "on", why
