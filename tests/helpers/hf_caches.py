"""The local Hugging Face caches of datasets, built offline the way the libraries lay them out:
a dataset repository in the hub cache (blobs, refs, snapshots of symlinks) and a build in the
`datasets` cache (written by datasets' own JSON builder)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path


def hub_dataset(hub: Path, name: str, files: dict[str, bytes | str], commit: str = "0123abcd" * 5,
                main: bool = True, listing: dict[str, bytes | str] | None = None) -> Path:
    """datasets--OWNER--NAME/{blobs/<sha256>, snapshots/<commit>/<path> -> blob, refs/main}; the
    snapshot folder. `listing`: the files of the commit as the hub listed them when it was
    downloaded (trees/<commit>.json); a listed file absent from `files` makes the copy incomplete."""
    repo = hub / ("datasets--" + name.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for path, content in files.items():
        data = content.encode() if isinstance(content, str) else content
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / path
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    snapshot.mkdir(parents=True, exist_ok=True)
    if main:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
    if listing is not None:
        entries = {}
        for path, content in listing.items():
            data = content.encode() if isinstance(content, str) else content
            entries[path] = {"size": len(data), "blob_id": hashlib.sha1(data).hexdigest()}
        (repo / "trees").mkdir(exist_ok=True)
        (repo / "trees" / f"{commit}.json").write_text(json.dumps({"format_version": 1, "files": entries}))
    return snapshot


def saved_files(folder: Path) -> dict[str, bytes]:
    """Every file of a save_to_disk folder by its relative path (to put it in a hub repository)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def datasets_build(cache: Path, name: str, splits: dict[str, list[dict]], work: Path) -> Path:
    """A dataset prepared into the datasets cache by datasets' JSON builder, as `load_dataset` leaves
    it: CACHE/NAME/CONFIG/VERSION/HASH/NAME-SPLIT.arrow (+ dataset_info.json). The build folder."""
    from datasets.packaged_modules.json.json import Json
    work.mkdir(parents=True, exist_ok=True)
    data_files = {}
    for split, rows in splits.items():
        data_files[split] = str(work / f"{split}.jsonl")
        Path(data_files[split]).write_text("".join(json.dumps(r) + "\n" for r in rows))
    builder = Json(cache_dir=str(work / "built"), dataset_name=name.split("/")[-1], data_files=data_files,
                   hash="0f1e2d3c4b5a6978")
    builder.download_and_prepare()
    built = work / "built" / name.split("/")[-1]
    target = cache / name.replace("/", "___")                # the folder datasets gives a hub dataset
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(built, target, ignore=shutil.ignore_patterns("*.lock"))
    return next(p.parent for p in target.rglob("dataset_info.json"))


def empty_hf_home(tmp_path: Path, monkeypatch) -> Path:
    """An empty, offline HF_HOME (the hub cache is HF_HOME/hub, the datasets cache HF_HOME/datasets)
    and a private token cache; returns HF_HOME."""
    for var in ("HF_HUB_CACHE", "HF_DATASETS_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("LORASTUDIO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "hf"
