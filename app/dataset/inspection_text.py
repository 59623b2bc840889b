"""The inspector's report in words, for the Dataset panel. Qt-free, so it is tested without a window."""
from __future__ import annotations


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def stat_rows(r: dict) -> list[tuple[str, str]]:
    """(key, value) lines: examples, tokens and the trained share, lengths, what seq_len did."""
    pct = 100 * r["trained_tokens"] / r["tokens"] if r["tokens"] else 0.0
    L = r["lengths"]
    cut = [f"{r['truncated']:,} truncated", f"{r['dropped_too_long']:,} dropped as too long"]
    if r["dropped_no_target"]:
        cut.append(f"{r['dropped_no_target']:,} dropped with nothing to train")
    return [
        ("Examples", f"{r['examples']:,} read · {r['usable_examples']:,} usable"
                     + (f" · {plural(r['images'], 'image')}" if r.get("images") else "")),
        ("Tokens", f"{r['tokens']:,} in total · {r['trained_tokens']:,} trained ({pct:.1f} %)"),
        ("Lengths", f"min {L['min']:,} · median {L['p50']:,} · p90 {L['p90']:,} · p99 {L['p99']:,} · "
                    f"max {L['max']:,}"),
        (f"At {r['seq_len']:,} tokens", " · ".join(cut)),
        ("Template", "the model's chat template" if r["chat_template"] == "model"
         else "fallback (the model has none)"),
    ]


def bad_rows_text(bad_rows: list[dict], shown: int = 5) -> str:
    """'1 bad row skipped: line 2 (not valid JSON …)'."""
    if not bad_rows:
        return ""
    items = "; ".join(f"{b['where']} ({b['problem']})" for b in bad_rows[:shown])
    more = f"; and {len(bad_rows) - shown:,} more" if len(bad_rows) > shown else ""
    return f"{plural(len(bad_rows), 'bad row')} skipped: {items}{more}"


def example_caption(ex: dict) -> str:
    """'line 3 · truncated · 64 tokens, 12 trained' (and where its image tokens sit)."""
    return (f"{ex['where']} · {ex['status']} · {plural(ex['total'], 'token')}, {ex['trained']:,} trained"
            + image_caption(ex))


def image_spans(positions: list[int]) -> list[tuple[int, int]]:
    """The runs of consecutive image-token positions as (first, last) pairs, in order."""
    spans: list[tuple[int, int]] = []
    for p in sorted(positions):
        if spans and p == spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], p)
        else:
            spans.append((p, p))
    return spans


def image_caption(ex: dict) -> str:
    """' · 1 image: 64 image tokens at 5–68, never trained' for an example with images, else ''."""
    positions = ex.get("image_tokens") or []
    if not positions and not ex.get("images"):
        return ""
    where = ", ".join(f"{a + 1}–{b + 1}" if b > a else f"{a + 1}" for a, b in image_spans(positions))
    return (f" · {plural(len(ex.get('images') or []), 'image')}: {plural(len(positions), 'image token')}"
            + (f" at {where}" if where else "") + ", never trained")


def token_segments(tokens: list[dict]) -> list[tuple[str, bool]]:
    """The example's tokens as (text, trained) pairs, one per token, ready to draw."""
    return [(t["text"], bool(t["trained"])) for t in tokens]


# Config keys in core's messages, as the Dataset panel names them (the CLI keeps the keys).
WINDOW_WORDS = (("data.on_bad_rows: skip", "Bad rows: skip"), ("data.train_on: all", "Train on: all"),
                ("data.too_long: drop", "Too long: drop"), ("data.columns", "Map columns"),
                ("data.format", "Format"), ("data.on_bad_rows", "Bad rows"), ("data.train_on", "Train on"),
                ("data.too_long", "Too long"), ("data.validation_path", "Validation"),
                ("data.validation_split", "Validation"), ("data.packing", "Pack examples"),
                ("training.seq_len", "Sequence length (Training)"))


def window_words(text: str) -> str:
    """A message about data in the words the window shows ("the Format or Map columns box")."""
    for key, label in WINDOW_WORDS:
        text = text.replace(key, label)
    return text


def error_text(message: str, hint: str) -> str:
    """'d.jsonl, line 2: not valid JSON (…)' + a line 'Fix or delete that line …', in the window's words."""
    message, hint = window_words(message), window_words(hint)
    if not hint:
        return message
    return f"{message}\n{hint[0].upper()}{hint[1:]}" + ("" if hint.endswith((".", "!", "?", ")")) else ".")
