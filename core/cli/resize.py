"""`lorastudio resize RUN OUT --rank K | --energy E`: a smaller adapter, the best rank-K
approximation of every update (core/plans/resize.py checks, core/jobs/resize.py writes).
Exit status: 0 written, 1 the job failed or was interrupted (nothing written), 2 refused.
"""
from __future__ import annotations

from pathlib import Path

from lorastudio.core.cli.output import fail, follow_report, report_failure


def resize_arguments(p) -> None:
    p.add_argument("run", type=Path, help="the run folder, its name (or a unique prefix) under the runs directory, or a PEFT adapter folder")
    p.add_argument("out", type=Path, help="the new adapter folder (must be empty or absent)")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--rank", type=int, metavar="K", help="keep the best rank-K approximation of every update")
    how.add_argument("--energy", type=float, metavar="E",
                     help="per module, the smallest rank holding this share of the update, e.g. 0.99")
    p.add_argument("--checkpoint", type=int, metavar="STEP", help="resize this checkpoint's adapter")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")


def resize(args) -> int:
    from lorastudio.core.formatting import format_bytes
    from lorastudio.core.runs.export import ExportError
    from lorastudio.core.plans.rank import find_target
    from lorastudio.core.plans.resize import ResizeRequest, plan_resize, start_resize
    try:
        job = plan_resize(ResizeRequest(find_target(args.run, args.checkpoint), args.out, args.rank, args.energy,
                                        args.overwrite))
    except ExportError as exc:
        return fail(exc.message, exc.hint)
    handle = start_resize(job)
    result, outcome = follow_report(handle, "resize")
    if result is None or not outcome.ok:
        return report_failure(outcome, handle, "resize")
    rows = result["modules"]
    before = sum(row["rank"] for row in rows)
    after = sum(row["new_rank"] for row in rows)
    worst = max(rows, key=lambda row: row["error"])
    print(f"Saved a resized adapter to {outcome.output}: {result['mode']}")
    print(f"  {len(rows)} modules, ranks summed {before} → {after}; LoRA weights "
          f"{format_bytes(_folder_weights(job.target.adapter))} → {format_bytes(_folder_weights(job.out))}")
    print(f"  relative error ‖ΔW − ΔW_k‖/‖ΔW‖: mean {sum(r['error'] for r in rows) / len(rows):.4f}, "
          f"largest {worst['error']:.4f} ({worst['name']}); per module in {job.out / 'README.md'}")
    return 0


def _folder_weights(folder: Path) -> int:
    from lorastudio.core.runs.rank_report import WEIGHTS_FILE
    path = Path(folder) / WEIGHTS_FILE
    return path.stat().st_size if path.is_file() else 0
