"""The Train form as plain data: build a RunConfig from the form's values and list every problem.

Qt-free, so it is tested without a window. The config sections raise on the first bad value; to
flag *every* bad field inline we put the offending key back to its default and try again, until
the section builds (a section has a dozen fields, so this loops at most a dozen times).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from lorastudio.core.config import (ConfigError, DataSection, DistributedSection, LoraSection, RunConfig,
                                     TrainingSection)

SECTIONS = {"lora": LoraSection, "data": DataSection, "training": TrainingSection,
            "distributed": DistributedSection}      # no panel yet: a loaded config's value passes through


@dataclass
class Problem:
    key: str          # dotted config key ("training.seq_len") or a form key ("model")
    message: str      # readable, names the value and what is allowed

    def __str__(self) -> str:
        return self.message


@dataclass
class FormCheck:
    config: RunConfig | None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.config is not None and not self.problems

    @property
    def reason(self) -> str:
        """Why Start is disabled, in one line ("" when it is not)."""
        return self.problems[0].message if self.problems else ""

    def for_prefix(self, prefix: str) -> list[Problem]:
        return [p for p in self.problems if p.key == prefix or p.key.startswith(prefix + ".")]


def describe(exc: ConfigError) -> str:
    """ "Sequence length: 0 is not allowed — a whole number ≥ 8 tokens" from a ConfigError."""
    label = LABELS.get(exc.key, exc.key)
    return f"{label}: {exc.value!r} is not allowed — {exc.allowed}"


LABELS = {
    "lora.r": "Rank", "lora.alpha": "Alpha", "lora.dropout": "Dropout", "lora.targets": "Target modules",
    "data.path": "Dataset", "data.text_field": "Text field", "data.validation_split": "Validation split",
    "data.format": "Data format", "data.columns": "Column mapping", "data.train_on": "Train on",
    "data.too_long": "Too long", "data.on_bad_rows": "Bad rows", "data.validation_path": "Validation file",
    "training.max_steps": "Max steps", "training.epochs": "Epochs", "training.lr": "Learning rate",
    "training.batch_size": "Batch size", "training.grad_accum": "Gradient accumulation",
    "training.seq_len": "Sequence length", "training.warmup_steps": "Warm-up steps",
    "training.schedule": "Schedule", "training.save_every": "Save every", "training.seed": "Seed",
    "model": "Model", "quantization": "Quantization", "compute_dtype": "Compute dtype", "device": "Device",
}


def build_section(name: str, values: dict[str, Any]) -> tuple[Any, list[Problem]]:
    """The section built from `values`, or None, and every problem found in it."""
    cls = SECTIONS[name]
    defaults = {f.name: _default(f) for f in dataclasses.fields(cls)}
    trial = {k: v for k, v in values.items() if k in defaults}
    problems: list[Problem] = []
    seen: set[str] = set()
    while True:
        try:
            section = cls(**trial)
        except ConfigError as exc:
            if exc.key in seen:          # its stand-in is refused too: nothing more to learn
                return None, problems
            seen.add(exc.key)
            problems.append(Problem(exc.key, describe(exc)))
            field_name = exc.key.split(".", 1)[1]
            trial[field_name] = _STAND_INS.get(field_name, defaults[field_name])
            continue
        return (None if problems else section), problems


# Valid stand-ins for fields whose default is itself refused (the data path is empty by default).
_STAND_INS = {"path": "data.jsonl", "warmup_steps": 0}


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()                     # type: ignore[misc]
    return None


def check_form(values: dict[str, Any]) -> FormCheck:
    """Validate the whole form. `values` has the RunConfig shape (top-level keys and sections),
    plus any `problems` the widgets found themselves (text that is not a number, no model read)."""
    problems = [Problem(k, m) for k, m in values.get("problems", [])]
    sections = {}
    for name in SECTIONS:
        section, found = build_section(name, values.get(name, {}))
        sections[name] = section
        known = {p.key for p in problems}      # a widget's own wording wins over the config's
        problems.extend(p for p in found if p.key not in known)
    top = {k: values[k] for k in ("model", "quantization", "compute_dtype", "device", "name",
                                  "trust_remote_code", "allow_pickle") if k in values}
    config = None
    if all(sections.values()):
        try:
            config = RunConfig(**top, **sections)
        except ConfigError as exc:
            problems.append(Problem(exc.key, describe(exc)))
    problems.sort(key=lambda p: _ORDER.get(p.key.split(".")[0], 9))
    return FormCheck(config=config if not problems else None, problems=problems)


_ORDER = {"model": 0, "data": 1, "lora": 2, "quantization": 3, "compute_dtype": 3, "device": 3, "training": 4}


def parse_number(text: str, key: str, kind=float) -> tuple[Any, tuple[str, str] | None]:
    """Parse a number typed in a text field: (value, None) or (text, (key, message))."""
    try:
        return kind(text.strip()), None
    except ValueError:
        return text, (key, f"{LABELS.get(key, key)}: {text.strip()!r} is not a number")
