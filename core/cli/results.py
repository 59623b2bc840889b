"""`lorastudio export RUN OUT` and `lorastudio merge RUN OUT`: leaving with a result.

Merge exit status: 0 merged, 1 the merge failed, was stopped or its worker died (nothing was
written), 2 refused before anything started. Ctrl+C stops the merge; nothing is written.
"""
from __future__ import annotations

import json
from pathlib import Path

from lorastudio.core.cli.output import fail, result_event_printer


def export_arguments(p) -> None:
    p.add_argument("run", type=Path, help="the run folder")
    p.add_argument("out", type=Path, help="the output folder (or .zip file with --zip)")
    p.add_argument("--checkpoint", type=int, help="export this checkpoint step instead of the final adapter")
    p.add_argument("--zip", action="store_true", help="write one zip file")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output")


def export(args) -> int:
    from lorastudio.core.errors import UserError
    from lorastudio.core.runs.export import export_adapter
    try:
        out = export_adapter(args.run, args.out, args.checkpoint, args.zip, args.overwrite)
    except UserError as exc:            # ExportError, and every failed write (core/disk.py) in words
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
    from lorastudio.core.formatting import format_bytes
    from lorastudio.core.runs.export import ExportError
    from lorastudio.core.runs.merge_plan import clean_after, prepare_job, start_merge
    from lorastudio.core.runtime.follower import follow
    try:
        job = prepare_job(args)
    except ExportError as exc:
        return fail(exc.message, exc.hint)
    print(f"Merging {job.adapter} into {job.base} ({job.dtype}); about {format_bytes(job.estimate)} to write",
          flush=True)
    handle = start_merge(job)
    try:
        outcome = follow(handle, result_event_printer("compare the merged model before shipping it"),
                         on_interrupt=lambda: print(
            "Cancelling the merge; nothing will be written (Ctrl+C again to stop waiting)…", flush=True))
    except KeyboardInterrupt:
        print(f"Stopped waiting; the merge worker (pid {handle.pid}) is stopping. Nothing is written to {job.out}")
        return 1
    if outcome.status == "completed":
        print(f"Merged model saved to {outcome.output}")
        return 0
    print(f"Merge {outcome.status}; nothing was written to {job.out}")
    left = [item for item in clean_after(job) if item.action == "removed"]
    if left:
        print(f"Removed the merge's unfinished hidden files beside it "
              f"({', '.join(item.path.name for item in left)}: {format_bytes(sum(i.bytes for i in left))})")
    return 1
