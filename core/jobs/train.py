"""`python -m lorastudio.core.jobs.train RUN_DIR [--resume-from CHECKPOINT]`: train from
RUN_DIR/config.yaml, journal to events.jsonl (appending: a resumed run keeps one journal).

The run folder is the job folder. Its life is the runtime's (core/runtime/worker.py): SIGTERM or
SIGINT asks for a graceful stop after the current step (the adapter is saved), a second stops at
once; every failure becomes an `error` event before `end`. This job adds status.json and its
heartbeat, and on out-of-memory the `overrides` a one-click resume applies. What no Python code
can report (SIGKILL, a segfault) leaves no `end`: readers see a dead pid in status.json and call
the run crashed; faulthandler puts the native stack of a segfault into worker.log.

LORASTUDIO_FAULT=KIND:STEP (oom, exception, segfault, kill) makes the worker fail on purpose before
optimizer step STEP+1 — the tests' way to produce each failure in a real process;
oom-forward:STEP:BATCH raises torch's OutOfMemoryError inside the model's forward while the
micro-batch is larger than BATCH (a small GPU, simulated). With distributed.processes > 1,
LORASTUDIO_FAULT_RANK=R puts the fault in rank R only (default 0); kind `start` makes that rank
fail before it joins the process group.

Out of memory with training.oom_retry on (the default): the failed step's gradients are dropped,
an emergency checkpoint is saved, the memory model (core/fit/advice.settings_after_oom) picks
settings that fit, config.yaml gets them (config.previous.yaml keeps the old), a `retry` event
records what changed and why, and training goes on from the checkpoint in the same process and
journal — up to MAX_OOM_RETRIES times.
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
from lorastudio.core.runs.folders import CHECKPOINTS_DIR, CONFIG_FILE, HEARTBEAT_S, write_status
from lorastudio.core.runs.resume import check_room_for_training, oom_hint, oom_overrides
from lorastudio.core.atomic_files import tidy
from lorastudio.core.runtime.failures import is_out_of_memory
from lorastudio.core.runtime.worker import Job, job_main
from lorastudio.core.fit.advice import settings_after_oom
from lorastudio.core.fit.learn import learn_from_run
from lorastudio.core.runs.resume import describe_changes, save_changed_config
from lorastudio.core.errors import UserError
from lorastudio.core.runtime.launcher import start_ranks

MAX_OOM_RETRIES = 3


class RankFailed(UserError):
    """Another rank of a multi-process run died: the run stops with that rank's words."""
    kind = "crashed"


def heartbeat(run_dir: Path, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        write_status(run_dir, state="running", pid=os.getpid())


def injected_fault(should_stop: Callable[[], bool], trainer_step: Callable[[], int]) -> Callable[[], bool]:
    """`should_stop` for the trainer, failing on purpose when LORASTUDIO_FAULT asks (tests only)."""
    kind, _, at = os.environ.get("LORASTUDIO_FAULT", "").partition(":")
    if not kind or kind == "oom-forward":      # that one is install_memory_limit's
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


def install_memory_limit(trainer) -> None:
    """LORASTUDIO_FAULT=oom-forward:STEP:BATCH: from optimizer step STEP+1 on, the model's forward
    raises a real torch.OutOfMemoryError while the micro-batch is larger than BATCH — a GPU too
    small for the settings, on a CPU (the tests' way to exercise the automatic retry)."""
    kind, _, rest = os.environ.get("LORASTUDIO_FAULT", "").partition(":")
    if kind != "oom-forward":
        return
    at_step, _, max_batch = rest.partition(":")
    import torch

    def hook(_module, _args):
        if trainer.step >= int(at_step or 0) and trainer.config.training.batch_size > int(max_batch or 1):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (a memory limit "
                                         f"of batch_size {max_batch} set by LORASTUDIO_FAULT)")
    trainer.model.register_forward_pre_hook(hook)


def recover_from_oom(job: Job, trainer, config: RunConfig, info, exc: BaseException,
                     attempt: int) -> tuple[RunConfig, Path | None] | None:
    """After an out-of-memory error: free what the failed step held, save an emergency checkpoint
    if the trainer got far enough, and choose settings the memory model says fit. Returns the
    new config and the checkpoint to resume from, or None (nothing fits: the error stands)."""
    import gc
    import traceback

    import torch
    traceback.clear_frames(exc.__traceback__)      # the failed step's tensors, held by its frames
    step = trainer.step
    job.log(f"Out of GPU memory at step {step + 1} (attempt {attempt} of {MAX_OOM_RETRIES + 1}): "
            f"{str(exc).splitlines()[0]}", level="warning")
    device = getattr(trainer, "device", None)
    optimizer = getattr(trainer, "optimizer", None)
    if optimizer is not None:
        optimizer.zero_grad(set_to_none=True)      # the failed step's partial gradients
    gc.collect()
    if device is not None and device.type == "cuda":
        torch.cuda.empty_cache()
    checkpoint = emergency_checkpoint(job, trainer)
    on_gpu = device is not None and device.type == "cuda"
    capacity = torch.cuda.get_device_properties(device).total_memory if on_gpu else None
    advice = settings_after_oom(config, info, capacity, on_gpu=on_gpu)
    if not advice.fits or not advice.changes:
        job.log(f"No automatic retry: {advice.reason if not advice.fits else 'no smaller settings'}",
                level="warning")
        return None
    for name in ("model", "optimizer", "scheduler", "loaded", "data"):
        if hasattr(trainer, name):
            setattr(trainer, name, None)           # drop the model before loading it again
    gc.collect()
    if on_gpu:
        torch.cuda.empty_cache()
    save_changed_config(job.job_dir, advice.config)
    changes = [{"key": k, "old": o, "new": n} for k, o, n in advice.changes]
    job.emit("retry", attempt=attempt, reason=advice.reason, changes=changes, step=step,
             checkpoint=str(checkpoint) if checkpoint else None)
    job.log(f"Retrying from {'step ' + str(step) if checkpoint else 'the beginning'} with "
            f"{describe_changes(advice.changes)}: {advice.reason}", level="warning")
    return advice.config, checkpoint


def emergency_checkpoint(job: Job, trainer) -> Path | None:
    """The trainer's state now, or the latest checkpoint on disk if saving is not possible."""
    from lorastudio.core.runs.checkpoints import checkpoint_dir, list_checkpoint_steps
    run_dir = job.job_dir
    if trainer.step > 0 and getattr(trainer, "optimizer", None) is not None:
        if trainer.step in list_checkpoint_steps(run_dir):
            return checkpoint_dir(run_dir, trainer.step)
        try:
            path = trainer.save_checkpoint()
            job.log(f"Emergency checkpoint saved at step {trainer.step}: {path}", level="warning")
            return path
        except Exception as exc:                   # noqa: BLE001 — fall back to the last one on disk
            job.log(f"The emergency checkpoint could not be saved ({type(exc).__name__}: {exc})",
                    level="warning")
    steps = list_checkpoint_steps(run_dir)
    return checkpoint_dir(run_dir, steps[-1]) if steps else None


def learn_memory(job: Job, run_dir: Path, status: str) -> None:
    """A completed GPU run refines its architecture's activation constant (core/fit/learn.py)."""
    if status != "completed":
        return
    try:
        entry = learn_from_run(run_dir)
    except Exception as exc:                       # noqa: BLE001 — never fail a finished run over this
        job.log(f"The memory model could not learn from this run: {exc}", level="warning")
        return
    if entry:
        job.log(f"Memory model: activation constant now {entry['value']} (from {entry['runs']} run(s))")


def import_gguf_model(model: str, journal: JournalWriter) -> None:
    """A .gguf base is imported into the model cache first (once), with progress in the journal."""
    from lorastudio.core.engine.gguf.import_gguf import convert
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
        info, report = check_config(config)
        tidy(run_dir / CHECKPOINTS_DIR)      # a killed save's leftovers go; a swapped-out adapter comes back
        tidy(run_dir)
        lora = report.lora_params(config.lora.targets, config.lora.r, config.lora.use_dora)
        check_room_for_training(run_dir, job.args.resume_from, first_checkpoint_bytes=4 * 4 * lora)
        from lorastudio.core.engine.trainer import Trainer
        resume_from, attempt = job.args.resume_from, 0
        if config.distributed.processes > 1:
            return train_ranks(job, config, info, resume_from)
        while True:
            trainer = Trainer(config, info, run_dir, job.journal)
            trainer.should_stop = injected_fault(job.should_stop, lambda: trainer.step)
            try:
                trainer.setup(resume_from)
                install_memory_limit(trainer)
                trainer.start_event()
                status = trainer.train()
                break
            except Exception as exc:            # noqa: BLE001 — only an out-of-memory error is retried
                if not (is_out_of_memory(exc) and config.training.oom_retry and attempt < MAX_OOM_RETRIES):
                    raise
                attempt += 1
                retry = recover_from_oom(job, trainer, config, info, exc, attempt)
                del trainer
                if retry is None:
                    raise
                config, resume_from = retry
        learn_memory(job, run_dir, status)
        adapter = getattr(trainer, "adapter_path", None)
        return {"status": status, "adapter": str(adapter) if adapter else None}
    except KeyboardInterrupt:
        job.log("Stopped at once on a second signal; nothing saved", level="warning")
        return {"status": "stopped"}
    finally:
        beating.set()
        beat.join(timeout=2 * HEARTBEAT_S)


def train_ranks(job: Job, config: RunConfig, info, resume_from: Path | None) -> dict:
    """Rank 0 of a multi-process run (core/engine/distributed.py): start the other ranks, train
    with them, and turn a rank's death into this run's error. No out-of-memory retry here."""
    from lorastudio.core.engine import distributed
    from lorastudio.core.engine.trainer import Trainer
    world = config.distributed.processes
    args = ("--resume-from", str(resume_from)) if resume_from else ()
    own = rank_config(config, 0)            # checked before any rank starts
    group = start_ranks("train", job.job_dir, world, args)
    job.log(f"Training on {world} processes ({config.distributed.strategy}); ranks 1–{world - 1} write "
            f"worker-rankN.log")
    ranks = distributed.Ranks(0, world)
    try:
        trainer = Trainer(own, info, job.job_dir, job.journal, ranks=ranks)
        faulty = os.environ.get("LORASTUDIO_FAULT_RANK", "0") == "0"       # tests: which rank fails
        stop = injected_fault(job.should_stop, lambda: trainer.step) if faulty else job.should_stop

        def should_stop() -> bool:
            asked = stop()
            if asked:
                group.stop()            # SIGTERM to every rank: each stops after this same step
            return asked
        trainer.should_stop = should_stop
        try:
            join_watching(ranks, rank_device(config), group)
            trainer.setup(resume_from)
            trainer.start_event()
            status = trainer.train()
        except BaseException as exc:        # noqa: BLE001 — a dead rank is the cause, not this symptom
            group.stop()
            # A lost peer shows here as a RuntimeError from a collective; a rank's own error stands.
            failed = group.failure() if isinstance(exc, RuntimeError) and not isinstance(exc, UserError) else None
            if failed:
                raise RankFailed(f"Training stopped: {failed}",
                                 "the other ranks were stopped; resume from the last checkpoint") from exc
            raise
        adapter = getattr(trainer, "adapter_path", None)
        return {"status": status, "adapter": str(adapter) if adapter else None}
    finally:
        distributed.close()
        group.close()


def join_watching(ranks, device, group) -> None:
    """Join the process group while watching the other ranks: one that dies before joining ends the
    run at once (rather than after the group's start-up timeout)."""
    from lorastudio.core.engine import distributed
    outcome: dict = {}

    def join() -> None:
        try:
            distributed.init(ranks, device)
        except BaseException as exc:        # noqa: BLE001 — handed to the caller
            outcome["error"] = exc
    thread = threading.Thread(target=join, name="join-process-group", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.5)
        failed = group.failure(wait_s=0) if thread.is_alive() else None
        if failed:
            raise RankFailed(f"Training could not start: {failed}", "see that rank's log for the cause")
    if "error" in outcome:
        raise outcome["error"]


def rank_device(config: RunConfig):
    import torch
    cuda = config.device != "cpu" and torch.cuda.is_available()
    return torch.device("cuda") if cuda else torch.device("cpu")


def rank_config(config: RunConfig, rank: int) -> RunConfig:
    """On CUDA, rank r trains on the r-th visible GPU (CUDA_VISIBLE_DEVICES is respected); on CPU
    every rank uses the CPU. More ranks than visible GPUs is a config error."""
    import dataclasses

    import torch
    if rank_device(config).type != "cuda":
        return config
    visible = torch.cuda.device_count()
    if config.distributed.processes > visible:
        raise UserError(f"distributed.processes is {config.distributed.processes} but {visible} GPU(s) are "
                        "visible", "lower distributed.processes, or set device: cpu")
    return dataclasses.replace(config, device=f"cuda:{rank}")


def peer_main(argv: list[str] | None, rank: int) -> int:
    """Ranks 1..N-1: train alongside rank 0 and write nothing into the run folder (their output is
    their worker-rankN.log). SIGTERM stops after the current step, with rank 0; any failure exits 1
    with its traceback in the log (rank 0 reports it)."""
    import argparse
    import traceback

    from lorastudio.core.engine import distributed
    from lorastudio.core.engine.trainer import Trainer
    parser = argparse.ArgumentParser(prog="python -m lorastudio.core.jobs.train (rank > 0)")
    parser.add_argument("job_dir", type=Path)
    parser.add_argument("--resume-from", type=Path, default=None)
    args = parser.parse_args(argv)
    stop = {"asked": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(asked=True))
    signal.signal(signal.SIGINT, lambda *_: stop.update(asked=True))
    try:
        config = RunConfig.load(args.job_dir / CONFIG_FILE)
        info, _report = check_config(config)
        ranks = distributed.from_environment()
        if os.environ.get("LORASTUDIO_FAULT_RANK") == str(rank) and os.environ.get("LORASTUDIO_FAULT") == "start":
            raise RuntimeError("injected failure before joining the process group")     # tests only
        trainer = Trainer(rank_config(config, rank), info, args.job_dir, distributed.NullJournal(), ranks=ranks)
        trainer.should_stop = injected_fault(lambda: stop["asked"], lambda: trainer.step) \
            if os.environ.get("LORASTUDIO_FAULT_RANK", "") == str(rank) else (lambda: stop["asked"])
        distributed.init(ranks, rank_device(config))
        trainer.setup(args.resume_from)
        status = trainer.train()
        print(f"rank {rank}: {status} at step {trainer.step}", flush=True)
        return 0
    except BaseException:           # noqa: BLE001 — rank 0 reports; this log keeps the traceback
        traceback.print_exc()
        return 1
    finally:
        distributed.close()


def main(argv: list[str] | None = None) -> int:
    rank = int(os.environ.get("RANK", "0") or 0)
    if rank > 0:
        return peer_main(argv, rank)
    return job_main("train", train, argv, spec_file=CONFIG_FILE, lock=True,
                    add_arguments=lambda p: p.add_argument("--resume-from", type=Path, default=None))


if __name__ == "__main__":
    sys.exit(main())
