"""Turning an example into token ids and labels: the chat template and loss masking.

Chat examples go through the tokenizer's own chat template. To find which characters are the
assistant's, we render the conversation up to each assistant turn twice — once ending with the
generation prompt, once including the turn — and the difference is that turn (its end-of-turn
marker included, so the model learns to stop). Tokens whose first character falls in such a span
are trained; the rest get label -100. Without a chat template we use the fallback below and say
so. Raw text trains on every token.

Fallback template (for tokenizers without one):
    <|system|>\n{system}\n<|user|>\n{user}\n<|assistant|>\n{assistant}{eos}\n
"""
from __future__ import annotations

from dataclasses import dataclass, field

from lorastudio.core.data.formats import Example

IGNORE_INDEX = -100
FALLBACK_NOTE = ("the tokenizer has no chat template, so LoRA Studio's fallback template is used "
                 "(<|system|>, <|user|>, <|assistant|> headers); use the same format when prompting "
                 "the trained model")


@dataclass
class Encoded:
    where: str
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False
    images: list[str] = field(default_factory=list)    # the image files its image tokens stand for

    @property
    def trained_tokens(self) -> int:
        # The model shifts labels by one: label[0] never counts.
        return sum(1 for x in self.labels[1:] if x != IGNORE_INDEX)


class TemplateError(Exception):
    pass


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _apply(tokenizer, messages, generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def render_chat(messages: list[dict], tokenizer) -> tuple[str, list[tuple[int, int]], bool]:
    """(text, assistant character spans, uses_special_tokens_in_text)."""
    if not has_chat_template(tokenizer):
        return _render_fallback(messages, tokenizer) + (False,)
    full = _apply(tokenizer, messages, False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = _apply(tokenizer, messages[:i], True) if i else ""
        upto = _apply(tokenizer, messages[:i + 1], False)
        if not (full.startswith(upto) and upto.startswith(before)):
            raise TemplateError("the chat template renders earlier turns differently once later turns "
                                "are added, so assistant turns cannot be located")
        spans.append((len(before), len(upto)))
    return full, spans, True


def _render_fallback(messages: list[dict], tokenizer) -> tuple[str, list[tuple[int, int]]]:
    eos = tokenizer.eos_token or ""
    parts, spans, pos = [], [], 0
    for m in messages:
        header = f"<|{m['role']}|>\n"
        body = m["content"] + (eos if m["role"] == "assistant" else "") + "\n"
        parts.append(header)
        pos += len(header)
        if m["role"] == "assistant":
            spans.append((pos, pos + len(body)))
        parts.append(body)
        pos += len(body)
    return "".join(parts), spans


def encode(example: Example, tokenizer, train_on: str = "completions") -> Encoded:
    if not example.is_chat:
        ids = list(tokenizer(example.text, add_special_tokens=True)["input_ids"])
        if tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
            ids.append(tokenizer.eos_token_id)
        return Encoded(example.where, ids, list(ids))
    text, spans, templated = render_chat(example.messages, tokenizer)
    enc = tokenizer(text, add_special_tokens=not templated, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    if train_on == "all":
        return Encoded(example.where, ids, list(ids))
    labels = []
    for tok_id, (start, end) in zip(ids, enc["offset_mapping"]):
        inside = end > start and any(s <= start < e for s, e in spans)
        labels.append(tok_id if inside else IGNORE_INDEX)
    return Encoded(example.where, ids, labels)


def fit_length(enc: Encoded, seq_len: int, too_long: str) -> Encoded | None:
    """Truncate to seq_len (or drop, by choice). None means dropped."""
    if len(enc.input_ids) <= seq_len:
        return enc
    if too_long == "drop":
        return None
    return Encoded(enc.where, enc.input_ids[:seq_len], enc.labels[:seq_len], truncated=True)
