"""Training on several processes, as the train job runs it (the maths: core/engine/distributed.py).

Rank 0 (`lead`) is the job's own process: it has the journal, status.json and the other ranks,
which the runtime started (core/runtime/launcher.start_ranks) and which it watches — a rank that
dies, before joining the process group or later, ends the run with that rank's words
(`RankFailed`); a stop asked of rank 0 is sent to every rank, so all stop after the same step.
Ranks 1..N-1 (`follow`, run by core/runtime/worker.peer_main) write nothing into the run folder.
No out-of-memory retry here.
"""
from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import torch

from lorastudio.core.config import RunConfig
from lorastudio.core.engine import distributed
from lorastudio.core.engine.trainer import Trainer, build_trainer
from lorastudio.core.errors import UserError
from lorastudio.core.models.info import ModelInfo
from lorastudio.core.preflight import check_config
from lorastudio.core.runs.folders import CONFIG_FILE


class RankFailed(UserError):
    """Another rank of a multi-process run died: the run stops with that rank's words."""
    kind = "crashed"


def lead(job, config: RunConfig, info: ModelInfo, resume_from: Path | None, group) -> tuple[str, Trainer]:
    """Rank 0: train with the ranks of `group` (a launcher.RankGroup, already started); `config`
    is rank 0's own (rank_config). Returns the status and the trainer; ends the ranks either way."""
    world = config.distributed.processes
    job.log(f"Training on {world} processes ({config.distributed.strategy}); ranks 1–{world - 1} write "
            f"worker-rankN.log")
    ranks = distributed.Ranks(0, world)

    def should_stop() -> bool:
        asked = job.should_stop()
        if asked:
            group.stop()                # SIGTERM to every rank: each stops after this same step
        return asked
    try:
        trainer = build_trainer(config, info, job.job_dir, job.journal, should_stop, ranks=ranks)
        try:
            join_watching(ranks, rank_device(config), group)
            trainer.setup(resume_from)
            trainer.start_event()
            return trainer.train(), trainer
        except BaseException as exc:        # noqa: BLE001 — a dead rank is the cause, not this symptom
            group.stop()
            # A lost peer shows here as a RuntimeError from a collective; a rank's own error stands.
            failed = group.failure() if isinstance(exc, RuntimeError) and not isinstance(exc, UserError) else None
            if failed:
                raise RankFailed(f"Training stopped: {failed}",
                                 "the other ranks were stopped; resume from the last checkpoint") from exc
            raise
    finally:
        distributed.close()
        group.close()


def follow(job, rank: int) -> str:
    """Rank `rank` > 0: train alongside rank 0 from the run folder's config; how it ended, in words."""
    config = RunConfig.load(job.job_dir / CONFIG_FILE)
    info, _report = check_config(config)
    ranks = distributed.from_environment()
    try:
        trainer = build_trainer(rank_config(config, rank), info, job.job_dir, job.journal, job.should_stop,
                                ranks=ranks)
        distributed.init(ranks, rank_device(config))
        trainer.setup(job.args.resume_from)
        status = trainer.train()
        return f"{status} at step {trainer.step}"
    finally:
        distributed.close()


def join_watching(ranks: distributed.Ranks, device: torch.device, group) -> None:
    """Join the process group while watching the other ranks: one that dies before joining ends the
    run at once (rather than after the group's start-up timeout)."""
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


def rank_device(config: RunConfig) -> torch.device:
    cuda = config.device != "cpu" and torch.cuda.is_available()
    return torch.device("cuda") if cuda else torch.device("cpu")


def rank_config(config: RunConfig, rank: int) -> RunConfig:
    """On CUDA, rank r trains on the r-th visible GPU (CUDA_VISIBLE_DEVICES is respected); on CPU
    every rank uses the CPU. More ranks than visible GPUs is a config error."""
    if rank_device(config).type != "cuda":
        return config
    visible = torch.cuda.device_count()
    if config.distributed.processes > visible:
        raise UserError(f"distributed.processes is {config.distributed.processes} but {visible} GPU(s) are "
                        "visible", "lower distributed.processes, or set device: cpu")
    return dataclasses.replace(config, device=f"cuda:{rank}")
