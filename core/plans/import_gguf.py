"""The import_gguf job's starter: a local .gguf becomes a model folder in the cache, once
(core/models/gguf_cache.py says where and how it is keyed; the job is core/jobs/import_gguf.py,
its folder models/.imports/<stem>-<stamp>/). Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lorastudio.core.models.gguf_cache import IMPORTS_DIR, GgufError, cached_import, models_dir
from lorastudio.core.runs.folders import slugify
from lorastudio.core.runtime.follower import follow
from lorastudio.core.runtime.launcher import JobHandle, launch, new_job_dir


@dataclass(frozen=True)
class ImportGgufRequest:
    gguf: Path


def start_import_gguf(request: ImportGgufRequest) -> JobHandle:
    """Launch the import job; its journal is JOB_DIR/events.jsonl, its `end` names the folder."""
    gguf = Path(request.gguf).expanduser().resolve()
    job_dir = new_job_dir(models_dir() / IMPORTS_DIR, slugify(gguf.stem))
    return launch("import_gguf", job_dir, {"gguf": str(gguf)})


def import_with_worker(gguf: str | Path, on_event: Callable[[dict], None] | None = None) -> Path:
    """Import in a job and wait (Ctrl+C stops it); GgufError carries the job's error event."""
    folder = cached_import(gguf)
    if folder is not None:
        return folder
    handle = start_import_gguf(ImportGgufRequest(Path(gguf)))
    outcome = follow(handle, on_event)
    if outcome.status == "completed" and outcome.output:
        return Path(outcome.output)
    if outcome.error is not None:
        raise GgufError(outcome.error["message"], outcome.error.get("hint", ""))
    raise GgufError(f"the import {outcome.status}", f"see {handle.log}")
