"""`lorastudio targets MODEL`: what LoRA can adapt in a model, and how many parameters at a rank
(reads config.json and safetensors headers only)."""
from __future__ import annotations

import json

from lorastudio.core.cli.output import fail
from lorastudio.core.formatting import format_count
from lorastudio.core.models.info import ModelError, pickle_only_problem, read_model_info
from lorastudio.core.models.targets import discover_targets, trainable_line
from lorastudio.core.models.vision import part_lora_params


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
    problem = pickle_only_problem(info)     # not "0 parameters" (issue 27)
    if problem:
        return fail(problem.message, problem.hint)
    report = discover_targets(info)
    vision = info.vision            # a vision-language model: its parts (core/models/vision.py)
    if args.json:
        print(json.dumps({**report.to_dict(args.rank, args.dora), "vision": vision}, indent=2))
        return 0
    print(f"{info.architecture} · {format_count(info.num_parameters)} parameters · rank {args.rank}"
          f"{' · DoRA' if args.dora else ''}")
    for group, found in report.grouped().items():
        if not found:
            continue
        print(f"\n{group.replace('_', ' ')}")
        for t in found:
            experts = f" × {t.experts} experts" if t.experts > 1 else ""
            print(f"  {t.name:<24} {t.layers:>4} layers{experts}  {t.d_in:>6} → {t.d_out:<6} "
                  f"{format_count(t.lora_params(args.rank, args.dora)):>9} LoRA params")
    if report.unmapped_moe:
        print(f"\nnote: {report.unmapped_moe} is a mixture of experts whose experts transformers holds under names "
              "LoRA Studio does not map yet: lora.targets may name attention modules only")
    else:
        print(f"\nall-linear: {trainable_line(report, 'all-linear', args.rank, args.dora)}")
    if vision:
        print(f"\n{vision['words']}")
        if vision["family"]:
            extra = part_lora_params(info, args.rank, args.dora)
            print(f"  the targets above are the language model's; lora.vision: projector adds "
                  f"{format_count(extra['projector'])}, all adds {format_count(extra['projector'] + extra['vision'])} "
                  "LoRA params")
    return 0
