"""Configs with every key of every section at a valid value other than its default, for the tests
that say nothing is lost on the way (YAML, the Train form, Clone config).

The keys are discovered with dataclasses.fields, so a key added later is covered without editing
this file when it is a bool, a whole number or a number (the value is derived from its default); a
key of another type (a choice, a list, a mapping) makes `changed_configs` fail with a message
saying to give it a value in NON_DEFAULT.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from lorastudio.core.config import SECTIONS, RunConfig

# Values for keys that cannot be derived from their default (choices, paths, lists) or whose
# derived value would break a rule between keys. Numbers the form can only show rounded are on
# purpose (epochs 2.75 in a one-decimal box, alpha 24.25, lr with eight significant digits).
NON_DEFAULT: dict[str, Any] = {
    "model": "/models/not-read",
    "quantization": "8bit", "compute_dtype": "bf16", "device": "cpu", "name": "every-key",
    "lora.r": 12, "lora.alpha": 24.25, "lora.targets": ["q_proj", "k_proj", "o_proj"], "lora.vision": "projector",
    "data.max_image_pixels": 401408,
    "data.path": "/data/pairs.jsonl", "data.format": "prompt_completion",
    "data.columns": {"prompt": "question", "completion": "answer"}, "data.text_field": "body",
    "data.train_on": "all", "data.too_long": "drop", "data.on_bad_rows": "skip", "data.text_blocks": "file",
    "data.validation_split": 0.25, "data.validation_path": "/data/held-out.jsonl",
    "training.max_steps": 120, "training.epochs": 2.75, "training.lr": 1.2345678e-4,
    "training.warmup_steps": 7, "training.schedule": "linear", "training.memory_mode": "lean",
    "training.method": "orpo",
}
# distributed.processes > 1 trains with method sft only: the first config keeps processes at 1, the
# second has both.
KEPT_IN_FIRST = {"distributed.processes"}
SECOND = {"training.method": "sft", "distributed.processes": 3}
# Keys with one allowed value in this version: they cannot differ from their default.
SINGLE_VALUED = {"distributed.strategy"}


def default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()          # type: ignore[misc]


def config_fields() -> dict[str, dataclasses.Field]:
    """Every key, dotted ("training.lr"), with its field."""
    out = {f.name: f for f in dataclasses.fields(RunConfig) if f.name not in SECTIONS}
    for section, cls in SECTIONS.items():
        out.update({f"{section}.{f.name}": f for f in dataclasses.fields(cls)})
    return out


def _derived(key: str, default: Any) -> Any:
    if key in NON_DEFAULT:
        return NON_DEFAULT[key]
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + 3
    if isinstance(default, float):
        return default + 0.25
    raise AssertionError(f"{key} (default {default!r}) needs a non-default value: add one to NON_DEFAULT "
                         "in tests/helpers/config_keys.py")


def changed_dict(**given: Any) -> dict:
    """A RunConfig-shaped dict: every key changed (KEPT_IN_FIRST and SINGLE_VALUED excepted); `given`
    (keys with "__" for ".", e.g. data__path=...) wins."""
    raw: dict = {}
    for key, f in config_fields().items():
        if key in SINGLE_VALUED or key in KEPT_IN_FIRST:
            continue
        section, _, name = key.rpartition(".")
        (raw.setdefault(section, {}) if section else raw)[name] = _derived(key, default_of(f))
    for key, value in given.items():
        section, _, name = key.replace("__", ".").rpartition(".")
        (raw.setdefault(section, {}) if section else raw)[name] = value
    return raw


def changed_configs(**given: Any) -> list[RunConfig]:
    """Two configs that together set every key (but SINGLE_VALUED) to a non-default value; the
    first changes every key but distributed.processes, the second that one too (with method sft)."""
    first = RunConfig.from_dict(changed_dict(**given))
    raw = first.to_dict()
    for key, value in SECOND.items():
        section, name = key.split(".")
        raw[section][name] = value
    configs = [first, RunConfig.from_dict(raw)]
    for key, f in config_fields().items():
        if key in SINGLE_VALUED:
            continue
        values = [_get(c, key) for c in configs]
        assert any(v != default_of(f) for v in values), f"{key} keeps its default {default_of(f)!r} in every config"
    return configs


def _get(config: RunConfig, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = getattr(node, part)
    return node
