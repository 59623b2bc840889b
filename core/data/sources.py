"""Where training rows come from: a file, a dataset repository folder, a `Dataset.save_to_disk`
folder, or `hf:NAME[:SPLIT]` — a dataset already in the local Hugging Face caches. Torch-free and
free of `datasets` (the window imports this module); offline: nothing is downloaded, and a missing
dataset is named with the places it was looked for.

Locating. The hub cache is huggingface_hub's: `snapshot_download(local_files_only=True)` finds a
dataset's `main` snapshot (and says when the hub's own listing shows it incomplete), `scan_cache_dir`
lists the cached datasets; both are imported on first use, so the window's start does not pay for
them. A save_to_disk folder is recognised by the files `datasets` writes (dataset_dict.json, or
state.json with dataset_info.json) and read only as far as locating needs: the split and its Arrow
files. A build in the `datasets` cache (NAME's folder under HF_DATASETS_CACHE) is found by its names.

Reading. Data files go through core/data/files.py, so each row says where it came from
("train-00000.parquet, row 12"). What `datasets` wrote (kind SAVED or BUILD) is read by `datasets`
itself in the job processes (core/data/dataset_rows.py); `iter_source_rows` reads its Arrow files
with pyarrow for the window's preview, numbering rows over the split the same way.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from lorastudio.core.data.files import SUFFIX_KINDS, BadRow, DataError, Row, iter_rows
from lorastudio.core.models.info import hf_cache_dir

HF_PREFIX = "hf:"
FILES, SAVED, BUILD = "files", "saved", "build"
DATA_SUFFIXES = {s for s, k in SUFFIX_KINDS.items() if s != ".md"} | {".arrow"}
SAVED_MARKERS = ("dataset_dict.json", "state.json", "dataset_info.json")
SPLIT_WORDS = {"train": ("train", "training"), "validation": ("validation", "valid", "val", "dev"),
               "test": ("test", "testing", "eval")}
HINT_MISSING = ("download it once where there is a network (`hf download --repo-type dataset "
                "NAME`, or `datasets.load_dataset(NAME)`), or point data.path at a data file or folder")
HINT_INCOMPLETE = ("an earlier download stopped half way: download it again where there is a network "
                   "(`hf download --repo-type dataset NAME`)")
HINT_RESAVE = "save it again with save_to_disk (or point data.path at its data files)"


@dataclass
class Source:
    spec: str              # what the user wrote
    label: str             # shown in messages: the file, the folder, or hf:NAME:SPLIT
    files: list[Path]      # read in this order
    kind: str = FILES      # FILES: data files; SAVED: one split of a save_to_disk folder (the folder of
                           # files[0]); BUILD: a build in the datasets cache — both written by `datasets`

    @property
    def is_file(self) -> bool:
        return self.kind == FILES and len(self.files) == 1 and self.label == str(self.files[0])

    @property
    def key_files(self) -> list[Path]:
        """Every file whose bytes decide the rows: a saved split's state.json and dataset_info.json
        (columns, features, format) count with its Arrow files."""
        if self.kind == SAVED:
            folder = self.files[0].parent
            return [*self.files, folder / "state.json", folder / "dataset_info.json"]
        return list(self.files)


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


# ---- hf:NAME[:SPLIT] -------------------------------------------------------------------------
def _resolve_hf(spec: str) -> Source:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.file_download import repo_folder_name
    from huggingface_hub.utils import validate_repo_id
    name, _, split = spec[len(HF_PREFIX):].partition(":")
    split = split or "train"
    try:
        validate_repo_id(name)
    except HFValidationError:
        raise DataError(f"{spec}: not a dataset name", "write hf:NAME or hf:ORG/NAME, optionally :SPLIT "
                        "(e.g. hf:tatsu-lab/alpaca:train)") from None
    label = f"hf:{name}:{split}"
    snapshot = _hub_snapshot(name, label)
    if snapshot is not None:
        return _resolve_folder(snapshot, split, label)
    builds = datasets_cache_dir() / name.replace("/", "___")
    if builds.is_dir():
        return Source(spec, label, _build_files(builds, split, label), BUILD)
    hub = hf_cache_dir() / repo_folder_name(repo_id=name, repo_type="dataset")
    raise DataError(f"{spec}: the dataset is not in the local Hugging Face caches (looked for {hub} "
                    f"and {builds})", HINT_MISSING.replace("NAME", name))


def _hub_snapshot(name: str, label: str) -> Path | None:
    """The snapshot of the dataset's `main` revision in the hub cache, None when it has none."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError
    try:
        return Path(snapshot_download(name, repo_type="dataset", cache_dir=hf_cache_dir(), local_files_only=True))
    except LocalEntryNotFoundError as exc:
        partial = getattr(exc, "snapshot_path", None)      # huggingface_hub's IncompleteSnapshotError
        if partial is None:
            return None
        detail = re.search(r"is incomplete: (.+? are missing \(.*?\))\. ", str(exc))   # "2 file(s) are missing (…)"
        raise DataError(f"{label}: the copy in the Hugging Face cache ({partial}) is incomplete"
                        + (f": {detail.group(1)}" if detail else ""), HINT_INCOMPLETE.replace("NAME", name)) from None


def _build_files(root: Path, split: str, label: str) -> list[Path]:
    """A build in the datasets cache: ROOT/CONFIG/VERSION/HASH/NAME-SPLIT[-NNNNN-of-NNNNN].arrow; the newest."""
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
    newest = max((f.parent for f in by_split[split]), key=lambda p: p.stat().st_mtime)
    return sorted(f for f in by_split[split] if f.parent == newest)


# ---- folders ---------------------------------------------------------------------------------
def _resolve_folder(folder: Path, split: str, label: str) -> Source:
    """A save_to_disk folder (one split, or a DatasetDict), or a dataset repository's data files."""
    if _is_saved(folder):
        return Source(label, label, _saved_files(folder, split, label), SAVED)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in DATA_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts)
                   and p.name not in SAVED_MARKERS)
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


def _is_saved(folder: Path) -> bool:
    """What `datasets.load_from_disk` accepts: a DatasetDict, or one Dataset."""
    return (folder / "dataset_dict.json").is_file() or all((folder / m).is_file() for m in ("state.json",
                                                                                          "dataset_info.json"))


def _saved_files(folder: Path, split: str, label: str) -> list[Path]:
    """The Arrow files of `split` in a save_to_disk folder, as its state.json lists them."""
    if (folder / "dataset_dict.json").is_file():
        splits = _saved_json(folder / "dataset_dict.json", label).get("splits") or []
        if split not in splits:
            raise DataError(f"{label}: no split '{split}' in this saved DatasetDict (found: {', '.join(splits)})",
                            "name one of those splits (hf:NAME:SPLIT), or point data.path at its subfolder")
        folder = folder / split
    for marker in ("state.json", "dataset_info.json"):
        if not (folder / marker).is_file():
            raise DataError(f"{label}: the saved dataset in {folder} has no {marker}", HINT_RESAVE)
    _saved_json(folder / "dataset_info.json", label)
    listed = _saved_json(folder / "state.json", label).get("_data_files") or []
    files = [folder / f["filename"] for f in listed if isinstance(f, dict) and isinstance(f.get("filename"), str)]
    missing = [f.name for f in files if not f.is_file()]
    if not files or missing:
        raise DataError(f"{label}: the saved dataset in {folder} is incomplete (missing: "
                        f"{', '.join(missing) or 'its data files'})", HINT_RESAVE)
    return files


def _saved_json(path: Path, label: str) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{label}: {path} cannot be read ({exc})", HINT_RESAVE) from None
    if not isinstance(value, dict):
        raise DataError(f"{label}: {path} is not what save_to_disk writes (a JSON object)", HINT_RESAVE)
    return value


def _split_of(relative: Path) -> str | None:
    words = re.split(r"[^a-z]+", str(relative).lower())
    for split, names in SPLIT_WORDS.items():
        if any(w in names for w in words):
            return split
    return None


# ---- rows --------------------------------------------------------------------------------------
def iter_source_rows(source: Source, bad: list[BadRow] | None = None,
                     text_blocks: str = "paragraph") -> Iterator[Row]:
    """Rows of every file of the source; with several files each row names its file. The window's
    reader (core/data/preview.py); the jobs read through dataset_rows.source_rows, which hands what
    `datasets` wrote to `datasets` — here its Arrow files are read with pyarrow, and its rows are
    numbered over the split ("row 12") as they are there."""
    if source.kind != FILES:
        records = itertools.chain.from_iterable(_arrow_records(f, source) for f in source.files)
        for n, record in enumerate(records, start=1):
            yield Row(f"row {n}", record)
        return
    many = not source.is_file
    for f in source.files:
        if f.suffix.lower() == ".arrow":
            rows = (Row(f"row {n}", r) for n, r in enumerate(_arrow_records(f, source), start=1))
        else:
            rows = iter_rows(f, bad, text_blocks)
        for row in rows:
            yield Row(f"{f.name}, {row.where}", row.value) if many else row


def _arrow_records(path: Path, source: Source) -> Iterator[dict]:
    import pyarrow as pa
    try:
        stream = pa.memory_map(str(path))
        try:
            reader = pa.ipc.open_stream(stream)
        except pa.ArrowInvalid:
            reader = pa.ipc.open_file(stream)
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        else:
            batches = iter(reader)
        for batch in batches:
            yield from batch.to_pylist()
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{source.label}: {path.name} is not a readable Arrow file ({exc})",
                        damaged_hint(source)) from None


def damaged_hint(source: Source) -> str:
    """What to do about a damaged Arrow file of this source."""
    if source.kind == SAVED:
        return HINT_RESAVE
    if source.kind == BUILD:
        return (f"delete {source.files[0].parent} from the datasets cache and load the dataset again where "
                "there is a network")
    return "replace the file with a good copy"


PROGRESS_EVERY_S = 1.0          # the most often a long read says how far it is
HASH_CHUNK = 1 << 22


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


def content_hash(source: Source, progress=None) -> str:
    """A digest of every byte of every file that decides the rows (and their names and order): the
    token cache's key. The same save_to_disk output always gets the same key. `progress(fraction)`,
    when given, hears how far the reading is (bytes), at most once per PROGRESS_EVERY_S."""
    import time
    digest = hashlib.blake2b(digest_size=16)
    total = sum(f.stat().st_size for f in source.key_files) or 1
    done, last = 0, time.monotonic()
    for f in source.key_files:
        digest.update(f.name.encode() + b"\0" + str(f.stat().st_size).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(HASH_CHUNK), b""):
                digest.update(chunk)
                done += len(chunk)
                if progress is not None and time.monotonic() - last >= PROGRESS_EVERY_S:
                    last = time.monotonic()
                    progress(min(1.0, done / total))
    return digest.hexdigest()


# ---- the Cached ▾ list -------------------------------------------------------------------------
def list_cached_datasets() -> list[dict]:
    """Datasets in the local HF caches: [{"id", "spec", "path", "size", "cache"}], by id. A dataset in
    the hub cache is listed with its `main` snapshot, as `hf:NAME` resolves it."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound
    found: dict[str, dict] = {}
    try:
        repos = scan_cache_dir(hf_cache_dir()).repos
    except (CacheNotFound, ValueError):                     # no hub cache (or a file where it should be)
        repos = frozenset()
    for repo in repos:
        main = repo.refs.get("main")
        if repo.repo_type == "dataset" and main is not None:
            found[repo.repo_id] = {"id": repo.repo_id, "spec": HF_PREFIX + repo.repo_id,
                                   "path": str(main.snapshot_path), "size": main.size_on_disk, "cache": "hub"}
    builds = datasets_cache_dir()
    if builds.is_dir():
        for folder in sorted(p for p in builds.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
            files = [f for f in folder.rglob("*.arrow") if not f.name.startswith("cache-")]
            name = folder.name.replace("___", "/")
            if files and name not in found:
                found[name] = {"id": name, "spec": HF_PREFIX + name, "path": str(folder),
                               "size": sum(f.stat().st_size for f in files), "cache": "datasets"}
    return [found[k] for k in sorted(found)]
