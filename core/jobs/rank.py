"""`python -m lorastudio.core.jobs.rank JOB_DIR`: the singular values of every update of a LoRA
adapter (core/engine/rank.py).

JOB_DIR/job.yaml (written by core/runs/rank_plan.start_rank for `lorastudio rank` and the window's
Rank view; JOB_DIR is RUN/rank/<stamp>):   adapter: FOLDER
Journal: phase (reading, analyzing; fraction 0→1) · report (report: the rank report, read by
core/runs/rank_report.py) · error (kind adapter: a file that cannot be read, in words) · end.
Its life is the runtime's (core/runtime/worker.py).
"""
from __future__ import annotations

import sys

from lorastudio.core.runtime.worker import Job, job_main


def rank(job: Job) -> dict:
    from lorastudio.core.engine.rank import analyze_adapter
    report = analyze_adapter(job.spec["adapter"], progress=job.progress)
    job.emit("report", report=report)
    return {}


def main(argv: list[str] | None = None) -> int:
    return job_main("rank", rank, argv)


if __name__ == "__main__":
    sys.exit(main())
