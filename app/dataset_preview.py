"""A small, bounded look at a dataset file: its first rows and how many examples it holds.

Kept deliberately small and in one place: the datasets issue replaces it with format detection
and a token inspector. Reads at most `max_rows` rows for the table; counting lines streams the
file in 1 MiB chunks, so a 2 GB file costs I/O but never memory. Call it off the GUI thread.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

CHUNK = 1 << 20
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


@dataclass
class DatasetPreview:
    path: str
    format: str = ""                         # "jsonl" | "text" | "csv"
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    count: int = 0
    skipped: int = 0                         # preview rows that did not parse
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


def count_lines(path: Path) -> int:
    """Non-empty lines, read in chunks (a file without a final newline still counts its last line)."""
    count, last = 0, b"\n"
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def read_preview(path: str | Path, max_rows: int = 20) -> DatasetPreview:
    path = Path(path).expanduser()
    preview = DatasetPreview(str(path))
    if not path.is_file():
        preview.error = "The file does not exist." if not path.exists() else "This is a folder, not a file."
        return preview
    try:
        reader = {".csv": _read_csv, ".txt": _read_text}.get(path.suffix.lower(), _read_jsonl)
        reader(path, preview, max_rows)
    except (OSError, UnicodeDecodeError) as exc:
        preview.error = f"The file cannot be read: {exc}"
    return preview


def _read_jsonl(path: Path, preview: DatasetPreview, max_rows: int) -> None:
    preview.format = "jsonl"
    records = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                preview.skipped += 1
                continue
            records.append(record if isinstance(record, dict) else {"value": record})
            if len(records) + preview.skipped >= max_rows:
                break
    if not records:
        preview.error = "No JSON lines found: expected one JSON object a line, e.g. {\"text\": \"…\"}."
        return
    preview.columns = list(dict.fromkeys(k for r in records for k in r))
    preview.rows = [[_cell(r.get(c)) for c in preview.columns] for r in records]
    preview.count = count_lines(path)


def _read_text(path: Path, preview: DatasetPreview, max_rows: int) -> None:
    preview.format, preview.columns = "text", ["text"]
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                preview.rows.append([line.rstrip("\n")])
            if len(preview.rows) >= max_rows:
                break
    preview.count = count_lines(path)


def _read_csv(path: Path, preview: DatasetPreview, max_rows: int) -> None:
    preview.format = "csv"
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        preview.columns = next(reader, [])
        for row in reader:
            preview.rows.append(row)
            if len(preview.rows) >= max_rows:
                break
    preview.count = max(0, count_lines(path) - 1)


def _cell(value) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 300 else text[:297] + "…"
