"""`lorastudio export RUN OUT` and `lorastudio merge RUN OUT`: leaving with a result."""
from __future__ import annotations

import json
from pathlib import Path

from lorastudio.core.cli.output import fail


def export_arguments(p) -> None:
    p.add_argument("run", type=Path, help="the run folder")
    p.add_argument("out", type=Path, help="the output folder (or .zip file with --zip)")
    p.add_argument("--checkpoint", type=int, help="export this checkpoint step instead of the final adapter")
    p.add_argument("--zip", action="store_true", help="write one zip file")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output")


def export(args) -> int:
    from lorastudio.core.runs.export import ExportError, export_adapter
    try:
        out = export_adapter(args.run, args.out, args.checkpoint, args.zip, args.overwrite)
    except ExportError as exc:
        return fail(exc.message, exc.hint)
    print(f"Exported the adapter to {out}")
    cfg = json.loads((out / "adapter_config.json").read_text()) if out.is_dir() else None
    if cfg:
        print(f"  base model: {cfg.get('base_model_name_or_path')}; load with peft.PeftModel.from_pretrained")
    return 0


def merge_arguments(p) -> None:
    p.add_argument("run", type=Path, help="the run folder")
    p.add_argument("out", type=Path, help="the output folder (must be empty or absent)")
    p.add_argument("--checkpoint", type=int, help="merge this checkpoint step instead of the final adapter")
    p.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"))
    p.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard, e.g. 2GB")
    p.add_argument("--prompts", type=Path, help="a file of prompts for the fidelity check (one a line)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")


def merge(args) -> int:
    from lorastudio.core.runs.merge_plan import cmd_merge        # moves here with the merge job
    return cmd_merge(args)
