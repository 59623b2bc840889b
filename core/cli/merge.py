"""`lorastudio merge RUN OUT`: the adapter merged into its base, saved as one model folder
(core/plans/merge.py checks, core/jobs/merge.py merges and checks fidelity).

Exit status: 0 merged, 1 the merge failed, was stopped or its worker died (nothing was
written), 2 refused before anything started. Ctrl+C stops the merge; nothing is written.
"""
from __future__ import annotations

from pathlib import Path

from lorastudio.core.cli.output import fail, follow_writing_job


def merge_arguments(p) -> None:
    p.add_argument("run", type=Path, help="the run folder, or its name (or a unique prefix) under the runs directory")
    p.add_argument("out", type=Path, help="the output folder (must be empty or absent)")
    p.add_argument("--checkpoint", type=int, metavar="STEP",
                   help="merge this checkpoint step instead of the final adapter (default: the final adapter)")
    p.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp16", "fp32"),
                   help="the merged weights' precision (default: auto — bf16 on a GPU; on a CPU bf16 only "
                        "where it has hardware bf16, fp16 where that is fast, else fp32)")
    p.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard, e.g. 2GB (default: 5GB)")
    p.add_argument("--prompts", type=Path,
                   help="a file of prompts for the fidelity check, one a line (default: the first prompts of the run's data)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto — the GPU if there is one)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder (default: refuse)")


def merge(args) -> int:
    from lorastudio.core.formatting import format_bytes
    from lorastudio.core.runs.export import ExportError
    from lorastudio.core.plans.merge import MergeRequest, clean_after, plan_merge, start_merge
    try:
        job = plan_merge(MergeRequest(args.run, args.out, args.checkpoint, args.dtype, args.max_shard_size,
                                      args.prompts, args.device, args.overwrite))
    except ExportError as exc:
        return fail(exc.message, exc.hint)
    print(f"Merging {job.adapter} into {job.base} ({job.dtype}); about {format_bytes(job.estimate)} to write",
          flush=True)
    handle = start_merge(job)
    outcome = follow_writing_job(handle, "merge", job.out, "compare the merged model before shipping it")
    if outcome is None:
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
