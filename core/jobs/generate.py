"""`python -m lorastudio.core.jobs.generate JOB_DIR`: answer one prompt with the base model and
with base + adapter, streamed token by token into JOB_DIR/events.jsonl.

JOB_DIR/job.yaml (written by core/runs/heldout.py):
    run: RUN_DIR   checkpoint: STEP | null   messages: [{role, content}, ...]
    max_new_tokens: 128   temperature: 0.7   top_p: 0.9   seed: 0   sides: [base, adapter]
Journal: phase (loading, generating) · token (side, text) — the two sides interleave, a token
each in turn · answer (side, text, tokens, seconds) when a side finishes · error · end.
Its life is the runtime's (core/runtime/worker.py): SIGTERM stops it between tokens (end status
"stopped", the answers so far stand).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from lorastudio.core.runtime.worker import Job, job_main


def generate(job: Job) -> dict:
    spec = job.spec
    job.progress("loading", 0.1, "Loading the base model and the adapter")
    from lorastudio.core.engine.inference import SIDES, load_pair, stream_both
    pair = load_pair(Path(spec["run"]), spec.get("checkpoint"), spec.get("device"))
    sides = [s for s in spec.get("sides") or SIDES if s in SIDES]
    job.progress("generating", 0.5, "Generating", sides=sides, adapter=str(pair.adapter))
    started = time.time()
    streams = stream_both(pair, spec["messages"], spec, sides,
                          on_token=lambda side, text: job.emit("token", side=side, text=text),
                          should_stop=job.should_stop)
    for side, stream in streams.items():
        job.emit("answer", side=side, text=stream.text, tokens=len(stream.new_ids),
                 seconds=round(time.time() - started, 2))
    return {}


def main(argv: list[str] | None = None) -> int:
    return job_main("generate", generate, argv)


if __name__ == "__main__":
    sys.exit(main())
