"""`python -m lorastudio.core.worker RUN_DIR [--resume-from CHECKPOINT]`: train from
RUN_DIR/config.yaml, journal to events.jsonl (appending: a resumed run keeps one journal).

Exit status: 0 completed or stopped (the adapter is saved), 1 failed. SIGTERM or SIGINT asks for
a graceful stop after the current step; a second one stops at once. Every failure becomes an
`error` event (kind, message, hint) before `end`; the traceback goes to worker.log and a `log` event.
An out-of-memory error also carries `overrides`, the settings a one-click resume applies. What no
Python code can report (SIGKILL, a segfault) leaves no `end`: readers see a dead pid in status.json
and call the run crashed; faulthandler puts the native stack of a segfault into worker.log.

LORASTUDIO_FAULT=KIND:STEP (oom, exception, segfault, kill) makes the worker fail on purpose before
optimizer step STEP+1 — the tests' way to produce each failure in a real process.
"""
from __future__ import annotations

import argparse
import faulthandler
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Callable

from lorastudio.core.checks import check_config
from lorastudio.core.config import ConfigError, RunConfig
from lorastudio.core.events import JournalWriter
from lorastudio.core.modelinfo import ModelError
from lorastudio.core.resume import oom_hint, oom_overrides
from lorastudio.core.runs import CONFIG_FILE, HEARTBEAT_S, JOURNAL_FILE, write_status

__all__ = ["classify", "main", "oom_hint", "run"]


class StopFlag:
    def __init__(self):
        self.requested = False

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, _frame) -> None:
        if self.requested:          # second signal: give up at once
            raise KeyboardInterrupt
        self.requested = True

    def __call__(self) -> bool:
        return self.requested


def classify(exc: BaseException, config: RunConfig | None) -> tuple[str, str, str]:
    """(kind, message, hint) for an exception, in words a user can act on."""
    from lorastudio.core.datafiles import DataError
    name = type(exc).__name__
    if isinstance(exc, ConfigError):
        return "config", str(exc), "fix the value in config.yaml and start again"
    if isinstance(exc, (DataError, ModelError)):
        return ("data" if isinstance(exc, DataError) else "model"), exc.message, exc.hint
    if name == "OutOfMemoryError" or "CUDA out of memory" in str(exc):
        return "oom", str(exc).splitlines()[0], oom_hint(config) if config else "use smaller settings"
    if isinstance(exc, FloatingPointError):
        return "diverged", str(exc), "lower training.lr (e.g. halve it) or add warmup_steps"
    if isinstance(exc, OSError) and exc.errno == 28:
        return "disk", f"the disk is full: {exc}", "free some space; earlier checkpoints are intact"
    return "exception", f"{name}: {exc}", "see worker.log for the full traceback"


def heartbeat(run_dir: Path, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        write_status(run_dir, state="running", pid=os.getpid())


def injected_fault(stop: StopFlag, trainer_step: Callable[[], int]) -> Callable[[], bool]:
    """`should_stop` for the trainer, failing on purpose when LORASTUDIO_FAULT asks (tests only)."""
    kind, _, at = os.environ.get("LORASTUDIO_FAULT", "").partition(":")
    if not kind:
        return stop
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
        return stop()
    return check


def import_gguf_model(model: str, journal: JournalWriter) -> None:
    """A .gguf base is imported into the model cache first (once), with progress in the journal."""
    from lorastudio.core.gguf_convert import convert
    from lorastudio.core.gguf_import import cached_import, is_gguf
    if is_gguf(model) and Path(model).expanduser().is_file() and cached_import(model) is None:
        convert(model, lambda name, fraction, message: journal.emit(
            "phase", name="importing", step=name, fraction=fraction, message=message))


def run(run_dir: Path, resume_from: Path | None = None) -> int:
    faulthandler.enable()           # a segfault's native stack goes to worker.log
    journal = JournalWriter(run_dir / JOURNAL_FILE)
    write_status(run_dir, pid=os.getpid(), state="running")
    beating = threading.Event()
    beat = threading.Thread(target=heartbeat, args=(run_dir, beating), daemon=True)
    beat.start()
    stop = StopFlag()
    stop.install()
    config, status, adapter = None, "failed", None
    try:
        config = RunConfig.load(run_dir / CONFIG_FILE)
        import_gguf_model(config.model, journal)
        info, _report = check_config(config)
        from lorastudio.core.trainer import Trainer
        trainer = Trainer(config, info, run_dir, journal)
        trainer.should_stop = injected_fault(stop, lambda: trainer.step)
        trainer.setup(resume_from)
        trainer.start_event()
        status = trainer.train()
        adapter = getattr(trainer, "adapter_path", None)
    except KeyboardInterrupt:
        status = "stopped"
        journal.emit("log", level="warning", message="Stopped at once on a second signal; nothing saved")
    except BaseException as exc:        # noqa: BLE001 — every failure must reach the journal
        kind, message, hint = classify(exc, config)
        trace = traceback.format_exc()
        print(trace, file=sys.stderr, flush=True)
        journal.emit("log", level="error", message=trace)
        extra = {"overrides": oom_overrides(config)} if kind == "oom" and config else {}
        journal.emit("error", kind=kind, message=message, hint=hint, **extra)
        status = "failed"
    finally:
        beating.set()
        beat.join(timeout=2 * HEARTBEAT_S)
    journal.emit("end", status=status, adapter=str(adapter) if adapter else None)
    journal.close()
    write_status(run_dir, state=status, pid=os.getpid())
    return 0 if status in ("completed", "stopped") else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lorastudio.core.worker")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--resume-from", type=Path, default=None)
    args = parser.parse_args(argv)
    if not (args.run_dir / CONFIG_FILE).is_file():
        print(f"error: {args.run_dir / CONFIG_FILE} does not exist", file=sys.stderr)
        return 2
    return run(args.run_dir.resolve(), args.resume_from)


if __name__ == "__main__":
    sys.exit(main())
