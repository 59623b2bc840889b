"""Resuming a run in its own folder: pick a checkpoint, apply changed settings, start the worker.

Torch-free: the CLI (`lorastudio resume`) and the window's Resume buttons both use this. The
journal is appended to, never rewritten: a `phase` event named "resuming" (with the checkpoint
and any changed settings) goes in before the worker starts, so every reader sees a new segment
at once. A changed config keeps its predecessor as config.previous.yaml.

After an out-of-memory error the one-click "Resume with suggested settings" applies the settings
of the one advisor (core/fit/advice.settings_after_oom) — as the job wrote them into its error, or
for a run of 0.1 or 0.2 as the advisor answers now (`suggested_overrides`).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lorastudio.core.runs.checkpoints import checkpoint_dir, list_checkpoint_steps
from lorastudio.core.config import ConfigError, RunConfig
from lorastudio.core.errors import UserError
from lorastudio.core.fit.advice import Advice, settings_after_oom
from lorastudio.core.journal import JournalWriter, read_events
from lorastudio.core.models.info import ModelError, read_model_info
from lorastudio.core.runs.folders import CHECKPOINTS_DIR, CONFIG_FILE, JOURNAL_FILE, worker_alive, write_status
from lorastudio.core.atomic_files import atomic_write_text, folder_size, tidy
from lorastudio.core.disk import DiskError, check_room

PREVIOUS_CONFIG_FILE = "config.previous.yaml"
# Settings that change the adapter's shape or the frozen base: a checkpoint cannot carry over.
FIXED_ON_RESUME = ("model", "lora.r", "lora.targets", "lora.use_dora")


class ResumeError(UserError):
    kind = "resume"


# ---- out-of-memory advice ------------------------------------------------------------------
def suggested_overrides(run_dir: Path, error: dict | None) -> dict[str, Any]:
    """What "Resume with suggested settings" applies after an out-of-memory error: the overrides
    the job's advisor wrote into the error (core/fit/advice.settings_after_oom: the memory model's,
    the ones its hint names). An error written by 0.1 or 0.2 (no `advisor` field) carries an older
    rule of thumb's: for it the advisor answers again, from the run's folder (`oom_advice`)."""
    if not error or error.get("kind") != "oom":
        return {}
    if error.get("advisor"):
        return dict(error.get("overrides") or {})
    try:
        return dict(oom_advice(run_dir).overrides)
    except (ConfigError, OSError):
        return {}


def oom_advice(run_dir: Path) -> Advice:
    """The advisor's settings for a run that ran out of memory: its config.yaml (the settings that
    ran out) on the GPU its journal's memory events name; the rule of thumb when the model's files
    cannot be read (its folder is gone). Raises ConfigError for an unreadable config.yaml."""
    run_dir = Path(run_dir)
    config = RunConfig.load(run_dir / CONFIG_FILE)
    events = read_events(run_dir / JOURNAL_FILE)
    totals = [e["device_total"] for e in events
              if e["type"] == "memory" and isinstance(e.get("device_total"), int)]
    on_gpu = bool(totals) or any(e["type"] == "memory" and e.get("cuda_peak") is not None for e in events)
    try:
        info = read_model_info(config.model)
    except (ModelError, OSError):
        info = None
    return settings_after_oom(config, info, totals[-1] if totals else None, on_gpu=on_gpu)


# ---- settings -----------------------------------------------------------------------------
def parse_overrides(items: list[str]) -> dict[str, Any]:
    """["training.batch_size=2", "quantization=4bit"] -> {key: YAML value}."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ResumeError(f"--set {item!r} is not KEY=VALUE", "for example --set training.batch_size=2")
        try:
            out[key.strip()] = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = text
    return out


def apply_overrides(config: RunConfig, overrides: dict[str, Any]) -> tuple[RunConfig, list[tuple[str, Any, Any]]]:
    """A new config with dotted keys set, and the (key, old, new) changes. Raises ConfigError."""
    raw, changes = copy.deepcopy(config.to_dict()), []
    for key, value in overrides.items():
        node, parts = raw, key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(key, value, "unknown key")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(key, value, f"unknown key; allowed here: {', '.join(node)}")
        if node[parts[-1]] != value:
            changes.append((key, node[parts[-1]], value))
            node[parts[-1]] = value
    return RunConfig.from_dict(raw), changes


def describe_changes(changes: list[tuple[str, Any, Any]]) -> str:
    return ", ".join(f"{key} {old} → {new}" for key, old, new in changes)


# ---- resuming -----------------------------------------------------------------------------
@dataclass
class ResumePlan:
    run_dir: Path
    checkpoint: Path | None          # None: no checkpoint yet, training starts again from step 0
    step: int
    changes: list[tuple[str, Any, Any]] = field(default_factory=list)

    def describe(self) -> str:
        where = f"checkpoint {self.checkpoint.name} (step {self.step})" if self.checkpoint else \
            "the beginning (no checkpoint was saved)"
        text = f"Resuming from {where}"
        return text + (f" with {describe_changes(self.changes)}" if self.changes else "")


def choose_checkpoint(run_dir: Path, step: int | None = None) -> tuple[Path | None, int]:
    steps = list_checkpoint_steps(run_dir)
    if step is not None:
        if step not in steps:
            raise ResumeError(f"{run_dir.name} has no checkpoint at step {step}",
                              "its checkpoints: " + (", ".join(map(str, steps)) or "none"))
        return checkpoint_dir(run_dir, step), step
    return (checkpoint_dir(run_dir, steps[-1]), steps[-1]) if steps else (None, 0)


def plan_resume(run_dir: Path, step: int | None = None, overrides: dict | None = None) -> tuple[ResumePlan, RunConfig]:
    """Check that the run can resume and work out how; writes nothing."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise ResumeError(f"{run_dir} is not a run folder (no {CONFIG_FILE})")
    if worker_alive(run_dir):
        raise ResumeError(f"{run_dir.name} is still running", "stop it first, or open its live view")
    try:
        config, changes = apply_overrides(RunConfig.load(run_dir / CONFIG_FILE), overrides or {})
    except ConfigError as exc:
        raise ResumeError(str(exc)) from None
    checkpoint, at = choose_checkpoint(run_dir, step)
    fixed = [key for key, _old, _new in changes if key in FIXED_ON_RESUME or key.startswith("lora.targets")]
    if fixed and checkpoint is not None:
        raise ResumeError(f"{', '.join(fixed)} cannot change when resuming: the checkpoint's adapter "
                          "has the old shape", "start a new run with the new settings instead")
    tidy(run_dir / CHECKPOINTS_DIR)          # leftovers of a killed save (core/atomic_files.tidy)
    tidy(run_dir)
    try:
        check_room_for_training(run_dir, checkpoint)
    except DiskError as exc:
        raise ResumeError(exc.message, exc.hint) from None
    return ResumePlan(run_dir, checkpoint, at, changes), config


def check_room_for_training(run_dir: Path, checkpoint: Path | None, first_checkpoint_bytes: int = 0) -> None:
    """Refuse (DiskError) before any loading when the run's disk cannot hold its next checkpoint and
    adapter: a resumed run's next checkpoint is as large as the one it resumes from."""
    need = folder_size(checkpoint) if checkpoint is not None else first_checkpoint_bytes
    if need:
        check_room(Path(run_dir), need, "the run's next checkpoint",
                   "the run's checkpoints are intact; resume once there is room" if checkpoint is not None
                   else "or start the run in a folder on another disk (--run-dir)")


def save_changed_config(run_dir: Path, config: RunConfig) -> None:
    """config.yaml becomes `config`; the one before is kept as config.previous.yaml."""
    previous = (run_dir / CONFIG_FILE).read_text(encoding="utf-8")
    atomic_write_text(run_dir / PREVIOUS_CONFIG_FILE, previous)
    config.save(run_dir / CONFIG_FILE)


def write_resume(plan: ResumePlan, config: RunConfig) -> None:
    """Save the changed config (keeping the old one) and open a new segment of the journal."""
    run_dir = plan.run_dir
    if plan.changes:
        save_changed_config(run_dir, config)
    _end_partial_line(run_dir / JOURNAL_FILE)
    journal = JournalWriter(run_dir / JOURNAL_FILE)
    try:
        journal.emit("phase", name="resuming", message=plan.describe(), step=plan.step,
                     checkpoint=str(plan.checkpoint) if plan.checkpoint else None,
                     changes=[{"key": k, "old": o, "new": n} for k, o, n in plan.changes])
    finally:
        journal.close()
    write_status(run_dir, state="resuming", pid=None)


def _end_partial_line(journal: Path) -> None:
    """A worker killed mid-write can leave half a line; never glue our event onto it."""
    try:
        with open(journal, "rb+") as fh:
            fh.seek(0, 2)
            if fh.tell() and (fh.seek(-1, 2), fh.read(1))[1] != b"\n":
                fh.write(b"\n")
    except FileNotFoundError:
        pass
