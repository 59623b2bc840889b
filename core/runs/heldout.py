"""The playground's torch-free half: starting generation workers, held-out prompts, eval results.

    RUN/playground/<stamp>/job.yaml  events.jsonl  worker.log     one folder a request
`start_generation` writes a job and launches `python -m lorastudio.core.jobs.generate JOB_DIR`;
the window follows its journal (token events, side base|adapter).
The window keeps one worker instead (`start_generation_worker`, in DATA/playground/<stamp>/): it
loads the model once and answers each request sent to its inbox (`request_generation`,
`cancel_generation`, `close_generation_worker`); its events carry the request's id.
`start_evaluation` starts the evaluation job (core/jobs/evaluate.py) in RUN/evals/<stamp>, for
`lorastudio eval` and the window's Evaluate dialog alike.

Held-out prompts come from the
run's validation file, else the held-out part of its data (the same split as training), else the
sample held-out set.
"""
from __future__ import annotations

import json
from pathlib import Path

from lorastudio.core.runs.checkpoints import adapter_steps
from lorastudio.core.config import ConfigError, RunConfig
from lorastudio.core.runs.folders import CONFIG_FILE, EVALS_DIR
from lorastudio.core.data.split import validation_indices
from lorastudio.core.runtime.inbox import send
from lorastudio.core.runtime.launcher import JobHandle, launch, new_job_dir

PLAYGROUND_DIR, EVAL_FILE = "playground", "eval.json"
DEFAULT_SETTINGS = {"max_new_tokens": 96, "temperature": 0.0, "top_p": 0.9, "seed": 0}
WORKER_IDLE_S = 600.0           # a worker with no request for this long ends by itself


def adapter_choices(run_dir: Path) -> list[tuple[str, int | None]]:
    """(label, checkpoint step or None for the final adapter), newest first."""
    return [("final adapter" if step is None else f"checkpoint step {step}", step) for step in adapter_steps(run_dir)]


def start_generation(run_dir: Path, messages: list[dict], settings: dict | None = None,
                     checkpoint: int | None = None) -> JobHandle:
    """Launch the generation job in a fresh RUN/playground/<stamp>/ folder."""
    run_dir = Path(run_dir)
    spec = {"run": str(run_dir), "checkpoint": checkpoint, "messages": messages,
            **DEFAULT_SETTINGS, **(settings or {})}
    return launch("generate", new_job_dir(run_dir / PLAYGROUND_DIR), spec)


def new_worker_dir(parent: Path) -> Path:
    """A fresh folder for a generation worker under `parent` (the window uses DATA/playground)."""
    return new_job_dir(Path(parent), "worker")


def start_generation_worker(job_dir: Path, idle_s: float = WORKER_IDLE_S) -> JobHandle:
    """Launch the long-lived generation worker in `job_dir` (send requests first or after: its
    inbox is read from the start)."""
    return launch("generate", Path(job_dir), {"serve": True, "idle_s": idle_s})


def request_generation(job_dir: Path, request_id: int, run_dir: Path, messages: list[dict],
                       settings: dict | None = None, checkpoint: int | None = None) -> None:
    send(job_dir, {"type": "generate", "id": request_id, "run": str(run_dir), "checkpoint": checkpoint,
                   "messages": messages, **DEFAULT_SETTINGS, **(settings or {})})


def cancel_generation(job_dir: Path, request_id: int) -> None:
    send(job_dir, {"type": "cancel", "id": request_id})


def close_generation_worker(job_dir: Path) -> None:
    send(job_dir, {"type": "close"})


def start_evaluation(run_dir: Path, checkpoint: int | None = None, data: Path | None = None, limit: int = 48,
                     adapter: Path | None = None) -> JobHandle:
    """Launch the evaluation job (base vs base + adapter) in a fresh RUN/evals/<stamp>/ folder."""
    run_dir = Path(run_dir)
    spec = {"run": str(run_dir), "data": str(Path(data).resolve()) if data else None, "checkpoint": checkpoint,
            "limit": int(limit), "adapter": str(Path(adapter).resolve()) if adapter is not None else None}
    return launch("evaluate", new_job_dir(run_dir / EVALS_DIR), spec)


def split_prompt(messages: list[dict]) -> tuple[list[dict], str | None]:
    """(the conversation up to the last assistant turn, that turn's text or None)."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None:
        return messages, None
    return messages[:last], messages[last]["content"]


def heldout_prompts(run_dir: Path | None, limit: int = 24) -> list[dict]:
    """[{"messages": prompt turns, "reference": expected answer or None, "label": the user text}]."""
    from lorastudio.core.models.demo import sample_heldout
    sources: list[tuple[Path, bool]] = []
    config = None
    if run_dir is not None:
        try:
            config = RunConfig.load(Path(run_dir) / CONFIG_FILE)
        except (ConfigError, OSError):
            config = None
    if config and config.data.validation_path:
        sources.append((Path(config.data.validation_path), False))
    elif config:
        sources.append((Path(config.data.path), True))
    sources.append((sample_heldout(), False))
    for path, use_split in sources:
        found = _prompts_from(path, config if use_split else None, limit)
        if found:
            return found
    return []


def _prompts_from(path: Path, split_config: RunConfig | None, limit: int) -> list[dict]:
    from lorastudio.core.data.files import DataError, iter_rows
    from lorastudio.core.data.formats import row_format, to_example
    try:
        rows = list(iter_rows(path, bad=[]))
    except (DataError, OSError):
        return []
    if split_config is not None:            # the validation part, as core.data.split chose it
        keep = validation_indices(len(rows), split_config.data.validation_split, split_config.training.seed)
        rows = [rows[i] for i in keep]
    found = []
    for row in rows:
        fmt = row_format(row.value) if isinstance(row.value, dict) else None
        if fmt is None or fmt == "text":
            continue
        try:
            ex = to_example(row, fmt, str(path))
        except DataError:
            continue
        prompt, reference = split_prompt(ex.messages)
        user = next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")
        if user.strip():
            found.append({"messages": prompt, "reference": reference, "label": user})
        if len(found) >= limit:
            break
    return found




def read_eval(run_dir: Path) -> dict | None:
    try:
        data = json.loads((Path(run_dir) / EVAL_FILE).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else None
    except (OSError, json.JSONDecodeError):
        return None
