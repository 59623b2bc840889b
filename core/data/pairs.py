"""Preference pairs: a prompt, the chosen answer and the rejected one. Torch-free.

A row is a pair when it has a chosen and a rejected side; the common spellings of the three fields
are recognised (SIDE_NAMES, tried in order), and anything else is named with a column mapping
(data.columns: {prompt: question, chosen: good, rejected: bad}). Each field is text or a list of
chat messages ({"role", "content"}, or ShareGPT's {"from", "value"}):

  {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Seven."}
  {"prompt": [{"role": "system", ...}, {"role": "user", ...}], "chosen": "...", "rejected": "..."}
  {"chosen": [user, assistant], "rejected": [user, assistant]}      the shared start is the prompt
  {"prompt": "...", "chosen": [user, assistant], ...}                 a side repeating the prompt

Both sides go through the model's chat template (chat_masks.render_chat) as prompt + answer; only
the answer's assistant turns are trained (a multi-turn prompt's earlier assistant turns are not).
The window reads this module (detection, errors) without chat_masks, imported where tokens are made.
A pair whose prompt alone fills seq_len has nothing left to compare and is dropped and counted;
longer answers are truncated (or the pair dropped, with data.too_long: drop).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lorastudio.core.data.files import BadRow, DataError, Row, iter_rows
from lorastudio.core.data.formats import (CHAT_ROLES, DETECT_ROWS, SHAREGPT_ROLES, SIDE_NAMES, apply_columns,
                                         is_pair_row, side_field)

if TYPE_CHECKING:
    from lorastudio.core.data.chat_masks import Encoded

PAIR_FORMAT = "pairs"
PAIR_TITLE = "preference pairs"
PAIR_ROLES = ("prompt", "chosen", "rejected", "system")       # data.columns keys for pairs
PAIR_HINT = ("give each row prompt, chosen and rejected fields, or map yours with data.columns "
             "(e.g. {prompt: question, chosen: good, rejected: bad})")


@dataclass
class PairExample:
    where: str
    prompt: list[dict]              # chat messages before the answers
    chosen: list[dict]              # the preferred answer's turns (assistant)
    rejected: list[dict]


@dataclass
class EncodedPair:
    where: str
    chosen: Encoded
    rejected: Encoded
    truncated: bool = False

    @property
    def trained_tokens(self) -> int:
        return self.chosen.trained_tokens + self.rejected.trained_tokens


@dataclass
class LoadedPairs:
    source: str
    format: str
    reason: str
    pairs: list[PairExample]
    bad_rows: list[BadRow]


@dataclass
class PairSet:
    items: list[EncodedPair]
    truncated: int = 0
    dropped_too_long: int = 0
    dropped_prompt_too_long: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def input_ids(self) -> list[list[int]]:             # one entry a pair (MicroBatches' length)
        return [p.chosen.input_ids for p in self.items]

    @property
    def tokens(self) -> int:
        return sum(len(p.chosen.input_ids) + len(p.rejected.input_ids) for p in self.items)

    @property
    def trained_tokens(self) -> int:
        return sum(p.trained_tokens for p in self.items)


# ---- recognising and reading pairs ----------------------------------------------------------
def looks_like_pairs(rows: list[Row]) -> bool:
    """True when the first row has a chosen and a rejected side (what auto-detection goes by)."""
    return bool(rows) and is_pair_row(rows[0].value)


def detect_pairs(rows: list[Row], source: str) -> str:
    """The reason the rows are pairs; a located DataError when they are not."""
    if not rows:
        raise DataError(f"{source}: no examples found", "the file holds no rows")
    for row in rows[:DETECT_ROWS]:
        if not is_pair_row(row.value):
            keys = ", ".join(sorted(row.value)) or "(none)"
            missing = [s for s in ("chosen", "rejected") if side_field(row.value, s) is None]
            raise DataError(f"{source}, {row.where}: not a preference pair — no {' or '.join(missing)} "
                            f"field (fields: {keys})", PAIR_HINT)
    first = rows[0].value
    names = [side_field(first, s) for s in ("prompt", "chosen", "rejected")]
    shown = "', '".join(n for n in names if n)
    return f"{PAIR_TITLE}: fields '{shown}' in all of the first {min(len(rows), DETECT_ROWS)} rows"


def map_pair_columns(value: dict, columns: dict[str, str], where: str, source: str) -> dict:
    """The row with the user's columns renamed to ours (unmapped fields stay as they are)."""
    return {**value, **apply_columns(value, columns, where, source)}


def _messages(items: list, name: str, where: str, source: str) -> list[dict]:
    out = []
    for i, m in enumerate(items, start=1):
        keys = next(((r, t) for r, t in (("role", "content"), ("from", "value")) if isinstance(m, dict) and r in m),
                    None)
        if keys is None or not isinstance(m.get(keys[1]), str):
            raise DataError(f"{source}, {where}: {name}[{i}] is not a chat message with 'role' and a text "
                            f"'content'", "fix that message")
        role = (SHAREGPT_ROLES if keys[0] == "from" else {r: r for r in CHAT_ROLES}).get(m[keys[0]])
        if role is None:
            raise DataError(f"{source}, {where}: {name}[{i}] has unknown role '{m[keys[0]]}'",
                            f"allowed: {', '.join(CHAT_ROLES)}")
        out.append({"role": role, "content": m[keys[1]]})
    return out


def _side(value: dict, side: str, where: str, source: str, default_role: str) -> list[dict] | None:
    name = side_field(value, side)
    item = value.get(name) if name else None
    if item is None or (isinstance(item, str) and not item.strip()) or item == []:
        return None
    if isinstance(item, str):
        return [{"role": default_role, "content": item}]
    if isinstance(item, list):
        return _messages(item, name, where, source)
    if isinstance(item, dict) and ("role" in item or "from" in item):
        return _messages([item], name, where, source)
    raise DataError(f"{source}, {where}: field '{name}' must be text or a list of chat messages, "
                    f"found {type(item).__name__}", "fix that row, or set data.on_bad_rows: skip")


def _missing(side: str, where: str, source: str, value: dict) -> DataError:
    names = " / ".join(SIDE_NAMES[side][:3])
    return DataError(f"{source}, {where}: the {side} side is missing or empty (looked for {names}; "
                     f"this row has {', '.join(sorted(value)) or 'no fields'})",
                     "give every pair a prompt, a chosen and a rejected answer, or set data.on_bad_rows: skip")


def _strip_prompt(turns: list[dict], prompt: list[dict]) -> list[dict]:
    """A side that repeats the prompt (full conversations) keeps only what follows it."""
    if prompt and turns[:len(prompt)] == prompt:
        return turns[len(prompt):]
    return turns


def _shared_start(a: list[dict], b: list[dict]) -> int:
    """How many leading messages the two conversations share (their common prompt)."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def to_pair(row: Row, source: str) -> PairExample:
    """One row as a pair; a DataError naming the row and the field for each bad input."""
    v, where = row.value, row.where
    prompt = _side(v, "prompt", where, source, "user") or []
    chosen = _side(v, "chosen", where, source, "assistant")
    rejected = _side(v, "rejected", where, source, "assistant")
    for side, turns in (("chosen", chosen), ("rejected", rejected)):
        if turns is None:
            raise _missing(side, where, source, v)
    if not prompt:
        n = _shared_start(chosen, rejected)
        if n == 0:
            raise _missing("prompt", where, source, v)
        prompt, chosen, rejected = chosen[:n], chosen[n:], rejected[n:]
    else:
        chosen, rejected = _strip_prompt(chosen, prompt), _strip_prompt(rejected, prompt)
    system = _side(v, "system", where, source, "system") if side_field(v, "system") else None
    if system and not any(m["role"] == "system" for m in prompt):
        prompt = [{"role": "system", "content": system[0]["content"]}] + prompt
    for side, turns in (("chosen", chosen), ("rejected", rejected)):
        if not any(m["role"] == "assistant" and m["content"].strip() for m in turns):
            raise DataError(f"{source}, {where}: the {side} side has no answer after the prompt",
                            "each side needs the assistant's answer to the prompt")
    if chosen == rejected:
        raise DataError(f"{source}, {where}: chosen and rejected are identical, so there is nothing to prefer",
                        "fix the pair (the rejected answer must differ), or remove the row")
    return PairExample(where, prompt, chosen, rejected)


def load_pairs(path: Path, data_cfg) -> LoadedPairs:
    """Read every pair of a file, following data.on_bad_rows and data.columns."""
    source = str(path)
    if data_cfg.format not in ("auto", PAIR_FORMAT):
        raise DataError(f"data.format: '{data_cfg.format}' is a supervised format, but preference training "
                        "reads pairs", "set data.format: auto (pairs are recognised by their fields)")
    bad: list[BadRow] | None = [] if data_cfg.on_bad_rows == "skip" else None
    rows = list(iter_rows(Path(path), bad, data_cfg.text_blocks))
    if not rows:
        raise DataError(f"{source}: no valid pairs" + (f" ({len(bad)} bad rows skipped)" if bad else ""),
                        "the file needs at least one valid pair")
    columns = dict(data_cfg.columns or {})
    if columns:
        rows = [Row(r.where, map_pair_columns(r.value, columns, r.where, source)) for r in rows]
    reason = detect_pairs(rows, source)
    if columns:
        reason += f" (columns mapped: {', '.join(f'{k} <- {v}' for k, v in columns.items())})"
    pairs = []
    for row in rows:
        try:
            pairs.append(to_pair(row, source))
        except DataError as exc:
            if bad is None:
                raise
            bad.append(BadRow(row.where, exc.message.split(": ", 1)[-1]))
    if not pairs:
        raise DataError(f"{source}: every pair was bad ({len(bad or [])} skipped)", "fix the file")
    return LoadedPairs(source, PAIR_FORMAT, reason, pairs, bad or [])


# ---- tokens and loss masks -------------------------------------------------------------------
def encode_side(prompt: list[dict], answer: list[dict], tokenizer, where: str) -> Encoded:
    """prompt + answer through the chat template; labels only on the answer's assistant turns."""
    from lorastudio.core.data.chat_masks import IGNORE_INDEX, Encoded, render_chat
    messages = prompt + answer
    text, spans, templated = render_chat(messages, tokenizer)
    spans = spans[sum(1 for m in prompt if m["role"] == "assistant"):]
    enc = tokenizer(text, add_special_tokens=not templated, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    labels = [tok if end > start and any(s <= start < e for s, e in spans) else IGNORE_INDEX
              for tok, (start, end) in zip(ids, enc["offset_mapping"])]
    return Encoded(where, ids, labels)


def fit_side(enc: Encoded, seq_len: int) -> Encoded:
    from lorastudio.core.data.chat_masks import Encoded
    if len(enc.input_ids) <= seq_len:
        return enc
    return Encoded(enc.where, enc.input_ids[:seq_len], enc.labels[:seq_len], truncated=True)


def encode_pair(pair: PairExample, tokenizer) -> EncodedPair:
    from lorastudio.core.data.chat_masks import TemplateError
    try:
        chosen = encode_side(pair.prompt, pair.chosen, tokenizer, pair.where)
        rejected = encode_side(pair.prompt, pair.rejected, tokenizer, pair.where)
    except TemplateError as exc:
        raise DataError(f"{pair.where}: {exc}", "use a model with a standard chat template") from None
    return EncodedPair(pair.where, chosen, rejected)


def fit_pair(enc: EncodedPair, seq_len: int, too_long: str) -> tuple[EncodedPair | None, str]:
    """(the pair within seq_len, "") or (None, why it was dropped: 'too_long' | 'prompt')."""
    longest = max(len(enc.chosen.input_ids), len(enc.rejected.input_ids))
    if longest <= seq_len:
        return enc, ""
    if too_long == "drop":
        return None, "too_long"
    chosen, rejected = fit_side(enc.chosen, seq_len), fit_side(enc.rejected, seq_len)
    if chosen.trained_tokens == 0 or rejected.trained_tokens == 0:
        return None, "prompt"
    return EncodedPair(enc.where, chosen, rejected, truncated=True), ""


def encode_pairs(pairs: list[PairExample], tokenizer, seq_len: int, too_long: str) -> PairSet:
    from lorastudio.core.data.chat_masks import FALLBACK_NOTE, has_chat_template
    out = PairSet(items=[])
    if pairs and not has_chat_template(tokenizer):
        out.notes.append(FALLBACK_NOTE)
    for pair in pairs:
        fitted, dropped = fit_pair(encode_pair(pair, tokenizer), seq_len, too_long)
        if dropped == "too_long":
            out.dropped_too_long += 1
        elif dropped == "prompt":
            out.dropped_prompt_too_long += 1
        else:
            out.truncated += fitted.truncated
            out.items.append(fitted)
    if out.dropped_prompt_too_long:
        out.notes.append(f"{out.dropped_prompt_too_long} pairs were dropped: their prompt fills "
                         f"seq_len={seq_len} tokens, so no answer token was left to compare "
                         "(raise training.seq_len or shorten the prompts)")
    return out


def pair_summary(loaded: LoadedPairs, train: PairSet, validation_pairs: int) -> dict:
    """The `data` event's fields for pairs (the same keys as supervised data, counted in pairs)."""
    return {"format": loaded.format, "reason": loaded.reason, "examples": len(train.items),
            "validation_examples": validation_pairs, "tokens": train.tokens,
            "trained_tokens": train.trained_tokens, "truncated": train.truncated,
            "dropped_too_long": train.dropped_too_long, "dropped_no_target": 0,
            "dropped_prompt_too_long": train.dropped_prompt_too_long,
            "bad_rows": [{"where": b.where, "problem": b.problem} for b in loaded.bad_rows],
            "notes": train.notes}


def side_tokens(enc: Encoded, tokenizer) -> list[dict]:
    """Each token of a side with whether it is trained (the inspector's highlighting)."""
    from lorastudio.core.data.chat_masks import IGNORE_INDEX
    return [{"id": i, "text": tokenizer.decode([i]), "trained": lab != IGNORE_INDEX}
            for i, lab in zip(enc.input_ids, enc.labels)]


def check_pair_rows(rows: list[Row], source: str, columns: dict[str, str], skip_bad: bool) -> tuple[str, list[BadRow]]:
    """(reason, rows refused) for previewed pair rows, as the trainer will read them (the Dataset panel)."""
    if columns:
        rows = [Row(r.where, map_pair_columns(r.value, columns, r.where, source)) for r in rows]
    reason = detect_pairs(rows, source)
    bad = []
    for row in rows:
        try:
            to_pair(row, source)
        except DataError as exc:
            if not skip_bad:
                raise
            bad.append(BadRow(row.where, exc.message.split(": ", 1)[-1]))
    return reason, bad


def is_pair_file(path: Path, data_cfg) -> bool:
    """Whether a data file holds pairs (its first row, or the column mapping, names both sides)."""
    if {"chosen", "rejected"} & set(data_cfg.columns or {}):
        return True
    try:
        first = next(iter_rows(Path(path), [], data_cfg.text_blocks), None)
    except DataError:
        return False
    return first is not None and is_pair_row(first.value)


def pair_report(data_cfg, tokenizer, seq_len: int, example: int) -> tuple[dict, list[int]]:
    """The inspector's report for pair data (the keys of a supervised report, counted in pairs,
    plus `pair`: each side's tokens with the trained ones marked), and every side's length."""
    from lorastudio.core.data.chat_masks import has_chat_template
    loaded = load_pairs(Path(data_cfg.path), data_cfg)
    encoded = encode_pairs(loaded.pairs, tokenizer, seq_len, data_cfg.too_long)
    lengths = sorted(len(s.input_ids) for p in encoded.items for s in (p.chosen, p.rejected))
    report = {"file": loaded.source, "format": loaded.format, "reason": loaded.reason,
              "chat_template": "model" if has_chat_template(tokenizer) else "fallback",
              "examples": len(loaded.pairs), "usable_examples": len(encoded.items), "tokens": encoded.tokens,
              "trained_tokens": encoded.trained_tokens, "seq_len": seq_len, "truncated": encoded.truncated,
              "dropped_too_long": encoded.dropped_too_long, "dropped_no_target": encoded.dropped_prompt_too_long,
              "bad_rows": [{"where": b.where, "problem": b.problem} for b in loaded.bad_rows],
              "notes": encoded.notes}
    if not 1 <= example <= len(loaded.pairs):
        raise DataError(f"--example {example} is out of range", f"choose 1 to {len(loaded.pairs)}")
    pair = loaded.pairs[example - 1]
    full = encode_pair(pair, tokenizer)
    fitted, dropped = fit_pair(full, seq_len, data_cfg.too_long)
    shown = fitted or full
    sides = {side: {"tokens": side_tokens(enc, tokenizer), "trained": enc.trained_tokens, "total": len(enc.input_ids)}
             for side, enc in (("chosen", shown.chosen), ("rejected", shown.rejected))}
    status = {"too_long": "dropped: longer than seq_len", "prompt": "dropped: the prompt fills seq_len"}.get(
        dropped, "truncated" if shown.truncated else "ok")
    report["example"] = {"index": example, "where": pair.where, "status": status, **sides["chosen"]}
    report["pair"] = sides
    return report, lengths
