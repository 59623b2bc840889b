"""The generate job's starter and its inbox. Torch-free.

    RUN/playground/<stamp>/job.yaml  events.jsonl  worker.log     one folder an answer
`start_generate(GenerateRequest)` answers one prompt (base and base + adapter; token events carry
their side) and ends. The window keeps one worker instead (`start_generate(WorkerRequest)`, in
DATA/playground/<stamp>/): it loads the model once and answers each request sent to its inbox
(`request_generation`, `cancel_generation`, `close_generation_worker`); its events carry the
request's id. A request names its engine — transformers (what training computes), llama.cpp (fast:
the GGUF files `lorastudio serve` uses) or auto — and up to two more runs to compare.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lorastudio.core.runtime.inbox import send
from lorastudio.core.runtime.launcher import JobHandle, launch, new_job_dir

PLAYGROUND_DIR = "playground"
DEFAULT_SETTINGS = {"max_new_tokens": 96, "temperature": 0.0, "top_p": 0.9, "seed": 0}
WORKER_IDLE_S = 600.0           # a worker with no request for this long ends by itself
ENGINES = ("auto", "llama.cpp", "transformers")     # auto: llama.cpp when the run can be served as GGUF
MAX_COMPARED = 3                # adapters answering side by side with the base


@dataclass(frozen=True)
class GenerateRequest:
    """One answer to `messages` from a run's adapter (a checkpoint's, or the final one)."""
    run_dir: Path
    messages: list[dict]
    settings: dict = field(default_factory=dict)
    checkpoint: int | None = None


@dataclass(frozen=True)
class WorkerRequest:
    """A long-lived worker in `job_dir` answering what its inbox asks (send requests before or after)."""
    job_dir: Path
    idle_s: float = WORKER_IDLE_S


def start_generate(request: GenerateRequest | WorkerRequest) -> JobHandle:
    if isinstance(request, WorkerRequest):
        return launch("generate", Path(request.job_dir), {"serve": True, "idle_s": request.idle_s})
    run_dir = Path(request.run_dir)
    spec = {"run": str(run_dir), "checkpoint": request.checkpoint, "messages": request.messages,
            **DEFAULT_SETTINGS, **(request.settings or {})}
    return launch("generate", new_job_dir(run_dir / PLAYGROUND_DIR), spec)


def new_worker_dir(parent: Path) -> Path:
    """A fresh folder for a generation worker under `parent` (the window uses DATA/playground)."""
    return new_job_dir(Path(parent), "worker")


def request_generation(job_dir: Path, request_id: int, run_dir: Path, messages: list[dict],
                       settings: dict | None = None, checkpoint: int | None = None, engine: str = "transformers",
                       compare: list[Path] | tuple = (), cache: Path | None = None,
                       images: list[Path | str] | tuple = ()) -> None:
    """Ask the worker in `job_dir`. `engine`: transformers, llama.cpp or auto (core/jobs/generate.py);
    `compare`: up to two more runs on the same base, answered beside the first; `cache`: the data
    folder whose gguf-cache/ holds the base as GGUF (default the app's); `images`: image files the
    prompt shows (a vision-language run, the transformers engine)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; one of {', '.join(ENGINES)}")
    send(job_dir, {"type": "generate", "id": request_id, "run": str(run_dir), "checkpoint": checkpoint,
                   "messages": messages, **DEFAULT_SETTINGS, **(settings or {}), "engine": engine,
                   "compare": [str(r) for r in compare][:MAX_COMPARED - 1],
                   "cache": str(cache) if cache is not None else None,
                   **({"images": [str(i) for i in images]} if images else {})})


def cancel_generation(job_dir: Path, request_id: int) -> None:
    send(job_dir, {"type": "cancel", "id": request_id})


def close_generation_worker(job_dir: Path) -> None:
    send(job_dir, {"type": "close"})
