"""`python -m lorastudio.core.jobs.resize JOB_DIR`: a smaller LoRA adapter whose every update is
the best rank-k approximation of the trained one (core/engine/rank_analysis.resize_adapter).

JOB_DIR/job.yaml (written by core/runs/rank_plan.start_resize after its checks; JOB_DIR is
RUN/rank/<stamp>):   adapter: FOLDER   out: FOLDER   rank: K | null   energy: E | null   title: TEXT
Journal: phase (reading, resizing, saving) · report (report: {source, mode, r, old_r, modules:
[{name, rank, new_rank, error}]}) · error · end (output: OUT). The adapter is written into a hidden
folder beside OUT and renamed when complete: stopped or failed, no OUT is left behind.
"""
from __future__ import annotations

import sys
from pathlib import Path

from lorastudio.core.runtime.worker import Job, job_main


def resize(job: Job) -> dict:
    from lorastudio.core.atomic_files import atomic_dir
    from lorastudio.core.engine.rank import resize_adapter
    spec = job.spec
    from lorastudio.core.runs.output_paths import mark_output
    out = Path(spec["out"])
    with atomic_dir(out) as tmp:
        result = resize_adapter(Path(spec["adapter"]), tmp, spec.get("rank"), spec.get("energy"),
                                progress=job.progress, title=spec.get("title", ""))
        mark_output(tmp, "a resized adapter", spec["adapter"])
        if spec.get("replaces"):
            job.log(spec["replaces"])
        job.progress("finishing", 0.98, f"Moving the adapter into {out}")
    job.emit("report", report=result)
    return {"status": "completed", "output": str(out)}


def main(argv: list[str] | None = None) -> int:
    return job_main("resize", resize, argv)


if __name__ == "__main__":
    sys.exit(main())
