"""`lorastudio export RUN OUT`: the run's adapter as PEFT files + tokenizer + model card, or one
zip (core/runs/export.py; a file copy, no job). Exit status: 0 written, 2 refused (nothing written).
"""
from __future__ import annotations

import json
from pathlib import Path

from lorastudio.core.cli.output import fail


def export_arguments(p) -> None:
    p.add_argument("run", type=Path, help="the run folder, or its name (or a unique prefix) under the runs directory")
    p.add_argument("out", type=Path, help="the output folder (or .zip file with --zip)")
    p.add_argument("--checkpoint", type=int, help="export this checkpoint step instead of the final adapter")
    p.add_argument("--zip", action="store_true", help="write one zip file")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output")


def export(args) -> int:
    from lorastudio.core.errors import UserError
    from lorastudio.core.runs.export import export_adapter
    try:
        out = export_adapter(args.run, args.out, args.checkpoint, args.zip, args.overwrite, say=print)
    except UserError as exc:            # ExportError, and every failed write (core/disk.py) in words
        return fail(exc.message, exc.hint)
    print(f"Exported the adapter to {out}")
    cfg = json.loads((out / "adapter_config.json").read_text()) if out.is_dir() else None
    if cfg:
        print(f"  base model: {cfg.get('base_model_name_or_path')}; load with peft.PeftModel.from_pretrained")
    return 0
