"""`lorastudio eval RUN`: held-out loss and the task metric, base model against base + adapter."""
from __future__ import annotations

from pathlib import Path


def evaluate_arguments(p) -> None:
    p.add_argument("run", type=Path, help="the run folder")
    p.add_argument("--data", type=Path, help="held-out data (default: the run's validation data)")
    p.add_argument("--checkpoint", type=int, metavar="STEP", help="evaluate this checkpoint's adapter")
    p.add_argument("--limit", type=int, default=48, help="prompts to answer for the task metric")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def evaluate(args) -> int:
    import subprocess       # the evaluation job's own process; becomes a journal job (core/jobs/evaluate)
    import sys
    argv = [str(args.run), "--limit", str(args.limit)] + (["--data", str(args.data)] if args.data else []) + \
        (["--checkpoint", str(args.checkpoint)] if args.checkpoint is not None else []) + (["--json"] if args.json else [])
    return subprocess.run([sys.executable, "-m", "lorastudio.core.jobs.evaluate", *argv]).returncode
