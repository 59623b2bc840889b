"""Where training rows come from: a file, a `Dataset.save_to_disk` folder, a local dataset
repository folder, or `hf:NAME[:SPLIT]` — a dataset already in the local Hugging Face caches.
Torch-free and offline: nothing is downloaded; a missing dataset is named with where it was looked for.

Every source becomes a list of files (data files, or the Arrow files `datasets` writes) read by
core/data/files.py, so each row still says where it came from ("train-00000.parquet, row 12").
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from lorastudio.core.data.files import SUFFIX_KINDS, BadRow, DataError, Row, iter_rows
from lorastudio.core.models.info import hf_cache_dir

HF_PREFIX = "hf:"
DATA_SUFFIXES = {s for s, k in SUFFIX_KINDS.items() if s != ".md"} | {".arrow"}
SPLIT_WORDS = {"train": ("train", "training"), "validation": ("validation", "valid", "val", "dev"),
               "test": ("test", "testing", "eval")}
HINT_MISSING = ("download it once where there is a network (`huggingface-cli download --repo-type dataset "
                "NAME`, or `datasets.load_dataset(NAME)`), or point data.path at a data file or folder")


@dataclass
class Source:
    spec: str              # what the user wrote
    label: str             # shown in messages: the file, the folder, or hf:NAME:SPLIT
    files: list[Path]      # read in this order

    @property
    def is_file(self) -> bool:
        return len(self.files) == 1 and self.label == str(self.files[0])


def datasets_cache_dir() -> Path:
    if os.environ.get("HF_DATASETS_CACHE"):
        return Path(os.environ["HF_DATASETS_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(home) / "datasets"


def is_hf_spec(spec: str) -> bool:
    return str(spec).startswith(HF_PREFIX)


def resolve(spec: str) -> Source:
    """The files behind data.path; DataError naming what was looked for when there are none."""
    spec = str(spec)
    if is_hf_spec(spec):
        return _resolve_hf(spec)
    path = Path(spec).expanduser()
    if path.is_file():
        return Source(spec, str(path), [path])
    if path.is_dir():
        return _resolve_folder(path, "train", str(path))
    raise DataError(f"{path}: the file does not exist", "check the path")


def _resolve_hf(spec: str) -> Source:
    body = spec[len(HF_PREFIX):]
    name, _, split = body.partition(":")
    split = split or "train"
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", name or ""):
        raise DataError(f"{spec}: not a dataset name", "write hf:NAME or hf:ORG/NAME, optionally :SPLIT "
                        "(e.g. hf:tatsu-lab/alpaca:train)")
    label = f"hf:{name}:{split}"
    hub = hf_cache_dir() / ("datasets--" + name.replace("/", "--"))
    arrow = datasets_cache_dir() / name.replace("/", "___")
    snapshot = _newest_snapshot(hub)
    if snapshot is not None:
        return _resolve_folder(snapshot, split, label)
    if arrow.is_dir():
        files = _arrow_cache_files(arrow, split, label)
        return Source(spec, label, files)
    raise DataError(f"{spec}: the dataset is not in the local Hugging Face caches (looked for {hub} "
                    f"and {arrow})", HINT_MISSING.replace("NAME", name))


def _newest_snapshot(repo: Path) -> Path | None:
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = repo / "refs" / "main"
    if ref.is_file() and (snapshots / ref.read_text().strip()).is_dir():
        return snapshots / ref.read_text().strip()
    found = sorted((p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def _arrow_cache_files(root: Path, split: str, label: str) -> list[Path]:
    """datasets' own cache: ROOT/CONFIG/VERSION/HASH/NAME-SPLIT[-NNNNN-of-NNNNN].arrow; newest build."""
    by_split: dict[str, list[Path]] = {}
    for f in root.rglob("*.arrow"):
        if f.name.startswith("cache-"):                 # map() results, not the data itself
            continue
        m = re.fullmatch(r".+?-(\w+?)(-\d{5}-of-\d{5})?\.arrow", f.name)
        if m:
            by_split.setdefault(m.group(1), []).append(f)
    if split not in by_split:
        raise DataError(f"{label}: no split '{split}' in {root} (found: {', '.join(sorted(by_split)) or 'none'})",
                        "name one of those splits after a second colon, e.g. hf:NAME:train")
    newest = max(f.parent for f in by_split[split]) if len({f.parent for f in by_split[split]}) > 1 else None
    return sorted(f for f in by_split[split] if newest is None or f.parent == newest)


def _resolve_folder(folder: Path, split: str, label: str) -> Source:
    """A save_to_disk folder (one split, or a DatasetDict), or a dataset repository's data files."""
    if (folder / "dataset_dict.json").is_file():
        splits = json.loads((folder / "dataset_dict.json").read_text(encoding="utf-8")).get("splits", [])
        if split not in splits:
            raise DataError(f"{label}: no split '{split}' in this saved DatasetDict (found: {', '.join(splits)})",
                            "name one of those splits (hf:NAME:SPLIT), or point data.path at its subfolder")
        return _resolve_folder(folder / split, split, label)
    if (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file():
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        files = [folder / f["filename"] for f in state.get("_data_files", [])]
        missing = [f.name for f in files if not f.is_file()]
        if not files or missing:
            raise DataError(f"{label}: the saved dataset is incomplete (missing: {', '.join(missing) or 'data files'})",
                            "save it again with Dataset.save_to_disk")
        return Source(label, label, files)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in DATA_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts)
                   and p.name not in ("dataset_info.json", "state.json", "dataset_dict.json"))
    if not files:
        raise DataError(f"{label}: no data files in {folder}",
                        "a dataset folder needs .jsonl, .json, .csv, .tsv, .parquet, .arrow or .txt files")
    tagged = {f: _split_of(f.relative_to(folder)) for f in files}
    if any(tagged.values()):
        chosen = [f for f in files if tagged[f] == split]
        if not chosen:
            found = sorted({s for s in tagged.values() if s})
            raise DataError(f"{label}: no '{split}' files in {folder} (splits found: {', '.join(found)})",
                            "name one of those splits after a second colon (hf:NAME:SPLIT)")
        files = chosen
    return Source(label, label if len(files) > 1 or label != str(files[0]) else str(files[0]), files)


def _split_of(relative: Path) -> str | None:
    words = re.split(r"[^a-z]+", str(relative).lower())
    for split, names in SPLIT_WORDS.items():
        if any(w in names for w in words):
            return split
    return None


def iter_source_rows(source: Source, bad: list[BadRow] | None = None,
                     text_blocks: str = "paragraph") -> Iterator[Row]:
    """Rows of every file of the source; with several files each row names its file."""
    many = not source.is_file
    for f in source.files:
        rows = _arrow_rows(f, source.label) if f.suffix.lower() == ".arrow" else iter_rows(f, bad, text_blocks)
        for row in rows:
            yield Row(f"{f.name}, {row.where}", row.value) if many else row


def _arrow_rows(path: Path, label: str) -> Iterator[Row]:
    import pyarrow as pa
    try:
        source = pa.memory_map(str(path))
        try:
            reader = pa.ipc.open_stream(source)
        except pa.ArrowInvalid:
            reader = pa.ipc.open_file(source)
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        else:
            batches = iter(reader)
        n = 0
        for batch in batches:
            for record in batch.to_pylist():
                n += 1
                yield Row(f"row {n}", record)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{label}: {path.name} is not a readable Arrow file ({exc})",
                        "save the dataset again, or delete it from the cache and download it again") from None


def estimate_rows(source: Source) -> int | None:
    """A cheap row count for progress: line counts, Parquet/Arrow metadata; None when unknown."""
    total = 0
    for f in source.files:
        kind = f.suffix.lower()
        try:
            if kind == ".parquet" or kind == ".pq":
                import pyarrow.parquet as pq
                total += pq.ParquetFile(f).metadata.num_rows
            elif kind == ".arrow":
                total += _arrow_count(f)
            elif kind == ".json":
                return None
            else:
                with open(f, "rb") as fh:
                    total += sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 22), b""))
        except Exception:
            return None
    return total or None


def _arrow_count(path: Path) -> int:
    import pyarrow as pa
    source = pa.memory_map(str(path))
    try:
        return sum(b.num_rows for b in pa.ipc.open_stream(source))
    except pa.ArrowInvalid:
        return pa.ipc.open_file(source).read_all().num_rows


def content_hash(source: Source) -> str:
    """A digest of every byte of every file (and their names and order)."""
    digest = hashlib.blake2b(digest_size=16)
    for f in source.files:
        digest.update(f.name.encode() + b"\0" + str(f.stat().st_size).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                digest.update(chunk)
    return digest.hexdigest()


def list_cached_datasets() -> list[dict]:
    """Datasets in the local HF caches: [{"id", "spec", "path", "size", "cache"}], by id."""
    found: dict[str, dict] = {}
    hub = hf_cache_dir()
    if hub.is_dir():
        for repo in sorted(hub.glob("datasets--*")):
            snap = _newest_snapshot(repo)
            if snap is None:
                continue
            name = repo.name[len("datasets--"):].replace("--", "/")
            size = sum(p.stat().st_size for p in snap.rglob("*") if p.is_file())   # links followed
            found[name] = {"id": name, "spec": HF_PREFIX + name, "path": str(snap), "size": size, "cache": "hub"}
    arrow = datasets_cache_dir()
    if arrow.is_dir():
        for folder in sorted(p for p in arrow.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
            files = [f for f in folder.rglob("*.arrow") if not f.name.startswith("cache-")]
            name = folder.name.replace("___", "/")
            if files and name not in found:
                found[name] = {"id": name, "spec": HF_PREFIX + name, "path": str(folder),
                               "size": sum(f.stat().st_size for f in files), "cache": "datasets"}
    return [found[k] for k in sorted(found)]
