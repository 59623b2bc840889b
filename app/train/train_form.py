"""The Train form as plain data: build a RunConfig from the form's values and list every problem.

Qt-free, so it is tested without a window. The config sections raise on the first bad value; to
flag *every* bad field inline we put the offending key back to its default and try again, until
the section builds (a section has a dozen fields, so this loops at most a dozen times).

The form is a lossless view of a RunConfig: the page keeps the config it loaded (`base`, every key)
and `overlay` lays over it only what the widgets changed, so a key without a widget (weight_decay,
the distributed section, …) passes through untouched, and so does a value a widget can only show
rounded (epochs 2.75 in a one-decimal box) until someone edits it.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from lorastudio.core.config import SECTIONS, ConfigError, RunConfig, upgrade_legacy

TOP_KEYS = tuple(f.name for f in dataclasses.fields(RunConfig) if f.name not in SECTIONS)


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
    "lora.r": "Rank", "lora.alpha": "Alpha", "lora.dropout": "Dropout", "lora.targets": "Target modules", "lora.vision": "Vision",
    "data.path": "Dataset", "data.text_field": "Text field", "data.validation_split": "Validation split",
    "data.format": "Data format", "data.columns": "Column mapping", "data.train_on": "Train on",
    "data.too_long": "Too long", "data.on_bad_rows": "Bad rows", "data.validation_path": "Validation file",
    "training.max_steps": "Max steps", "training.epochs": "Epochs", "training.lr": "Learning rate",
    "training.batch_size": "Batch size", "training.grad_accum": "Gradient accumulation",
    "training.seq_len": "Sequence length", "training.warmup_steps": "Warm-up steps",
    "training.schedule": "Schedule", "training.save_every": "Save every", "training.seed": "Seed",
    "training.memory_mode": "Memory", "training.method": "Method", "training.beta": "DPO β",
    "training.orpo_lambda": "ORPO λ",
    "model": "Model", "quantization": "Quantization", "compute_dtype": "Compute dtype", "device": "Device",
}


# ---- the form as a view of a config -------------------------------------------------------------
def form_defaults() -> dict:
    """Every key of a RunConfig at its default, RunConfig-shaped (the data path empty)."""
    out = {f.name: _default(f) for f in dataclasses.fields(RunConfig) if f.name not in SECTIONS}
    for name, cls in SECTIONS.items():
        out[name] = {f.name: _default(f) for f in dataclasses.fields(cls)}
    return out


def base_of(values: dict) -> tuple[dict, list[str]]:
    """The form's base from a RunConfig-shaped mapping that may be partial (a preset, a saved form):
    the defaults with its known keys laid over, older keys mapped, and the notes that mapping made.
    Unknown keys are left out; an older key whose value is unusable is dropped."""
    if not isinstance(values, dict):
        values = {}
    try:
        values, notes = upgrade_legacy(values)
    except ConfigError:
        values = {**values, "training": {k: v for k, v in values["training"].items()
                                         if k != "gradient_checkpointing"}}
        values, notes = upgrade_legacy(values)
    base = form_defaults()
    for key in TOP_KEYS:
        if key in values:
            base[key] = copy.deepcopy(values[key])
    for name in SECTIONS:
        given = values.get(name)
        if isinstance(given, dict):
            base[name].update({k: copy.deepcopy(v) for k, v in given.items() if k in base[name]})
    return base, notes


_UNSEEN = object()


def overlay(base: dict, shown: dict, shown_at_load: dict | None) -> dict:
    """`base` with the widgets' values (`shown`, RunConfig-shaped, only the keys that have a widget)
    laid over. With `shown_at_load` (what the widgets showed right after `base` was loaded), a
    widget still showing that keeps the base's exact value; None lays every widget's value over."""
    out = copy.deepcopy(base)
    def changed(value, before) -> bool:
        return shown_at_load is None or before is _UNSEEN or value != before
    for key, value in shown.items():
        if key in SECTIONS and isinstance(value, dict):
            before = (shown_at_load or {}).get(key, {})
            section = out.setdefault(key, {})
            for name, v in value.items():
                if changed(v, before.get(name, _UNSEEN)) or name not in section:
                    section[name] = copy.deepcopy(v)
        elif changed(value, (shown_at_load or {}).get(key, _UNSEEN)) or key not in out:
            out[key] = copy.deepcopy(value)
    return out


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
    top = {k: values[k] for k in TOP_KEYS if k in values}
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
