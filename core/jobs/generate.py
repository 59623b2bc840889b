"""`python -m lorastudio.core.jobs.generate JOB_DIR`: answer prompts with the base model and with
base + adapter, streamed token by token into JOB_DIR/events.jsonl.

Two shapes of JOB_DIR/job.yaml (written by core/runs/heldout.py):
  one prompt:  run: RUN_DIR   checkpoint: STEP | null   messages: [{role, content}, ...]
               max_new_tokens: 128   temperature: 0.7   top_p: 0.9   seed: 0   sides: [base, adapter]
  a worker:    serve: true   idle_s: 600
      The playground's worker: it loads a model once and answers each `generate` message that
      arrives in JOB_DIR/inbox.jsonl (core/runtime/inbox.py) — {type: generate, id, run,
      checkpoint, messages, settings..., engine, compare, cache, images} — reloading only when the run or
      checkpoint changes. {type: cancel, id} stops that answer between tokens; {type: close} ends
      the worker. It also ends after idle_s without a request, or once the process that started it
      is gone.
      engine: transformers (the default: the base as the run trained it, core/engine/inference.py),
      llama.cpp (the base as f16 GGUF and each adapter as a GGUF LoRA, written once and cached as
      `lorastudio serve` caches them — core/plans/serve.plan_models, `cache` the data folder — then
      every side decoded together by llama.cpp in this process, the prompt tokenized as the
      transformers engine does), or auto (llama.cpp when the run can be served so, else
      transformers, said in a log event). compare: up to two more runs on the same base, answered
      as sides adapter2, adapter3 (transformers loads each in turn). images: files the prompt shows (a
      vision-language run; transformers only, encoded by the run's processor, the sides in turn).
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

from lorastudio.core.errors import UserError
from lorastudio.core.plans.generate import ENGINES
from lorastudio.core.runtime.worker import Job, Stopped, job_main, report_failure

POLL_S = 0.1            # how often an idle worker looks at its inbox
IDLE_S = 600.0
ADAPTER_SIDES = ("adapter", "adapter2", "adapter3")     # the first run's adapter, then the compared runs'
LLAMA_CTX = 4096        # tokens of context per side (at most the model's own)


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
                          should_stop=should_stop, images=prompt.get("images") or [])
    for side, stream in streams.items():
        job.emit("answer", side=side, text=stream.text, tokens=len(stream.new_ids),
                 seconds=round(time.time() - started, 2), **tag)
    return "completed" if all(s.done for s in streams.values()) else "stopped"


class LlamaEngine:
    """The worker's llama.cpp engine: the base and the requested runs' adapters, loaded once."""

    def __init__(self, job: Job):
        self.job = job
        self.llama = self.models = self.tokenizer = self.key = None

    def plan(self, request: dict):
        """The GGUF files for this request (core/plans/serve.plan_models); ServeError when it cannot be."""
        from lorastudio.core.plans.serve import plan_models
        runs = [request["run"], *(request.get("compare") or [])[:len(ADAPTER_SIDES) - 1]]
        return plan_models(runs, checkpoint=request.get("checkpoint"), cache_root=request.get("cache"),
                           use_source=False)        # f16, also for a base imported from a quantized .gguf

    def load(self, models, tag: dict) -> None:
        key = (str(models.base_gguf), tuple(str(run.gguf) for run in models.runs))
        if key == self.key:
            return
        from lorastudio.core.engine.gguf.llama_files import prepare
        from lorastudio.core.engine.model_loading import load_tokenizer
        from lorastudio.core.engine.serving import Instances
        from lorastudio.core.models.gguf_vocab import tokenizer_folder
        from lorastudio.core.runtime.launcher import LOG_FILE
        self.close()
        prepare(models.to_spec(), lambda name, fraction, message: self.job.progress(name, fraction, message, **tag),
                self.job.should_stop)
        self.job.progress("loading", 0.1, f"Loading {models.base_name} and {len(models.runs)} adapter"
                          f"{'s' * (len(models.runs) != 1)} into llama.cpp", **tag)
        ctx = min(LLAMA_CTX, models.context) if models.context else LLAMA_CTX
        separate = models.contexts_fit(ctx, 1)[0]       # the sides answer at the same time when they fit
        self.llama = Instances(models.base_gguf, ["base", *ADAPTER_SIDES[:len(models.runs)]],
                               [run.gguf for run in models.runs], [str(run.run_dir) for run in models.runs], ctx,
                               1 if separate else 1 + len(models.runs), separate, log=self.job.job_dir / LOG_FILE)
        self.tokenizer = load_tokenizer(tokenizer_folder(models.runs[0].adapter, models.model_dir), False)
        self.models, self.key = models, key

    def answer(self, request: dict, should_stop, tag: dict) -> str:
        """Every side at once; "completed" or "stopped"."""
        from lorastudio.core.engine.inference import encode_prompt
        from lorastudio.core.engine.serving import stream_sides
        runs = self.models.runs
        sides = {served.name: served for served in self.llama.served}
        self.job.progress("generating", 0.5, "Generating with llama.cpp", sides=list(sides), adapter=str(runs[0].adapter),
                          **tag)
        started = time.time()
        answers = stream_sides(sides, encode_prompt(self.tokenizer, request["messages"]), request,
                               on_token=lambda side, text: self.job.emit("token", side=side, text=text, **tag),
                               should_stop=should_stop)
        for side, got in answers.items():
            self.job.emit("answer", side=side, text=got.text, tokens=got.tokens,
                          seconds=round((got.finished or time.time()) - started, 2), **tag)
        return "completed" if all(got.done for got in answers.values()) else "stopped"

    def close(self) -> None:
        if self.llama is not None:
            self.llama.close()
        self.llama = self.models = self.tokenizer = self.key = None


class Worker:
    """The serving loop's state: the loaded pair (or llama.cpp), the queue of messages not yet handled."""

    def __init__(self, job: Job):
        from lorastudio.core.runtime.inbox import Inbox
        self.job, self.inbox = job, Inbox(job.job_dir)
        self.pending: collections.deque[dict] = collections.deque()
        self.pair, self.key = None, None
        self.llama = LlamaEngine(job)
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

    def engine(self, request: dict):
        """(engine, llama.cpp's plan or None) for this request; `auto` falls back to transformers in words."""
        engine = request.get("engine") or "transformers"
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r}; one of {', '.join(ENGINES)}")
        if engine == "transformers":
            return engine, None
        if request.get("images"):       # llama.cpp answers text here: images need the run's processor
            if engine == "llama.cpp":
                raise UserError("the llama.cpp engine cannot read images in the Playground yet",
                                "choose the transformers engine (or Automatic) to ask about an image")
            self.job.log("The prompt shows an image: answering with transformers (llama.cpp reads text only here)")
            return "transformers", None
        from lorastudio.core.plans.serve import ServeError
        from lorastudio.core.runs.export import adapter_source
        adapter_source(Path(request["run"]), request.get("checkpoint"))    # no such adapter: said as by transformers
        try:
            return "llama.cpp", self.llama.plan(request)
        except ServeError as exc:
            if engine == "llama.cpp":
                raise
            self.job.log(f"llama.cpp cannot answer for this run ({exc.message}); answering with transformers")
            return "transformers", None

    def handle(self, request: dict) -> None:
        tag = {"request": request.get("id")}
        status = "failed"
        stop = lambda: self.cancelled(tag["request"])       # noqa: E731
        try:
            engine, models = self.engine(request)
            if engine == "llama.cpp":
                self.pair = self.key = None                  # one model in memory at a time
                self.llama.load(models, tag)
                status = self.llama.answer(request, stop, tag)
            else:
                self.llama.close()
                self.load(request, tag)
                status = answer(self.job, self.pair, request, stop, **tag)
                for side, run in zip(ADAPTER_SIDES[1:], request.get("compare") or []):
                    if status != "completed":
                        break
                    status = self.answer_more(request, side, run, stop, tag)
        except Stopped:
            raise
        except Exception as exc:        # noqa: BLE001 — one request's failure is put into words; the worker goes on
            self.job.error_extra = lambda _kind: tag
            report_failure(self.job, exc)
            self.job.error_extra = None
        self.job.emit("phase", name="answered", status=status, message=status.capitalize(), **tag)

    def answer_more(self, request: dict, side: str, run: str, should_stop, tag: dict) -> str:
        """transformers: a compared run's adapter answers as `side` (its model loaded in turn)."""
        from lorastudio.core.engine.inference import stream_both
        self.load({"run": run, "checkpoint": None}, tag)
        self.job.progress("generating", 0.5, f"Generating with {Path(run).name}'s adapter", sides=[side],
                          adapter=str(self.pair.adapter), **tag)
        started = time.time()
        streams = stream_both(self.pair, request["messages"], request, ["adapter"],
                              on_token=lambda _side, text: self.job.emit("token", side=side, text=text, **tag),
                              should_stop=should_stop, images=request.get("images") or [])
        stream = streams["adapter"]
        self.job.emit("answer", side=side, text=stream.text, tokens=len(stream.new_ids),
                      seconds=round(time.time() - started, 2), **tag)
        return "completed" if stream.done else "stopped"


def serve(job: Job) -> dict:
    worker = Worker(job)
    try:
        return serve_requests(job, worker)
    finally:
        worker.llama.close()


def serve_requests(job: Job, worker: Worker) -> dict:
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
