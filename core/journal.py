"""The journal: `events.jsonl`, one versioned JSON object a line. Torch-free.

The worker appends with `JournalWriter`; the window, the CLI and the tests read with
`read_events` or follow with `JournalFollower`. Readers validate each line field by field and
drop (with a log message) what does not fit — a half-written last line is simply not read yet.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

VERSION = 1
log = logging.getLogger(__name__)

_NUM = (int, float)
_OPT_NUM = (int, float, type(None))
_OPT_INT = (int, type(None))
_OPT_STR = (str, type(None))
_OPT_LIST = (list, type(None))
_OPT_DICT = (dict, type(None))
_OPT_BOOL = (bool, type(None))
_REQUEST = (str, int, type(None))           # the generation worker's request id, on each of its events
# type -> {field: allowed python types}: every field any writer puts into an event of that type. A
# field whose types include None may be left out (older journals lack it). Readers pass fields not
# listed through untouched (a newer writer's); `validate(event, strict=True)` refuses them — the
# tests check every journal they produce that way (tests/conftest.py).
SCHEMA: dict[str, dict[str, tuple]] = {
    "start": {"config": (dict,), "devices": (list,), "versions": (dict,),
              "trainable_params": (int,), "total_params": (int,), "total_steps": (int,),
              "examples": _OPT_INT, "validation_examples": _OPT_INT, "resumed_at": _OPT_INT,
              "memory_mode": _OPT_STR, "kernels": _OPT_LIST},       # as resolved and applied (model_loading)
    # step: a resumed checkpoint's (resuming) or the GGUF import's stage name (importing);
    # sides, adapter, status, request: the generation worker's.
    "phase": {"name": (str,), "message": _OPT_STR, "fraction": _OPT_NUM, "step": (int, str, type(None)),
              "checkpoint": _OPT_STR, "changes": _OPT_LIST, "sides": _OPT_LIST, "adapter": _OPT_STR,
              "status": _OPT_STR, "request": _REQUEST},
    "step": {"step": (int,), "total_steps": (int,), "epoch": _NUM, "loss": _NUM, "lr": _NUM,
             "grad_norm": _OPT_NUM, "tokens_per_s": _NUM, "elapsed_s": _NUM, "eta_s": _OPT_NUM,
             "steps_this_session": _OPT_INT,
             "margin": _OPT_NUM, "accuracy": _OPT_NUM, "chosen_logp": _OPT_NUM, "rejected_logp": _OPT_NUM},
    "eval": {"step": (int,), "loss": _NUM, "tokens": _OPT_INT, "pairs": _OPT_INT,     # pairs: dpo / orpo
             "margin": _OPT_NUM, "accuracy": _OPT_NUM, "chosen_logp": _OPT_NUM, "rejected_logp": _OPT_NUM,
             "prefers_chosen": _OPT_NUM},
    "data": {"format": (str,), "reason": (str,), "examples": (int,), "tokens": (int,),
             "trained_tokens": (int,), "truncated": (int,), "bad_rows": (list,),
             "validation_examples": _OPT_INT, "dropped_too_long": _OPT_INT, "dropped_no_target": _OPT_INT,
             "dropped_prompt_too_long": _OPT_INT, "dropped_empty_answer": _OPT_INT, "notes": _OPT_LIST, "source": _OPT_STR,
             "cache_hit": _OPT_BOOL, "cache": _OPT_STR, "packing": _OPT_STR, "packing_note": _OPT_STR,
             # the held-out set validation_split takes, and its caps (core/engine/batches.py)
             "validation_uncapped": _OPT_INT, "validation_cap_examples": _OPT_INT,
             "validation_cap_tokens": _OPT_INT, "validation_tokens": _OPT_INT, "validation_note": _OPT_STR,
             # vision-language data: how many image files its examples show (core/engine/vision/)
             "images": _OPT_INT},
    # merge and GGUF export; the GGUF export adds how its file reads back.
    "fidelity": {"prompts": (int,), "max_abs_diff": _NUM, "mean_abs_diff": _NUM, "greedy_agree": (int,),
                 "flagged": (bool,), "tolerance": _NUM, "dtype": (str,),
                 "argmax_agree": _OPT_NUM, "tokens_agree": _OPT_INT, "tensors": _OPT_INT,
                 "tensor_max_abs_diff": _OPT_NUM, "eot_token": _OPT_STR,
                 # the GGUF export's check in llama.cpp itself (core/engine/gguf/llama_check.py)
                 "checked_by": _OPT_STR, "positions": _OPT_INT, "top1_agree": _OPT_NUM, "top5_agree": _OPT_NUM,
                 "clear_positions": _OPT_INT, "clear_top1_agree": _OPT_NUM,
                 "answers": _OPT_LIST, "difference": _OPT_STR,
                 # a vision-language model's mmproj file (issue 31): its tensors, and llama.cpp answering
                 # with an image (both files loaded) against transformers with the same image
                 "mmproj_tensors": _OPT_INT, "image_checked": _OPT_BOOL, "image_answer": _OPT_STR,
                 "image_reference": _OPT_STR, "image_agree": _OPT_BOOL, "image_tokens": _OPT_INT,
                 "image_problem": _OPT_STR, "image_max_tokens": _OPT_INT},
    "memory": {"rss": (int,), "ram_used": (int,), "ram_total": (int,), "step": _OPT_INT,
               "cuda_allocated": _OPT_INT, "cuda_reserved": _OPT_INT, "cuda_peak": _OPT_INT,
               "device_name": _OPT_STR, "device_used": _OPT_INT, "device_total": _OPT_INT,     # devices.GpuStatus
               "gpu_util": _OPT_NUM, "gpu_temp": _OPT_NUM, "gpu_power": _OPT_NUM, "gpu_power_limit": _OPT_NUM},
    "checkpoint": {"step": (int,), "path": (str,)},
    "log": {"level": (str,), "message": (str,)},
    # overrides: what "Resume with suggested settings" applies after an out-of-memory error, and
    # advisor: who chose them ("memory model" or "rule of thumb"; absent in 0.1 / 0.2 journals).
    "error": {"kind": (str,), "message": (str,), "hint": (str,), "overrides": _OPT_DICT, "advisor": _OPT_STR,
              "request": _REQUEST},
    # a job's results: the trainer's adapter; merge, export, import and resize outputs; the GGUF
    # export's side files; what a server served.
    "end": {"status": (str,), "adapter": _OPT_STR, "output": _OPT_STR, "modelfile": _OPT_STR,
            "size": _OPT_INT, "template": _OPT_STR, "stops": _OPT_LIST, "requests": _OPT_INT, "tokens": _OPT_INT,
            "mmproj": _OPT_STR},
    "token": {"side": (str,), "text": (str,), "request": _REQUEST},            # the playground's streamed answers
    "answer": {"side": (str,), "text": (str,), "tokens": (int,), "seconds": _NUM, "request": _REQUEST},
    "report": {"report": (dict,)},                              # the data inspector's, rank and resize answers
    "evaluation": {"result": (dict,)},                          # `lorastudio eval`'s (RUN/eval.json)
    # An automatic retry after running out of memory: what changed (key, old, new), why, and the
    # checkpoint it goes on from (None: from the beginning).
    "retry": {"attempt": (int,), "reason": (str,), "changes": (list,), "step": (int,), "checkpoint": _OPT_STR},
    # `lorastudio serve`: answering at `url` under these model names; then what it served so far.
    "serving": {"url": (str,), "models": (list,), "port": (int,), "host": _OPT_STR, "base": _OPT_STR,
                "base_gguf": _OPT_STR, "api_key": _OPT_BOOL, "adapters": _OPT_LIST, "ctx": _OPT_INT,
                "parallel": _OPT_INT, "instances": _OPT_INT},
    "traffic": {"requests": (int,), "tokens": (int,), "tokens_per_s": _NUM, "active": (int,),
                "by_model": _OPT_DICT},
}
END_STATUSES = ("completed", "stopped", "failed")
OK_STATUSES = ("completed", "stopped")          # the work done is kept (a stopped run saved its adapter)


def make_event(type_: str, time_: float | None = None, **fields: Any) -> dict:
    """A valid event (ValueError otherwise): the one way events are made, written or synthesized."""
    event = {"v": VERSION, "type": type_, "time": time.time() if time_ is None else time_, **fields}
    problem = validate(event)
    if problem:
        raise ValueError(f"refusing to make a bad {type_} event: {problem}")
    return event


class JournalWriter:
    """Appends events; each line is flushed so a reader sees it at once."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")

    def emit(self, type_: str, **fields: Any) -> dict:
        event = make_event(type_, **fields)
        self._fh.write(json.dumps(event, default=_jsonable, allow_nan=False) + "\n")
        self._fh.flush()
        return event

    def sync(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if not self._fh.closed:
            self.sync()
            self._fh.close()


class NullJournal:
    """A journal that keeps nothing: ranks > 0 of a multi-process run write nothing into its folder."""

    def emit(self, type_: str, **fields: Any) -> dict:
        return make_event(type_, **fields)

    def close(self) -> None:
        pass


def _jsonable(value):
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):          # numpy / torch scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def validate(event: Any, strict: bool = False) -> str | None:
    """None when `event` is a well-formed journal event, else what is wrong with it. `strict`: also
    a type or a field the schema does not list (what readers pass through; writers must not write)."""
    if not isinstance(event, dict):
        return "not a JSON object"
    if event.get("v") != VERSION:
        return f"unsupported version {event.get('v')!r}"
    kind = event.get("type")
    if not isinstance(kind, str):
        return "missing type"
    if not isinstance(event.get("time"), _NUM):
        return "missing time"
    for name, types in SCHEMA.get(kind, {}).items():
        value = event.get(name)
        if not isinstance(value, types) or isinstance(value, bool) and bool not in types:
            return f"{kind}.{name} is {value!r}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"{kind}.{name} is not finite"
    if kind == "end" and event["status"] not in END_STATUSES:
        return f"end.status {event['status']!r} is not one of {END_STATUSES}"
    if strict:
        if kind not in SCHEMA:
            return f"type {kind!r} is not in the schema"
        unknown = sorted(set(event) - {"v", "type", "time"} - set(SCHEMA[kind]))
        if unknown:
            also = f" (nor {', '.join(unknown[1:])})" if unknown[1:] else ""
            return f"{kind}.{unknown[0]} is not in the schema{also}"
    return None


def parse_line(line: str, where: str = "") -> dict | None:
    line = line.strip()
    if not line:
        return None
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        log.warning("journal %s: dropped a malformed line: %.80s", where, line)
        return None
    problem = validate(event)
    if problem:
        log.warning("journal %s: dropped an event (%s)", where, problem)
        return None
    return event


def read_events(path: str | Path) -> list[dict]:
    """Every valid event of a journal; a missing file is an empty journal."""
    follower = JournalFollower(path)
    return follower.poll()


class JournalFollower:
    """Reads new complete lines since the last poll; keeps a partial last line for later.

    `poll(max_bytes)` reads about that much at most (finishing the line the cap cuts, so each poll
    gives whole events); `at_end` then says whether it reached the end of the file or left the rest
    for the next poll (the window reads a long journal over several ticks: core/runtime/follower)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._offset = 0
        self._partial = b""
        self.at_end = True
        self.problem: str | None = None      # why the journal cannot be read (a folder, no permission)

    def poll(self, max_bytes: int | None = None) -> list[dict]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                if max_bytes is None:
                    chunk = fh.read()
                else:
                    chunk = fh.read(max_bytes)
                    if len(chunk) == max_bytes and not chunk.endswith(b"\n"):
                        chunk += fh.readline()          # the rest of the line the cap cut
                self.at_end = max_bytes is None or fh.tell() >= os.fstat(fh.fileno()).st_size
        except FileNotFoundError:
            self.at_end = True
            return []
        except OSError as exc:              # a folder where the file should be, no permission: no events, and why
            self.at_end, self.problem = True, f"{self.path} cannot be read ({exc.strerror or exc})"
            return []
        self.problem = None
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()          # b"" when the data ended with a newline
        events = []
        for raw in lines:
            event = parse_line(raw.decode("utf-8", errors="replace"), str(self.path))
            if event is not None:
                events.append(event)
        return events


def last_of(events: list[dict], type_: str) -> dict | None:
    for event in reversed(events):
        if event["type"] == type_:
            return event
    return None
