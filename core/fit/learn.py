"""What a finished run teaches the memory model: its measured peak refines the activation constant of
its architecture, memory mode and quantization in the user's calibration file. Torch-free.

The run's journal has `memory` events with `cuda_peak` (torch's max_memory_allocated) and the
device's total; its config.yaml has the settings; the model folder's headers give the shape. A
run that trained on the CPU, or whose model folder is gone, teaches nothing (None).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

from lorastudio.core.config import ConfigError, RunConfig
from lorastudio.core.fit.advice import choose_memory_mode
from lorastudio.core.fit.calibration import Calibration, fitted_constant, record, user_calibration_path
from lorastudio.core.fit.cpu import learn_cpu_rate
from lorastudio.core.fit.memory_model import MODES, estimate
from lorastudio.core.journal import read_events
from lorastudio.core.models.info import ModelError, read_model_info
from lorastudio.core.models.targets import discover_targets



def measured_peak(events: list[dict]) -> tuple[int, int | None, str] | None:
    """(peak allocated, device total, device name) of the journal's last segment, or None (CPU)."""
    peaks = [e for e in events if e["type"] == "memory" and isinstance(e.get("cuda_peak"), int)]
    if not peaks:
        return None
    last = peaks[-1]
    return max(e["cuda_peak"] for e in peaks), last.get("device_total"), str(last.get("device_name", "GPU"))


def mode_used(events: list[dict], config: RunConfig, info, total: int | None) -> str:
    """The memory mode the run trained with: what its last `start` event says model loading applied,
    else (a run older than memory modes) what the config and choose_memory_mode say."""
    for event in reversed(events):
        if event["type"] == "start" and event.get("memory_mode") in MODES:
            return event["memory_mode"]
    return choose_memory_mode(config, info, total)[0]


def fused_loss_used(events: list[dict]) -> bool | None:
    """Whether the run trained with Liger's fused loss: the kernels its last `start` event names
    (what model loading applied); None when no start names them (the model's own guess then)."""
    for event in reversed(events):
        if event["type"] == "start" and isinstance(event.get("kernels"), list):
            return "liger" in event["kernels"]
    return None


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


def learn_cpu_from_run(run_dir: Path, path: Path | None = None) -> dict | None:
    """A run that trained on the CPU teaches this machine's rate (core/fit/cpu.learn_cpu_rate), which
    the window's time-per-step estimate uses; the stored entry, or None."""
    events = read_events(Path(run_dir) / "events.jsonl")
    start = next((e for e in reversed(events) if e["type"] == "start"), None)
    if start is None or start.get("devices") != ["cpu"]:
        return None
    try:
        config = RunConfig.load(Path(run_dir) / "config.yaml")
        info = read_model_info(config.model)
    except (ConfigError, ModelError, OSError):
        return None
    return learn_cpu_rate(events, info, start.get("memory_mode") or "none", path)


def learn_after_run(run_dir: Path, status: str, log: Callable[[str, str], None]) -> None:
    """The train job's last step: a completed run refines its constant (learn_from_run), or on a CPU
    this machine's rate (learn_cpu_from_run); what was learnt, or why nothing could be, goes to
    `log(message, level)`. Never fails a finished run."""
    if status != "completed":
        return
    try:
        entry = learn_from_run(run_dir)
        cpu = None if entry else learn_cpu_from_run(run_dir)
    except Exception as exc:                       # noqa: BLE001 — never fail a finished run over this
        log(f"The memory model could not learn from this run: {exc}", "warning")
        return
    if entry:
        log(f"Memory model: activation constant now {entry['value']} (from {entry['runs']} run(s))", "info")
    if cpu:
        runs = f"{cpu['runs']} run{'s' * (cpu['runs'] != 1)}"
        log(f"Time estimate: learnt how fast this CPU trains (from {runs} so far); the Train page's time a step "
            "uses it from now on", "info")


def _unit_calibration() -> Calibration:
    """Every constant 1.0: the analytic count, so the fitted constant is measured / analytic."""
    return replace(Calibration(), constants={})
