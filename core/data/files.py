"""Reading rows out of data files: JSONL, JSON, CSV, TSV, Parquet and plain text. Torch-free.

Every row carries where it came from ("line 12", "row 7", "element 3") so a later error can
point at it. Files are streamed: a preview of the first rows of a 10 GB JSONL reads a few KB.
"""
from __future__ import annotations

import csv
import io
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from lorastudio.core.errors import UserError

SUFFIX_KINDS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
                ".parquet": "parquet", ".pq": "parquet", ".txt": "text", ".md": "text", ".text": "text"}


class DataError(UserError):
    """Bad data. The message names the file and the 1-based line or row; `hint` says what to do."""
    kind = "data"


@dataclass
class Row:
    where: str          # "line 3", "row 7", "element 2", "block 4"
    value: dict


@dataclass
class BadRow:
    where: str
    problem: str


def file_kind(path: Path) -> str:
    kind = SUFFIX_KINDS.get(Path(path).suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unsupported file type '{Path(path).suffix or '(none)'}'",
                        "use .jsonl, .json, .csv, .tsv, .parquet or .txt")
    return kind


def iter_rows(path: Path, bad: list[BadRow] | None = None, text_blocks: str = "paragraph") -> Iterator[Row]:
    """Rows of a data file. A broken row raises DataError, or is recorded in `bad` and skipped
    when a list is given (the "skip bad rows" policy)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: the file does not exist", "check the path")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty", "add examples to it, or choose another file")
    kind = file_kind(path)
    reader = {"jsonl": _jsonl, "json": _json, "csv": _csv, "tsv": _csv, "parquet": _parquet,
              "text": _text}[kind]
    try:
        if kind in ("csv", "tsv"):
            yield from reader(path, bad, "\t" if kind == "tsv" else ",")
        elif kind == "text":
            yield from reader(path, bad, text_blocks)
        else:
            yield from reader(path, bad)
    except UnicodeDecodeError as exc:
        line = _line_of_byte(path, exc.start) if kind in ("jsonl", "csv", "tsv", "text") else None
        where = f", line {line}" if line else ""
        raise DataError(f"{path}{where}: not UTF-8 text (invalid byte 0x{exc.object[exc.start]:02x})",
                        "re-save the file as UTF-8 (most editors offer it under 'Save with encoding')") from None


def preview_rows(path: Path, limit: int = 50) -> list[Row]:
    return list(itertools.islice(iter_rows(path, bad=[]), limit))


def _line_of_byte(path: Path, offset: int) -> int | None:
    # The decoder's offset is into the chunk it was decoding; for line-based files we decode
    # line by line ourselves to find the first bad one.
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return lineno
    return None


def _reject(bad, where: str, problem: str, path: Path, hint: str):
    if bad is None:
        raise DataError(f"{path}, {where}: {problem}", hint)
    bad.append(BadRow(where, problem))


def _jsonl(path: Path, bad) -> Iterator[Row]:
    with open(path, encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                _reject(bad, f"line {lineno}", f"not valid JSON ({exc.msg} at column {exc.colno})", path,
                        "fix or delete that line (each line must be one JSON object), or set "
                        "data.on_bad_rows: skip")
                continue
            if not isinstance(value, dict):
                _reject(bad, f"line {lineno}", f"expected a JSON object, found {type(value).__name__}", path,
                        "each line must be an object such as {\"text\": \"...\"}")
                continue
            yield Row(f"line {lineno}", value)


def _json(path: Path, bad) -> Iterator[Row]:
    with open(path, encoding="utf-8-sig") as fh:
        try:
            value = json.load(fh)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno})",
                            "fix the JSON, or save one object per line as .jsonl") from None
    if isinstance(value, dict):
        lists = [k for k, v in value.items() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError(f"{path}: a JSON object must hold exactly one list of examples "
                            f"(found {len(lists)}: {', '.join(lists) or 'none'})",
                            "make the file an array of examples, or keep one list in it")
        value = value[lists[0]]
    if not isinstance(value, list):
        raise DataError(f"{path}: expected a JSON array of examples", "make the top level a list [...]")
    for i, item in enumerate(value, start=1):
        if not isinstance(item, dict):
            _reject(bad, f"element {i}", f"expected an object, found {type(item).__name__}", path,
                    "every element must be an object such as {\"text\": \"...\"}")
            continue
        yield Row(f"element {i}", item)


def _csv(path: Path, bad, delimiter: str) -> Iterator[Row]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            raise DataError(f"{path}, line 1: no header row", "the first line must name the columns")
        header = [h.strip() for h in header]
        for row in reader:
            line = reader.line_num
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                _reject(bad, f"line {line}", f"has {len(row)} fields but the header has {len(header)}", path,
                        "quote fields that contain the delimiter or line breaks, or fix the row")
                continue
            yield Row(f"line {line}", dict(zip(header, row)))


def _parquet(path: Path, bad) -> Iterator[Row]:
    try:
        import pyarrow.parquet as pq
    except ImportError:           # pragma: no cover - pyarrow comes with datasets
        raise DataError(f"{path}: reading Parquet needs pyarrow", "pip install pyarrow") from None
    try:
        table = pq.ParquetFile(path)
    except Exception as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})", "re-export the file") from None
    n = 0
    for batch in table.iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            n += 1
            yield Row(f"row {n}", record)


def _text(path: Path, bad, blocks: str) -> Iterator[Row]:
    text = path.read_text(encoding="utf-8-sig")
    if blocks == "file":
        if text.strip():
            yield Row("line 1", {"text": text})
        return
    start, lines = 1, []
    for lineno, line in enumerate(io.StringIO(text), start=1):
        if line.strip():
            if not lines:
                start = lineno
            lines.append(line)
        elif lines:
            yield Row(f"line {start}", {"text": "".join(lines).strip("\n")})
            lines = []
    if lines:
        yield Row(f"line {start}", {"text": "".join(lines).strip("\n")})
