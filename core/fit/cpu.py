"""A run on the CPU: how much RAM it needs and how long a step takes. Torch-free.

RAM: the memory model's terms as they are on the CPU (`estimate(..., on_gpu=False)`: weights,
LoRA state, activations, loss, scratch — no CUDA context, no allocator slack) plus the worker's
own runtime (Python, PyTorch's libraries, the tokenizer): `CPU_RUNTIME`.

Time per optimizer step: the arithmetic of a LoRA step over this machine's rate.
  - work: tokens per step × the base's parameters × FLOPs per parameter and token: 2 forward + 2
    backward (the gradient of the activations; the frozen base has no weight gradient) + 2 more when
    layers are recomputed (memory mode checkpoint or lean). The tokens: batch_size × grad_accum
    examples of the length the data's first rows suggest (`example_tokens`: characters / 3.5, plus a
    chat message's markers; at most seq_len) — "about 8 s a step"; without data, the step's budget
    (batch_size × seq_len × grad_accum), which a step holds at most — "up to about 30 s a step";
  - rate, best first: learnt from this machine's last finished CPU runs (their tokens a second ×
    parameters × FLOPs per token: `learn_cpu_rate`, called by the train job at the end); else PyTorch's
    own rate on a LoRA step's kind of arithmetic, measured once per machine in a child process
    (core/engine/cpu_probe.py: the window never imports torch) and kept in DATA/cpu-rate.json. On
    this project's 2-core machine the probe said 61 GFLOP/s (load 3) and the demo's steps reached
    about 90: the probe's figure is used as it is.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path

from lorastudio.core.config import RunConfig
from lorastudio.core.fit.memory_model import Estimate, Term, estimate
from lorastudio.core.models.info import ModelInfo
from lorastudio.core.models.targets import TargetReport

CPU_RUNTIME = 700 << 20             # the worker's Python, PyTorch's libraries and the tokenizer
CHARS_PER_TOKEN = 3.5               # characters of text a token, for a length estimate without a tokenizer
MESSAGE_TOKENS = 4                  # a chat message's role markers
PROBE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class CpuEstimate:
    memory: Estimate                # the RAM terms (the runtime among them)
    flops_per_step: float
    rate: float | None              # FLOP/s of this machine (learnt or probed); None until known
    rate_source: str = ""           # "learnt from 2 runs" | "measured by PyTorch"
    per_example: float | None = None    # tokens an example holds, estimated from the data (None: the budget)

    @property
    def ram(self) -> int:
        return self.memory.peak

    @property
    def seconds_per_step(self) -> float | None:
        """About this long a step (per_example known), or at most (the token budget filled)."""
        return self.flops_per_step / self.rate if self.rate else None


def ram_estimate(config: RunConfig, info: ModelInfo, report: TargetReport | None = None) -> Estimate:
    """The memory model's terms on the CPU, plus the worker's runtime."""
    mode = config.training.memory_mode if config.training.memory_mode != "auto" else "none"
    base = estimate(config, info, mode, report=report, on_gpu=False)
    runtime = Term("runtime", "Python and PyTorch", CPU_RUNTIME, "the worker's interpreter, libraries and "
                   "tokenizer", False)
    return Estimate(base.terms + (runtime,), base.mode, base.tokens, base.fused_loss, False, base.constant,
                    base.constant_source)


def example_tokens(values: list) -> float | None:
    """About how many tokens an example of these rows (the data's first rows, as read) holds: its
    text at CHARS_PER_TOKEN characters a token, plus MESSAGE_TOKENS for each chat message's markers.
    On the demo: 226 characters and 3 messages a row → 77 tokens, against the 70 its tokenizer makes."""
    counts = [_chars_and_messages(v) for v in values]
    counts = [c for c in counts if c[0]]
    if not counts:
        return None
    return sum(chars / CHARS_PER_TOKEN + messages * MESSAGE_TOKENS for chars, messages in counts) / len(counts)


def _chars_and_messages(value) -> tuple[int, int]:
    if isinstance(value, str):
        return len(value), 0
    if isinstance(value, dict):
        parts = [_chars_and_messages(v) for v in value.values()]
        return sum(p[0] for p in parts), sum(p[1] for p in parts) + (1 if "role" in value else 0)
    if isinstance(value, list):
        parts = [_chars_and_messages(v) for v in value]
        return sum(p[0] for p in parts), sum(p[1] for p in parts)
    return 0, 0


def step_flops(config: RunConfig, info: ModelInfo, mode: str, per_example: float | None = None) -> float:
    """A step's FLOPs: its token budget, or (per_example known) its examples at that many tokens each."""
    t = config.training
    length = min(float(t.seq_len), per_example) if per_example else t.seq_len
    tokens = t.batch_size * length * t.grad_accum
    return float(tokens) * info.num_parameters * _flops_per_token(mode)


@functools.lru_cache(maxsize=1)
def machine() -> str:
    """This CPU in words, as DATA/cpu-rate.json keys it: "Intel(R) Xeon(R) … × 2". Read once a process:
    the window estimates at every change of the form."""
    import os
    import platform
    name = ""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            if line.lower().startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name or platform.processor() or platform.machine()} × {os.cpu_count() or 1}"


RATE_FILE = "cpu-rate.json"          # in the data folder: {machine: {"probe": {...}, "runs": {...}}}
LEARN_WEIGHT = 0.5                  # the newest run's share of the learnt rate


def rate_path() -> Path:
    from lorastudio.core.runs.folders import data_home
    return data_home() / RATE_FILE


def _read_rates(path: Path) -> dict:
    import json
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        return raw if isinstance(raw, dict) else {}
    except (OSError, ValueError):           # none yet, or damaged: measured again
        return {}


def _store(path: Path, kind: str, rate: float, weight: float = 1.0) -> dict:
    """Fold `rate` (FLOP/s) into this machine's `kind` entry (a running mean; weight: the new figure's share)."""
    import datetime
    from lorastudio.core.atomic_files import atomic_write_json
    rates = _read_rates(path)
    mine = rates.setdefault(machine(), {})
    old = mine.get(kind) if isinstance(mine.get(kind), dict) else None
    runs = int(old.get("runs", 0)) + 1 if old else 1
    value = rate if not old else (1 - weight) * float(old["flops_per_s"]) + weight * rate
    mine[kind] = {"flops_per_s": round(value), "runs": runs, "date": datetime.date.today().isoformat()}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, rates)
    return mine[kind]


def known_rate(path: Path | None = None) -> tuple[float, str] | None:
    """(FLOP/s, where it comes from) for this machine: learnt from runs, else probed; None if neither."""
    mine = _read_rates(path or rate_path()).get(machine(), {})
    for kind in ("runs", "probe"):
        entry = mine.get(kind)
        try:
            rate = float(entry["flops_per_s"])
        except (TypeError, KeyError, ValueError):
            continue
        if rate > 0:
            runs = int(entry.get("runs", 1))
            return rate, (f"learnt from {runs} CPU run{'s' * (runs != 1)} on this machine" if kind == "runs"
                          else "measured by PyTorch on this machine")
    return None


def measure_rate(path: Path | None = None) -> float | None:
    """Run the probe (core/engine/cpu_probe.py) in a child process, keep its figure for this machine
    and return it (FLOP/s); None when it could not run. Seconds: call it off the GUI thread."""
    import json
    import sys
    import tempfile
    from lorastudio.core.runtime.launcher import run_tool
    with tempfile.TemporaryDirectory(prefix="lorastudio-cpu-probe-") as tmp:
        out, log = Path(tmp) / "rate.json", Path(tmp) / "probe.log"
        started = time.monotonic()
        status = run_tool([sys.executable, "-m", "lorastudio.core.engine.cpu_probe", str(out)], None, log,
                          should_stop=lambda: time.monotonic() - started > PROBE_TIMEOUT_S)
        if status != 0 or not out.is_file():
            return None
        rate = float(json.loads(out.read_text())["flops_per_s"])
    _store(path or rate_path(), "probe", rate)
    return rate


def learn_cpu_rate(events: list[dict], info: ModelInfo, mode: str, path: Path | None = None) -> dict | None:
    """A finished CPU run's rate (its median tokens a second after the first two steps × parameters ×
    FLOPs per token) folded into this machine's learnt rate; the entry, or None."""
    speeds = sorted(e["tokens_per_s"] for e in events if e["type"] == "step" and e.get("tokens_per_s")
                    and e.get("step", 0) > 2)
    if not speeds or not info.num_parameters:
        return None
    rate = speeds[len(speeds) // 2] * info.num_parameters * _flops_per_token(mode)
    return _store(path or rate_path(), "runs", rate, LEARN_WEIGHT)


def _flops_per_token(mode: str) -> int:
    return 2 + 2 + (2 if mode in ("checkpoint", "lean") else 0)


def cpu_estimate(config: RunConfig, info: ModelInfo, report: TargetReport | None = None,
                 rate: tuple[float, str] | None = None, per_example: float | None = None) -> CpuEstimate:
    """The RAM and time estimate; `rate` (FLOP/s, its source) defaults to what this machine knows;
    `per_example`: tokens an example holds (example_tokens), else a step is its full token budget."""
    memory = ram_estimate(config, info, report)
    rate = rate if rate is not None else known_rate()
    return CpuEstimate(memory, step_flops(config, info, memory.mode, per_example), *(rate or (None, "")),
                       per_example=per_example)
