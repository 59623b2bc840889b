"""The import_gguf job's starter: a local .gguf becomes a model folder in the cache, once
(core/models/gguf_cache.py says where and how it is keyed; the job is core/jobs/import_gguf.py,
its folder models/.imports/<stem>-<stamp>/). Torch-free.

One import per cache target: the starter takes the target's lock (models/.imports/.<target>.lock,
core/runs/locks.py) and hands it to the job, which holds it for its life, and notes the job's folder
and pid beside it (.<target>.running). A second start of the same GGUF into the same cache while
that job runs — the window started again, the CLI beside the window — gets a handle on the running
job instead of a second worker: its journal from the start, its process for stop.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lorastudio.core.atomic_files import atomic_write_text
from lorastudio.core.models.gguf_cache import IMPORTS_DIR, GgufError, cache_folder, cached_import, models_dir
from lorastudio.core.processes import pid_alive
from lorastudio.core.runs.folders import slugify
from lorastudio.core.runs.locks import FolderBusy, acquire, holder, release_all
from lorastudio.core.runtime.follower import follow
from lorastudio.core.runtime.launcher import JobHandle, launch, new_job_dir

ATTACH_WAIT_S = 5.0         # a starter that took the lock notes its job within this (else it is gone)


@dataclass(frozen=True)
class ImportGgufRequest:
    gguf: Path


def import_lock(gguf: Path) -> Path:
    """The lock file of the cache target of `gguf` (a hidden file in models/.imports/)."""
    return models_dir() / IMPORTS_DIR / f".{cache_folder(gguf).name}.lock"


def _note(lock_file: Path) -> Path:
    return lock_file.with_suffix(".running")


class RunningImport:
    """The process of an import another starter launched: running while it holds the target's lock
    (the kernel drops it when the process ends, however it ends); stopped by its pid."""

    def __init__(self, lock_file: Path, pid: int | None):
        self.lock_file, self.pid = lock_file, pid

    def poll(self) -> int | None:
        return None if holder(self.lock_file.parent, self.lock_file) is not None else 0

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                import subprocess
                raise subprocess.TimeoutExpired(f"import (pid {self.pid})", timeout)
            time.sleep(0.1)
        return 0

    def send_signal(self, sig: int) -> None:
        if self.pid:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def running_import(gguf: Path) -> JobHandle | None:
    """A handle on the import of `gguf` running now (started by any process), or None."""
    lock_file = import_lock(gguf)
    deadline = time.monotonic() + ATTACH_WAIT_S
    while holder(lock_file.parent, lock_file) is not None:
        try:
            note = json.loads(_note(lock_file).read_text(encoding="utf-8"))
            job_dir, pid = Path(note["job_dir"]), int(note["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            note = None
        if note is not None and pid_alive(pid) and (job_dir / "job.yaml").is_file():
            return JobHandle("import_gguf", job_dir, RunningImport(lock_file, pid))
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)             # its starter holds the lock and is about to note the job
    return None


def start_import_gguf(request: ImportGgufRequest) -> JobHandle:
    """Launch the import job (or attach to the one running for the same target); its journal is
    JOB_DIR/events.jsonl, its `end` names the folder."""
    gguf = Path(request.gguf).expanduser().resolve()
    lock_file = import_lock(gguf)
    for _attempt in range(3):
        try:
            lock = acquire(lock_file.parent, f"importing {gguf.name}", lock_file)
        except FolderBusy:
            running = running_import(gguf)
            if running is not None:
                return running
            continue                    # it ended meanwhile: take the lock now
        break
    else:
        raise GgufError(f"another import of {gguf.name} holds the model cache's lock and says nothing",
                        f"wait for it to end, or remove {lock_file} if no LoRA Studio process runs")
    handle = None
    try:
        with contextlib.suppress(OSError):          # the last import's note: not this one's
            _note(lock_file).unlink()
        job_dir = new_job_dir(models_dir() / IMPORTS_DIR, slugify(gguf.stem))
        handle = launch("import_gguf", job_dir, {"gguf": str(gguf)}, lock=lock)
        if handle.returncode() is None:
            atomic_write_text(_note(lock_file), json.dumps({"job_dir": str(job_dir), "pid": handle.pid}))
        return handle
    finally:
        release_all(lock, handed_over=handle is not None and handle.returncode() is None)


def import_with_worker(gguf: str | Path, on_event: Callable[[dict], None] | None = None) -> Path:
    """Import in a job (or follow the one already importing it) and wait (Ctrl+C stops it);
    GgufError carries the job's error event."""
    folder = cached_import(gguf)
    if folder is not None:
        return folder
    handle = start_import_gguf(ImportGgufRequest(Path(gguf)))
    outcome = follow(handle, on_event)
    if outcome.status == "completed" and outcome.output:
        return Path(outcome.output)
    if outcome.error is not None:
        raise GgufError(outcome.error["message"], outcome.error.get("hint", ""))
    folder = cached_import(gguf)        # an attached import's end line may have been its last act
    if folder is not None:
        return folder
    raise GgufError(f"the import {outcome.status}", f"see {handle.log}")
