"""How much GPU memory a LoRA / QLoRA run needs at its peak, from config.json and safetensors headers
alone. Torch-free: the window calls it on every change of the form, `lorastudio fit` in well under
a second, and the train job before it loads anything.

The peak of a training step is at the end of the forward pass / the start of the backward pass:
every term below is alive then. Each term is named so that people can see where the memory goes:

  weights       the frozen base: NF4 with double quantization ≈ 0.5 B + absmax (1 B per 64
                weights, fp32 per 256 blocks); 8-bit = 1 B + an fp32 scale per output row; none =
                the compute dtype. Embeddings, norms, biases and the output head stay 16-bit; so do
                a mixture of experts' routers and 3-D experts (bitsandbytes quantizes nn.Linear only),
                except on the grouped path (training.fused_lora), which stores the experts NF4 after
                loading.
  lora          LoRA A and B in fp32 (4 B), their gradients (4 B) and AdamW's two moments (8 B); an
                adapted expert parameter has one A and B per expert (the targets report's count).
  activations   what the backward pass keeps, per token per layer, by memory mode:
                  none        every tensor a layer saves (inputs of each matmul, attention, MLP);
                  checkpoint  each layer's input (hidden × dtype) + one layer recomputed;
                  lean        the inputs live in pinned host memory: ~2 layers' inputs + one layer.
                The analytic count is multiplied by a per-architecture constant measured on a GPU
                (core/fit/calibration.py).
                A mixture-of-experts layer keeps, per token, the router's logits and, for each of the
                top-k experts the token is routed to, its gathered input, gate/up, act, product and
                weighted output (moe_intermediate_size), plus the shared experts' MLP.
  experts       with training.fused_lora false, PEFT adapts 3-D expert parameters by computing
                W + B·A for the whole expert stack at every forward (its ParamWrapper): that merged
                copy is alive until the layer's backward (every MoE layer without checkpointing, one
                with), with its gradient. The grouped path (engine/training/expert_lora.py) merges
                nothing: a routed copy keeps x·Aᵀ (r values) per adapted expert parameter.
  loss          logits and cross-entropy: vocab × tokens × (bf16 logits + fp32 copy + log-softmax +
                its gradient) when unfused; a chunk of the vocabulary at a time when fused (Liger).
  scratch       bitsandbytes dequantizes one weight at a time in forward and backward; runtime
                buffers (rotary tables, cuBLAS workspace).
  context       the CUDA context and kernels (not in torch's "allocated" figure).
  slack         the caching allocator's fragmentation: reserved − allocated.

Tokens per micro-batch are batch_size × seq_len: the longest possible padded batch, or the token
budget of a packed one (data.packing), which always fills it.
"""
from __future__ import annotations

import functools
import importlib.util
import re
from dataclasses import dataclass, field, replace
from typing import Any

from lorastudio.core.config import RunConfig
from lorastudio.core.fit import vision_memory
from lorastudio.core.formatting import format_bytes
from lorastudio.core.models.info import ModelInfo
from lorastudio.core.models.vision import added_lora_params
from lorastudio.core.models.targets import TargetReport, discover_targets, linear_modules, memory_name

GIB = 1 << 30
_LAYER = re.compile(r"\.(\d+)\.")
MODES = ("none", "checkpoint", "lean")              # fastest first
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)           # 4-bit codes + uint8 absmax + fp32 second-level absmax
LORA_STATE_BYTES = 4 + 4 + 8                        # fp32 weight, gradient, AdamW exp_avg + exp_avg_sq
RUNTIME_BUFFERS = 96 << 20                          # rotary tables, masks, cuBLAS workspace, small tensors
# Not in torch's "allocated": the CUDA context and kernel images, and the allocator's fragmentation.
CUDA_CONTEXT = 600 << 20
ALLOCATOR_SLACK = 0.08
# DPO/ORPO score answers through the head a chunk at a time: this many logits exist at once
# (core/engine/preference.py reads it from here: the memory model must stay torch-free).
PAIR_LOGIT_ELEMENTS = 1 << 25
# With checkpointing, a dense MLP in rows longer than this is recomputed this many tokens at a time
# (core/engine/memory_modes.ChunkedForward): its hidden values exist for one chunk only.
MLP_CHUNK_TOKENS = 8192


@dataclass(frozen=True)
class Term:
    key: str            # weights | lora | activations | loss | scratch | context | slack
    label: str          # "Base weights (4-bit NF4)"
    bytes: int
    detail: str         # how it was counted, for tooltips and `lorastudio fit`
    allocated: bool = True      # part of torch's max_memory_allocated (context and slack are not)

    def to_dict(self) -> dict:
        return {"key": self.key, "label": self.label, "bytes": self.bytes, "detail": self.detail,
                "allocated": self.allocated}


@dataclass(frozen=True)
class Estimate:
    terms: tuple[Term, ...]
    mode: str                    # the memory mode estimated (never "auto")
    tokens: int                  # per micro-batch
    fused_loss: bool
    on_gpu: bool
    constant: float = 1.0        # the activation constant used
    constant_source: str = "prior"

    @property
    def allocated(self) -> int:
        """Comparable with torch.cuda.max_memory_allocated."""
        return sum(t.bytes for t in self.terms if t.allocated)

    @property
    def peak(self) -> int:
        """What the device must hold: allocated + context + slack."""
        return sum(t.bytes for t in self.terms)

    def term(self, key: str) -> Term:
        return next(t for t in self.terms if t.key == key)

    def fits(self, capacity: int | None) -> bool:
        return capacity is None or self.peak <= capacity

    def verdict(self, capacity: int | None, target: str = "") -> str:
        """ "Estimated peak 7.2 GiB of 24.0 GiB — fits" """
        if capacity is None:
            return f"Estimated peak {format_bytes(self.peak)}"
        what = f" ({target})" if target else ""
        return (f"Estimated peak {format_bytes(self.peak)} of {format_bytes(capacity)}{what} — "
                + ("fits" if self.fits(capacity) else "does not fit"))

    def to_dict(self, capacity: int | None = None) -> dict:
        return {"peak": self.peak, "allocated": self.allocated, "mode": self.mode, "tokens": self.tokens,
                "fused_loss": self.fused_loss, "activation_constant": self.constant,
                "constant_source": self.constant_source, "capacity": capacity,
                "fits": self.fits(capacity) if capacity is not None else None,
                "terms": [t.to_dict() for t in self.terms]}


@dataclass(frozen=True)
class Shape:
    """The decoder's dimensions, from config.json (and the tensor names for the MLP's kind)."""
    model_type: str
    hidden: int
    intermediate: int
    layers: int
    q_dim: int
    kv_dim: int
    vocab: int
    gated_mlp: bool
    experts: int = 0               # routed experts per MoE layer (0: a dense model)
    top_k: int = 0                 # experts each token is routed to
    expert_intermediate: int = 0   # one expert's intermediate size
    shared_intermediate: int = 0   # the shared experts' intermediate size, all together
    moe_layers: int = 0            # layers with experts (DeepSeek's first layers are dense)

    @classmethod
    def of(cls, info: ModelInfo) -> "Shape":
        cfg = dict(info.config)
        cfg.update({k: v for k, v in (cfg.get("text_config") or {}).items() if k not in cfg or k == "model_type"})
        hidden = _first(cfg, "hidden_size", "n_embd", "d_model", default=0)
        heads = _first(cfg, "num_attention_heads", "n_head", default=1) or 1
        head_dim = cfg.get("head_dim") or (hidden // heads if hidden else 0)
        kv_heads = _first(cfg, "num_key_value_heads", "n_head_kv", default=heads) or heads
        intermediate = _first(cfg, "intermediate_size", "n_inner", "ffn_dim", default=0) or 4 * hidden
        experts = _first(cfg, "num_experts", "num_local_experts", "n_routed_experts", default=0) or 0
        expert_i = _first(cfg, "moe_intermediate_size", default=0) or intermediate
        shared_i = (_first(cfg, "shared_expert_intermediate_size", default=0)
                    or (_first(cfg, "n_shared_experts", default=0) or 0) * expert_i)
        moe_layers = len({hit.group(1) for hit in (_LAYER.search(n) for n in info.tensors if ".experts." in n) if hit})
        return cls(model_type=info.model_type, hidden=hidden, intermediate=intermediate,
                   layers=_first(cfg, "num_hidden_layers", "n_layer", "num_layers", default=0),
                   q_dim=heads * head_dim, kv_dim=kv_heads * head_dim,
                   vocab=_first(cfg, "vocab_size", default=0),
                   gated_mlp=any("gate" in name or ".w3." in name for name in info.tensors),
                   experts=experts if moe_layers else 0, top_k=_first(cfg, "num_experts_per_tok", default=0) or 0,
                   expert_intermediate=expert_i, shared_intermediate=shared_i, moe_layers=moe_layers)


def _first(cfg: dict, *keys: str, default: Any = None) -> Any:
    for key in keys:
        if isinstance(cfg.get(key), int) and not isinstance(cfg.get(key), bool):
            return cfg[key]
    return default


@dataclass
class Knobs:
    """What the estimate depends on besides the model (the config's settings, resolved)."""
    quantization: str
    batch_size: int
    seq_len: int
    mode: str                       # none | checkpoint | lean
    r: int
    targets: Any
    dora: bool
    dropout: float
    act_bytes: int                  # 2 for bf16/fp16, 4 for fp32
    on_gpu: bool
    fused_loss: bool
    packing: bool = False
    extras: dict = field(default_factory=dict)

    pairs: bool = False             # dpo / orpo: a chosen and a rejected answer per example
    fused_lora: bool = False        # the fused QLoRA path: quantized weights dequantized for bf16 GEMMs
    grouped_experts: bool = False   # the experts' LoRA on the grouped path (training.fused_lora), not PEFT's merge
    vision: str = "none"            # lora.vision: none | projector | all (a vision-language model's other parts)
    image_patches: int = 0          # the vision tower's patches in the largest micro-batch (core/fit/vision_memory.py)
    image_words: str = ""

    @property
    def tokens(self) -> int:
        return self.batch_size * self.seq_len * (2 if self.pairs else 1)


_MEMO: dict[tuple, tuple[tuple, Any]] = {}


def _memo(key: tuple, owners: tuple, compute):
    """What depends only on the model (its headers, its targets) is computed once per model
    object: the window estimates at every keystroke. `owners` are kept to make `id()` safe."""
    hit = _MEMO.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[0], owners)):
        return hit[1]
    if len(_MEMO) > 64:
        _MEMO.clear()
    value = compute()
    _MEMO[key] = (owners, value)
    return value


@functools.lru_cache(maxsize=1)
def fused_loss_available() -> bool:
    """Liger's fused linear + cross-entropy is used on CUDA when liger-kernel is installed
    (core/engine/model_loading.py); asked of the import system without importing it."""
    try:
        return importlib.util.find_spec("liger_kernel") is not None
    except (ImportError, ValueError):
        return False


def knobs_of(config: RunConfig, mode: str, on_gpu: bool = True, fused_loss: bool | None = None) -> Knobs:
    if mode not in MODES:
        raise ValueError(f"memory mode {mode!r} is not one of {MODES}")
    t, lora = config.training, config.lora
    cpu = config.device == "cpu" or not on_gpu
    return Knobs(quantization=config.quantization, batch_size=t.batch_size, seq_len=t.seq_len, mode=mode,
                 r=lora.r, targets=lora.targets, dora=lora.use_dora, dropout=lora.dropout,
                 act_bytes=4 if config.compute_dtype == "fp32" or (cpu and config.compute_dtype == "auto") else 2,
                 on_gpu=not cpu,
                 fused_loss=(not cpu) and (fused_loss_available() if fused_loss is None else fused_loss),
                 packing=bool(getattr(config.data, "packing", False)),
                 pairs=getattr(t, "method", "sft") in ("dpo", "orpo"),
                 fused_lora=(not cpu) and getattr(t, "fused_lora", True) and lora.dropout == 0 and not lora.use_dora,
                 grouped_experts=bool(getattr(t, "fused_lora", True)),
                 vision=getattr(lora, "vision", "none"))


# ---- the terms ------------------------------------------------------------------------------
def weight_bytes(info: ModelInfo, report: TargetReport | None, quantization: str, dense_bytes: int = 2,
                 nf4_blocks: frozenset = frozenset()) -> tuple[int, dict]:
    """Bytes of the frozen base, and how many parameters went each way. `nf4_blocks`: the MoE blocks
    whose experts the grouped path stores NF4 after loading (4-bit, training.fused_lora)."""
    linear, outputs = (report.linear_modules, report.output_modules) if report else linear_modules(info)
    tied = info.tie_word_embeddings
    quantized = dense = 0
    total = 0.0
    for name, (_dtype, shape) in info.tensors.items():
        module = name[: -len(".weight")] if name.endswith(".weight") else None
        if tied and module in outputs and len(info.tensors) > 1 and _has_embedding(info):
            continue                                  # the head is the embedding: counted once
        n = _numel(shape)
        if nf4_blocks and _expert_block(name, info.model_type) in nf4_blocks:
            quantized += n
            total += n * NF4_BYTES
        elif quantization != "none" and module in linear and module not in outputs and not _router(report, module, info.model_type):
            quantized += n
            total += n * NF4_BYTES if quantization == "4bit" else n + 4 * shape[0]
        else:
            dense += n
            total += n * dense_bytes
    return int(total), {"quantized": quantized, "dense": dense}


def moe_words(report: TargetReport, nf4_blocks: frozenset) -> str:
    if not report.is_moe:
        return ""
    return ", routers" if nf4_blocks else ", experts, routers"


def _expert_block(name: str, model_type: str) -> str | None:
    """The MoE block whose expert weights `name` holds (per-expert or 3-D, not biases), in memory's names."""
    if ".experts." not in name or name.endswith("_bias"):
        return None
    return memory_name(model_type, name).rsplit(".experts.", 1)[0]


def _router(report: TargetReport | None, module: str | None, model_type: str) -> bool:
    """Routers are custom modules in transformers 5: bitsandbytes leaves them (and the experts) 16-bit."""
    return report is not None and module is not None and memory_name(model_type, module) in report.routers


def _has_embedding(info: ModelInfo) -> bool:
    return any("embed" in n or n.endswith("wte.weight") for n in info.tensors)


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def adapted_modules(report: TargetReport, targets) -> list[tuple[int, int]]:
    """(d_in, d_out) of the adapted linear modules (the experts' 3-D parameters are not among them)."""
    return [report.linear_modules[m] for m in report.matching_modules(targets)]


def moe_mlp_elements(shape: Shape) -> float:
    """Values one MoE layer's MLP saves per token: input and norm, the router's logits and
    probabilities, per routed expert (top-k) the gathered input, gate and up, act(gate), their
    product and the weighted output; the shared experts as a dense gated MLP."""
    h, i = shape.hidden, shape.expert_intermediate
    return 2 * h + 2 * shape.experts + shape.top_k * (2 * h + 4 * i) + 4 * shape.shared_intermediate


def layer_activation_elements(shape: Shape, adapted_per_layer: list[tuple[int, int]], r: int,
                              dropout: float, moe: bool = False) -> float:
    """Elements one decoder layer saves for its backward pass, per token (no checkpointing).

    Attention: the block's input and its norm, q, k, v and their rotary outputs, SDPA's saved
    q/k/v and output, o_proj's input. MLP: its input and norm, gate, up, act(gate), their product.
    LoRA: A's and B's inputs (r each), plus a dropout output per adapted module when dropout > 0
    (PEFT applies a separate dropout per module)."""
    h, q, kv, i = shape.hidden, shape.q_dim, shape.kv_dim, shape.intermediate
    attention = 2 * h + 4 * q + 4 * kv + q
    mlp = moe_mlp_elements(shape) if moe else 2 * h + (4 * i if shape.gated_mlp else 2 * i)
    lora = sum(2 * r + (d_in * 1.5 if dropout > 0 else 0) for d_in, _d_out in adapted_per_layer)
    return attention + mlp + lora


def estimate(config: RunConfig, info: ModelInfo, mode: str | None = None, *, report: TargetReport | None = None,
             on_gpu: bool = True, fused_loss: bool | None = None, calibration=None) -> Estimate:
    """The peak of `config` on `info` in memory mode `mode` (default: the config's; for auto, the
    mode choose_memory_mode would pick is the caller's business — this one estimates "checkpoint")."""
    from lorastudio.core.fit.calibration import load_calibration
    chosen = mode or config.training.memory_mode
    if chosen == "auto":
        chosen = "checkpoint"
    k = knobs_of(config, chosen, on_gpu=on_gpu, fused_loss=fused_loss)
    tower = _memo(("tower", id(info)), (info,), lambda: vision_memory.tower_of(info))
    if tower is not None:
        data = config.data
        load = vision_memory.image_load(str(data.path or ""), int(getattr(data, "max_image_pixels", 0) or 0))
        k.image_patches, k.image_words = vision_memory.micro_batch_patches(tower, load, k.batch_size, k.seq_len)
    return estimate_knobs(k, info, report or discover_targets(info), calibration or load_calibration())


def estimate_knobs(k: Knobs, info: ModelInfo, report: TargetReport, calibration) -> Estimate:
    shape = _memo(("shape", id(info)), (info,), lambda: Shape.of(info))
    T, L, b = k.tokens, max(shape.layers, 1), k.act_bytes
    terms: list[Term] = []

    dense_bytes = 2 if k.on_gpu or k.act_bytes == 2 else 4
    targets_key = k.targets if isinstance(k.targets, str) else tuple(k.targets)
    nf4_blocks = frozenset(p.rsplit(".experts.", 1)[0] for p in report.expert_params) \
        if k.quantization == "4bit" and k.grouped_experts else frozenset()     # adapted or not
    w_bytes, split = _memo(("weights", id(info), id(report), k.quantization, dense_bytes, nf4_blocks), (info, report),
                           lambda: weight_bytes(info, report, k.quantization, dense_bytes, nf4_blocks))
    qname = {"4bit": "4-bit NF4", "8bit": "8-bit", "none": "16-bit"}[k.quantization]
    terms.append(Term("weights", f"Base weights ({qname})", w_bytes,
                      f"{split['quantized']:,} quantized + {split['dense']:,} 16-bit parameters "
                      f"(embeddings, norms, head{moe_words(report, nf4_blocks)})"
                      if k.quantization != "none" else
                      f"{split['dense']:,} parameters × {dense_bytes} B"))

    adapted = _memo(("adapted", id(report), targets_key), (report,), lambda: adapted_modules(report, k.targets))
    experts = _memo(("experts", id(report), targets_key), (report,),
                    lambda: [report.expert_params[p] for p in report.matching_experts(k.targets)])
    vision = added_lora_params(info, k.r, k.dora, k.vision) if k.vision != "none" else 0
    lora_params = (sum(k.r * (d_in + d_out) + (d_out if k.dora else 0) for d_in, d_out in adapted)
                   + sum(e * k.r * (d_in + d_out) for e, d_in, d_out in experts) + vision)
    terms.append(Term("lora", "LoRA weights, gradients, AdamW", lora_params * LORA_STATE_BYTES,
                      f"{lora_params:,} trainable × {LORA_STATE_BYTES} B (fp32 weight, grad, 2 moments)"
                      + (f"; {len(experts)} expert parameters with one A and B per expert" if experts else "")
                      + (f"; {vision:,} in the {'projector' if k.vision == 'projector' else 'projector and vision tower'}"
                         if vision else "")))

    per_layer = [m for m in adapted]          # modules per layer: spread evenly over the layers
    per_layer_share = per_layer[: max(1, len(per_layer) // L)] if per_layer else []
    layer_elems = layer_activation_elements(shape, per_layer_share, k.r, k.dropout)
    moe_layers = min(shape.moe_layers, L) if shape.experts else 0
    moe_elems = layer_activation_elements(shape, per_layer_share, k.r, k.dropout, moe=True) if moe_layers else 0
    if moe_layers and experts and k.grouped_experts:     # x·Aᵀ of every routed copy, per adapted expert parameter
        moe_elems += shape.top_k * k.r * len(experts) / moe_layers
    layer_bytes = max(layer_elems, moe_elems) * b * T     # one layer (the largest), everything saved
    chunked = k.mode != "none" and k.seq_len > MLP_CHUNK_TOKENS and moe_layers < L and shape.intermediate
    if chunked:            # in rows that long the dense MLPs' hidden values are recomputed a chunk at a time
        hidden_values = 4 * shape.intermediate if shape.gated_mlp else 2 * shape.intermediate
        dense_recompute = (layer_elems - hidden_values) * T + hidden_values * min(T, MLP_CHUNK_TOKENS)
        layer_bytes = max(dense_recompute, moe_elems * T if moe_layers else 0) * b
    if k.mode == "none":
        stored = ((L - moe_layers) * layer_elems + moe_layers * moe_elems) * b * T
        how = f"{L} layers × {layer_elems:,.0f} values/token × {b} B × {T:,} tokens"
        if moe_layers:
            dense = f"{L - moe_layers} dense layers × {layer_elems:,.0f} + " if L > moe_layers else ""
            how = (f"{dense}{moe_layers} MoE layers × {moe_elems:,.0f} values/token (top-{shape.top_k} of "
                   f"{shape.experts} experts) × {b} B × {T:,} tokens")
        recompute = 0.0
    else:
        kept_layers = L if k.mode == "checkpoint" else min(L, 2)
        stored = kept_layers * shape.hidden * b * T
        recompute = layer_bytes * 1.5                  # one layer's activations and their gradients
        where = "on the GPU" if k.mode == "checkpoint" else "on the GPU (the rest in pinned host memory)"
        how = (f"{kept_layers} layer inputs × {shape.hidden:,} × {b} B × {T:,} tokens {where} "
               f"+ one layer recomputed" + (f" (an MoE layer: top-{shape.top_k} of {shape.experts} experts)"
                                            if moe_layers else "")
               + (f", its MLP {MLP_CHUNK_TOKENS:,} tokens at a time" if chunked else ""))
    head = 2 * shape.hidden * b * T                    # final norm's input and output
    constant, source = calibration.constant(shape.model_type, k.mode, k.quantization, k.on_gpu)
    act = int((stored + recompute + head) * constant)
    terms.append(Term("activations", f"Activations ({k.mode})", act, how + f"; × {constant:.3g} ({source})"))

    if k.pairs:
        chunk = max(16, PAIR_LOGIT_ELEMENTS // max(shape.vocab, 1))
        loss = int(chunk * shape.vocab * 8 + T * shape.hidden * b * 2)
        loss_how = (f"answer log-probabilities in chunks of {chunk:,} tokens × {shape.vocab:,} vocab "
                    f"(bf16 + fp32 in place) + the answers' hidden states and their gradient")
    elif k.fused_loss:
        loss = int(T * shape.hidden * 12)
        loss_how = f"fused linear + cross-entropy: chunks of ≈ {T:,} × {shape.hidden:,} values"
    else:
        loss = int(T * shape.vocab * (b + 12))
        loss_how = f"{T:,} tokens × {shape.vocab:,} vocab × {b + 12} B (logits, fp32 copy, log-softmax, grad)"
    terms.append(Term("loss", "Logits and loss", loss, loss_how))
    if k.image_patches:
        tower = _memo(("tower", id(info)), (info,), lambda: vision_memory.tower_of(info))
        image_bytes, image_how = vision_memory.vision_bytes(tower, k.image_patches, k.vision, k.mode, k.r, b)
        terms.append(Term("images", "Images (vision tower, projector)", image_bytes, f"{image_how}; {k.image_words}"))
    if experts and not k.grouped_experts:
        terms.append(expert_merge_term(experts, max(moe_layers, 1), k.mode, dense_bytes))

    quantized = _memo(("quantized", id(report)), (report,), lambda: [
        s for m, s in report.linear_modules.items() if m not in report.output_modules and m not in report.routers])
    largest = max((d_in * d_out for d_in, d_out in quantized), default=0)
    scratch = (RUNTIME_BUFFERS if k.on_gpu else 0) + (2 * largest * 2 if k.quantization != "none" else 0)
    if nf4_blocks:                                     # one NF4 expert stack dequantized at a time
        scratch += max(e * d_in * d_out for e, d_in, d_out in report.expert_params.values()) * dense_bytes
    if k.quantization == "8bit" and not k.fused_lora:
        widest = max((d_out for _d_in, d_out in quantized), default=0)
        scratch += T * widest * 6                      # int32 matmul output + its fp16 dequantization
    terms.append(Term("scratch", "Dequantization and buffers", scratch,
                      "one dequantized weight in forward and one in backward, runtime buffers"))
    if k.on_gpu:
        allocated = sum(t.bytes for t in terms)
        terms.append(Term("context", "CUDA context", CUDA_CONTEXT, "driver, kernels, cuBLAS handles", False))
        terms.append(Term("slack", "Allocator slack", int(allocated * ALLOCATOR_SLACK),
                          f"{ALLOCATOR_SLACK:.0%} of allocated: the caching allocator's fragmentation", False))
    return Estimate(tuple(terms), k.mode, T, k.fused_loss, k.on_gpu, constant, source)


def expert_merge_term(experts: list[tuple[int, int, int]], moe_layers: int, mode: str, dense_bytes: int) -> Term:
    """PEFT's merged expert weights (W + B·A over the whole stack, in the weights' dtype): every MoE
    layer's copy until its backward without checkpointing, one layer's with; plus that layer's
    gradient of the merged copy and one full-size gradient of an expert's slice being added into it."""
    per_layer = sum(e * d_in * d_out for e, d_in, d_out in experts) / moe_layers
    copies = (moe_layers if mode == "none" else 1) + 2
    return Term("experts", "Experts' merged LoRA weights (PEFT)", int(copies * per_layer * dense_bytes),
                f"{copies} × {per_layer:,.0f} expert weights of a layer × {dense_bytes} B: PEFT adds B·A to every "
                "adapted expert stack at each forward (its ParamWrapper)")


def with_settings(config: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """A copy of `config` with dotted keys set ("training.batch_size": 2). Validated as usual."""
    top, sections = {}, {}
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if name:
            sections.setdefault(section, {})[name] = value
        else:
            top[key] = value
    changed = {s: replace(getattr(config, s), **values) for s, values in sections.items()}
    return replace(config, **top, **changed)


def as_on_gpu(config: RunConfig) -> RunConfig:
    """The config as it would train on a GPU: `device: cpu` becomes auto (a what-if), the rest stays."""
    return with_settings(config, {"device": "auto"}) if config.device == "cpu" else config
