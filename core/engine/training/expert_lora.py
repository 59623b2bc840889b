"""The experts' LoRA on a grouped path (issue 28), the fast path's part for mixtures of experts.

transformers 5 holds a layer's experts as 3-D parameters (`gate_up_proj` [E, 2I, H] and
`down_proj` [E, H, I]; gpt-oss stores them transposed). PEFT adapts such a parameter with a
ParamWrapper that, at every forward, adds s·B_e·A_e to every expert's weight (a new full-size
copy of the whole stack, kept until the backward) and then runs the experts' own Python loop over
the experts that received tokens.

The grouped path computes, for the tokens routed to expert e,
    y = x·W_eᵀ + s·(x·A_eᵀ)·B_eᵀ
without merging anything: the (token, expert) pairs are sorted by expert once per block, the
frozen weights run as one grouped GEMM over all experts and the adapter as two thin ones
(tokens × r), with torch.nn.functional.grouped_mm; where its kernel refuses the shapes (its rows
must be 16-byte aligned: fp32 ranks that are not a multiple of 4, say) the same products run as
one matmul per expert slice. Autograd differentiates it; the gradients are PEFT's (checked in
tests/core/engine/test_moe_training.py to 1e-4 in fp32).

Under `quantization: 4bit` the frozen expert stacks are stored NF4 after loading
(`quantize_grouped_experts`: bitsandbytes quantizes nn.Linear layers only, so transformers keeps 3-D
experts 16-bit) and dequantized one stack at a time, in the forward and again in the backward
(`FrozenExperts`: the frozen product's node saves no weight); blocks whose experts are not adapted
take the grouped path without LoRA for that (`group_plain_experts`).

It covers experts classes built with transformers' `use_experts_implementation` (its `_apply_gate`,
`is_transposed`, `has_bias`; tested: Qwen3-MoE, Mixtral, DeepSeek-V3, gpt-oss, Phi-3.5-MoE, LFM2-MoE,
Jamba) whose LoRA adapts `gate_up_proj` and/or `down_proj` with one active adapter; anything else
keeps PEFT's path and the fast path's report says why.
"""
from __future__ import annotations

import types

import torch

_GROUPED_MM = {"usable": hasattr(torch.nn.functional, "grouped_mm")}
_REFUSED: set[tuple] = set()            # layouts grouped_mm refused once: the loop from then on
ADAPTED = ("gate_up_proj", "down_proj")


def _is_wrapper(module) -> bool:
    return hasattr(module, "parameter_name") and hasattr(module, "lora_A") and hasattr(module, "base_layer")


def _unwrap(wrapper) -> tuple[torch.nn.Module, list]:
    """The experts module under a chain of ParamWrappers, and the wrappers (outermost first)."""
    chain, layer = [], wrapper
    while _is_wrapper(layer):
        chain.append(layer)
        layer = layer.base_layer
    return layer, chain


def _block_problem(base) -> str | None:
    """Why this experts module cannot run on the grouped path, or None."""
    if not all(hasattr(base, a) for a in ("_apply_gate", "gate_up_proj", "down_proj", "num_experts")):
        return f"{type(base).__name__} is not a transformers experts block"
    if not getattr(base, "has_gate", True) or getattr(base, "has_post_expert_norm", False):
        return f"{type(base).__name__} has no gate or a norm after the experts"
    if getattr(base, "_is_expert_parallel", False):
        return "expert parallelism"
    return None


def unsupported(wrapper) -> str | None:
    """Why this (outermost) ParamWrapper cannot take the grouped path, or None."""
    base, chain = _unwrap(wrapper)
    problem = _block_problem(base)
    if problem:
        return problem
    if any(w.parameter_name not in ADAPTED for w in chain):
        return "an adapted parameter other than gate_up_proj and down_proj"
    if any(getattr(w, "num_experts", 1) != base.num_experts for w in chain):
        return "an adapted parameter that is not a stack of the experts"
    return None


def _active_lora(chain) -> dict | None:
    """{parameter name: (A [E, r, in], B [E, out, r], scale)} of the one active adapter ({} with the
    adapters disabled: the base alone), or None when PEFT's own path must run (merged, several active)."""
    lora = {}
    if any(w.disable_adapters for w in chain):
        return {}
    for w in chain:
        active = w.active_adapters
        if w.merged or len(active) != 1:
            return None
        name = active[0]
        if name not in w.lora_A:
            continue
        e = w.num_experts
        a = w.lora_A[name].weight                                   # (E·r, in): expert-major rows
        b = w.lora_B[name].weight                                   # (out, r·E): rank-major columns
        lora[w.parameter_name] = (a.view(e, -1, a.shape[-1]), b.view(b.shape[0], -1, e).permute(2, 0, 1),
                                  float(w.scaling[name]))
    return lora


def _aligned(t: torch.Tensor) -> bool:
    size = t.element_size()
    return t.data_ptr() % 16 == 0 and all((s * size) % 16 == 0 for s in t.stride() if s != 1)


def _gmm(x: torch.Tensor, w: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    """Rows of x in expert groups (group e ends at offs[e]) times w[e] [E, in, out]. Which way it
    goes depends only on the shapes, strides and device, so a checkpointed layer recomputes it the
    same way."""
    key = (x.device.type, x.dtype, x.stride(), w.stride(), tuple(w.shape))
    if _GROUPED_MM["usable"] and key not in _REFUSED and _aligned(x) and _aligned(w):
        try:
            return torch.nn.functional.grouped_mm(x, w, offs=offs)
        except (RuntimeError, NotImplementedError):     # a device, dtype or layout without the kernel
            _REFUSED.add(key)
    parts, start = [], 0
    for e, end in enumerate(offs.tolist()):
        if end > start:
            parts.append(x[start:end] @ w[e])
        start = end
    return torch.cat(parts) if parts else x.new_zeros(0, w.shape[-1])


def _frozen_stack(base, name: str, dtype: torch.dtype) -> torch.Tensor:
    """The experts' frozen weights `name` as [E, in, out] in `dtype`: transient when stored NF4."""
    packed = base.__dict__.get("_nf4_experts", {}).get(name)
    if packed is not None:
        import bitsandbytes.functional as bnbf
        w = bnbf.dequantize_4bit(packed[0], packed[1]).to(dtype)
    else:
        w = getattr(base, name).to(dtype)
    return w if base.is_transposed else w.transpose(-2, -1)


class FrozenExperts(torch.autograd.Function):
    """x·W_e for the rows of each expert e with W frozen: the weights are read (NF4: dequantized) in
    the forward and again in the backward, and never saved."""

    @staticmethod
    def forward(ctx, x, offs, base, name):
        y = _gmm(x, _frozen_stack(base, name, x.dtype), offs)
        ctx.save_for_backward(offs)
        ctx.base, ctx.name = base, name
        return y

    @staticmethod
    def backward(ctx, grad):
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        (offs,) = ctx.saved_tensors
        w = _frozen_stack(ctx.base, ctx.name, grad.dtype)
        return _gmm(grad.contiguous(), w.transpose(-2, -1), offs), None, None, None


def _project(x, base, name: str, lora, offs) -> torch.Tensor:
    y = FrozenExperts.apply(x, offs, base, name)
    if lora is not None:
        a, b, scale = lora
        xa = _gmm(x, a.transpose(-2, -1).to(x.dtype), offs)                        # tokens × r
        y = y + scale * _gmm(xa, b.transpose(-2, -1).to(x.dtype).contiguous(), offs)
    return y


def grouped_experts(base, lora: dict, hidden: torch.Tensor, top_k_index: torch.Tensor,
                    top_k_weights: torch.Tensor) -> torch.Tensor:
    """What `base.forward(hidden, top_k_index, top_k_weights)` computes with the LoRA of `lora`."""
    k = top_k_index.shape[-1]
    experts = top_k_index.reshape(-1)
    order = torch.argsort(experts, stable=True)
    expert_of_row = experts[order]
    token = order // k
    offs = torch.cumsum(torch.bincount(experts, minlength=base.num_experts), 0).to(torch.int32)
    x = hidden[token]
    gate_up = _project(x, base, "gate_up_proj", lora.get("gate_up_proj"), offs)
    if getattr(base, "has_bias", False):
        gate_up = gate_up + base.gate_up_proj_bias[expert_of_row]
    h = base._apply_gate(gate_up).contiguous()
    y = _project(h, base, "down_proj", lora.get("down_proj"), offs)
    if getattr(base, "has_bias", False):
        y = y + base.down_proj_bias[expert_of_row]
    y = y * top_k_weights.reshape(-1)[order, None].to(y.dtype)
    return torch.zeros_like(hidden).index_add_(0, token, y.to(hidden.dtype))


def _grouped_forward(self, hidden_states, top_k_index=None, top_k_weights=None, *args, **kwargs):
    """The bound forward of an outermost experts ParamWrapper: grouped when it can be, PEFT's otherwise."""
    base, chain = _unwrap(self)
    lora = None if (args or kwargs or top_k_index is None) else _active_lora(chain)
    if lora is None:
        if "_nf4_experts" in base.__dict__:
            raise RuntimeError("the experts are stored NF4 for the grouped path, which takes one active, unmerged "
                               "adapter; PEFT's own path needs them 16-bit (ungroup_expert_layers restores them)")
        return self._peft_forward(hidden_states, top_k_index, top_k_weights, *args, **kwargs)
    return grouped_experts(base, lora, hidden_states, top_k_index, top_k_weights)


def group_expert_layers(model: torch.nn.Module) -> tuple[int, dict[str, int]]:
    """Give every eligible block of adapted experts the grouped forward: (blocks grouped, {why not: blocks})."""
    wrappers = [m for m in model.modules() if _is_wrapper(m) and getattr(m, "num_experts", 1) > 1]
    inner = {id(m.base_layer) for m in wrappers if _is_wrapper(m.base_layer)}
    grouped, skipped = 0, {}
    for wrapper in wrappers:
        if id(wrapper) in inner or hasattr(wrapper, "_peft_forward"):
            continue
        reason = unsupported(wrapper)
        if reason:
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        wrapper._peft_forward = wrapper.forward
        wrapper.forward = types.MethodType(_grouped_forward, wrapper)
        for w in _unwrap(wrapper)[1]:
            w._grouped_experts = True
        grouped += 1
    return grouped, skipped


def _plain_forward(self, hidden_states, top_k_index=None, top_k_weights=None, *args, **kwargs):
    """The bound forward of an experts block without LoRA (its experts not adapted), for NF4 storage."""
    if args or kwargs or top_k_index is None:
        return self._own_forward(hidden_states, top_k_index, top_k_weights, *args, **kwargs)
    return grouped_experts(self, {}, hidden_states, top_k_index, top_k_weights)


def group_plain_experts(model: torch.nn.Module) -> int:
    """The grouped forward (no LoRA) for every experts block whose experts are not adapted, so that
    they too can be stored NF4: the blocks grouped."""
    wrapped = {id(_unwrap(m)[0]) for m in model.modules() if _is_wrapper(m)}
    grouped = 0
    for module in model.modules():
        if (_is_wrapper(module) or id(module) in wrapped or "_own_forward" in module.__dict__
                or _block_problem(module) or getattr(module, "gate_up_proj").dim() != 3):
            continue
        module._own_forward = module.forward
        module.forward = types.MethodType(_plain_forward, module)
        module._grouped_experts = True
        grouped += 1
    return grouped


def _grouped_bases(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The experts modules on the grouped path (under an adapted block's wrappers, or plain)."""
    bases = []
    for module in model.modules():
        if "_peft_forward" in module.__dict__ and getattr(module, "_grouped_experts", False):
            bases.append(_unwrap(module)[0])
        elif "_own_forward" in module.__dict__:
            bases.append(module)
    return bases


def quantize_grouped_experts(model: torch.nn.Module) -> tuple[int, int, int]:
    """Store the frozen expert stacks of every grouped block NF4 (bitsandbytes, blocks of 64, nested
    statistics, as the 4-bit load quantizes linear layers) and free their 16-bit copies:
    (stacks quantized, bytes before, bytes after)."""
    import bitsandbytes.functional as bnbf
    stacks = before = after = 0
    for base in _grouped_bases(model):
        packed = base.__dict__.setdefault("_nf4_experts", {})
        for name in ADAPTED:
            param = getattr(base, name)
            if name in packed or param.dim() != 3:
                continue
            q, state = bnbf.quantize_4bit(param.data, blocksize=64, compress_statistics=True, quant_type="nf4")
            before += param.numel() * param.element_size()
            after += q.numel() * q.element_size() + state.absmax.numel() * state.absmax.element_size()
            packed[name] = (q, state)
            param.data = param.data.new_empty(0)
            stacks += 1
    return stacks, before, after


def ungroup_expert_layers(model: torch.nn.Module) -> None:
    """PEFT's (or transformers') own forward for every grouped experts block again, NF4 experts
    dequantized back."""
    for base in _grouped_bases(model):
        for name, (q, state) in base.__dict__.pop("_nf4_experts", {}).items():
            import bitsandbytes.functional as bnbf
            getattr(base, name).data = bnbf.dequantize_4bit(q, state)
    for module in model.modules():
        for own in ("_peft_forward", "_own_forward"):
            if own in module.__dict__ and getattr(module, "_grouped_experts", False):
                module.forward = module.__dict__.pop(own)
        if getattr(module, "_grouped_experts", False):
            del module._grouped_experts
