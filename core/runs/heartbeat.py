"""status.json while a run's job lives: `running` with the job's pid at once, refreshed every
HEARTBEAT_S seconds by a thread, and the final state once the job ends. Torch-free.

Readers (core/runs/folders.worker_alive, the Runs page) call a run whose pid is gone and whose
journal has no `end` crashed; the heartbeat tells a live job from a stuck file.

The same thread watches the run folder and its lock file every WATCH_S seconds (issue 27): when the
folder is deleted or replaced (another inode at the path), or its `.lock` is, the worker no longer
owns that path — it writes no status there again and `on_lost(why)` is called (the train job ends
the process at once, with a journal line through its open journal if it still can).
"""
from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Callable, Iterator

from lorastudio.core.runs.folders import HEARTBEAT_S, write_status
from lorastudio.core.runs.locks import LOCK_FILE

WATCH_S = 1.0               # how often the run folder and its lock are checked


def identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def lost_reason(run_dir: Path, folder_id, lock_id) -> str | None:
    """Why this worker no longer owns `run_dir` (deleted, replaced, its lock gone), or None."""
    now = identity(run_dir)
    if now is None:
        return f"the run folder {run_dir} was deleted"
    if now != folder_id:
        return f"the run folder {run_dir} was replaced by another folder"
    if lock_id is not None and identity(Path(run_dir) / LOCK_FILE) != lock_id:
        return f"the run folder's lock {Path(run_dir) / LOCK_FILE} was removed or replaced"
    return None


@contextlib.contextmanager
def heartbeat(run_dir: Path, every_s: float = HEARTBEAT_S, on_lost: Callable[[str], None] | None = None,
              watch_s: float = WATCH_S) -> Iterator[Callable[[str], None]]:
    """status.json says `running` with this process's pid now and every `every_s` seconds until the
    block ends. Yields the function that writes the final state (completed, stopped, failed): the
    job runtime calls it after the journal's `end` (core/runtime/worker.Job.on_end). `on_lost(why)`:
    called once from the thread when the run folder or its lock is deleted or replaced."""
    pid = os.getpid()
    run_dir = Path(run_dir)
    write_status(run_dir, pid=pid, state="running")
    folder_id, lock_id = identity(run_dir), identity(run_dir / LOCK_FILE)
    stop = threading.Event()
    lost: dict = {"why": None}

    def owned() -> bool:
        if lost["why"] is None:
            lost["why"] = lost_reason(run_dir, folder_id, lock_id)
        return lost["why"] is None

    def beat() -> None:
        waited = 0.0
        while not stop.wait(min(watch_s, every_s)):
            waited += min(watch_s, every_s)
            if not owned():
                if on_lost is not None:
                    on_lost(lost["why"])
                return                      # never a status.json in a folder that is not ours
            if waited >= every_s:
                waited = 0.0
                write_status(run_dir, state="running", pid=pid)

    def final(state: str) -> None:
        if owned():
            write_status(run_dir, state=state, pid=pid)
    thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
    thread.start()
    try:
        yield final
    finally:
        stop.set()
        thread.join(timeout=2 * every_s)
