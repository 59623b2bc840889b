"""Out of memory in a one-process training run: the automatic retry and the error's advice.

One advisor answers every out-of-memory error: the memory model's settings for the config that ran
out, on the device it ran out on (core/fit/advice.settings_after_oom, through `OomAdvisor`). With
training.oom_retry on (the default) training goes on with them at once: the failed step's
gradients are dropped, an emergency checkpoint is saved, config.yaml gets the settings
(config.previous.yaml keeps the old), a `retry` event records what changed and why, and the run
resumes from the checkpoint in the same process and journal — up to MAX_OOM_RETRIES times. When
the error stands (retry off, nothing fits, retries spent), the same advice is its hint and the
`overrides` the Runs page's one-click resume applies.
"""
from __future__ import annotations

import gc
import traceback
from pathlib import Path

import torch

from lorastudio.core.config import RunConfig
from lorastudio.core.engine.trainer import Trainer, build_trainer
from lorastudio.core.fit.advice import Advice, oom_hint, rule_of_thumb_after_oom, settings_after_oom
from lorastudio.core.models.info import ModelInfo
from lorastudio.core.runs.checkpoints import checkpoint_dir, list_checkpoint_steps
from lorastudio.core.runs.resume import describe_changes, save_changed_config
from lorastudio.core.runtime.failures import is_out_of_memory

MAX_OOM_RETRIES = 3


class OomAdvisor:
    """The advice for the settings training runs with now (`follow`), computed once per config:
    for the retry (`advice`), the error's hint (`hint`) and its extra fields (`error_fields`: the
    one-click resume's overrides and which advisor chose them) — see `answer_for`."""

    def __init__(self, config: RunConfig, info: ModelInfo | None, device: torch.device | None = None):
        self.config, self.info, self.device = config, info, device
        self._cached: tuple[RunConfig, torch.device | None, Advice] | None = None

    def follow(self, config: RunConfig, device: torch.device | None) -> None:
        self.config, self.device = config, device if device is not None else self.device

    def answer_for(self, job) -> None:
        """The job's out-of-memory error gets this advisor's hint and overrides (core/runtime/worker)."""
        job.oom_hint, job.error_extra = self.hint, self.error_fields

    def advice(self) -> Advice:
        if self._cached is None or self._cached[0] is not self.config or self._cached[1] != self.device:
            try:
                device = self.device if self.device is not None else default_device(self.config)
                on_gpu = device.type == "cuda"
                capacity = torch.cuda.get_device_properties(device).total_memory if on_gpu else None
                advice = settings_after_oom(self.config, self.info, capacity, on_gpu=on_gpu)
            except Exception:           # noqa: BLE001 — the model's files changed under us: still an answer
                advice = rule_of_thumb_after_oom(self.config)
            self._cached = (self.config, self.device, advice)
        return self._cached[2]

    def hint(self) -> str:
        return oom_hint(self.advice())

    def error_fields(self, kind: str) -> dict:
        if kind != "oom":
            return {}
        advice = self.advice()
        return {"overrides": advice.overrides, "advisor": advice.advisor}


def default_device(config: RunConfig) -> torch.device:
    return torch.device("cuda") if config.device != "cpu" and torch.cuda.is_available() else torch.device("cpu")


def train_one_process(job, config: RunConfig, info: ModelInfo, resume_from: Path | None,
                      advisor: OomAdvisor) -> tuple[str, Trainer]:
    """Train in this process (the job's journal, should_stop and folder); on out-of-memory with
    training.oom_retry on, go on with the advisor's settings (see the module's words). Returns the
    trainer's status (completed or stopped) and the trainer; the error that stands is raised."""
    attempt = 0
    while True:
        trainer = build_trainer(config, info, job.job_dir, job.journal, job.should_stop)
        advisor.follow(config, None)
        try:
            trainer.setup(resume_from)
            advisor.follow(config, trainer.device)
            trainer.start_event()
            return trainer.train(), trainer
        except Exception as exc:            # noqa: BLE001 — only an out-of-memory error is retried
            if not (is_out_of_memory(exc) and config.training.oom_retry and attempt < MAX_OOM_RETRIES):
                raise
            attempt += 1
            retry = recover(job, trainer, advisor, exc, attempt)
            del trainer
            if retry is None:
                raise
            config, resume_from = retry


def recover(job, trainer: Trainer, advisor: OomAdvisor, exc: BaseException,
            attempt: int) -> tuple[RunConfig, Path | None] | None:
    """After an out-of-memory error: free what the failed step held, save an emergency checkpoint
    if the trainer got far enough, and take the advisor's settings. Returns the new config and the
    checkpoint to resume from, or None (nothing fits: the error stands)."""
    traceback.clear_frames(exc.__traceback__)      # the failed step's tensors, held by its frames
    step = trainer.step
    job.log(f"Out of GPU memory at step {step + 1} (attempt {attempt} of {MAX_OOM_RETRIES + 1}): "
            f"{str(exc).splitlines()[0]}", level="warning")
    device = getattr(trainer, "device", None)
    optimizer = getattr(trainer, "optimizer", None)
    if optimizer is not None:
        optimizer.zero_grad(set_to_none=True)      # the failed step's partial gradients
    free_memory(device)
    checkpoint = emergency_checkpoint(job, trainer)
    advice = advisor.advice()
    if not advice.fits or not advice.changes:
        job.log(f"No automatic retry: {advice.reason if not advice.fits else 'no smaller settings'}",
                level="warning")
        return None
    for name in ("model", "optimizer", "scheduler", "loaded", "data"):
        if hasattr(trainer, name):
            setattr(trainer, name, None)           # drop the model before loading it again
    free_memory(device)
    save_changed_config(job.job_dir, advice.config)
    changes = [{"key": k, "old": o, "new": n} for k, o, n in advice.changes]
    job.emit("retry", attempt=attempt, reason=advice.reason, changes=changes, step=step,
             checkpoint=str(checkpoint) if checkpoint else None)
    job.log(f"Retrying from {'step ' + str(step) if checkpoint else 'the beginning'} with "
            f"{describe_changes(advice.changes)}: {advice.reason}", level="warning")
    return advice.config, checkpoint


def free_memory(device: torch.device | None) -> None:
    gc.collect()
    if device is not None and device.type == "cuda":
        torch.cuda.empty_cache()


def emergency_checkpoint(job, trainer: Trainer) -> Path | None:
    """The trainer's state now, or the latest checkpoint on disk if saving is not possible."""
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
