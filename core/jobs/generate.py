"""`python -m lorastudio.core.jobs.generate JOB_DIR`: answer one prompt with the base model and
with base + adapter, streamed token by token into JOB_DIR/events.jsonl.

JOB_DIR/job.yaml (written by core/playground.py):
    run: RUN_DIR   checkpoint: STEP | null   messages: [{role, content}, ...]
    max_new_tokens: 128   temperature: 0.7   top_p: 0.9   seed: 0   sides: [base, adapter]
Journal: phase (loading, generating) · token (side, text) — the two sides interleave, a token
each in turn · answer (side, text, tokens, seconds) when a side finishes · error · end.
SIGTERM stops between tokens (end status "stopped", the answers so far stand).
"""
from __future__ import annotations

import signal
import sys
import time
import traceback
from pathlib import Path

import yaml

from lorastudio.core.journal import JournalWriter


def run(job_dir: Path) -> int:
    job = yaml.safe_load((job_dir / "job.yaml").read_text(encoding="utf-8"))
    journal = JournalWriter(job_dir / "events.jsonl")
    stop = {"requested": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(requested=True))
    status = "failed"
    try:
        journal.emit("phase", name="loading", fraction=0.1, message="Loading the base model and the adapter")
        from lorastudio.core.engine.inference import SIDES, load_pair, stream_both
        pair = load_pair(Path(job["run"]), job.get("checkpoint"), job.get("device"))
        sides = [s for s in job.get("sides") or SIDES if s in SIDES]
        journal.emit("phase", name="generating", fraction=0.5, message="Generating", sides=sides,
                     adapter=str(pair.adapter))
        started = time.time()
        streams = stream_both(pair, job["messages"], job, sides,
                              on_token=lambda side, text: journal.emit("token", side=side, text=text),
                              should_stop=lambda: stop["requested"])
        for side, stream in streams.items():
            journal.emit("answer", side=side, text=stream.text, tokens=len(stream.new_ids),
                         seconds=round(time.time() - started, 2))
        status = "stopped" if stop["requested"] else "completed"
    except BaseException as exc:        # noqa: BLE001 — every failure must reach the journal
        from lorastudio.core.jobs.train import classify
        kind, message, hint = classify(exc, None)
        if kind == "exception" and hasattr(exc, "hint"):            # ExportError: no adapter yet
            message, hint = exc.message, exc.hint
        trace = traceback.format_exc()
        print(trace, file=sys.stderr, flush=True)
        journal.emit("log", level="error", message=trace)
        journal.emit("error", kind=kind, message=message, hint=hint)
    journal.emit("end", status=status, adapter=None)
    journal.close()
    return 0 if status != "failed" else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not (Path(argv[0]) / "job.yaml").is_file():
        print("usage: python -m lorastudio.core.jobs.generate JOB_DIR (with JOB_DIR/job.yaml)", file=sys.stderr)
        return 2
    return run(Path(argv[0]))


if __name__ == "__main__":
    sys.exit(main())
