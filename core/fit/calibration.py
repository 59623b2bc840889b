"""The activation constants of the memory model: measured / analytic, per architecture and mode.

Two files, the second wins:
  * resources/data/memory_calibration.json, shipped: constants measured on a GPU, each with the
    date, the GPU and how many runs it came from (tests/bench/bench_memory_fit.py --write makes it);
  * DATA_DIR/fit/calibration.json, the user's: every finished CUDA run refines its architecture's
    constant (`learn_from_run`, called by the train job at the end of a completed run).

Keys are "model_type/mode/quantization", "model_type/mode", "*/mode/quantization" and "*/mode",
looked up most specific first; a missing constant is 1.0 (the analytic count as it stands).
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from lorastudio.core.atomic_files import atomic_write_json

log = logging.getLogger(__name__)
SHIPPED = Path(__file__).resolve().parents[2] / "resources" / "data" / "memory_calibration.json"
USER_FILE = Path("fit") / "calibration.json"
LEARN_WEIGHT = 0.5              # a new run's measurement counts as much as everything before it, at most


@dataclass
class Calibration:
    constants: dict[str, dict] = field(default_factory=dict)      # key -> {"value", "gpu", "date", "runs", ...}

    def constant(self, model_type: str, mode: str, quantization: str, on_gpu: bool = True) -> tuple[float, str]:
        """(constant, where it came from) for this architecture, mode and quantization."""
        if not on_gpu:
            return 1.0, "analytic (CPU)"
        for key in (f"{model_type}/{mode}/{quantization}", f"{model_type}/{mode}", f"*/{mode}/{quantization}",
                    f"*/{mode}"):
            entry = self.constants.get(key)
            if entry and _valid(entry.get("value")):
                where = f"{entry.get('gpu', '?')}, {entry.get('date', '?')}, {entry.get('runs', 1)} run(s)"
                return float(entry["value"]), f"calibrated {key} on {where}"
        return 1.0, "prior: not yet measured"

    def merged(self, other: "Calibration") -> "Calibration":
        return Calibration({**self.constants, **other.constants})

    def to_json(self) -> dict:
        return {"version": 1, "constants": self.constants}


def _valid(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0.05 < value < 20


def read_calibration(path: Path) -> Calibration:
    """A calibration file; a missing or damaged one reads as empty (logged, never raised)."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        constants = raw.get("constants", {}) if isinstance(raw, dict) else {}
        return Calibration({k: v for k, v in constants.items() if isinstance(v, dict) and _valid(v.get("value"))})
    except FileNotFoundError:
        return Calibration()
    except (OSError, ValueError, AttributeError) as exc:
        log.warning("memory calibration %s is unreadable (%s); using the priors", path, exc)
        return Calibration()


def user_calibration_path() -> Path:
    from lorastudio.core.runs.folders import data_home
    return data_home() / USER_FILE


_cache: dict[tuple, Calibration] = {}


def load_calibration() -> Calibration:
    """The shipped constants overlaid with the user's (cached until either file changes)."""
    user = user_calibration_path()
    stamp = tuple(_mtime(p) for p in (SHIPPED, user)) + (str(user),)
    if stamp not in _cache:
        _cache.clear()
        _cache[stamp] = read_calibration(SHIPPED).merged(read_calibration(user))
    return _cache[stamp]


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def fitted_constant(measured: int, fixed: int, activations_at_one: int) -> float | None:
    """The constant that makes the estimate match a measured peak: (measured − the terms that do
    not scale with it) / the activation term computed with constant 1."""
    if activations_at_one <= 0:
        return None
    value = (measured - fixed) / activations_at_one
    return value if _valid(value) else None


def record(path: Path, key: str, value: float, gpu: str, weight: float | None = None, **extra) -> dict:
    """Fold a measured constant into the file at `path` (a running mean, newest weighted up to
    LEARN_WEIGHT), with the date and GPU; written atomically. Returns the stored entry."""
    current = read_calibration(path)
    old = current.constants.get(key)
    runs = int(old.get("runs", 1)) + 1 if old else 1
    if old and weight is None:
        weight = max(LEARN_WEIGHT, 1 / runs)
    new_value = value if not old else (1 - weight) * float(old["value"]) + weight * value
    entry = {"value": round(new_value, 4), "gpu": gpu, "date": _dt.date.today().isoformat(), "runs": runs, **extra}
    current.constants[key] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, current.to_json())
    _cache.clear()
    return entry
