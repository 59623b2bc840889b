"""Settings that fit: the memory mode for `memory_mode: auto`, `lorastudio fit --auto`, the window's
"Make it fit", and after running out of memory the one advisor (`settings_after_oom`) whose settings
the automatic retry trains on, the error's hint says (`oom_hint`) and the Runs page's one-click
resume applies — a rule of thumb only when the model's files cannot be read. Torch-free.

The search, most harmless change first (only the first group that fits anything is used):
  1. the micro-batch and the memory mode, keeping the effective batch (batch_size × grad_accum):
     the same training maths, only slower or faster;
  2. a shorter seq_len, halving, only if nothing in 1 fits (long examples get truncated);
  3. a smaller quantization of the base (none → 8bit → 4bit), last.
Within a group the fastest candidate wins, by a small speed model: a micro-batch of T tokens runs
at T / (T + 512) of the GPU's best per-token speed, and recomputing activations costs time
(checkpoint 0.75, lean 0.70 of the speed of none).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lorastudio.core.config import RunConfig
from lorastudio.core.fit.calibration import Calibration, load_calibration
from lorastudio.core.fit.memory_model import MODES, Estimate, estimate, with_settings
from lorastudio.core.formatting import format_bytes
from lorastudio.core.models.info import ModelInfo
from lorastudio.core.models.targets import TargetReport, discover_targets

MODE_SPEED = {"none": 1.0, "checkpoint": 0.75, "lean": 0.70}
QUANT_ORDER = ("none", "8bit", "4bit")          # from most to least memory
MIN_SEQ_LEN = 256
RETRY_SHRINK = 0.8                              # after an OOM: at most this much of the failed estimate


def speed_score(batch_size: int, seq_len: int, mode: str) -> float:
    tokens = batch_size * seq_len
    return tokens / (tokens + 512) * MODE_SPEED[mode]


@dataclass
class Advice:
    config: RunConfig                     # the config with the settings applied
    overrides: dict[str, Any]             # dotted key -> new value (only what changed)
    estimate: Estimate | None             # None: the rule of thumb's (nothing to estimate with)
    fits: bool
    reason: str
    changes: list[tuple[str, Any, Any]] = field(default_factory=list)
    advisor: str = "memory model"         # or "rule of thumb" (settings_after_oom without model info)

    def to_dict(self) -> dict:
        return {"fits": self.fits, "reason": self.reason, "overrides": self.overrides,
                "changes": [{"key": k, "old": o, "new": n} for k, o, n in self.changes],
                "peak": self.estimate.peak if self.estimate else None,
                "mode": self.estimate.mode if self.estimate else None}


def _context(info: ModelInfo, report: TargetReport | None, calibration: Calibration | None):
    return report or discover_targets(info), calibration or load_calibration()


def choose_memory_mode(config: RunConfig, info: ModelInfo, gpu_total_bytes: int | None, *,
                       report: TargetReport | None = None, calibration: Calibration | None = None,
                       fused_loss: bool | None = None) -> tuple[str, str]:
    """(mode, reason): the fastest of none, checkpoint, lean whose estimated peak fits the GPU.

    A mode set in the config is kept; without a GPU (gpu_total_bytes None) auto means "checkpoint"
    (the behaviour before memory modes existed)."""
    asked = config.training.memory_mode
    if asked != "auto":
        return asked, f"memory_mode: {asked} in the config"
    if gpu_total_bytes is None:
        return "checkpoint", "no GPU to measure against: checkpointing"
    report, calibration = _context(info, report, calibration)
    last = None
    for mode in MODES:
        est = estimate(config, info, mode, report=report, calibration=calibration, fused_loss=fused_loss)
        if est.fits(gpu_total_bytes):
            return mode, (f"{mode}: estimated peak {format_bytes(est.peak)} of "
                          f"{format_bytes(gpu_total_bytes)}")
        last = est
    return "lean", (f"even lean needs an estimated {format_bytes(last.peak)} of "
                    f"{format_bytes(gpu_total_bytes)}; lean uses the least")


def _divisors_desc(n: int) -> list[int]:
    return [d for d in range(n, 0, -1) if n % d == 0]


def _candidates(config: RunConfig, max_batch: int | None) -> list[tuple[RunConfig, str, dict]]:
    """(config, mode, overrides) for every micro-batch dividing the effective batch and every mode."""
    t = config.training
    effective = t.batch_size * t.grad_accum
    out = []
    for b in _divisors_desc(effective):
        if max_batch is not None and b > max_batch:
            continue
        for mode in MODES:
            overrides = {"training.batch_size": b, "training.grad_accum": effective // b}
            out.append((with_settings(config, overrides), mode, overrides))
    return out


def fit_settings(config: RunConfig, info: ModelInfo, capacity: int | None, *, budget: int | None = None,
                 keep_larger_batches: bool = True, report: TargetReport | None = None,
                 calibration: Calibration | None = None, fused_loss: bool | None = None,
                 on_gpu: bool = True, pin_mode: bool = False) -> Advice:
    """The fastest settings whose estimated peak is ≤ `budget` (default: the GPU's `capacity`).

    `keep_larger_batches=False` never raises the micro-batch (a retry after an OOM must shrink);
    `pin_mode` writes the chosen memory mode even where `auto` would choose the same."""
    report, calibration = _context(info, report, calibration)
    limit = budget if budget is not None else capacity
    max_batch = None if keep_larger_batches else config.training.batch_size
    pinned = config.training.memory_mode
    kw = dict(report=report, calibration=calibration, fused_loss=fused_loss, on_gpu=on_gpu)

    def best_of(base: RunConfig) -> tuple[RunConfig, str, dict, Estimate] | None:
        found = None
        for cand, mode, overrides in _candidates(base, max_batch):
            est = estimate(cand, info, mode, **kw)
            if limit is not None and est.peak > limit:
                continue
            score = speed_score(cand.training.batch_size, cand.training.seq_len, mode)
            if found is None or score > found[0]:
                found = (score, cand, mode, overrides, est)
        return found[1:] if found else None

    steps: list[tuple[dict, str]] = [({}, "")]
    seq = config.training.seq_len
    while seq // 2 >= MIN_SEQ_LEN:
        seq //= 2
        steps.append(({"training.seq_len": seq}, f"seq_len shortened to {seq} (longer examples are truncated)"))
    quants = [q for q in QUANT_ORDER[QUANT_ORDER.index(config.quantization) + 1:]]
    plans = steps + [({"quantization": q, **s}, f"quantization {q}" + (f"; {why}" if why else ""))
                     for q in quants for s, why in steps]
    for extra, why in plans:
        base = with_settings(config, extra) if extra else config
        found = best_of(base)
        if found is None:
            continue
        cand, mode, overrides, est = found
        overrides = {**extra, **overrides}
        if pin_mode or pinned != "auto" or mode != _auto_mode(cand, info, limit, kw):
            overrides["training.memory_mode"] = mode
        applied = with_settings(config, overrides)
        changes = _changes(config, applied, overrides)
        what = "; ".join(filter(None, [_batch_words(config, applied), f"memory mode {mode}", why]))
        return Advice(applied, {k: n for k, _o, n in changes}, est, True,
                      f"{what}: estimated peak {format_bytes(est.peak)}"
                      + (f" of {format_bytes(limit)}" if limit is not None else ""), changes)
    smallest = with_settings(config, {"training.batch_size": 1, "training.grad_accum":
                                      config.training.batch_size * config.training.grad_accum,
                                      "training.seq_len": max(MIN_SEQ_LEN, min(seq, config.training.seq_len)),
                                      "quantization": "4bit", "training.memory_mode": "lean"})
    est = estimate(smallest, info, "lean", **kw)
    return Advice(config, {}, est, False,
                  f"nothing fits: even batch 1, seq_len {smallest.training.seq_len}, 4-bit and lean need "
                  f"an estimated {format_bytes(est.peak)}" + (f" of {format_bytes(limit)}" if limit else "")
                  + "; use a smaller model or a larger GPU")


def _auto_mode(config: RunConfig, info: ModelInfo, limit: int | None, kw: dict) -> str:
    return choose_memory_mode(config, info, limit, report=kw["report"], calibration=kw["calibration"],
                              fused_loss=kw["fused_loss"])[0] if limit is not None else "checkpoint"


def _changes(old: RunConfig, new: RunConfig, overrides: dict) -> list[tuple[str, Any, Any]]:
    out = []
    for key in overrides:
        section, _, name = key.partition(".")
        before = getattr(getattr(old, section), name) if name else getattr(old, section)
        after = getattr(getattr(new, section), name) if name else getattr(new, section)
        if before != after:
            out.append((key, before, after))
    return out


def _batch_words(old: RunConfig, new: RunConfig) -> str:
    a, b = old.training, new.training
    if (a.batch_size, a.grad_accum) == (b.batch_size, b.grad_accum):
        return f"batch {b.batch_size} × {b.grad_accum}"
    return (f"batch {a.batch_size} × {a.grad_accum} → {b.batch_size} × {b.grad_accum} "
            f"(same effective batch {b.batch_size * b.grad_accum})")


def settings_after_oom(config: RunConfig, info: ModelInfo | None, capacity: int | None, *, on_gpu: bool = True,
                       report: TargetReport | None = None, calibration: Calibration | None = None,
                       fused_loss: bool | None = None) -> Advice:
    """Settings after running out of memory: the one out-of-memory advisor. The automatic retry
    trains on with them, the error's hint says them (`oom_hint`) and the Runs page's one-click
    resume applies their `overrides`.

    The run needed more than the estimate of the settings it had, so the estimate was too low by an
    unknown factor: the retry asks for at most RETRY_SHRINK of that estimate (and of the GPU), and
    never a larger micro-batch. Repeated OOMs shrink again from the new settings. Without model
    information (`info` None: its folder is gone) a rule of thumb stands in (`rule_of_thumb_after_oom`)."""
    if info is None:
        return rule_of_thumb_after_oom(config)
    report, calibration = _context(info, report, calibration)
    mode = choose_memory_mode(config, info, capacity, report=report, calibration=calibration,
                              fused_loss=fused_loss)[0] if on_gpu else (
        config.training.memory_mode if config.training.memory_mode != "auto" else "checkpoint")
    failed = estimate(config, info, mode, report=report, calibration=calibration, fused_loss=fused_loss,
                      on_gpu=on_gpu)
    budget = int(RETRY_SHRINK * min(failed.peak, capacity or failed.peak))
    advice = fit_settings(config, info, capacity, budget=budget, keep_larger_batches=False, report=report,
                          calibration=calibration, fused_loss=fused_loss, on_gpu=on_gpu, pin_mode=True)
    if advice.fits:
        advice.reason = (f"ran out of memory with an estimated {format_bytes(failed.peak)} ({mode}); "
                         f"settings that fit: {advice.reason}")
    return advice


def rule_of_thumb_after_oom(config: RunConfig) -> Advice:
    """settings_after_oom without model information: the changes of the search's first group that
    apply (half the micro-batch at the same effective batch; checkpointing for memory mode none, or
    lean at a micro-batch of 1), else a shorter seq_len, else a 4-bit base — each needs less memory,
    by how much is not known."""
    t = config.training
    overrides: dict[str, Any] = {}
    if t.batch_size > 1:
        effective = t.batch_size * t.grad_accum
        batch = next(d for d in _divisors_desc(effective) if d <= t.batch_size // 2)
        overrides.update({"training.batch_size": batch, "training.grad_accum": effective // batch})
    if t.memory_mode == "none" or t.memory_mode == "checkpoint" and t.batch_size == 1:
        overrides["training.memory_mode"] = "checkpoint" if t.memory_mode == "none" else "lean"
    if not overrides and t.seq_len // 2 >= MIN_SEQ_LEN:
        overrides["training.seq_len"] = t.seq_len // 2
    if not overrides and config.quantization != "4bit":
        overrides["quantization"] = "4bit"
    applied = with_settings(config, overrides)
    changes = _changes(config, applied, overrides)
    if not changes:
        return Advice(config, {}, None, False, "nothing smaller to try: batch 1, lean, the shortest seq_len and "
                      "a 4-bit base; use a smaller model or a larger GPU", advisor="rule of thumb")
    return Advice(applied, {k: n for k, _o, n in changes}, None, True,
                  "a rule of thumb: the model's files could not be read to estimate with", changes,
                  advisor="rule of thumb")


def oom_hint(advice: Advice) -> str:
    """An out-of-memory error's hint: the advisor's settings (settings_after_oom) in words."""
    if not advice.fits:
        return f"Out of GPU memory, and {advice.reason}"
    if not advice.changes:
        return "Out of GPU memory even at these settings; use a smaller model or a larger GPU"
    changes, words = dict((k, (o, n)) for k, o, n in advice.changes), []
    for key, (old, new) in changes.items():
        if key == "training.grad_accum" and "training.batch_size" in changes:
            continue
        if key == "training.batch_size" and "training.grad_accum" in changes:
            accum = changes["training.grad_accum"]
            words.append(f"batch_size {old} → {new} with grad_accum {accum[0]} → {accum[1]} "
                         "(same effective batch)")
        else:
            words.append(f"{key.split('.')[-1]} {old} → {new}")
    why = (f"the memory model estimates a peak of {format_bytes(advice.estimate.peak)}" if advice.estimate
           else advice.reason)
    return f"Out of GPU memory. Try {'; '.join(words)} — {why}"


@dataclass
class Context:
    """The longest seq_len that fits (`lorastudio fit --max-context`): batch 1, the least memory mode."""
    seq_len: int                 # 0: not even MIN_SEQ_LEN fits
    mode: str
    estimate: Estimate
    limit: int

    def words(self) -> str:
        if not self.seq_len:
            return (f"not even seq_len {MIN_SEQ_LEN} fits {format_bytes(self.limit)}: an estimated "
                    f"{format_bytes(self.estimate.peak)} at batch 1 in memory mode {self.mode}")
        return (f"Longest context that fits {format_bytes(self.limit)}: seq_len {self.seq_len:,} tokens "
                f"(batch 1, memory mode {self.mode}; estimated peak {format_bytes(self.estimate.peak)})")

    def to_dict(self) -> dict:
        return {"seq_len": self.seq_len, "mode": self.mode, "peak": self.estimate.peak, "limit": self.limit,
                "batch_size": 1}


def longest_context(config: RunConfig, info: ModelInfo, capacity: int, *, report: TargetReport | None = None,
                    calibration: Calibration | None = None, fused_loss: bool | None = None,
                    step: int = 256) -> Context:
    """The longest seq_len (a multiple of `step`) whose estimated peak fits `capacity` at batch 1, in the
    memory mode that allows the longest (the config's mode when it names one). Every term grows with
    seq_len, so a bisection finds it; the quantization and LoRA settings stay the config's."""
    from lorastudio.core.config import MAX_SEQ
    report, calibration = _context(info, report, calibration)
    kw = dict(report=report, calibration=calibration, fused_loss=fused_loss)
    modes = MODES if config.training.memory_mode == "auto" else (config.training.memory_mode,)
    one = with_settings(config, {"training.batch_size": 1, "training.grad_accum": 1})

    def at(seq: int, mode: str) -> Estimate:
        return estimate(with_settings(one, {"training.seq_len": seq}), info, mode, **kw)

    best: Context | None = None
    for mode in modes:
        lo, hi = 0, MAX_SEQ // step                   # in steps: lo fits (or is 0), hi + 1 does not
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if at(mid * step, mode).peak <= capacity:
                lo = mid
            else:
                hi = mid - 1
        seq = lo * step
        if seq and seq < MIN_SEQ_LEN:
            seq = 0
        if best is None or seq > best.seq_len:
            best = Context(seq, mode, at(seq or MIN_SEQ_LEN, mode), capacity)
    return best
