"""`python -m lorastudio.core.jobs.generate JOB_DIR`: answer prompts with the base model and with
base + adapter, streamed token by token into JOB_DIR/events.jsonl.

Two shapes of JOB_DIR/job.yaml (written by core/runs/heldout.py):
  one prompt:  run: RUN_DIR   checkpoint: STEP | null   messages: [{role, content}, ...]
               max_new_tokens: 128   temperature: 0.7   top_p: 0.9   seed: 0   sides: [base, adapter]
  a worker:    serve: true   idle_s: 600
      The playground's worker: it loads a model once and answers each `generate` message that
      arrives in JOB_DIR/inbox.jsonl (core/runtime/inbox.py) — {type: generate, id, run,
      checkpoint, messages, settings...} — reloading only when the run or checkpoint changes.
      {type: cancel, id} stops that answer between tokens; {type: close} ends the worker. It also
      ends after idle_s without a request, or once the process that started it is gone.
Journal: phase (loading, generating; a worker's events carry `request`, and each request ends with
phase `answered` whose `status` is completed | stopped | failed) · token (side, text) — the two
sides interleave, a token each in turn · answer (side, text, tokens, seconds) when a side finishes ·
error · end. Its life is the runtime's (core/runtime/worker.py): SIGTERM stops it between tokens
(end status "stopped", the answers so far stand).
"""
from __future__ import annotations

import collections
import os
import sys
import time
from pathlib import Path

from lorastudio.core.runtime.worker import Job, Stopped, job_main, report_failure

POLL_S = 0.1            # how often an idle worker looks at its inbox
IDLE_S = 600.0


def generate(job: Job) -> dict:
    if job.spec.get("serve"):
        return serve(job)
    spec = job.spec
    job.progress("loading", 0.1, "Loading the base model and the adapter")
    from lorastudio.core.engine.inference import load_pair
    pair = load_pair(Path(spec["run"]), spec.get("checkpoint"), spec.get("device"))
    answer(job, pair, spec, job.should_stop)
    return {}


def answer(job: Job, pair, prompt: dict, should_stop, **tag) -> str:
    """Stream one prompt's answers (`prompt`: messages and settings) into the journal; "completed"
    or "stopped". `tag` goes into every event (a worker's request id)."""
    from lorastudio.core.engine.inference import SIDES, stream_both
    sides = [s for s in prompt.get("sides") or SIDES if s in SIDES]
    job.progress("generating", 0.5, "Generating", sides=sides, adapter=str(pair.adapter), **tag)
    started = time.time()
    streams = stream_both(pair, prompt["messages"], prompt, sides,
                          on_token=lambda side, text: job.emit("token", side=side, text=text, **tag),
                          should_stop=should_stop)
    for side, stream in streams.items():
        job.emit("answer", side=side, text=stream.text, tokens=len(stream.new_ids),
                 seconds=round(time.time() - started, 2), **tag)
    return "completed" if all(s.done for s in streams.values()) else "stopped"


class Worker:
    """The serving loop's state: the loaded pair, the queue of messages not yet handled."""

    def __init__(self, job: Job):
        from lorastudio.core.runtime.inbox import Inbox
        self.job, self.inbox = job, Inbox(job.job_dir)
        self.pending: collections.deque[dict] = collections.deque()
        self.pair, self.key = None, None
        self.parent = os.getppid()

    def take(self) -> None:
        self.pending.extend(self.inbox.poll())

    def cancelled(self, request_id) -> bool:
        """Between tokens: a stop for this request (or SIGTERM for the worker) has arrived. A `close`
        waits for the requests before it."""
        self.take()
        return self.job.should_stop() or any(m.get("type") == "cancel" and m.get("id") == request_id
                                              for m in self.pending)

    def orphaned(self) -> bool:
        return os.getppid() != self.parent

    def load(self, request: dict, tag: dict) -> None:
        key = (str(request.get("run")), request.get("checkpoint"))
        if key == self.key:
            return
        from lorastudio.core.engine.inference import load_pair
        from lorastudio.core.runs.export import adapter_source
        adapter_source(Path(request["run"]), request.get("checkpoint"))    # no such adapter: keep the model we have
        self.pair = self.key = None             # free the previous model before loading the next
        self.job.progress("loading", 0.1, "Loading the base model and the adapter", **tag)
        self.pair = load_pair(Path(request["run"]), request.get("checkpoint"), request.get("device"))
        self.key = key

    def handle(self, request: dict) -> None:
        tag = {"request": request.get("id")}
        status = "failed"
        try:
            self.load(request, tag)
            status = answer(self.job, self.pair, request, lambda: self.cancelled(tag["request"]), **tag)
        except Stopped:
            raise
        except Exception as exc:        # noqa: BLE001 — one request's failure is put into words; the worker goes on
            self.job.error_extra = lambda _kind: tag
            report_failure(self.job, exc)
            self.job.error_extra = None
        self.job.emit("phase", name="answered", status=status, message=status.capitalize(), **tag)


def serve(job: Job) -> dict:
    worker = Worker(job)
    idle_s = float(job.spec.get("idle_s", IDLE_S))
    job.progress("ready", 0.0, "Waiting for a prompt")
    last = time.monotonic()
    while not job.should_stop():
        worker.take()
        if not worker.pending:
            if time.monotonic() - last >= idle_s or worker.orphaned():
                job.log("No prompt for a while (or the window is gone): the generation worker ends")
                return {}
            time.sleep(POLL_S)
            continue
        message = worker.pending.popleft()
        if message.get("type") == "close":
            return {}
        if message.get("type") == "generate":
            worker.handle(message)
            last = time.monotonic()
        # a cancel for a request already answered needs nothing
    return {}


def main(argv: list[str] | None = None) -> int:
    return job_main("generate", generate, argv)


if __name__ == "__main__":
    sys.exit(main())
