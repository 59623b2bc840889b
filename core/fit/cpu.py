"""A run on the CPU: how much RAM it needs and how long a step takes. Torch-free.

RAM: the memory model's terms as they are on the CPU (`estimate(..., on_gpu=False)`: weights,
LoRA state, activations, loss, scratch — no CUDA context, no allocator slack) plus the worker's
own runtime (Python, PyTorch's libraries, the tokenizer): `CPU_RUNTIME`.

Time per optimizer step: the arithmetic of a LoRA step over this machine's measured rate.
  - work: tokens per step (batch_size × seq_len × grad_accum: the token budget, which a packed
    batch fills and a padded one reaches at most) × the base's parameters × FLOPs per parameter and
    token: 2 forward + 2 backward (the gradient of the activations; the frozen base has no weight
    gradient) + 2 more when layers are recomputed (memory mode checkpoint or lean);
  - rate: `measure_matmul_rate` times a float32 matrix product with numpy for ~0.2 s (all cores,
    as PyTorch uses them) — once per process, on the thread pool in the window;
  - `CPU_EFFICIENCY`: the share of that rate a training step reaches (attention, norms, autograd
    and the optimizer are not one large matrix product). A rule of thumb, stated as such: the
    figure is an order of magnitude ("about 40 s a step"), shown as an estimate.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from lorastudio.core.config import RunConfig
from lorastudio.core.fit.memory_model import Estimate, Term, estimate
from lorastudio.core.models.info import ModelInfo
from lorastudio.core.models.targets import TargetReport

CPU_RUNTIME = 700 << 20             # the worker's Python, PyTorch's libraries and the tokenizer
CPU_EFFICIENCY = 0.3                # share of the measured matmul rate a LoRA training step reaches
PROBE_SECONDS = 0.2
_measured: float | None = None


@dataclass(frozen=True)
class CpuEstimate:
    memory: Estimate                # the RAM terms (the runtime among them)
    flops_per_step: float
    rate: float | None              # measured FLOP/s of a float32 matmul; None until measured

    @property
    def ram(self) -> int:
        return self.memory.peak

    @property
    def seconds_per_step(self) -> float | None:
        return self.flops_per_step / (self.rate * CPU_EFFICIENCY) if self.rate else None


def ram_estimate(config: RunConfig, info: ModelInfo, report: TargetReport | None = None) -> Estimate:
    """The memory model's terms on the CPU, plus the worker's runtime."""
    mode = config.training.memory_mode if config.training.memory_mode != "auto" else "none"
    base = estimate(config, info, mode, report=report, on_gpu=False)
    runtime = Term("runtime", "Python and PyTorch", CPU_RUNTIME, "the worker's interpreter, libraries and "
                   "tokenizer", False)
    return Estimate(base.terms + (runtime,), base.mode, base.tokens, base.fused_loss, False, base.constant,
                    base.constant_source)


def step_flops(config: RunConfig, info: ModelInfo, mode: str) -> float:
    t = config.training
    tokens = t.batch_size * t.seq_len * t.grad_accum
    per_token = 2 + 2 + (2 if mode in ("checkpoint", "lean") else 0)
    return float(tokens) * info.num_parameters * per_token


def measure_matmul_rate(seconds: float = PROBE_SECONDS) -> float:
    """FLOP/s of a float32 matrix product on this machine (numpy's BLAS, all cores). Measured once
    per process; later calls return the first figure."""
    global _measured
    if _measured is not None:
        return _measured
    import numpy as np
    n = 512
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    a @ b                                                   # warm the BLAS threads up
    done, start = 0, time.perf_counter()
    while True:
        a @ b
        done += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
    _measured = 2 * n ** 3 * done / elapsed
    return _measured


def measured_rate() -> float | None:
    """The rate measured so far in this process (None before `measure_matmul_rate`)."""
    return _measured


def cpu_estimate(config: RunConfig, info: ModelInfo, report: TargetReport | None = None,
                 rate: float | None = None) -> CpuEstimate:
    memory = ram_estimate(config, info, report)
    return CpuEstimate(memory, step_flops(config, info, memory.mode), rate if rate is not None else _measured)
