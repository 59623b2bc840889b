"""The evaluate job's starter: held-out loss and the task metric, base vs base + adapter, for
`lorastudio eval` and the window's Evaluate dialog alike. The job (core/jobs/evaluate.py) runs in
RUN/evals/<stamp>/ and writes RUN/eval.json (core/runs/heldout.read_eval reads it). Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lorastudio.core.runs.folders import EVALS_DIR
from lorastudio.core.runtime.launcher import JobHandle, launch, new_job_dir


@dataclass(frozen=True)
class EvaluateRequest:
    run_dir: Path
    checkpoint: int | None = None       # a checkpoint's adapter instead of the final one
    data: Path | None = None            # a held-out file instead of the run's own held-out part
    limit: int = 48                     # prompts to answer for the task metric
    adapter: Path | None = None         # another adapter folder (a resized one) on the run's base


def start_evaluate(request: EvaluateRequest) -> JobHandle:
    run_dir = Path(request.run_dir)
    spec = {"run": str(run_dir), "data": str(Path(request.data).resolve()) if request.data else None,
            "checkpoint": request.checkpoint, "limit": int(request.limit),
            "adapter": str(Path(request.adapter).resolve()) if request.adapter is not None else None}
    return launch("evaluate", new_job_dir(run_dir / EVALS_DIR), spec)
