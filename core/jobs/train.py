"""`python -m lorastudio.core.jobs.train RUN_DIR [--resume-from CHECKPOINT]`: train from
RUN_DIR/config.yaml, journal to events.jsonl (appending: a resumed run keeps one journal).

The run folder is the job folder. Its life is the runtime's (core/runtime/worker.py): SIGTERM or
SIGINT asks for a graceful stop after the current step (the adapter is saved), a second stops at
once; every failure becomes an `error` event before `end`. What no Python code can report
(SIGKILL, a segfault) leaves no `end`: readers see a dead pid in status.json and call the run
crashed; faulthandler puts the native stack of a segfault into worker.log.

This module composes; each concern lives where it belongs:
  status.json and its heartbeat            core/runs/heartbeat.py
  the Trainer, built in one place          core/engine/trainer.build_trainer
  out of memory: the retry and the advice  core/engine/training/oom.py, advised by the memory model
                                           (core/fit/advice.settings_after_oom): the retry, the
                                           error's hint and the one-click resume's `overrides`
  several processes                        core/engine/training/ranks.py; ranks > 0 live under
                                           core/runtime/worker.peer_main (the runtime's signals)
  what a finished run teaches              core/fit/learn.learn_after_run
  failures on purpose, for the tests       core/runtime/faults.py (LORASTUDIO_FAULT)
"""
from __future__ import annotations

import argparse
import os
import contextlib
import sys
from pathlib import Path

from lorastudio.core.atomic_files import tidy
from lorastudio.core.config import RunConfig
from lorastudio.core.fit.learn import learn_after_run
from lorastudio.core.journal import JournalWriter
from lorastudio.core.models.info import ModelInfo
from lorastudio.core.preflight import check_config
from lorastudio.core.runs.folders import CHECKPOINTS_DIR, CONFIG_FILE
from lorastudio.core.runs.heartbeat import heartbeat
from lorastudio.core.runs.resume import check_room_for_training
from lorastudio.core.runtime.launcher import start_ranks
from lorastudio.core.runtime.worker import Job, job_main, peer_main


def run_lost(job: Job, why: str) -> None:
    """The run folder or its lock went (deleted, replaced): stop at once, writing nothing at that path.
    The journal line goes through the journal's open file (the old folder's, wherever it is now)."""
    message = f"{why}; the training worker stopped at once so that it writes nothing there"
    inline = is_inline()
    with contextlib.suppress(Exception):
        emit = job.journal.emit
        if not inline:
            job.journal.emit = lambda *_a, **_k: {}      # the training thread writes no line after ours
        emit("error", kind="run_lost", message=message,
             hint="start the run again, or resume it from a copy of its folder")
        if not inline:
            emit("end", status="failed", adapter=None)
            job.journal.close()
    print(f"error: {message}", file=sys.stderr, flush=True)
    if inline:
        import _thread
        _thread.interrupt_main()            # inline (the tests' in-process jobs): stop the main thread
        return
    os._exit(1)


def is_inline() -> bool:
    from lorastudio.core.runtime import launcher
    return bool(launcher._INLINE["on"])


def train(job: Job) -> dict:
    run_dir = job.job_dir
    with heartbeat(run_dir, on_lost=lambda why: run_lost(job, why)) as final_status:
        job.on_end = final_status
        try:
            config = RunConfig.load(run_dir / CONFIG_FILE)
            import_gguf_model(config.model, job.journal)
            info, report = check_config(config)
            tidy(run_dir / CHECKPOINTS_DIR)      # a killed save's leftovers go; a swapped-out adapter comes back
            tidy(run_dir)
            lora = report.lora_params(config.lora.targets, config.lora.r, config.lora.use_dora)
            check_room_for_training(run_dir, job.args.resume_from, first_checkpoint_bytes=4 * 4 * lora)
            if config.distributed.processes > 1:
                return ended(*train_ranks(job, config, info))
            status, trainer = train_one(job, config, info)
            learn_after_run(run_dir, status, lambda message, level: job.log(message, level=level))
            return ended(status, trainer)
        except KeyboardInterrupt:
            job.log("Stopped at once on a second signal; nothing saved", level="warning")
            return {"status": "stopped"}


def train_one(job: Job, config: RunConfig, info: ModelInfo):
    from lorastudio.core.engine.training.oom import OomAdvisor, train_one_process
    advisor = OomAdvisor(config, info)
    advisor.answer_for(job)
    return train_one_process(job, config, info, job.args.resume_from, advisor)


def train_ranks(job: Job, config: RunConfig, info: ModelInfo):
    """Rank 0 of a multi-process run: start the other ranks, then train with them."""
    from lorastudio.core.engine.training import ranks
    from lorastudio.core.engine.training.oom import OomAdvisor
    own = ranks.rank_config(config, 0)            # checked before any rank starts
    OomAdvisor(own, info, ranks.rank_device(own)).answer_for(job)
    resume_from = job.args.resume_from
    group = start_ranks("train", job.job_dir, config.distributed.processes,
                        ("--resume-from", str(resume_from)) if resume_from else ())
    return ranks.lead(job, own, info, resume_from, group)


def ended(status: str, trainer) -> dict:
    adapter = getattr(trainer, "adapter_path", None)
    return {"status": status, "adapter": str(adapter) if adapter else None}


def import_gguf_model(model: str, journal: JournalWriter) -> None:
    """A .gguf base is imported into the model cache first (once), with progress in the journal."""
    from lorastudio.core.models.gguf_cache import cached_import, is_gguf
    if is_gguf(model) and Path(model).expanduser().is_file() and cached_import(model) is None:
        from lorastudio.core.engine.gguf.import_gguf import convert
        convert(model, lambda name, fraction, message: journal.emit(
            "phase", name="importing", step=name, fraction=fraction, message=message))


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resume-from", type=Path, default=None)


def main(argv: list[str] | None = None) -> int:
    rank = int(os.environ.get("RANK", "0") or 0)
    if rank > 0:            # a rank of a multi-process run other than 0 (launched by train_ranks)
        from lorastudio.core.engine.training import ranks
        return peer_main("train", rank, lambda job: ranks.follow(job, rank), argv, add_arguments=arguments)
    return job_main("train", train, argv, spec_file=CONFIG_FILE, lock=True, add_arguments=arguments)


if __name__ == "__main__":
    sys.exit(main())
