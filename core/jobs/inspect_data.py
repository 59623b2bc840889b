"""`python -m lorastudio.core.jobs.inspect_data JOB_DIR`: what a data file trains on — format,
token counts, lengths, example N with its loss mask (core/engine/inspect_data.py).

JOB_DIR/job.yaml (written by `lorastudio inspect`, core/cli/inspect_data.py, and by the window's Dataset
panel, app/dataset/data_inspection.py; JOB_DIR is DATA_HOME/inspections/<stamp>, removed afterwards):
    model: MODEL (folder or cached Hub id)   seq_len: 512   example: 1
    data: {path, format, columns, train_on, too_long, on_bad_rows, text_blocks, ...}   (config's data section)
Journal: phase (tokenizer, reading, encoding; fraction 0→1) · report (report: the dict) ·
error (kind data, model or config for input refused, with message and hint) · end.
Its life is the runtime's (core/runtime/worker.py). The tokenizer needs transformers, which the
window never imports: hence a job.
"""
from __future__ import annotations

import sys

from lorastudio.core.runtime.worker import Job, job_main


def inspection(job: Job) -> dict:
    from lorastudio.core.config import DataSection
    from lorastudio.core.engine.inspect_data import inspect_data
    spec = job.spec
    data_cfg = DataSection(**spec["data"])
    report = inspect_data(data_cfg, str(spec["model"]), int(spec.get("seq_len", 512)), int(spec.get("example", 1)),
                          progress=job.progress)
    job.emit("report", report=report)
    return {}


def main(argv: list[str] | None = None) -> int:
    return job_main("inspect_data", inspection, argv)


if __name__ == "__main__":
    sys.exit(main())
