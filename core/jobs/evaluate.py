"""`python -m lorastudio.core.jobs.evaluate JOB_DIR`: the base model against base + adapter on
held-out data (core/engine/evaluate.py), stored in RUN/eval.json.

JOB_DIR/job.yaml (written by `lorastudio eval`, core/cli/evaluate.py; JOB_DIR is RUN/evals/<stamp>):
    run: RUN_DIR   data: FILE | null   checkpoint: STEP | null   limit: 48   adapter: FOLDER | null
(adapter: another adapter folder for the run's base, e.g. from `lorastudio resize`; its result is
stored in JOB_DIR/eval.json, leaving RUN/eval.json to the run's own adapter)
Journal: phase (loading, loss, answering; fraction 0→1) · evaluation (result: the dict written to
RUN/eval.json) · error (kind, message, hint: a DataError, ModelError or ConfigError in words) ·
end (output: RUN/eval.json). Its life is the runtime's (core/runtime/worker.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

from lorastudio.core.runtime.worker import Job, job_main


def evaluate(job: Job) -> dict:
    from lorastudio.core.atomic_files import atomic_write_json
    from lorastudio.core.engine.evaluate import evaluate_run
    from lorastudio.core.runs.heldout import EVAL_FILE
    spec = job.spec
    run_dir = Path(spec["run"])
    data = Path(spec["data"]) if spec.get("data") else None
    adapter = Path(spec["adapter"]) if spec.get("adapter") else None
    result = evaluate_run(run_dir, data, spec.get("checkpoint"), int(spec.get("limit", 48)), progress=job.progress,
                          adapter_dir=adapter)
    saved = (job.job_dir if adapter is not None else run_dir) / EVAL_FILE
    atomic_write_json(saved, result)
    job.emit("evaluation", result=result)
    return {"output": str(saved)}


def main(argv: list[str] | None = None) -> int:
    return job_main("evaluate", evaluate, argv)


if __name__ == "__main__":
    sys.exit(main())
