"""Training on several processes (torch.distributed): one process group, the rank's share of each
micro-batch and the step's all-reduces.

The ranks are started like torchrun starts them (core/runtime/launcher.start_ranks: RANK,
WORLD_SIZE, MASTER_ADDR, MASTER_PORT); gloo on CPU, nccl on CUDA (one GPU per rank, LOCAL_RANK of
the visible ones). Exactness — N processes × micro-batch b train like 1 process × micro-batch N·b:
  * the data is prepared with the global micro-batch N·b, so micro-batch k names the same examples
    as in a 1-process run and a checkpoint's data position keeps its meaning;
  * rank r trains rows [r·b, (r+1)·b) of each micro-batch (a short last micro-batch can leave a rank
    none: it runs one row with its loss times 0, so every rank takes part in every all-reduce);
  * every rank counts the step's trained tokens over the whole global batch, so its loss is
    (its token sum) / (all ranks' tokens); summing the ranks' gradients (one all-reduce per step,
    after the step's micro-batches — DDP's no_sync + one sync) gives the 1-process gradient exactly.
Only rank 0 writes into the run folder (journal, checkpoints, adapter, status.json); a stop asked
of any rank is agreed on by all (`any_true`) so they stop after the same step.
"""
from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass

import torch

INIT_TIMEOUT_S = 600


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def on(self) -> bool:
        return self.world > 1


SINGLE = Ranks()


def from_environment() -> Ranks:
    """The rank and world size torchrun's environment names (1 process when it names none)."""
    return Ranks(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")))


def init(ranks: Ranks, device: torch.device) -> None:
    """Join the process group: nccl on CUDA, gloo on CPU."""
    import torch.distributed as dist
    if not ranks.on or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(local_device(device))
    dist.init_process_group(backend, rank=ranks.rank, world_size=ranks.world,
                            timeout=_dt.timedelta(seconds=INIT_TIMEOUT_S))


def close() -> None:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """On CUDA each rank owns one of the visible GPUs (LOCAL_RANK); CPU stays CPU."""
    if device.type != "cuda":
        return device
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def rank_rows(rows: list, ranks: Ranks) -> tuple[list, bool]:
    """Rank r's contiguous share of a global micro-batch's rows, and whether it is real (a rank
    with no rows left gets the first row, to be weighted 0)."""
    per = -(-len(rows) // ranks.world) if ranks.on else len(rows)
    share = rows[ranks.rank * per:(ranks.rank + 1) * per]
    return (share, True) if share else (rows[:1], False)


def sum_gradients(params: list[torch.nn.Parameter], ranks: Ranks) -> None:
    """Sum the trainable gradients over the ranks: one flat all-reduce."""
    if not ranks.on:
        return
    import torch.distributed as dist
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(g).to(g.dtype)
        offset += n


def sum_value(value: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    if ranks.on:
        import torch.distributed as dist
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def barrier(ranks: Ranks) -> None:
    if ranks.on:
        import torch.distributed as dist
        dist.barrier()


def any_true(flag: bool, ranks: Ranks, device: torch.device) -> bool:
    """True on every rank when any rank says true (a stop asked of one stops all at the same step)."""
    if not ranks.on:
        return flag
    import torch.distributed as dist
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)
