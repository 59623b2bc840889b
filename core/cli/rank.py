"""`lorastudio rank RUN`: what rank the trained update really used (`lorastudio resize`, in
core/cli/resize.py, saves a smaller adapter that keeps it).

It runs as a job (core/jobs/rank.py, started by core/plans/rank.py) and answers with a `report`
event. RUN is a run folder (its final adapter, or --checkpoint STEP) or a
PEFT adapter folder. Exit status: 0 done, 1 the job failed or was stopped, 2 refused before
anything started. Progress goes to stderr; the answer to stdout.
"""
from __future__ import annotations

import json
from pathlib import Path

from lorastudio.core.cli.output import fail, follow_report, report_failure


def rank_arguments(p) -> None:
    p.add_argument("run", type=Path, help="the run folder, its name (or a unique prefix) under the runs directory, or a PEFT adapter folder")
    p.add_argument("--checkpoint", type=int, metavar="STEP", help="read this checkpoint's adapter")
    p.add_argument("--json", action="store_true", help="the whole report as JSON: every module's singular values")


def rank(args) -> int:
    from lorastudio.core.runs.export import ExportError
    from lorastudio.core.plans.rank import find_target, start_rank
    from lorastudio.core.runs.rank_report import format_report, summary, suggested_rank, suggestion
    try:
        target = find_target(args.run, args.checkpoint)
    except ExportError as exc:
        return fail(exc.message, exc.hint)
    handle = start_rank(target)
    report, outcome = follow_report(handle, "rank analysis")
    if report is None or not outcome.ok:
        return report_failure(outcome, handle, "rank analysis")
    if args.json:
        k, share = suggested_rank(report)
        print(json.dumps({**report, "summary": _json_keys(summary(report)), "suggested_rank": k,
                          "suggested_share": share, "suggestion": suggestion(report, target.label)}, indent=1))
    else:
        print(format_report(report, target.label))
    return 0


def _json_keys(table: dict) -> dict:
    return {group: {("none" if k is None else str(k)): row for k, row in rows.items()} for group, rows in table.items()}
