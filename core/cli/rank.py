"""`lorastudio rank RUN` and `lorastudio resize RUN OUT --rank K | --energy E`: what rank the
trained update really used, and a smaller adapter that keeps it.

Both run as jobs (core/jobs/rank.py, core/jobs/resize.py; started by core/runs/rank_plan.py) and
answer with a `report` event. RUN is a run folder (its final adapter, or --checkpoint STEP) or a
PEFT adapter folder. Exit status: 0 done, 1 the job failed or was stopped, 2 refused before
anything started. Progress goes to stderr; the answer to stdout.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from lorastudio.core.cli.output import fail


def rank_arguments(p) -> None:
    p.add_argument("run", type=Path, help="the run folder (or a PEFT adapter folder)")
    p.add_argument("--checkpoint", type=int, metavar="STEP", help="read this checkpoint's adapter")
    p.add_argument("--json", action="store_true", help="the whole report as JSON: every module's singular values")


def resize_arguments(p) -> None:
    p.add_argument("run", type=Path, help="the run folder (or a PEFT adapter folder)")
    p.add_argument("out", type=Path, help="the new adapter folder (must be empty or absent)")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--rank", type=int, metavar="K", help="keep the best rank-K approximation of every update")
    how.add_argument("--energy", type=float, metavar="E",
                     help="per module, the smallest rank holding this share of the update, e.g. 0.99")
    p.add_argument("--checkpoint", type=int, metavar="STEP", help="resize this checkpoint's adapter")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")


def _run_job(handle, what: str) -> tuple[dict | None, object]:
    """Follow a rank or resize job: (its report, outcome); progress lines on stderr."""
    from lorastudio.core.errors import event_error_lines
    from lorastudio.core.runtime.follower import follow
    found: dict = {}

    def on_event(ev: dict) -> None:
        if ev["type"] == "phase":
            print(f"· {ev.get('message') or ev['name']}", file=sys.stderr, flush=True)
        elif ev["type"] == "report":
            found["report"] = ev["report"]
        elif ev["type"] == "error":
            print(event_error_lines(ev), file=sys.stderr, flush=True)

    try:
        outcome = follow(handle, on_event, on_interrupt=lambda: print(
            f"Stopping the {what} (Ctrl+C again to leave it at once)…", file=sys.stderr, flush=True))
    except KeyboardInterrupt:
        handle.kill()
        return None, None
    return found.get("report"), outcome


def _failed(outcome, handle, what: str) -> int:
    from lorastudio.core.errors import print_error
    if outcome is None:
        print_error(f"the {what} was interrupted; nothing was written")
    elif outcome.error is None:         # an error event was printed as it came
        print_error(f"the {what} ended {outcome.status}; nothing was written", f"see {handle.log}")
    elif outcome.error.get("kind") == "exception":
        print(f"  details: {handle.log}", file=sys.stderr)
    return 1


def rank(args) -> int:
    from lorastudio.core.runs.export import ExportError
    from lorastudio.core.runs.rank_plan import find_target, start_rank
    from lorastudio.core.runs.rank_report import format_report, summary, suggested_rank, suggestion
    try:
        target = find_target(args.run, args.checkpoint)
    except ExportError as exc:
        return fail(exc.message, exc.hint)
    handle = start_rank(target)
    report, outcome = _run_job(handle, "rank analysis")
    if report is None or not outcome.ok:
        return _failed(outcome, handle, "rank analysis")
    if args.json:
        k, share = suggested_rank(report)
        print(json.dumps({**report, "summary": _json_keys(summary(report)), "suggested_rank": k,
                          "suggested_share": share, "suggestion": suggestion(report, target.label)}, indent=1))
    else:
        print(format_report(report, target.label))
    return 0


def _json_keys(table: dict) -> dict:
    return {group: {("none" if k is None else str(k)): row for k, row in rows.items()} for group, rows in table.items()}


def resize(args) -> int:
    from lorastudio.core.formatting import format_bytes
    from lorastudio.core.runs.export import ExportError
    from lorastudio.core.runs.rank_plan import check_resize, find_target, start_resize
    try:
        job = check_resize(find_target(args.run, args.checkpoint), args.out, args.rank, args.energy, args.overwrite)
    except ExportError as exc:
        return fail(exc.message, exc.hint)
    handle = start_resize(job)
    result, outcome = _run_job(handle, "resize")
    if result is None or not outcome.ok:
        return _failed(outcome, handle, "resize")
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
