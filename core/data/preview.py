"""A small, bounded look at a dataset file: its first rows, and what shape they have. Torch-free.

Reading goes through core/data/sources.py and files.py (the trainer's own readers), so the preview
accepts exactly what training accepts: JSONL, JSON, CSV, TSV, Parquet, text, dataset folders, hf:NAME. Only the first `limit` good rows
are read (a 10 GB JSONL costs a few KB). `read_preview` touches the disk: the window calls it off
the GUI thread. `detect` works on the rows in memory (format override and column mapping), cheap
enough to run on every change of a combo box. The formats themselves are core/data/formats.py's.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

from lorastudio.core.data.files import BadRow, DataError, Row
from lorastudio.core.data.sources import Source, is_hf_spec, iter_source_rows, resolve
from lorastudio.core.data.formats import (FORMAT_TITLES, apply_columns, check_some_row_fits, detect_format,
                                          to_example)
from lorastudio.core.data.pairs import PAIR_FORMAT, check_pair_rows, looks_like_pairs
from lorastudio.core.data.images import is_image_part

PREVIEW_ROWS = 20


@dataclass
class DatasetPreview:
    path: str
    rows: list[Row] = field(default_factory=list)        # the first good rows, as core reads them
    columns: list[str] = field(default_factory=list)     # every field seen in them, in order
    bad_rows: list[BadRow] = field(default_factory=list)  # broken rows met on the way
    error: tuple[str, str] | None = None                  # (message, hint): the file cannot be used
    strict_error: tuple[str, str] | None = None           # the first bad row, as "stop with an error" says it

    @property
    def ok(self) -> bool:
        return self.error is None

    def cells(self) -> list[list[str]]:
        return [[cell_text(r.value.get(c)) for c in self.columns] for r in self.rows]


@dataclass
class Detection:
    format: str = ""                                     # one of formats.FORMATS, "" when unknown
    reason: str = ""
    error: tuple[str, str] | None = None
    unknown: bool = False                                 # no format recognised: a mapping is needed
    bad_rows: list[BadRow] = field(default_factory=list)  # previewed rows the format refuses (skip policy)


def read_preview(path: str | Path, limit: int = PREVIEW_ROWS) -> DatasetPreview:
    """The first rows of a file, a dataset folder, or hf:NAME[:SPLIT] (core/data/sources.py)."""
    spec = str(path).strip()
    path = spec if is_hf_spec(spec) else Path(spec).expanduser()
    preview = DatasetPreview(str(path))
    try:
        source = resolve(str(path))
        preview.rows = list(itertools.islice(iter_source_rows(source, bad=preview.bad_rows), limit))
        if preview.bad_rows:
            preview.strict_error = _first_error(source, limit + len(preview.bad_rows))
    except DataError as exc:
        preview.error = (exc.message, exc.hint)
    except OSError as exc:
        preview.error = (f"{path}: cannot be read ({exc.strerror or exc})", "check the file's permissions")
    if preview.ok and not preview.rows:
        preview.error = (f"{path}: no valid examples in the file", "every row read was broken; fix the file")
    preview.columns = list(dict.fromkeys(k for r in preview.rows for k in r.value))
    return preview


def _first_error(source: Source, limit: int) -> tuple[str, str] | None:
    try:
        for _ in itertools.islice(iter_source_rows(source, bad=None), limit):
            pass
    except DataError as exc:
        return exc.message, exc.hint
    return None


def detect(preview: DatasetPreview, fmt: str = "auto", columns: dict | None = None,
           skip_bad: bool = False) -> Detection:
    """The format of the previewed rows under the user's choices, as the trainer will see it."""
    source, columns = preview.path, dict(columns or {})
    if fmt == "auto" and looks_like_pairs(preview.rows):         # preference pairs (training.method dpo/orpo)
        try:
            reason, bad = check_pair_rows(preview.rows, source, columns, skip_bad)
        except DataError as exc:
            return Detection(error=(exc.message, exc.hint))
        return Detection(PAIR_FORMAT, reason, bad_rows=bad)
    try:
        rows = preview.rows
        if columns:
            rows = [Row(r.where, apply_columns(r.value, columns, r.where, source)) for r in rows]
        if fmt == "auto":
            found, reason = detect_format(rows, source)
        else:
            found, reason = fmt, f"{FORMAT_TITLES[fmt]}: chosen by you"
        check_some_row_fits(rows, found, source, columns)
        bad = _refused_rows(rows, found, source, skip_bad)
    except DataError as exc:
        return Detection(error=(exc.message, exc.hint), unknown="unknown format" in exc.message)
    if columns:
        reason += f" (columns mapped: {', '.join(f'{k} ← {v}' for k, v in columns.items())})"
    return Detection(found, reason, bad_rows=bad)


def _refused_rows(rows: list[Row], fmt: str, source: str, skip_bad: bool) -> list[BadRow]:
    bad = []
    for row in rows:
        try:
            to_example(row, fmt, source)
        except DataError as exc:
            if not skip_bad:
                raise
            bad.append(BadRow(row.where, exc.message.split(": ", 1)[-1]))
    return bad


def short_message(message: str, path: str) -> str:
    """'/long/folder/d.jsonl, line 2: …' -> 'd.jsonl, line 2: …' (the full path is in the tooltip)."""
    if path and message.startswith(path):
        return Path(path).name + message[len(path):]
    return message


def cell_text(value) -> str:
    if value is None:
        return ""
    turns = _turns(value)
    text = turns if turns is not None else value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = text.replace("\n", " ⏎ ")
    return text if len(text) <= 300 else text[:297] + "…"


def _turns(value) -> str | None:
    """A chat list as 'user: hi · assistant: hello' (messages or ShareGPT), else None."""
    if not isinstance(value, list) or not value or not all(isinstance(m, dict) for m in value):
        return None
    keys = next(((r, t) for r, t in (("role", "content"), ("from", "value")) if r in value[0]), None)
    if keys is None:
        return None
    return " · ".join(f"{m.get(keys[0])}: {_content_text(m.get(keys[1]))}" for m in value)


def _content_text(content) -> str:
    """A turn's content; a list of content parts as its text with [image] where each image is."""
    if not isinstance(content, list):
        return str(content)
    return " ".join("[image]" if is_image_part(part) else str(part.get("text", "")) if isinstance(part, dict)
                    else str(part) for part in content)
