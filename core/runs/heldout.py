"""Held-out prompts, a run's adapters to choose from and its eval.json (the generate and evaluate
jobs are started by core/plans/generate.py and core/plans/evaluate.py). Torch-free.

Held-out prompts come from the
run's validation file, else the held-out part of its data (the same split as training), else the
sample held-out set.
"""
from __future__ import annotations

import json
from pathlib import Path

from lorastudio.core.runs.checkpoints import adapter_steps
from lorastudio.core.config import ConfigError, RunConfig
from lorastudio.core.runs.folders import CONFIG_FILE
from lorastudio.core.data.split import validation_indices

EVAL_FILE = "eval.json"


def adapter_choices(run_dir: Path) -> list[tuple[str, int | None]]:
    """(label, checkpoint step or None for the final adapter), newest first."""
    return [("final adapter" if step is None else f"checkpoint step {step}", step) for step in adapter_steps(run_dir)]


def split_prompt(messages: list[dict]) -> tuple[list[dict], str | None]:
    """(the conversation up to the last assistant turn, that turn's text or None)."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None:
        return messages, None
    return messages[:last], messages[last]["content"]


def heldout_prompts(run_dir: Path | None, limit: int = 24) -> list[dict]:
    """[{"messages": prompt turns, "reference": expected answer or None, "label": the user text,
    "images": the files its turns show (only if any)}]."""
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
        keep = validation_indices(len(rows), split_config.data.validation_split, split_config.training.seed,
                                  split_config.data.max_validation_examples)
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
            found.append({"messages": prompt, "reference": reference, "label": user,
                          **({"images": prompt_images(prompt, ex.images, path)} if ex.images else {})})
        if len(found) >= limit:
            break
    return found




def prompt_images(prompt: list[dict], images: list[str], data: Path) -> list[str]:
    """The files a held-out prompt's <image> markers show, resolved as training resolves them."""
    from lorastudio.core.data.images import IMAGE_MARKER, resolve_paths
    shown = sum(m["content"].count(IMAGE_MARKER) for m in prompt)
    return resolve_paths(images[:shown], data if data.is_dir() else data.parent)


def read_eval(run_dir: Path) -> dict | None:
    try:
        data = json.loads((Path(run_dir) / EVAL_FILE).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else None
    except (OSError, json.JSONDecodeError):
        return None
