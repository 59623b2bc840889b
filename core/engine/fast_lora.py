"""The fast path for LoRA training: the adapter fused into its frozen projection.

PEFT's LoRA layer runs the frozen projection, casts the input to the adapter's dtype (fp32 by
default), runs A and B as two more layers, scales and adds. On a 1B QLoRA step that is a third of
the GPU time in dtype copies, fp32 GEMMs on CUDA cores and elementwise scaling, and every adapted
projection keeps an fp32 copy of its input alive for the backward pass.

`LoRAProjection` computes  y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ  in the compute dtype with one autograd node:
  * W is dequantized (NF4 or int8) into a transient bf16 matrix for the forward GEMM and again for
    the backward one; it is never saved;
  * the adapter term is added in place into the projection's output (addmm_ with alpha = s);
  * the node saves x (the same tensor the neighbouring projections save: q, k and v share one),
    x·Aᵀ (tokens × r) and bf16 copies of A and B — nothing of size tokens × d_out;
  * gradients for A and B come back in their own dtype (fp32 master weights, AdamW unchanged).
The PEFT modules stay in place, so saving, merging and exporting are untouched; only the bound
`forward` of each eligible layer changes, and anything the fast path does not cover (adapter
disabled or merged, DoRA, dropout > 0, several adapters, mixed-batch inference) takes PEFT's own
path in the same call. Any nn.Linear subclass (Falcon's FalconLinear) fuses; a linear module's
weight PEFT took as a parameter fuses the same way; adapted experts (3-D parameters) take the
grouped path of training/expert_lora.py.
"""
from __future__ import annotations

import types
from dataclasses import dataclass, field

import torch

from lorastudio.core.engine.training.expert_lora import group_expert_layers, ungroup_expert_layers


def _bnb():
    try:
        import bitsandbytes
        return bitsandbytes
    except Exception:       # not installed / no usable backend: no quantized layers to fuse
        return None


def weight_kind(base: torch.nn.Module) -> str | None:
    """'nf4', 'int8' or 'dense' when the fast path can read this frozen projection's weight."""
    bnb = _bnb()
    if bnb is not None:
        if isinstance(base, bnb.nn.Linear4bit):
            qs = getattr(base.weight, "quant_state", None)
            return "nf4" if qs is not None else None
        if isinstance(base, bnb.nn.Linear8bitLt):
            w = base.weight
            return "int8" if w.dtype == torch.int8 and getattr(w, "SCB", None) is not None else None
    if isinstance(base, torch.nn.Linear):     # subclasses too (Falcon's FalconLinear: the same x·Wᵀ + b)
        return "dense"
    return None


class _DirectNF4:
    """NF4 weights (with double quantization, as we load them) dequantized by bitsandbytes' own CUDA
    entry points, called directly. Its public `dequantize_4bit` reaches the same two kernels through
    two wrapper functions and two torch.ops dispatches to Python kernels: about 74 µs of host time a
    call on the H100 machine, 336 calls in a 1B step with checkpointing, while the GPU sat idle a
    third of the step waiting for the host. The first call is checked bit for bit against the public
    function; a bitsandbytes without these symbols (or with other signatures), another device, FP4
    or unnested statistics take the public path."""

    def __init__(self):
        self.fns = None             # None: not looked up yet; False: use the public path
        self.checked = False

    def lookup(self):
        if self.fns is None:
            self.fns = False
            try:
                from bitsandbytes.cextension import lib
                blockwise = lib.cdequantize_blockwise_fp32
                nf4 = {torch.bfloat16: lib.cdequantize_blockwise_bf16_nf4,
                       torch.float16: lib.cdequantize_blockwise_fp16_nf4}
                if all(len(getattr(f, "argtypes", None) or ()) == 7 for f in (blockwise, *nf4.values())):
                    self.fns = (blockwise, nf4)       # pointers typed as c_void_p by bitsandbytes itself
            except Exception:       # noqa: BLE001 - any surprise means: the public path
                self.fns = False
        return self.fns

    def usable(self, w: torch.Tensor, qs) -> bool:
        return (w.is_cuda and getattr(qs, "nested", False) and qs.quant_type == "nf4"
                and qs.dtype in (torch.bfloat16, torch.float16) and w.is_contiguous() and qs.absmax.is_contiguous()
                and w.device.index == torch.cuda.current_device() and bool(self.lookup()))

    def __call__(self, w: torch.Tensor, qs) -> torch.Tensor:
        blockwise, nf4 = self.fns
        s2 = qs.state2
        stream = torch._C._cuda_getCurrentRawStream(w.device.index)
        absmax = torch.empty(qs.absmax.shape, dtype=torch.float32, device=w.device)
        blockwise(s2.code.data_ptr(), qs.absmax.data_ptr(), s2.absmax.data_ptr(), absmax.data_ptr(),
                  s2.blocksize, qs.absmax.numel(), stream)
        absmax += qs.offset
        out = torch.empty(qs.shape, dtype=qs.dtype, device=w.device)
        nf4[qs.dtype](None, w.data_ptr(), absmax.data_ptr(), out.data_ptr(), qs.blocksize, out.numel(), stream)
        return out

    def dequantize(self, w: torch.Tensor, qs) -> torch.Tensor:
        if not self.usable(w, qs):
            return _bnb().functional.dequantize_4bit(w, qs)
        out = self(w, qs)
        if not self.checked:
            self.checked = True
            public = _bnb().functional.dequantize_4bit(w, qs)
            if not torch.equal(out, public):
                self.fns = False
                return public
        return out


_nf4 = _DirectNF4()


def dense_weight(base: torch.nn.Module, kind: str, dtype: torch.dtype) -> torch.Tensor:
    """The frozen weight as a (d_out, d_in) matrix in `dtype`; transient for quantized bases."""
    w = base.weight
    if kind == "nf4":
        out = _nf4.dequantize(w.data, w.quant_state)
        return out if out.dtype == dtype else out.to(dtype)
    if kind == "int8":
        scale = (w.SCB.float() * (1.0 / 127.0)).to(dtype)
        return w.data.to(dtype).mul_(scale.unsqueeze(1))
    return w if w.dtype == dtype else w.to(dtype)


class LoRAProjection(torch.autograd.Function):
    """y = x·Wᵀ (+ bias) + s·(x·Aᵀ)·Bᵀ with W frozen (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, lora_a, lora_b, base, kind, scale):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        w = dense_weight(base, kind, x.dtype)
        # the output is allocated in its final shape and written through a 2-D view: returning a view
        # would forbid in-place changes downstream (Falcon adds into its projections' outputs)
        result = x.new_empty(*shape[:-1], w.shape[0])
        out = result.view(-1, w.shape[0])
        torch.mm(x2, w.t(), out=out)
        del w
        if base.bias is not None:
            out += base.bias.to(out.dtype)
        a, b = lora_a.to(x.dtype), lora_b.to(x.dtype)
        xa = torch.mm(x2, a.t())
        out.addmm_(xa, b.t(), alpha=scale)
        ctx.save_for_backward(x, a, b, xa)
        ctx.base, ctx.kind, ctx.scale = base, kind, scale
        ctx.dtypes = (lora_a.dtype, lora_b.dtype)
        return result

    @staticmethod
    def backward(ctx, grad):
        x, a, b, xa = ctx.saved_tensors
        s = ctx.scale
        g = grad.reshape(-1, grad.shape[-1])
        if g.dtype != x.dtype:
            g = g.to(x.dtype)
        x2 = x.reshape(-1, x.shape[-1])
        gb = torch.mm(g, b)                                   # tokens × r
        grad_a = grad_b = grad_x = None
        if ctx.needs_input_grad[1]:
            grad_a = torch.mm(gb.t(), x2).mul_(s).to(ctx.dtypes[0])
        if ctx.needs_input_grad[2]:
            grad_b = torch.mm(g.t(), xa).mul_(s).to(ctx.dtypes[1])
        if ctx.needs_input_grad[0]:
            w = dense_weight(ctx.base, ctx.kind, x.dtype)
            grad_x = torch.mm(g, w)
            del w
            grad_x.addmm_(gb, a, alpha=s)
            grad_x = grad_x.view(x.shape)
        return grad_x, grad_a, grad_b, None, None, None


def _project(x2, layer, a, b):
    """x·Wᵀ + s·(x·Aᵀ)·Bᵀ for a fused layer; returns the output and x·Aᵀ."""
    w = dense_weight(layer.base_layer, layer._fast_kind, x2.dtype)
    out = torch.mm(x2, w.t())
    del w
    xa = torch.mm(x2, a.t())
    out.addmm_(xa, b.t(), alpha=layer._fast_scale)
    return out, xa


def _project_back(g, x2, layer, a, b, xa, grads: list, need_x: bool = True):
    """The backward of `_project`: appends grad A and grad B to `grads`, returns grad x."""
    s = layer._fast_scale
    gb = torch.mm(g, b)
    grads.append(torch.mm(gb.t(), x2).mul_(s).to(layer._fast_dtypes[0]))
    grads.append(torch.mm(g.t(), xa).mul_(s).to(layer._fast_dtypes[1]))
    if not need_x:
        return None
    w = dense_weight(layer.base_layer, layer._fast_kind, x2.dtype)
    gx = torch.mm(g, w)
    del w
    return gx.addmm_(gb, a, alpha=s)


def _swiglu(g, u):
    if g.is_cuda and _liger_swiglu() is not None:
        return _liger_swiglu()[0](g, u)[2]
    return torch.nn.functional.silu(g) * u


def _swiglu_back(g, u, dh):
    """Gradients of silu(g)·u for g and u (may overwrite g and u)."""
    if g.is_cuda and _liger_swiglu() is not None:
        return _liger_swiglu()[1](g, u, dh)
    gf = g.float()
    sig = torch.sigmoid(gf)
    silu = gf * sig
    dg = (dh.float() * u.float() * (sig + silu * (1 - sig))).to(g.dtype)
    return dg, (dh.float() * silu).to(u.dtype)


_LIGER = []


def _liger_swiglu():
    if not _LIGER:
        try:
            from liger_kernel.ops.swiglu import swiglu_backward, swiglu_forward
            _LIGER.append((swiglu_forward, swiglu_backward))
        except Exception:
            _LIGER.append(None)
    return _LIGER[0]


class LoRASwiGLU(torch.autograd.Function):
    """down(silu(gate(x)) · up(x)) with all three projections fused LoRA layers.

    Saves x, gate(x), up(x) and the three tokens × r products; silu(gate)·up (tokens × d_ff, the
    largest activation of the layer) is recomputed in the backward pass instead of being kept."""

    @staticmethod
    def forward(ctx, x, ga, gb, ua, ub, da, db, mlp):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        dt = x.dtype
        ga, gb, ua, ub, da, db = (t.to(dt) for t in (ga, gb, ua, ub, da, db))
        g, xa_g = _project(x2, mlp.gate_proj, ga, gb)
        u, xa_u = _project(x2, mlp.up_proj, ua, ub)
        h = _swiglu(g, u)
        y, ha = _project(h, mlp.down_proj, da, db)
        del h
        ctx.save_for_backward(x, g, u, xa_g, xa_u, ha, ga, gb, ua, ub, da, db)
        ctx.mlp = mlp
        return y.view(*shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, grad):
        x, g, u, xa_g, xa_u, ha, ga, gb, ua, ub, da, db = ctx.saved_tensors
        mlp = ctx.mlp
        x2 = x.reshape(-1, x.shape[-1])
        gy = grad.reshape(-1, grad.shape[-1]).to(x.dtype)
        h = _swiglu(g, u)
        down_grads: list = []
        dh = _project_back(gy, h, mlp.down_proj, da, db, ha, down_grads)
        del h
        dg, du = _swiglu_back(g, u, dh)         # g and u are not needed after this
        del dh
        gate_grads: list = []
        up_grads: list = []
        need_x = ctx.needs_input_grad[0]
        gx = _project_back(dg, x2, mlp.gate_proj, ga, gb, xa_g, gate_grads, need_x)
        gx_up = _project_back(du, x2, mlp.up_proj, ua, ub, xa_u, up_grads, need_x)
        gx = gx.add_(gx_up).view(x.shape) if need_x else None
        return (gx, *gate_grads, *up_grads, *down_grads, None)


def _fused_mlp_forward(self, x):
    layers = (self.gate_proj, self.up_proj, self.down_proj)
    if not all(_fast_ready(layer) for layer in layers):
        return self._peft_mlp_forward(x)
    names = [layer.active_adapters[0] for layer in layers]
    for layer, name in zip(layers, names):
        layer._fast_scale = float(layer.scaling[name])
        layer._fast_dtypes = (layer.lora_A[name].weight.dtype, layer.lora_B[name].weight.dtype)
    w = [t for layer, name in zip(layers, names)
         for t in (layer.lora_A[name].weight, layer.lora_B[name].weight)]
    return LoRASwiGLU.apply(x, *w, self)


def _fast_ready(layer) -> bool:
    active = layer.active_adapters
    return (hasattr(layer, "_fast_kind") and not layer.disable_adapters and not layer.merged
            and len(active) == 1 and active[0] in layer.lora_A)


def _is_swiglu_mlp(module) -> bool:
    if not all(hasattr(getattr(module, n, None), "_fast_kind") for n in ("gate_proj", "up_proj", "down_proj")):
        return False
    act = getattr(getattr(module, "config", None), "hidden_act", None)
    if act is None:
        act_fn = getattr(module, "act_fn", None)
        return isinstance(act_fn, torch.nn.SiLU) or getattr(act_fn, "__name__", "") == "silu"
    return act in ("silu", "swish")


def fuse_swiglu_mlps(model: torch.nn.Module) -> int:
    """Give every SwiGLU MLP whose three projections are fused LoRA layers the fused MLP forward."""
    n = 0
    for module in model.modules():
        if hasattr(module, "_peft_mlp_forward") or not _is_swiglu_mlp(module):
            continue
        module._peft_mlp_forward = module.forward
        module.forward = types.MethodType(_fused_mlp_forward, module)
        n += 1
    return n


def _fused_forward(self, x, *args, **kwargs):
    """The bound forward of an eligible PEFT LoRA layer: fused when it can be, PEFT's otherwise."""
    active = self.active_adapters
    if (self.disable_adapters or self.merged or args or kwargs or len(active) != 1
            or active[0] not in self.lora_A):
        return self._peft_forward(x, *args, **kwargs)
    name = active[0]
    return LoRAProjection.apply(x, self.lora_A[name].weight, self.lora_B[name].weight,
                                self.base_layer, self._fast_kind, float(self.scaling[name]))


@dataclass
class FusedReport:
    fused: int = 0
    kinds: set[str] = field(default_factory=set)
    skipped: dict[str, int] = field(default_factory=dict)     # reason -> layers
    mlps: int = 0               # SwiGLU MLPs fused whole (LoRASwiGLU)
    experts: int = 0            # blocks of adapted experts on the grouped path (training/expert_lora.py)

    def words(self) -> str:
        if not self.fused and not self.experts:
            why = ", ".join(f"{r} ({n})" for r, n in self.skipped.items()) or "no LoRA layers"
            return f"fused LoRA off: {why}"
        text = (f"fused LoRA on {self.fused} layers ({'/'.join(sorted(self.kinds))})" if self.fused
                else "fused LoRA on no layer")
        if self.mlps:
            text += f", {self.mlps} SwiGLU MLPs fused whole"
        if self.experts:
            text += f", grouped expert LoRA on {self.experts} MoE blocks"
        if self.skipped:
            text += "; PEFT path for " + ", ".join(f"{n} ({r})" for r, n in self.skipped.items())
        return text


def _skip_reason(layer) -> str | None:
    if hasattr(layer, "parameter_name"):        # PEFT's ParamWrapper (target_parameters)
        if getattr(layer, "num_experts", 1) > 1:
            return "experts: PEFT's per-expert path"
        if layer.parameter_name != "weight":
            return "adapted parameter"
        # a linear module's weight taken as a parameter: the same W + s·B·A, fused like a LoRA module
    if getattr(layer, "fan_in_fan_out", False):
        return "transposed weights"
    for name in layer.active_adapters:
        if getattr(layer, "use_dora", {}).get(name):
            return "DoRA"
        if name in getattr(layer, "lora_variant", {}):
            return "LoRA variant"
        dropout = layer.lora_dropout[name]
        if not isinstance(dropout, torch.nn.Identity) and getattr(dropout, "p", 0) > 0:
            return "lora.dropout > 0"
        if getattr(layer, "lora_bias", {}).get(name):
            return "LoRA bias"
    return None


def fuse_lora_layers(model: torch.nn.Module) -> FusedReport:
    """Give every eligible PEFT LoRA layer of `model` the fused forward; report what was done."""
    report = FusedReport()
    report.experts, experts_skipped = group_expert_layers(model)
    for why, n in experts_skipped.items():
        report.skipped[f"experts: PEFT's per-expert path ({why})"] = n
    for module in model.modules():
        if not (hasattr(module, "lora_A") and hasattr(module, "base_layer")) or hasattr(module, "_fast_kind"):
            continue
        if getattr(module, "_grouped_experts", False) or (hasattr(module, "parameter_name")
                                                          and getattr(module, "num_experts", 1) > 1):
            continue            # an experts block: grouped above, or counted with its reason
        reason = _skip_reason(module) if hasattr(module, "parameter_name") else None
        kind = weight_kind(module.base_layer)
        reason = reason or ("unsupported base layer" if kind is None else _skip_reason(module))
        if reason:
            report.skipped[reason] = report.skipped.get(reason, 0) + 1
            continue
        module._fast_kind = kind
        module._peft_forward = module.forward
        module.forward = types.MethodType(_fused_forward, module)
        report.fused += 1
        report.kinds.add(kind)
    report.mlps = fuse_swiglu_mlps(model)
    return report


def unfuse_lora_layers(model: torch.nn.Module) -> None:
    """Restore PEFT's own forward everywhere (for tests and inference that needs PEFT's path)."""
    ungroup_expert_layers(model)
    for module in model.modules():
        if hasattr(module, "_peft_mlp_forward"):
            module.forward = module._peft_mlp_forward
            del module._peft_mlp_forward
        if hasattr(module, "_fast_kind"):
            module.forward = module._peft_forward
            del module._fast_kind, module._peft_forward
