"""What a finished run teaches the memory model: its measured peak refines the activation constant of
its architecture, memory mode and quantization in the user's calibration file. Torch-free.

The run's journal has `memory` events with `cuda_peak` (torch's max_memory_allocated) and the
device's total; its config.yaml has the settings; the model folder's headers give the shape. A
run that trained on the CPU, or whose model folder is gone, teaches nothing (None).
"""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from lorastudio.core.config import ConfigError, RunConfig
from lorastudio.core.fit.advice import choose_memory_mode
from lorastudio.core.fit.calibration import Calibration, fitted_constant, record, user_calibration_path
from lorastudio.core.fit.memory_model import MODES, estimate
from lorastudio.core.journal import read_events
from lorastudio.core.models.info import ModelError, read_model_info
from lorastudio.core.models.targets import discover_targets

_MODE_NOTE = re.compile(r"memory mode (none|checkpoint|lean)\b", re.IGNORECASE)


def measured_peak(events: list[dict]) -> tuple[int, int | None, str] | None:
    """(peak allocated, device total, device name) of the journal's last segment, or None (CPU)."""
    peaks = [e for e in events if e["type"] == "memory" and isinstance(e.get("cuda_peak"), int)]
    if not peaks:
        return None
    last = peaks[-1]
    return max(e["cuda_peak"] for e in peaks), last.get("device_total"), str(last.get("device_name", "GPU"))


def mode_used(events: list[dict], config: RunConfig, info, total: int | None) -> str:
    """The memory mode the run trained with: its last `start` event's, or a log note of the
    trainer's ("memory mode lean (…)"), else what the config and choose_memory_mode say."""
    for event in reversed(events):
        if event["type"] == "start" and event.get("memory_mode") in MODES:
            return event["memory_mode"]
        if event["type"] == "log":
            match = _MODE_NOTE.search(event.get("message", ""))
            if match:
                return match.group(1).lower()
    return choose_memory_mode(config, info, total)[0]


def fused_loss_used(events: list[dict]) -> bool:
    return any(e["type"] == "log" and "Liger kernels applied" in e.get("message", "") for e in events)


def learn_from_run(run_dir: Path, path: Path | None = None) -> dict | None:
    """Refine the calibration from a finished run; returns the stored entry, or None."""
    run_dir = Path(run_dir)
    events = read_events(run_dir / "events.jsonl")
    peak = measured_peak(events)
    if peak is None:
        return None
    measured, total, device = peak
    try:
        config = RunConfig.load(run_dir / "config.yaml")
        info = read_model_info(config.model)
    except (ConfigError, ModelError, OSError):
        return None
    mode = mode_used(events, config, info, total)
    if mode not in MODES:
        return None
    report = discover_targets(info)
    at_one = estimate(config, info, mode, report=report, fused_loss=fused_loss_used(events),
                      calibration=_unit_calibration())
    act = at_one.term("activations").bytes
    value = fitted_constant(measured, at_one.allocated - act, act)
    if value is None:
        return None
    key = f"{info.model_type}/{mode}/{config.quantization}"
    return record(path or user_calibration_path(), key, value, gpu=device, source=run_dir.name)


def _unit_calibration() -> Calibration:
    """Every constant 1.0: the analytic count, so the fitted constant is measured / analytic."""
    return replace(Calibration(), constants={})
