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

from lorastudio.core.runs.checkpoints import (DATA_KEY, STATE_FILE, checkpoint_dir, data_fingerprint,
                                              list_checkpoint_steps)
from lorastudio.core.config import FILE_KEY, ConfigError, RunConfig
from lorastudio.core.errors import UserError
from lorastudio.core.fit.advice import Advice, settings_after_oom
from lorastudio.core.journal import VERSION, JournalWriter, read_events
from lorastudio.core.models.info import ModelError, read_model_info, read_safetensors_header
from lorastudio.core.runs.folders import CHECKPOINTS_DIR, CONFIG_FILE, JOURNAL_FILE, worker_alive, write_status
from lorastudio.core.atomic_files import atomic_write_text, folder_size, tidy
from lorastudio.core.disk import DiskError, check_room
from lorastudio.core.models.vision import PART_WORDS, VISION_CHOICE_PARTS, adapted_parts, linear_parts

PREVIOUS_CONFIG_FILE = "config.previous.yaml"
# Settings that change the adapter's shape or the frozen base: a checkpoint cannot carry over.
FIXED_ON_RESUME = ("model", "lora.r", "lora.targets", "lora.use_dora", "lora.vision")


class ResumeError(UserError):
    kind = "resume"


# The explicit override for a data file changed since the checkpoint: `--set resume.data_changed=ok`.
DATA_CHANGED_KEY = "resume.data_changed"


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
    check_journal(run_dir / JOURNAL_FILE)
    overrides = dict(overrides or {})
    accept_data = str(overrides.pop(DATA_CHANGED_KEY, "")).lower() in ("ok", "true", "yes", "1")
    try:
        config, changes = apply_overrides(RunConfig.load(run_dir / CONFIG_FILE),
                                          {**uncapped_split(run_dir), **overrides})
    except ConfigError as exc:
        raise ResumeError(str(exc) if exc.key == FILE_KEY else f"{run_dir / CONFIG_FILE}: {exc}") from None
    checkpoint, at = choose_checkpoint(run_dir, step)
    fixed = [key for key, _old, _new in changes if key in FIXED_ON_RESUME or key.startswith("lora.targets")]
    if fixed and checkpoint is not None:
        raise ResumeError(f"{', '.join(fixed)} cannot change when resuming: the checkpoint's adapter "
                          "has the old shape", "start a new run with the new settings instead")
    if checkpoint is not None:
        check_shapes(checkpoint, config, run_dir)
        check_data(checkpoint, config, accept_data)
    tidy(run_dir / CHECKPOINTS_DIR)          # leftovers of a killed save (core/atomic_files.tidy)
    tidy(run_dir)
    try:
        check_room_for_training(run_dir, checkpoint)
    except DiskError as exc:
        raise ResumeError(exc.message, exc.hint) from None
    return ResumePlan(run_dir, checkpoint, at, changes), config


def check_journal(journal: Path) -> None:
    """Refuse a journal this version cannot append to: one that is not a file, or one written by a
    newer LoRA Studio (its lines' `v` above ours: old-format lines must not be glued onto it)."""
    import json
    if journal.exists() and not journal.is_file():
        raise ResumeError(f"{journal} is not a file", "the run folder was damaged; start a new run")
    newest = 0
    try:
        with open(journal, "rb") as fh:
            for raw in fh:
                if b'"v"' not in raw:
                    continue
                try:
                    v = json.loads(raw).get("v")
                except (ValueError, AttributeError):
                    continue
                if isinstance(v, int) and not isinstance(v, bool):
                    newest = max(newest, v)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ResumeError(f"{journal} cannot be read ({exc.strerror or exc})", "check the run folder's permissions") from None
    if newest > VERSION:
        raise ResumeError(f"{journal} was written by a newer LoRA Studio (journal version {newest}; this one "
                          f"writes version {VERSION})", "resume it with the newer LoRA Studio, or start a new run "
                          "from its config here")


def _read_json(path: Path, what: str) -> dict:
    import json
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ResumeError(f"{path} cannot be read as {what} ({exc})",
                          "resume from another checkpoint (--step), or start a new run") from None
    if not isinstance(data, dict):
        raise ResumeError(f"{path} is not {what} (not a JSON object)", "resume from another checkpoint (--step)")
    return data


def adapter_tensor_names(folder: Path) -> list[str]:
    """The tensor names of a saved adapter (its safetensors header), or [] without a readable one."""
    path = folder / "adapter_model.safetensors"
    try:
        return [n for n in read_safetensors_header(path) if n != "__metadata__"] if path.is_file() else []
    except ModelError:
        return []


def info_has_part(config: RunConfig, parts: set[str]) -> bool:
    """Whether the model has linear layers in `parts` (Gemma 3's projector has none)."""
    try:
        found = linear_parts(read_model_info(config.model))
    except (ModelError, OSError):
        return False
    return any(found.get(p) for p in parts)


def check_shapes(checkpoint: Path, config: RunConfig, run_dir: Path) -> None:
    """The config (hand-edited, perhaps) against the checkpoint's adapter: rank, targets, DoRA — in
    words, before PyTorch's size-mismatch dump."""
    saved = _read_json(checkpoint / "adapter_config.json", "an adapter config")
    if not saved:
        return
    differ = []
    if isinstance(saved.get("r"), int) and saved["r"] != config.lora.r:
        differ.append(f"lora.r is {config.lora.r} but the checkpoint's adapter has rank {saved['r']}")
    targets, was = config.lora.targets, saved.get("target_modules")
    adapted = adapted_parts(adapter_tensor_names(checkpoint))   # by part: a VLM's projector / vision tower
    if isinstance(targets, list) and isinstance(was, (list, str)):
        was_set = {was} if isinstance(was, str) else set(was)
        if getattr(config.lora, "vision", "none") != "none":    # the parts it adds: compared below, from the tensors
            was_set = set(targets) if all(any(m.endswith("." + t) for m in adapted.get("language", []))
                                          for t in targets) else was_set
        if set(targets) != was_set and not (isinstance(was, str) and was == "all-linear"):
            differ.append(f"lora.targets are {sorted(targets)} but the checkpoint adapts {sorted(was_set)}")
    vision = getattr(config.lora, "vision", "none")
    had = {part for part in ("projector", "vision") if adapted.get(part)}
    wants = set(VISION_CHOICE_PARTS[vision]) - {"language"}
    if adapted and had != wants:
        wants = {part for part in wants if info_has_part(config, {part})}     # Gemma 3's projector: none to adapt
    if adapted and had != wants:
        differ.append(f"lora.vision is {vision} but the checkpoint's adapter adapts "
                      f"{' and '.join(PART_WORDS[p] for p in sorted(had)) or 'only the language model'}")
    if bool(saved.get("use_dora")) != bool(config.lora.use_dora):
        differ.append(f"lora.use_dora is {config.lora.use_dora} but the checkpoint's adapter "
                      f"{'uses' if saved.get('use_dora') else 'does not use'} DoRA")
    if differ:
        raise ResumeError(f"{run_dir / CONFIG_FILE} does not match checkpoint {checkpoint.name}: " + "; ".join(differ),
                          "put the config back as it was (config.previous.yaml keeps an earlier one), "
                          "or start a new run with the new settings")


def check_data(checkpoint: Path, config: RunConfig, accept: bool) -> None:
    """A data file rewritten since the checkpoint: the data position would point into other rows."""
    saved = _read_json(checkpoint / STATE_FILE, "a checkpoint state").get(DATA_KEY)
    if not isinstance(saved, dict) or not saved:
        return                          # a checkpoint of 0.x carries no fingerprint
    now = data_fingerprint(config.data)
    changed = [path for path, digest in saved.items() if now.get(path, digest) != digest]
    gone = [path for path in saved if path not in now and not Path(path).exists()]
    if (changed or gone) and not accept:
        what = "; ".join([f"{p} changed since checkpoint {checkpoint.name} (its contents' SHA-256 differ)"
                          for p in changed] + [f"{p} is gone" for p in gone])
        raise ResumeError(what, "resuming would continue at the old position in different rows: put the old file "
                          f"back, start a new run, or resume anyway with --set {DATA_CHANGED_KEY}=ok")


def uncapped_split(run_dir: Path) -> dict:
    """A run started before data.max_validation_examples existed held out validation_split whole:
    resuming it keeps that split (the override that says so), so its train set stays the same."""
    import yaml
    try:
        data = (yaml.safe_load((run_dir / CONFIG_FILE).read_text(encoding="utf-8")) or {}).get("data") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return {}
    return {} if "max_validation_examples" in data else {"data.max_validation_examples": 0}


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
