"""`python -m lorastudio.core.jobs.train RUN_DIR [--resume-from CHECKPOINT]`: train from
RUN_DIR/config.yaml, journal to events.jsonl (appending: a resumed run keeps one journal).

The run folder is the job folder. Its life is the runtime's (core/runtime/worker.py): SIGTERM or
SIGINT asks for a graceful stop after the current step (the adapter is saved), a second stops at
once; every failure becomes an `error` event before `end`. This job adds status.json and its
heartbeat, and on out-of-memory the `overrides` a one-click resume applies. What no Python code
can report (SIGKILL, a segfault) leaves no `end`: readers see a dead pid in status.json and call
the run crashed; faulthandler puts the native stack of a segfault into worker.log.

LORASTUDIO_FAULT=KIND:STEP (oom, exception, segfault, kill) makes the worker fail on purpose before
optimizer step STEP+1 — the tests' way to produce each failure in a real process.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Callable

from lorastudio.core.config import RunConfig
from lorastudio.core.journal import JournalWriter
from lorastudio.core.preflight import check_config
from lorastudio.core.runs.folders import CONFIG_FILE, HEARTBEAT_S, write_status
from lorastudio.core.runs.resume import oom_hint, oom_overrides
from lorastudio.core.runtime.worker import Job, job_main


def heartbeat(run_dir: Path, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        write_status(run_dir, state="running", pid=os.getpid())


def injected_fault(should_stop: Callable[[], bool], trainer_step: Callable[[], int]) -> Callable[[], bool]:
    """`should_stop` for the trainer, failing on purpose when LORASTUDIO_FAULT asks (tests only)."""
    kind, _, at = os.environ.get("LORASTUDIO_FAULT", "").partition(":")
    if not kind:
        return should_stop
    at_step = int(at or 0)

    def check() -> bool:
        if trainer_step() >= at_step:
            if kind == "oom":
                import torch
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated by "
                                             "LORASTUDIO_FAULT)")
            if kind == "segfault":
                import ctypes
                ctypes.string_at(0)
            if kind == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"injected failure at step {at_step}")
        return should_stop()
    return check


def import_gguf_model(model: str, journal: JournalWriter) -> None:
    """A .gguf base is imported into the model cache first (once), with progress in the journal."""
    from lorastudio.core.engine.gguf_convert import convert
    from lorastudio.core.models.gguf_cache import cached_import, is_gguf
    if is_gguf(model) and Path(model).expanduser().is_file() and cached_import(model) is None:
        convert(model, lambda name, fraction, message: journal.emit(
            "phase", name="importing", step=name, fraction=fraction, message=message))


def train(job: Job) -> dict:
    run_dir = job.job_dir
    write_status(run_dir, pid=os.getpid(), state="running")
    job.on_end = lambda status: write_status(run_dir, state=status, pid=os.getpid())
    beating = threading.Event()
    beat = threading.Thread(target=heartbeat, args=(run_dir, beating), daemon=True)
    beat.start()
    try:
        config = RunConfig.load(run_dir / CONFIG_FILE)
        job.oom_hint = lambda: oom_hint(config)
        job.error_extra = lambda kind: {"overrides": oom_overrides(config)} if kind == "oom" else {}
        import_gguf_model(config.model, job.journal)
        info, _report = check_config(config)
        from lorastudio.core.engine.trainer import Trainer
        trainer = Trainer(config, info, run_dir, job.journal)
        trainer.should_stop = injected_fault(job.should_stop, lambda: trainer.step)
        trainer.setup(job.args.resume_from)
        trainer.start_event()
        status = trainer.train()
        adapter = getattr(trainer, "adapter_path", None)
        return {"status": status, "adapter": str(adapter) if adapter else None}
    except KeyboardInterrupt:
        job.log("Stopped at once on a second signal; nothing saved", level="warning")
        return {"status": "stopped"}
    finally:
        beating.set()
        beat.join(timeout=2 * HEARTBEAT_S)


def main(argv: list[str] | None = None) -> int:
    return job_main("train", train, argv, spec_file=CONFIG_FILE,
                    add_arguments=lambda p: p.add_argument("--resume-from", type=Path, default=None))


if __name__ == "__main__":
    sys.exit(main())
