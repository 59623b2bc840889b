"""`lorastudio runs`: the runs in the data directory, one line each; and the resolution of every
command's RUN argument (a path, a run's name or a unique prefix: core/runs/names.py), done once in
`lorastudio.core.cli.main` after the command line is parsed.
"""
from __future__ import annotations

import json
from pathlib import Path

from lorastudio.core.cli.output import fail
from lorastudio.core.formatting import format_bytes

RUN_ARGUMENTS = ("run", "runs")         # the argparse dests that name runs (eval, merge, … ; serve, tensorboard)


def resolve_run_arguments(args) -> int:
    """Replace each RUN argument by its folder; 0, or 2 after printing why one names no single run."""
    from lorastudio.core.runs.names import RunNotFound, resolve_run
    if args.command == "runs":
        return 0
    for dest in RUN_ARGUMENTS:
        value = getattr(args, dest, None)
        if value is None:
            continue
        try:
            if isinstance(value, list):
                setattr(args, dest, [resolve_run(v) for v in value])
            else:
                setattr(args, dest, resolve_run(value))
        except RunNotFound as exc:
            return fail(exc.message, exc.hint)
    return 0


def runs_arguments(p) -> None:
    p.add_argument("--runs-dir", type=Path, help="the runs folder to list (default: runs/ in the data directory)")
    p.add_argument("--json", action="store_true", help="machine-readable output: one object a run")


def runs(args) -> int:
    from lorastudio.core.runs.checkpoints import adapter_complete
    from lorastudio.core.runs.folders import ADAPTER_DIR, default_runs_dir
    from lorastudio.core.runs.listing import RunHistory
    root = args.runs_dir or default_runs_dir()
    if not root.is_dir():
        print(f"No runs yet in {root}; train one with `lorastudio demo` or `lorastudio train CONFIG`")
        return 0
    rows = []
    for s in RunHistory(root).refresh():
        adapter = ("final" if adapter_complete(s.path / ADAPTER_DIR)
                   else f"step {s.checkpoints[-1]}" if s.checkpoints else "")
        rows.append({"name": s.path.name, "path": str(s.path), "state": s.status, "step": s.step,
                     "total_steps": s.total_steps, "loss": s.loss_y[-1] if s.loss_y else None,
                     "adapter": adapter, "size": s.disk_bytes})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"No runs in {root}")
        return 0
    width = max(len("NAME"), *(len(r["name"]) for r in rows))
    print(f"{'NAME':<{width}}  {'STATE':<9} {'STEPS':>11}  {'LOSS':>8}  {'ADAPTER':<10} {'SIZE':>9}")
    for r in rows:
        loss = f"{r['loss']:.4f}" if r["loss"] is not None else "—"
        print(f"{r['name']:<{width}}  {r['state']:<9} {r['step']:>5}/{r['total_steps']:<5}  {loss:>8}  "
              f"{r['adapter'] or '—':<10} {format_bytes(r['size']):>9}")
    print(f"{len(rows)} run{'s' if len(rows) != 1 else ''} in {root}")
    return 0
