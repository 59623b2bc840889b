"""Memory modes: how a decoder layer's activations are kept for the backward pass.

  none        everything stays on the GPU: fastest, most memory;
  checkpoint  non-reentrant checkpointing: only each decoder layer's input is kept, the rest is
              recomputed in the backward pass (one extra forward);
  lean        checkpointing with each layer's input copied to pinned host memory on a side stream
              while the next layer computes, and copied back just before that layer's backward:
              the GPU holds about two layers' inputs instead of all of them.

`lean` is our own autograd function plugged into transformers' per-layer checkpointing hook
(`GradientCheckpointingLayer._gradient_checkpointing_func(forward, hidden_states)`), so it covers
every architecture whose decoder layers use that hook.
"""
from __future__ import annotations

import torch

from lorastudio.core.fit.memory_model import MLP_CHUNK_TOKENS     # the memory model counts the chunks

try:
    from transformers.modeling_layers import GradientCheckpointingLayer
except ImportError:         # older transformers: no per-layer hook, torch's checkpointing is used
    GradientCheckpointingLayer = ()

MODES = ("none", "checkpoint", "lean")



class Held:
    """One layer input kept for its backward pass: on the GPU, or in a pinned host buffer."""
    __slots__ = ("gpu", "host", "stored")

    def __init__(self, gpu=None, host=None, stored=None):
        self.gpu, self.host, self.stored = gpu, host, stored


class Stash:
    """Where checkpointed layers keep their inputs. With `offload`, pinned host buffers (reused from
    step to step) filled on a side stream while the next layer computes. The copy back is made on
    the compute stream when the layer's backward starts: prefetching the layer before on the side
    stream measured 20 % slower on an H100 (1B shape: 36k against 44k tokens/s)."""

    def __init__(self, offload: bool):
        self.offload = offload
        self.free: dict[tuple, list[torch.Tensor]] = {}
        self.stream = None

    def put(self, t: torch.Tensor) -> Held:
        if not (self.offload and t.device.type == "cuda"):
            return Held(gpu=t)
        key = (tuple(t.shape), t.dtype)
        bucket = self.free.setdefault(key, [])
        host = bucket.pop() if bucket else torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        if self.stream is None:
            self.stream = torch.cuda.Stream(t.device)
        self.stream.wait_stream(torch.cuda.current_stream(t.device))
        with torch.cuda.stream(self.stream):
            host.copy_(t, non_blocking=True)
            stored = torch.cuda.Event()
            stored.record()
        t.record_stream(self.stream)        # t's memory is not reused until the copy has run
        return Held(host=host, stored=stored)

    def take(self, held: Held, device) -> torch.Tensor:
        if held.host is None:
            t, held.gpu = held.gpu, None
            return t
        compute = torch.cuda.current_stream(device)
        compute.wait_event(held.stored)
        t = torch.empty(held.host.shape, dtype=held.host.dtype, device=device)
        t.copy_(held.host, non_blocking=True)   # on the compute stream: a later copy into host waits for it
        self.free.setdefault((tuple(held.host.shape), held.host.dtype), []).append(held.host)
        held.host = None
        return t


class CheckpointedLayer(torch.autograd.Function):
    """Run a layer without saving its activations; keep its input in the stash; recompute in backward.
    (Reentrant style, like torch's original checkpoint: the recompute's own backward accumulates the
    adapter's gradients, so the layer's input is the one tensor this node keeps — and it can move.)"""

    @staticmethod
    def forward(ctx, stash, run, hidden, *rest):
        ctx.stash, ctx.run, ctx.rest, ctx.device = stash, run, rest, hidden.device
        ctx.cpu_rng = torch.get_rng_state()
        ctx.cuda_rng = torch.cuda.get_rng_state(hidden.device) if hidden.device.type == "cuda" else None
        with torch.no_grad():
            out = run(hidden, *rest)
        ctx.held = stash.put(hidden.detach())
        return out

    @staticmethod
    def backward(ctx, grad):
        hidden = ctx.stash.take(ctx.held, ctx.device).requires_grad_(True)
        ctx.held = None
        devices = [ctx.device] if ctx.cuda_rng is not None else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(ctx.cpu_rng)
            if ctx.cuda_rng is not None:
                torch.cuda.set_rng_state(ctx.cuda_rng, ctx.device)
            with torch.enable_grad():
                out = ctx.run(hidden, *ctx.rest)
        torch.autograd.backward(out, grad)
        return (None, None, hidden.grad) + (None,) * len(ctx.rest)


def stashed_checkpoint(stash: Stash, layer: torch.nn.Module | None = None):
    """A `_gradient_checkpointing_func` for transformers' decoder layers, keeping inputs in `stash`.
    A `layer` with nothing to train whose input needs no gradient (a frozen vision tower's block) runs
    as it is: nothing before it or in it wants a gradient, so there is nothing to keep or recompute."""
    def checkpoint(run, hidden, *rest):
        if not torch.is_grad_enabled():     # e.g. a reference forward in training mode: nothing to keep
            return run(hidden, *rest)
        if (not hidden.requires_grad and layer is not None
                and not any(p.requires_grad for p in layer.parameters())):
            return run(hidden, *rest)
        if not hidden.requires_grad:        # the first layer's input comes from a frozen embedding
            hidden = hidden.detach().requires_grad_(True)
        return CheckpointedLayer.apply(stash, run, hidden, *rest)
    return checkpoint


def checkpointed_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if hasattr(m, "_gradient_checkpointing_func")]


def apply_memory_mode(model: torch.nn.Module, mode: str) -> str:
    """Set up `mode` on a (not yet PEFT-wrapped) transformers model; returns what was done, in words."""
    if mode == "none":
        return "no activation checkpointing"
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):        # transformers ≥ 5 renamed it
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if mode == "checkpoint":       # torch's own; ours without offload measured no faster
        return "non-reentrant activation checkpointing"
    layers = [m for m in checkpointed_layers(model) if isinstance(m, GradientCheckpointingLayer)]
    if not layers:
        return "non-reentrant activation checkpointing (this architecture has no per-layer hook for ours)"
    stash = Stash(offload=mode == "lean")
    for layer in layers:
        layer._gradient_checkpointing_func = stashed_checkpoint(stash, layer)
    return f"activation checkpointing of {len(layers)} decoder layers, inputs offloaded to pinned host memory"


class ChunkedForward:
    """An MLP's forward over a long micro-batch, a chunk of tokens at a time, each chunk checkpointed:
    when a checkpointed layer is recomputed for its backward pass, the MLP keeps only the chunks'
    inputs instead of its hidden values for every token (gate, up, their product: 3–4 × the
    intermediate size a token), and each chunk's are made again, one chunk at a time, in the backward
    pass. One more MLP forward for the layer, spent only on rows longer than `chunk` tokens (the
    longest-context runs); shorter rows, however many in a micro-batch, take the plain forward."""

    def __init__(self, forward, chunk: int):
        self.forward, self.chunk = forward, chunk

    def __call__(self, x, *args, **kwargs):
        if args or kwargs or x.dim() < 2 or x.shape[-2] <= self.chunk or not torch.is_grad_enabled():
            return self.forward(x, *args, **kwargs)
        rows = x.numel() // (x.shape[-1] * x.shape[-2])       # (batch, seq, hidden): chunks along seq
        step = max(1, self.chunk // rows)
        from torch.utils.checkpoint import checkpoint
        return torch.cat([checkpoint(self.forward, piece, use_reentrant=False)
                          for piece in x.split(step, dim=-2)], dim=-2)


def chunk_mlps(model: torch.nn.Module, chunk: int = MLP_CHUNK_TOKENS) -> str:
    """Give the dense MLP of every checkpointed layer a ChunkedForward (after the fused LoRA path has
    set its own forward: the chunks run that one); returns the journal's words, "" for none. Mixtures
    of experts keep theirs (their blocks return the router's logits too, and route per token)."""
    count = 0
    for layer in checkpointed_layers(model):
        mlp = getattr(layer, "mlp", None)
        if mlp is None or not type(mlp).__name__.endswith("MLP") or isinstance(mlp.forward, ChunkedForward):
            continue
        mlp.forward = ChunkedForward(mlp.forward, chunk)
        count += 1
    return (f"the MLPs of {count} layers are recomputed {chunk:,} tokens at a time in rows longer than that"
            if count else "")
