"""The training job's starter. Torch-free.

The run folder is the job folder: `prepare_run` (core/runs/folders.py) writes config.yaml and takes
the run's lock, `resume_run` plans a resume (core/runs/resume.py) and marks the journal; `start_train` launches
`python -m lorastudio.core.jobs.train RUN_DIR [--resume-from CHECKPOINT]` in its own session, so the
run outlives the window or the CLI, and hands the lock to it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lorastudio.core.disk import FolderNotWritable
from lorastudio.core.runs.folders import write_status
from lorastudio.core.runs.locks import FolderBusy, acquire, release_all
from lorastudio.core.runs.resume import ResumeError, ResumePlan, plan_resume, write_resume
from lorastudio.core.runtime.launcher import JobHandle, launch


@dataclass(frozen=True)
class TrainRequest:
    run_dir: Path
    resume_from: Path | None = None         # a checkpoint folder to go on from
    env: dict | None = None                 # extra environment (tests: LORASTUDIO_FAULT)
    niceness: int = 0                       # 0: normal priority; the window's "Background priority" asks for more


def start_train(request: TrainRequest) -> JobHandle:
    """Launch the training job; its pid goes into status.json at once, so a window scanning the
    runs never mistakes a worker that is still importing torch for a crashed one."""
    run_dir = Path(request.run_dir)
    args = ("--resume-from", str(request.resume_from)) if request.resume_from else ()
    lock = acquire(run_dir, "starting a training run", label="the run folder")     # already ours after prepare_run or a resume
    try:
        handle = launch("train", run_dir, None, args, detach=True, env=request.env, niceness=request.niceness,
                        lock=lock)
        if handle.process is not None and handle.returncode() is None:
            write_status(run_dir, pid=handle.pid)
    finally:
        release_all(lock)       # the worker holds it now (its own copy of the open lock file)
    return handle


def resume_run(run_dir: Path, step: int | None = None, overrides: dict | None = None,
               env: dict | None = None) -> tuple[JobHandle, ResumePlan]:
    """Resume `run_dir` now from a checkpoint (the latest, or `step`), with config `overrides`:
    (the training job's handle, the plan). Raises ResumeError with what to do."""
    try:
        lock = acquire(Path(run_dir), "resuming", label="the run folder",
                       hint="resuming writes into the run folder: copy it to a writable disk and resume the copy")     # no second writer: core/runs/locks.py
    except (FolderBusy, FolderNotWritable) as exc:      # FolderNotWritable: a read-only run folder (issue 27)
        raise ResumeError(exc.message, exc.hint) from None
    try:
        plan, config = plan_resume(run_dir, step, overrides)
        write_resume(plan, config)
        return start_train(TrainRequest(plan.run_dir, plan.checkpoint, env)), plan
    finally:
        lock.release()
