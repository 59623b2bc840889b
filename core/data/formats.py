"""Recognising what shape the examples have, and bringing every shape to one of two. Torch-free.

Five shapes are recognised from their field names:
  text               {"text": ...}                                  raw text, every token trained
  prompt_completion  {"prompt","completion"} / {"input","output"} / {"question","answer"}
  alpaca             {"instruction", "input"?, "output"}
  messages           {"messages": [{"role": system|user|assistant, "content": ...}]}
  sharegpt           {"conversations": [{"from": system|human|gpt, "value": ...}]}
Anything else is named with a column mapping (data.columns: {our role: their column}); the roles
each format reads are FORMAT_ROLES. All but `text` become chat messages, so instruction data goes
through the model's chat template like chat data does.

This module is the one place the formats are known: the config (data.format, data.columns), the
window's preview and column mapping, and the trainer's reader all take them from here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from lorastudio.core.data import images
from lorastudio.core.data.files import DataError, Row

FORMATS = ("text", "prompt_completion", "alpaca", "messages", "sharegpt")
FORMAT_CHOICES = ("auto",) + FORMATS                     # what data.format accepts
FORMAT_TITLES = {"text": "raw text", "prompt_completion": "prompt / completion", "alpaca": "Alpaca",
                 "messages": "chat messages", "sharegpt": "ShareGPT conversations"}
# Which of our column roles each format reads; the ones in OPTIONAL_ROLES may stay unmapped.
FORMAT_ROLES = {"text": ("text",), "prompt_completion": ("prompt", "completion"),
                "alpaca": ("instruction", "input", "output"), "messages": ("messages",),
                "sharegpt": ("conversations",)}
OPTIONAL_ROLES = frozenset({"input"})
COLUMN_ROLES = tuple(dict.fromkeys(role for fmt in FORMATS for role in FORMAT_ROLES[fmt]))   # data.columns keys
# Names people give their columns, tried in order when guessing a mapping.
SYNONYMS = {"text": ("text", "content", "body", "document", "passage"),
            "prompt": ("prompt", "question", "query", "input", "instruction", "q"),
            "completion": ("completion", "answer", "response", "output", "reply", "a"),
            "instruction": ("instruction", "prompt", "question"), "input": ("input", "context"),
            "output": ("output", "response", "answer", "completion"),
            "messages": ("messages", "conversation", "chat"), "conversations": ("conversations", "conversation")}
PAIRS = (("prompt", "completion"), ("input", "output"), ("question", "answer"))
CHAT_ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                  "assistant": "assistant"}
DETECT_ROWS = 200


@dataclass
class Example:
    where: str
    text: str | None = None                              # raw text
    messages: list[dict] = field(default_factory=list)   # chat: [{"role", "content"}]
    images: list[str] = field(default_factory=list)      # image files, in the order of the turns' IMAGE_MARKERs

    @property
    def is_chat(self) -> bool:
        return self.text is None


def guess_column(role: str, columns: list[str]) -> str:
    """The column most likely to hold `role` ("" if none looks like it)."""
    lower = {c.lower(): c for c in columns}
    return next((lower[name] for name in SYNONYMS.get(role, (role,)) if name in lower), "")


# The sides of a preference pair (core/data/pairs.py) by their common spellings, tried in order: here
# so that supervised detection can tell a pair file apart without importing pairs.
SIDE_NAMES = {"prompt": ("prompt", "question", "instruction", "query", "input", "context"),
              "chosen": ("chosen", "preferred", "accepted", "chosen_response", "response_chosen",
                         "good", "positive", "winner"),
              "rejected": ("rejected", "dispreferred", "rejected_response", "response_rejected",
                           "bad", "negative", "loser"),
              "system": ("system", "system_prompt")}


def side_field(value: dict, side: str) -> str | None:
    """The field of `value` that holds `side` (prompt, chosen, rejected, system), or None."""
    return next((name for name in SIDE_NAMES[side] if name in value), None)


def is_pair_row(value: dict) -> bool:
    return side_field(value, "chosen") is not None and side_field(value, "rejected") is not None


def row_format(value: dict) -> str | None:
    keys = set(value)
    if isinstance(value.get("messages"), list):
        return "messages"
    if isinstance(value.get("conversations"), list):
        return "sharegpt"
    if {"instruction", "output"} <= keys:
        return "alpaca"
    if any({a, b} <= keys for a, b in PAIRS):
        return "prompt_completion"
    if "text" in keys:
        return "text"
    return None


def detect_format(rows: list[Row], source: str) -> tuple[str, str]:
    """(format, reason) from the first rows; a clear DataError for unknown or mixed shapes."""
    if not rows:
        raise DataError(f"{source}: no examples found", "the file holds no rows")
    sample = rows[:DETECT_ROWS]
    first = row_format(sample[0].value)
    if first is None:
        keys = ", ".join(sorted(sample[0].value)) or "(none)"
        if is_pair_row(sample[0].value):
            raise DataError(f"{source}, {sample[0].where}: preference pairs (fields: {keys}), but the run "
                            "trains supervised (training.method: sft)",
                            "set training.method: dpo or orpo to train on pairs (Method on the Train page), "
                            "or choose a supervised data set")
        raise DataError(f"{source}, {sample[0].where}: unknown format (fields: {keys})",
                        "use text, prompt/completion, instruction/input/output, messages or conversations "
                        "fields, or map your columns with data.columns (e.g. {prompt: question, "
                        "completion: reply})")
    for row in sample[1:]:
        fmt = row_format(row.value)
        if fmt != first:
            raise DataError(f"{source}: mixed formats — {sample[0].where} is {FORMAT_TITLES[first]} but "
                            f"{row.where} is {FORMAT_TITLES.get(fmt, 'unrecognised')} "
                            f"(fields: {', '.join(sorted(row.value))})",
                            "keep one format per file, or set data.format to the one you mean")
    return first, f"{FORMAT_TITLES[first]}: {_reason(first, sample[0].value)} in all of the first {len(sample)} rows"


def _reason(fmt: str, value: dict) -> str:
    if fmt == "prompt_completion":
        a, b = next((a, b) for a, b in PAIRS if {a, b} <= set(value))
        return f"fields '{a}' and '{b}'"
    return {"text": "a 'text' field", "alpaca": "fields 'instruction' and 'output'",
            "messages": "a 'messages' list", "sharegpt": "a 'conversations' list"}[fmt]


def apply_columns(value: dict, columns: dict[str, str], where: str, source: str) -> dict:
    """Rename the user's columns to ours: columns = {our name: their column}."""
    out = {}
    for ours, theirs in columns.items():
        if theirs not in value:
            raise DataError(f"{source}, {where}: column '{theirs}' (mapped to {ours}) is missing; "
                            f"this row has {', '.join(sorted(value)) or 'no fields'}",
                            "fix data.columns or the row")
        out[ours] = value[theirs]
    return out


def _text_field(value: dict, key: str, where: str, source: str, optional: bool = False) -> str:
    item = value.get(key)
    if item is None and optional:
        return ""
    if not isinstance(item, str):
        problem = "is missing" if key not in value else f"must be text, found {type(item).__name__}"
        raise DataError(f"{source}, {where}: field '{key}' {problem}",
                        "fix that row, or set data.on_bad_rows: skip")
    return item


def to_example(row: Row, fmt: str, source: str) -> Example:
    """The row as an Example; images (core/data/images.py) are placed in its user turns."""
    part_refs: list = []
    example = _to_example(row, fmt, source, part_refs)
    column = images.column_images(row.value, row.where, source) if example.is_chat else []
    if part_refs or column:
        example.images = images.place_images(example.messages, part_refs, column, row.where, source)
    return example


def _to_example(row: Row, fmt: str, source: str, part_refs: list) -> Example:
    v, where = row.value, row.where
    if fmt == "text":
        return Example(where, text=_text_field(v, "text", where, source))
    if fmt == "prompt_completion":
        a, b = next(((a, b) for a, b in PAIRS if a in v or b in v), PAIRS[0])
        return Example(where, messages=[{"role": "user", "content": _text_field(v, a, where, source)},
                                        {"role": "assistant", "content": _text_field(v, b, where, source)}])
    if fmt == "alpaca":
        instruction = _text_field(v, "instruction", where, source)
        extra = _text_field(v, "input", where, source, optional=True)
        prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        messages = []
        if isinstance(v.get("system"), str) and v["system"].strip():
            messages.append({"role": "system", "content": v["system"]})
        return Example(where, messages=messages + [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": _text_field(v, "output", where, source)}])
    if fmt == "messages":
        return Example(where, messages=_messages(v.get("messages"), "messages", "role", "content",
                                                 {r: r for r in CHAT_ROLES}, where, source, part_refs))
    if fmt == "sharegpt":
        return Example(where, messages=_messages(v.get("conversations"), "conversations", "from", "value",
                                                 SHAREGPT_ROLES, where, source, part_refs))
    raise DataError(f"{source}: unknown data.format '{fmt}'", f"use one of: {', '.join(FORMAT_CHOICES)}")


def columns_of(data_cfg) -> dict:
    """The column mapping a data config asks for: data.columns, or data.text_field's."""
    if data_cfg.columns:
        return dict(data_cfg.columns)
    if data_cfg.text_field != "text":
        return {"text": data_cfg.text_field}
    return {}


def check_some_row_fits(rows: list[Row], fmt: str, source: str, columns: dict | None) -> None:
    """When not one of the first rows fits `fmt`, the format or the column mapping is wrong, not the
    rows: say so (skipping bad rows would skip them all). The rows are as mapped (apply_columns)."""
    first: DataError | None = None
    for row in rows:
        try:
            to_example(row, fmt, source)
            return
        except DataError as exc:
            first = first or exc
    if first is None:
        return
    what = (f"the column mapping (data.columns: {', '.join(f'{k} <- {v}' for k, v in columns.items())})"
            if columns else f"the format ({FORMAT_TITLES.get(fmt, fmt)})")
    raise DataError(f"{first.message}; none of the first {len(rows)} rows fits {what}",
                    f"{what} does not match this file: choose the format (data.format) or the columns "
                    "(data.columns) that name its fields")


def _messages(items, key, role_key, text_key, roles: dict, where: str, source: str,
              part_refs: list | None = None) -> list[dict]:
    """The turns as {"role", "content": text}; a content list's images become IMAGE_MARKERs in the
    text and their paths go to `part_refs`."""
    if not isinstance(items, list) or not items:
        raise DataError(f"{source}, {where}: '{key}' must be a non-empty list", "fix that row")
    out = []
    for i, m in enumerate(items, start=1):
        if part_refs is not None and isinstance(m, dict) and isinstance(m.get(text_key), list):
            text, refs = images.flatten_parts(m[text_key], where, source, f"{key}[{i}]")
            m = dict(m, **{text_key: text})
            part_refs.extend(refs)
        if not isinstance(m, dict) or not isinstance(m.get(text_key), str):
            raise DataError(f"{source}, {where}: {key}[{i}] needs '{role_key}' and a text '{text_key}'",
                            "fix that message")
        role = roles.get(m.get(role_key))
        if role is None:
            raise DataError(f"{source}, {where}: {key}[{i}] has unknown {role_key} '{m.get(role_key)}'",
                            f"allowed: {', '.join(roles)}")
        out.append({"role": role, "content": m[text_key]})
    if not any(m["role"] == "assistant" for m in out):
        raise DataError(f"{source}, {where}: the conversation has no assistant turn, so nothing to learn",
                        "add the answer the model should give, or remove the row")
    return out
