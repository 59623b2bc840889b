"""The tokenized table: every example of a data source, encoded once, kept as a memory-mapped
Arrow file under the user's cache folder and reused by every later run, resume and inspection.

Key: (the source's content hash, the tokenizer — its vocabulary, merges, special tokens and chat
template —, seq_len, data.format / columns / text_field / train_on / too_long / on_bad_rows /
text_blocks, CACHE_VERSION). Packing and the validation split are not in it: they choose among the
rows, they do not change them. An entry is a folder written atomically (core/atomic_files):

    <cache>/datasets/<key>/table.arrow   input_ids, labels (int32 lists), where, status, truncated,
                                          n_tokens, trained
    <cache>/datasets/<key>/meta.json     format, reason, bad rows, notes, row count, size, checksum

Every load checks size, checksum and row count; anything off (a torn write, a flipped byte, a
table from another version) is said in the journal and rebuilt, never trusted.

Building streams: rows are read, encoded and written a chunk at a time, and a row's text is cut to
a character budget before tokenizing (`encode_bounded`), so memory follows seq_len, not the row.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa

from lorastudio.core.atomic_files import atomic_dir
from lorastudio.core.data.chat_masks import (FALLBACK_NOTE, Encoded, TemplateError, encode,
                                             fit_length, has_chat_template)
from lorastudio.core.data.examples import stream_examples
from lorastudio.core.data.files import DataError
from lorastudio.core.data.formats import Example
from lorastudio.core.data.images import images_digest
from lorastudio.core.data import sources
from lorastudio.core.data.sources import content_hash, estimate_rows, resolve

CACHE_VERSION = 3             # 2: examples whose answers are all empty get EMPTY_ANSWER; 3: each row's images
CHUNK_ROWS = 2048
CHARS_PER_TOKEN = 8           # first character budget per token of seq_len; doubled while too tight
MARGIN_TOKENS = 16
OK, TOO_LONG, NO_TARGET, EMPTY_ANSWER = 0, 1, 2, 3     # EMPTY_ANSWER: every assistant turn is blank
Progress = Callable[[float | None, str], None]
SCHEMA = pa.schema([("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32())),
                    ("where", pa.string()), ("status", pa.int8()), ("truncated", pa.bool_()),
                    ("n_tokens", pa.int32()), ("trained", pa.int32()), ("images", pa.list_(pa.string()))])


def cache_root() -> Path:
    if os.environ.get("LORASTUDIO_CACHE"):
        return Path(os.environ["LORASTUDIO_CACHE"]) / "datasets"
    from platformdirs import user_cache_dir
    return Path(user_cache_dir("lorastudio", appauthor=False)) / "datasets"


# ---- encoding one example, bounded by seq_len ---------------------------------------------
def _clip(example: Example, chars: int) -> tuple[Example, bool]:
    if not example.is_chat:
        if len(example.text) <= chars:
            return example, False
        return Example(example.where, text=example.text[:chars]), True
    if all(len(m["content"]) <= chars for m in example.messages):
        return example, False
    return Example(example.where, messages=[dict(m, content=m["content"][:chars]) for m in example.messages]), True


def encode_bounded(example: Example, tokenizer, train_on: str, seq_len: int, too_long: str) -> tuple[int, Encoded | None]:
    """(status, encoded) — the same tokens as encoding the whole example and then fit_length, but
    each text is cut to a character budget first. A cut text must still give more than seq_len
    tokens (with a margin, so the cut never reaches the kept tokens); if not, the budget grows."""
    chars = max(1024, seq_len * CHARS_PER_TOKEN)
    while True:
        clipped, cut = _clip(example, chars)
        try:
            enc = encode(clipped, tokenizer, train_on)
        except TemplateError as exc:
            raise DataError(f"{example.where}: {exc}", "use a model with a standard chat template, "
                            "or set data.train_on: all") from None
        if not cut or len(enc.input_ids) >= seq_len + MARGIN_TOKENS:
            break
        chars *= 4
    fitted = fit_length(enc, seq_len, too_long)
    if fitted is None:
        return TOO_LONG, None
    if fitted.trained_tokens == 0:
        return NO_TARGET, fitted
    if empty_answers(example, train_on):
        return EMPTY_ANSWER, fitted          # only the end-of-turn marker would be trained
    return OK, fitted


def empty_answers(example: Example, train_on: str) -> bool:
    """A chat / prompt-completion example whose every assistant answer is blank: it teaches
    nothing but to stop at once (raw text and train_on: all train every token)."""
    if not example.is_chat or train_on == "all":
        return False
    answers = [m["content"] for m in example.messages if m["role"] == "assistant"]
    return bool(answers) and not any(str(a).strip() for a in answers)


def encode_chunk(examples: list[Example], tokenizer, train_on: str, seq_len: int,
                 too_long: str, images=None, source: str = "") -> list[tuple[int, Encoded | None]]:
    """encode_bounded for many examples: raw texts go to the tokenizer in one batched call (its
    Rust side spreads them over the cores); chat examples and too-tight cuts one by one; examples
    with images through `images` (core/engine/vision/encoding.ImageEncoder), refused without one."""
    if any(e.images for e in examples):
        return [encode_with_images(e, tokenizer, train_on, seq_len, too_long, images, source) for e in examples]
    chars = max(1024, seq_len * CHARS_PER_TOKEN)
    texts = [i for i, e in enumerate(examples) if not e.is_chat]
    out: list = [None] * len(examples)
    if texts:
        batch = tokenizer([examples[i].text[:chars] for i in texts], add_special_tokens=True)["input_ids"]
        eos = tokenizer.eos_token_id
        for i, ids in zip(texts, batch):
            ids = list(ids)
            if len(examples[i].text) > chars and len(ids) < seq_len + MARGIN_TOKENS:
                continue                                   # cut too tight: done one by one below
            if eos is not None and (not ids or ids[-1] != eos):
                ids.append(eos)
            fitted = fit_length(Encoded(examples[i].where, ids, list(ids)), seq_len, too_long)
            out[i] = ((TOO_LONG, None) if fitted is None else
                      (NO_TARGET, fitted) if fitted.trained_tokens == 0 else (OK, fitted))
    return [r if r is not None else encode_bounded(e, tokenizer, train_on, seq_len, too_long)
            for r, e in zip(out, examples)]


def encode_with_images(example: Example, tokenizer, train_on: str, seq_len: int, too_long: str, images,
                       source: str) -> tuple[int, Encoded | None]:
    if not example.images:
        return encode_bounded(example, tokenizer, train_on, seq_len, too_long)
    if images is None:
        from lorastudio.core.data.images import text_only_error
        raise text_only_error(source, example.where, len(example.images),
                              getattr(tokenizer, "name_or_path", "") or "this model")
    status, enc = images.encode(example, source, train_on, seq_len)
    if enc is not None and enc.truncated and too_long == "drop":
        return TOO_LONG, None
    if status == OK and empty_answers(example, train_on):
        return EMPTY_ANSWER, enc
    return status, enc


# ---- the key ---------------------------------------------------------------------------------
def tokenizer_fingerprint(tokenizer) -> str:
    digest = hashlib.blake2b(digest_size=16)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    else:
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    for value in (type(tokenizer).__name__, getattr(tokenizer, "chat_template", None), tokenizer.eos_token,
                  tokenizer.bos_token, tokenizer.pad_token, getattr(tokenizer, "add_bos_token", None)):
        digest.update(repr(value).encode() + b"\0")
    return digest.hexdigest()


def processor_fingerprint(processor) -> str:
    """A vision-language processor's class and image settings ("" without one)."""
    if processor is None:
        return ""
    image = getattr(processor, "image_processor", None)
    settings = image.to_json_string() if image is not None and hasattr(image, "to_json_string") else ""
    return hashlib.blake2b((type(processor).__name__ + settings).encode(), digest_size=16).hexdigest()


def cache_key(source_hash: str, tokenizer_fp: str, data_cfg, seq_len: int, processor_fp: str = "") -> str:
    fields = {"v": CACHE_VERSION, "source": source_hash, "tokenizer": tokenizer_fp, "seq_len": seq_len,
              "processor": processor_fp, "max_image_pixels": getattr(data_cfg, "max_image_pixels", 0),
              **{k: getattr(data_cfg, k) for k in ("format", "columns", "text_field", "train_on", "too_long",
                                                   "on_bad_rows", "text_blocks")}}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:24]


# ---- the table -------------------------------------------------------------------------------
@dataclass
class TokenTable:
    """A memory-mapped tokenized source. Row i is example i of the source (file order)."""
    table: pa.Table
    meta: dict
    path: Path
    cache_hit: bool

    def __post_init__(self):
        self.status = self.table.column("status").to_numpy()
        self.truncated = self.table.column("truncated").to_numpy(zero_copy_only=False)
        self.lengths = self.table.column("n_tokens").to_numpy()
        self.trained = self.table.column("trained").to_numpy()
        self._ids = self.table.column("input_ids")
        self._labels = self.table.column("labels")
        self._where = self.table.column("where")
        self._images = self.table.column("images")
        self.has_images = bool(self.meta.get("images"))

    def __len__(self) -> int:
        return self.table.num_rows

    def item(self, i: int) -> Encoded:
        return Encoded(self._where[i].as_py(), self._ids[i].values.to_numpy().tolist(),
                       self._labels[i].values.to_numpy().tolist(), bool(self.truncated[i]),
                       self._images[i].as_py() if self.has_images else [])


def _checksum(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _open(folder: Path) -> tuple[TokenTable | None, str]:
    """(table, "") for a sound entry; (None, why) for a missing, torn or stale one."""
    meta_path, table_path = folder / "meta.json", folder / "table.arrow"
    if not meta_path.is_file():
        return None, ""
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("version") != CACHE_VERSION:
            return None, f"made by another version ({meta.get('version')})"
        if table_path.stat().st_size != meta["size"]:
            return None, f"table.arrow is {table_path.stat().st_size} bytes, not {meta['size']}"
        if _checksum(table_path) != meta["checksum"]:
            return None, "table.arrow does not match its checksum"
        table = pa.ipc.open_file(pa.memory_map(str(table_path))).read_all()
        if table.num_rows != meta["rows"] or table.schema != SCHEMA:
            return None, "the table's rows or columns do not match meta.json"
    except (OSError, ValueError, KeyError, pa.ArrowInvalid) as exc:
        return None, f"unreadable ({type(exc).__name__}: {exc})"
    return TokenTable(table, meta, folder, cache_hit=True), ""


def load_or_build(spec: str, data_cfg, tokenizer, seq_len: int, progress: Progress = lambda f, m: None,
                  log: Callable[[str], None] = lambda m: None, processor=None) -> TokenTable:
    """The token table of data source `spec` (data.path or data.validation_path); with a
    vision-language `processor`, examples with images are encoded through it."""
    source = resolve(spec)
    progress(None, f"Checking {source.label}")
    size = sum(f.stat().st_size for f in source.key_files)

    def reading(fraction: float) -> None:
        progress(fraction, f"Reading {source.label}: {fraction:.0%} of {size / 2**20:,.0f} MiB")
    key = cache_key(content_hash(source, reading), tokenizer_fingerprint(tokenizer), data_cfg, seq_len,
                    processor_fingerprint(processor))
    folder = cache_root() / key
    found, why = _open(folder)
    if found is not None and found.has_images and images_digest(found.meta["images"]) != found.meta["images_digest"]:
        found, why = None, "made from images that have changed since"
    if found is not None:
        found.meta["source"] = source.label       # the same bytes may sit under another name
        return found
    if why:
        log(f"The token cache {folder} was {why}; rebuilding it")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(folder) as tmp:
        _build(source, data_cfg, tokenizer, seq_len, tmp, progress, processor)
    table, why = _open(folder)
    if table is None:
        raise DataError(f"the token cache {folder} could not be read back ({why})",
                        "check the free space and permissions of the cache folder, or set LORASTUDIO_CACHE")
    table.cache_hit = False
    table.meta["source"] = source.label
    return table


# Arrays are built from numpy buffers: pa.array on Python lists is slow for nested lists, and it
# imports pandas (seconds) on its first call.
def _numbers(values, dtype, arrow_type) -> pa.Array:
    data = np.ascontiguousarray(np.asarray(values, dtype=dtype))
    if arrow_type == pa.bool_():
        data = np.packbits(data.astype(np.uint8), bitorder="little")
    return pa.Array.from_buffers(arrow_type, len(values), [None, pa.py_buffer(data)])


def _strings(values: list[str]) -> pa.Array:
    encoded = [v.encode("utf-8") for v in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return pa.Array.from_buffers(pa.string(), len(encoded),
                                 [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))])


def _int_lists(lists: list[list[int]]) -> pa.Array:
    offsets = np.zeros(len(lists) + 1, dtype=np.int32)
    np.cumsum([len(x) for x in lists], out=offsets[1:])
    values = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int32, count=int(offsets[-1]))
    return pa.ListArray.from_arrays(_numbers(offsets, np.int32, pa.int32()), _numbers(values, np.int32, pa.int32()))


def _string_lists(lists: list[list[str]]) -> pa.Array:
    offsets = np.zeros(len(lists) + 1, dtype=np.int32)
    np.cumsum([len(x) for x in lists], out=offsets[1:])
    return pa.ListArray.from_arrays(_numbers(offsets, np.int32, pa.int32()),
                                    _strings(list(itertools.chain.from_iterable(lists))))


def _build(source, data_cfg, tokenizer, seq_len: int, out: Path, progress: Progress, processor=None) -> None:
    stream = stream_examples(source.label, data_cfg, source)
    images = None
    if processor is not None:
        from lorastudio.core.engine.vision.encoding import ImageEncoder
        images = ImageEncoder(processor, getattr(data_cfg, "max_image_pixels", 0))
    image_files: dict[str, None] = {}
    expected = estimate_rows(source)
    table_path = out / "table.arrow"
    counts = {"rows": 0, "chat": 0}
    started, last = time.time(), 0.0

    def flush(writer, chunk: list[Example]):
        encoded = encode_chunk(chunk, tokenizer, data_cfg.train_on, seq_len, data_cfg.too_long, images, source.label)
        encs = [enc for _, enc in encoded]
        for e in chunk:
            image_files.update(dict.fromkeys(e.images))
        counts["rows"] += len(chunk)
        counts["chat"] += sum(e.is_chat for e in chunk)
        columns = {
            "input_ids": _int_lists([e.input_ids if e else [] for e in encs]),
            "labels": _int_lists([e.labels if e else [] for e in encs]),
            "where": _strings([e.where for e in chunk]),
            "status": _numbers([status for status, _ in encoded], np.int8, pa.int8()),
            "truncated": _numbers([bool(e and e.truncated) for e in encs], np.bool_, pa.bool_()),
            "n_tokens": _numbers([len(e.input_ids) if e else 0 for e in encs], np.int32, pa.int32()),
            "trained": _numbers([e.trained_tokens if e else 0 for e in encs], np.int32, pa.int32()),
            "images": _string_lists([e.images for e in chunk])}
        writer.write_batch(pa.record_batch([columns[n] for n in SCHEMA.names], schema=SCHEMA))
        chunk.clear()

    chunk: list[Example] = []
    with pa.OSFile(str(table_path), "wb") as sink, pa.ipc.new_file(sink, SCHEMA) as writer:
        for example in stream.examples:
            chunk.append(example)
            if len(chunk) >= CHUNK_ROWS:
                flush(writer, chunk)
                now = time.time()
                if now - last >= sources.PROGRESS_EVERY_S:
                    last = now
                    fraction = min(0.99, counts["rows"] / expected) if expected else None
                    rate = counts["rows"] / max(now - started, 1e-9)
                    share = f"{fraction:.0%} · " if fraction is not None else ""   # the window shows the message
                    progress(fraction, f"Tokenizing: {share}{counts['rows']:,} examples ({rate:,.0f}/s)")
        if chunk:
            flush(writer, chunk)
    notes = [FALLBACK_NOTE] if counts["chat"] and not has_chat_template(tokenizer) else []
    meta = {"version": CACHE_VERSION, "source": source.label, "format": stream.format, "reason": stream.reason,
            "rows": counts["rows"], "bad_rows": [{"where": b.where, "problem": b.problem} for b in stream.bad_rows],
            "notes": notes, "seq_len": seq_len, "size": table_path.stat().st_size,
            "checksum": _checksum(table_path), "seconds": round(time.time() - started, 3),
            "images": list(image_files), "images_digest": images_digest(image_files)}
    (out / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    progress(1.0, f"Tokenized {counts['rows']:,} examples")
