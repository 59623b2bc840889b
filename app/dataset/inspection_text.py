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
        ("Examples", f"{r['examples']:,} read · {r['usable_examples']:,} usable"),
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
    """'line 3 · truncated · 64 tokens, 12 trained'."""
    return f"{ex['where']} · {ex['status']} · {plural(ex['total'], 'token')}, {ex['trained']:,} trained"


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
