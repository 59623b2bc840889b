"""`python -m lorastudio.core.worker RUN_DIR`: train from RUN_DIR/config.yaml, journal to events.jsonl.

Exit status: 0 completed or stopped (the adapter is saved), 1 failed. SIGTERM or SIGINT asks for
a graceful stop after the current step; a second one stops at once. Every failure becomes an
`error` event (kind, message, hint) before `end`; the traceback goes to worker.log and a `log` event.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import traceback
from pathlib import Path

from lorastudio.core.checks import check_config
from lorastudio.core.config import ConfigError, RunConfig
from lorastudio.core.events import JournalWriter
from lorastudio.core.modelinfo import ModelError
from lorastudio.core.runs import CONFIG_FILE, HEARTBEAT_S, JOURNAL_FILE, write_status


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


def oom_hint(config: RunConfig) -> str:
    """Concrete settings that need less memory, computed from this run's config."""
    t, tips = config.training, []
    if t.batch_size > 1:
        tips.append(f"batch_size {t.batch_size} → {t.batch_size // 2} with grad_accum "
                    f"{t.grad_accum} → {t.grad_accum * 2} (same effective batch)")
    if t.seq_len > 256:
        tips.append(f"seq_len {t.seq_len} → {t.seq_len // 2}")
    if config.quantization != "4bit":
        tips.append(f"quantization {config.quantization} → 4bit")
    if not t.gradient_checkpointing:
        tips.append("gradient_checkpointing: true")
    if config.lora.r > 16:
        tips.append(f"lora.r {config.lora.r} → 16")
    return ("Out of GPU memory. Try: " + "; ".join(tips)) if tips else \
        "Out of GPU memory even at the smallest settings; use a smaller model or a larger GPU."


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
        write_status(run_dir)


def run(run_dir: Path, resume_from: Path | None = None) -> int:
    journal = JournalWriter(run_dir / JOURNAL_FILE)
    write_status(run_dir, pid=os.getpid(), state="running")
    beating = threading.Event()
    threading.Thread(target=heartbeat, args=(run_dir, beating), daemon=True).start()
    stop = StopFlag()
    stop.install()
    config, status, adapter = None, "failed", None
    try:
        config = RunConfig.load(run_dir / CONFIG_FILE)
        info, _report = check_config(config)
        from lorastudio.core.trainer import Trainer
        trainer = Trainer(config, info, run_dir, journal, should_stop=stop)
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
        journal.emit("error", kind=kind, message=message, hint=hint)
        status = "failed"
    finally:
        beating.set()
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
