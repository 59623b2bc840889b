"""`lorastudio targets MODEL` and `lorastudio import-gguf FILE`: what a model offers, and making a
.gguf usable."""
from __future__ import annotations

import json
from pathlib import Path

from lorastudio.core.cli.output import fail, print_phase
from lorastudio.core.formatting import format_count
from lorastudio.core.models.info import ModelError, read_model_info
from lorastudio.core.models.targets import discover_targets, trainable_line


def targets_arguments(p) -> None:
    p.add_argument("model", help="a model folder or a Hub id in the local cache")
    p.add_argument("--rank", "-r", type=int, default=8, help="LoRA rank for the parameter counts")
    p.add_argument("--dora", action="store_true", help="count DoRA's magnitude vectors too")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def targets(args) -> int:
    if args.rank < 1:
        return fail(f"--rank {args.rank} is not allowed", "the rank must be ≥ 1")
    try:
        info = read_model_info(args.model)
    except ModelError as exc:
        return fail(exc.message, exc.hint)
    report = discover_targets(info)
    if args.json:
        print(json.dumps(report.to_dict(args.rank, args.dora), indent=2))
        return 0
    print(f"{info.architecture} · {format_count(info.num_parameters)} parameters · rank {args.rank}"
          f"{' · DoRA' if args.dora else ''}")
    for group, found in report.grouped().items():
        if not found:
            continue
        print(f"\n{group}")
        for t in found:
            print(f"  {t.name:<22} {t.layers:>4} layers  {t.d_in:>6} → {t.d_out:<6} "
                  f"{format_count(t.lora_params(args.rank, args.dora)):>9} LoRA params")
    print(f"\nall-linear: {trainable_line(report, 'all-linear', args.rank, args.dora)}")
    return 0


def import_gguf_arguments(p) -> None:
    p.add_argument("gguf", type=Path, help="the .gguf file")


def import_gguf(args) -> int:
    return ensure_imported(args.gguf)


def ensure_imported(path: Path, quiet_if_cached: bool = False) -> int:
    """Import a .gguf into the model cache with a progress display; 0 when it is there.
    `quiet_if_cached` (train): say nothing for a model that is not a .gguf or is imported already."""
    from lorastudio.core.models.gguf_cache import GgufError, cached_import, import_with_worker, is_gguf
    if not is_gguf(path) or (quiet_if_cached and not path.is_file()):     # preflight says why
        return 0 if quiet_if_cached else fail(f"{path} is not a .gguf file")
    folder = cached_import(path)
    if folder is None:
        print(f"Importing {path.name} into the model cache (once)")
        try:          # progress lines as they come; the error once, from the outcome
            folder = import_with_worker(path, lambda ev: print_phase(ev) if ev["type"] == "phase" else None)
        except GgufError as exc:
            return fail(exc.message, exc.hint)
    if not quiet_if_cached:
        print(f"Model folder: {folder}")
    return 0
