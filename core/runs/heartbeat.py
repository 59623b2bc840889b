"""status.json while a run's job lives: `running` with the job's pid at once, refreshed every
HEARTBEAT_S seconds by a thread, and the final state once the job ends. Torch-free.

Readers (core/runs/folders.worker_alive, the Runs page) call a run whose pid is gone and whose
journal has no `end` crashed; the heartbeat tells a live job from a stuck file.
"""
from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Callable, Iterator

from lorastudio.core.runs.folders import HEARTBEAT_S, write_status


@contextlib.contextmanager
def heartbeat(run_dir: Path, every_s: float = HEARTBEAT_S) -> Iterator[Callable[[str], None]]:
    """status.json says `running` with this process's pid now and every `every_s` seconds until the
    block ends. Yields the function that writes the final state (completed, stopped, failed): the
    job runtime calls it after the journal's `end` (core/runtime/worker.Job.on_end)."""
    pid = os.getpid()
    write_status(run_dir, pid=pid, state="running")
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            write_status(run_dir, state="running", pid=pid)
    thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
    thread.start()
    try:
        yield lambda state: write_status(run_dir, state=state, pid=pid)
    finally:
        stop.set()
        thread.join(timeout=2 * every_s)
