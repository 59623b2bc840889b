"""Run folders, status files and starting the training job. Torch-free (the window uses all of this).

runs/2026-11-22_1405_smollm2-demo/
  config.yaml  events.jsonl  worker.log  status.json  checkpoints/step-000100/  adapter/
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
import signal
import time
from pathlib import Path

from lorastudio.core.config import RunConfig
from lorastudio.core.atomic_files import atomic_write_json
from lorastudio.core.disk import existing_ancestor, not_writable
from lorastudio.core.processes import pid_alive  # noqa: F401 (importers take it from here)
from lorastudio.core.runs.home import data_home  # noqa: F401 (importers take it from here)
from lorastudio.core.runs.locks import acquire

CONFIG_FILE, JOURNAL_FILE, STATUS_FILE, LOG_FILE = "config.yaml", "events.jsonl", "status.json", "worker.log"
ADAPTER_DIR, CHECKPOINTS_DIR = "adapter", "checkpoints"
# Job folders (core/runtime/launcher.new_job_dir): a run's merges and evaluations live in the run
# folder (its playground answers too: core/runs/heldout.py); inspections under the data directory.
MERGES_DIR, EVALS_DIR, INSPECTIONS_DIR = "merges", "evals", "inspections"
RUN_FOLDER_HINT = ("choose a run folder on a writable disk that you own (--run-dir on the command line, or "
                   "LORASTUDIO_HOME for the data directory)")
HEARTBEAT_S = 5.0            # the worker refreshes status.json this often
STALE_AFTER_S = 60.0
# The training job's module, now and before 0.2 (a run started by 0.1 is still recognised as live).
WORKER_MODULES = (b"lorastudio.core.jobs.train", b"lorastudio.core.worker")


def default_runs_dir() -> Path:
    return data_home() / "runs"


def slugify(text: str) -> str:
    slug = re.sub(r"[^a-zA-Z0-9]+", "-", text).strip("-").lower()
    return slug[:40] or "run"


def new_run_dir(config: RunConfig, runs_root: Path | None = None, now: _dt.datetime | None = None) -> Path:
    """A fresh, unique folder name: <date>_<time>_<name or model>."""
    runs_root = Path(runs_root or default_runs_dir())
    stamp = (now or _dt.datetime.now()).strftime("%Y-%m-%d_%H%M")
    label = slugify(config.name or Path(config.model.rstrip("/")).name)
    candidate, n = runs_root / f"{stamp}_{label}", 2
    while candidate.exists():
        candidate, n = runs_root / f"{stamp}_{label}-{n}", n + 1
    return candidate


def prepare_run(config: RunConfig, run_dir: Path) -> Path:
    """Create the run folder, take its lock (core/runs/locks.py: held until `start_train` (core/plans/train.py) hands
    it to the worker) and write its resolved config. Refuses a folder that has a journal, and one
    that another process is writing into (FolderBusy, naming its pid)."""
    run_dir = Path(run_dir)
    if (run_dir / JOURNAL_FILE).exists():
        raise FileExistsError(f"{run_dir} already holds a run (events.jsonl); choose a new folder")
    from lorastudio.core.runs.output_paths import check_run_folder     # never a model, an adapter… (issue 27)
    check_run_folder(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:      # the runs folder (in the data directory) or --run-dir's parent is read-only
        where = existing_ancestor(run_dir)
        home = data_home().absolute()
        _refuse_unwritable(exc, where, "the data directory" if where == home or home in where.parents
                           else "the folder that would hold the run folder")
    lock = acquire(run_dir, "starting a training run", label="the run folder", hint=RUN_FOLDER_HINT)
    try:
        if (run_dir / JOURNAL_FILE).exists():      # a worker that ended between the check and the lock
            raise FileExistsError(f"{run_dir} already holds a run (events.jsonl); choose a new folder")
        config.save(run_dir / CONFIG_FILE)
        write_status(run_dir, state="starting", pid=None)
    except OSError as exc:
        lock.release()
        _refuse_unwritable(exc, run_dir, "the run folder")
    except BaseException:
        lock.release()
        raise
    return run_dir


def _refuse_unwritable(exc: OSError, folder: Path, label: str):
    """Raise FolderNotWritable naming `folder` for a read-only disk or a refused permission; else `exc`."""
    refused = not_writable(exc, folder, label, RUN_FOLDER_HINT)
    if refused is None:
        raise exc
    raise refused from None


def write_status(run_dir: Path, **fields) -> None:
    status = read_status(run_dir)
    status.update(fields)
    status["heartbeat"] = time.time()
    atomic_write_json(Path(run_dir) / STATUS_FILE, status)


def read_status(run_dir: Path) -> dict:
    try:
        data = json.loads((Path(run_dir) / STATUS_FILE).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):       # missing, a folder, not UTF-8, not JSON: no status (issue 27)
        return {}


def worker_alive(run_dir: Path, status: dict | None = None, now: float | None = None) -> bool:
    """A live worker: its pid runs, is our worker (where /proc says so), and its heartbeat is fresh."""
    status = read_status(run_dir) if status is None else status
    pid = status.get("pid")
    if not pid_alive(pid):
        return False
    beat = status.get("heartbeat")
    if not isinstance(beat, (int, float)) or (now or time.time()) - beat > STALE_AFTER_S:
        return False
    try:        # a pid reused by another program after a reboot is not our worker
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return any(name in cmdline for name in WORKER_MODULES) or not cmdline


def stop_worker(run_dir: Path, pid: int | None = None) -> bool:
    """Ask a worker to stop gracefully (SIGTERM): it saves a checkpoint and the adapter first."""
    pid = pid or read_status(run_dir).get("pid")
    if not pid_alive(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    return True
