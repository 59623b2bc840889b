"""Test hooks, kept out of the production paths' way: each does nothing unless its environment
variable is set (the tests set it for a job process they start). Torch-free.

LORASTUDIO_TEST_PAUSE=PHASE:SECONDS makes a job wait when it enters PHASE (until cancelled), so a
test can kill or cancel it at a known point (`pause_at`).

LORASTUDIO_FAULT=KIND:STEP makes a training process fail on purpose before optimizer step STEP+1
(`arm`, called once for every Trainer, by core/engine/trainer.build_trainer) — the tests' way to
produce each failure in a real process:
  oom        torch's OutOfMemoryError;       exception  a RuntimeError;
  segfault   a native crash (no `end`);      kill       SIGKILL to itself (no `end`);
  oom-forward:STEP:BATCH  the model's forward raises OutOfMemoryError while the micro-batch is
             larger than BATCH (a GPU too small for the settings, simulated on a CPU);
  start      the rank fails before it joins the process group (multi-process runs).
LORASTUDIO_FAULT_RANK=R puts the fault in rank R of a multi-process run only (default 0).
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Callable

FAULT_ENV, FAULT_RANK_ENV, PAUSE_ENV = "LORASTUDIO_FAULT", "LORASTUDIO_FAULT_RANK", "LORASTUDIO_TEST_PAUSE"


def pause_at(phase: str, cancelled: Callable[[], bool]) -> None:
    spec = os.environ.get(PAUSE_ENV, "")
    if spec and spec.partition(":")[0] == phase:
        until = time.time() + float(spec.partition(":")[2] or 30)
        while time.time() < until and not cancelled():
            time.sleep(0.05)


@dataclass(frozen=True)
class Fault:
    kind: str
    step: int = 0           # fails before optimizer step step + 1
    max_batch: int = 1      # oom-forward: the largest micro-batch the simulated GPU holds


def fault_for(rank: int = 0) -> Fault | None:
    """The fault LORASTUDIO_FAULT asks of rank `rank`, or None (always, outside the tests)."""
    spec = os.environ.get(FAULT_ENV, "")
    if not spec or os.environ.get(FAULT_RANK_ENV, "0") != str(rank):
        return None
    kind, _, rest = spec.partition(":")
    step, _, max_batch = rest.partition(":")
    return Fault(kind, int(step or 0), int(max_batch or 1))


def arm(trainer, rank: int = 0, oom_error: type[BaseException] = MemoryError) -> None:
    """The one hook: nothing unless LORASTUDIO_FAULT names a fault for this rank. Otherwise the
    trainer's `should_stop` (asked before every optimizer step) fails as asked once the trainer
    reaches the fault's step; `oom_error` is the error to raise for out-of-memory (the caller's
    torch.OutOfMemoryError: this module does not import torch)."""
    fault = fault_for(rank)
    if fault is None:
        return
    if fault.kind == "start":
        raise RuntimeError("injected failure before joining the process group")
    asked = trainer.should_stop

    if fault.kind == "oom-forward":
        limited: list = []

        def should_stop() -> bool:
            if not limited:             # the model exists once training asks: limit its forward
                limited.append(trainer.model.register_forward_pre_hook(too_large))
            return asked()

        def too_large(_module, _args) -> None:
            if trainer.step >= fault.step and trainer.config.training.batch_size > fault.max_batch:
                raise oom_error("CUDA out of memory. Tried to allocate 2.00 GiB (a memory limit of batch_size "
                                f"{fault.max_batch} set by {FAULT_ENV})")
        trainer.should_stop = should_stop
        return

    def should_stop() -> bool:
        if trainer.step >= fault.step:
            fail(fault, oom_error)
        return asked()
    trainer.should_stop = should_stop


def fail(fault: Fault, oom_error: type[BaseException]) -> None:
    if fault.kind == "oom":
        raise oom_error(f"CUDA out of memory. Tried to allocate 2.00 GiB (simulated by {FAULT_ENV})")
    if fault.kind == "segfault":
        import ctypes
        ctypes.string_at(0)
    if fault.kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError(f"injected failure at step {fault.step}")
