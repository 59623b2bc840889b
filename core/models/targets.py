"""LoRA target discovery from safetensors headers alone. Torch-free.

A LoRA adapter on a linear map d_in → d_out adds A (r × d_in) and B (d_out × r):
r·(d_in + d_out) parameters per adapted module. For Llama-3.2-1B's q_proj (2048 → 2048) at r = 8
that is 8 × 4096 = 32,768 per layer, × 16 layers = 524,288. DoRA adds a magnitude vector of d_out.

A "linear-like" module is one whose `.weight` is a 2-D tensor and which is not an embedding.
GPT-2's Conv1D stores its weight transposed (d_in × d_out); the count is symmetric in d_in and
d_out, so it needs no special case (only the shown shape is swapped).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from lorastudio.core.models.info import ModelInfo
from lorastudio.core.formatting import format_count

EMBEDDING_NAMES = {"embed_tokens", "wte", "wpe", "word_embeddings", "position_embeddings",
                   "token_type_embeddings", "embed_positions", "embeddings", "tok_embeddings",
                   "embed_in", "shared", "embedding"}
OUTPUT_NAMES = {"lm_head", "embed_out"}
ATTENTION_NAMES = {"q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "query_key_value", "c_attn",
                   "Wqkv", "query", "key", "value", "out_proj", "wq", "wk", "wv", "wo", "q", "k", "v", "o"}
MLP_NAMES = {"gate_proj", "up_proj", "down_proj", "gate_up_proj", "w1", "w2", "w3", "c_fc", "fc1",
             "fc2", "fc_in", "fc_out", "dense_h_to_4h", "dense_4h_to_h", "wi", "wi_0", "wi_1"}
CONV1D_MODEL_TYPES = {"gpt2"}
GROUPS = ("attention", "mlp", "other")
_LAYER_INDEX = re.compile(r"\.(\d+)\.")


@dataclass
class Target:
    name: str                    # what goes into lora.targets (a suffix, or parent.suffix)
    group: str                   # attention | mlp | other
    modules: list[str] = field(default_factory=list)   # full module names it matches
    shapes: list[tuple[int, int]] = field(default_factory=list)  # (d_in, d_out) per module
    layers: int = 0

    @property
    def d_in(self) -> int:
        return self.shapes[0][0]

    @property
    def d_out(self) -> int:
        return self.shapes[0][1]

    def lora_params(self, r: int, dora: bool = False) -> int:
        return sum(r * (i + o) + (o if dora else 0) for i, o in self.shapes)


@dataclass
class TargetReport:
    model: str
    total_params: int
    targets: list[Target]
    linear_modules: dict[str, tuple[int, int]]   # every linear-like module -> (d_in, d_out)
    output_modules: set[str]

    def names(self) -> list[str]:
        return [t.name for t in self.targets]

    def grouped(self) -> dict[str, list[Target]]:
        return {g: [t for t in self.targets if t.group == g] for g in GROUPS}

    def matching_modules(self, selection: list[str] | str) -> list[str]:
        """The module names PEFT will adapt for `selection` (same matching rule as PEFT's)."""
        if selection == "all-linear":
            return [m for m in self.linear_modules if m not in self.output_modules]
        chosen = []
        for module in self.linear_modules:
            if any(module == t or module.endswith("." + t) for t in selection):
                chosen.append(module)
        return chosen

    def unknown(self, selection: list[str] | str) -> list[str]:
        if selection == "all-linear":
            return []
        return [t for t in selection if not any(m == t or m.endswith("." + t) for m in self.linear_modules)]

    def lora_params(self, selection: list[str] | str, r: int, dora: bool = False) -> int:
        return sum(r * (i + o) + (o if dora else 0)
                   for i, o in (self.linear_modules[m] for m in self.matching_modules(selection)))

    def to_dict(self, r: int, dora: bool = False) -> dict:
        return {"model": self.model, "total_params": self.total_params, "rank": r, "dora": dora,
                "all_linear_params": self.lora_params("all-linear", r, dora),
                "targets": [{"name": t.name, "group": t.group, "modules": len(t.modules),
                             "layers": t.layers, "d_in": t.d_in, "d_out": t.d_out,
                             "lora_params": t.lora_params(r, dora)} for t in self.targets]}


def _group_of(parts: list[str]) -> str:
    parents = [p.lower() for p in parts[:-1]]
    if any("attn" in p or "attention" in p for p in parents):
        return "attention"
    if any(p in ("mlp", "feed_forward", "ffn", "moe", "experts", "block_sparse_moe") or "mlp" in p
           for p in parents):
        return "mlp"
    if parts[-1] in ATTENTION_NAMES:
        return "attention"
    if parts[-1] in MLP_NAMES:
        return "mlp"
    return "other"


def linear_modules(info: ModelInfo) -> tuple[dict[str, tuple[int, int]], set[str]]:
    """Every linear-like module -> (d_in, d_out), and the output-head modules among them."""
    conv1d = info.model_type in CONV1D_MODEL_TYPES
    found: dict[str, tuple[int, int]] = {}
    for name, (_dtype, shape) in info.tensors.items():
        if not name.endswith(".weight") or len(shape) != 2:
            continue
        module = name[: -len(".weight")]
        if module.split(".")[-1] in EMBEDDING_NAMES:
            continue
        d_out, d_in = shape
        if conv1d and module.split(".")[-1] not in OUTPUT_NAMES:
            d_in, d_out = shape
        found[module] = (d_in, d_out)
    outputs = {m for m in found if m.split(".")[-1] in OUTPUT_NAMES}
    if not outputs and info.tie_word_embeddings:
        # A tied head is not stored in the file but exists in the model: vocab × hidden.
        embed = next(((n, s) for n, (_d, s) in info.tensors.items() if len(s) == 2 and
                      n.endswith(".weight") and n.split(".")[-2] in ("embed_tokens", "wte", "word_embeddings")),
                     None)
        if embed:
            found["lm_head"] = (embed[1][1], embed[1][0])
            outputs = {"lm_head"}
    return found, outputs


def discover_targets(info: ModelInfo) -> TargetReport:
    modules, outputs = linear_modules(info)
    by_suffix: dict[str, list[str]] = {}
    for m in modules:
        by_suffix.setdefault(m.split(".")[-1], []).append(m)
    targets: dict[str, Target] = {}
    for suffix, mods in by_suffix.items():
        groups = {_group_of(m.split(".")) for m in mods}
        for m in mods:
            parts = m.split(".")
            # A suffix used in two groups (GPT-2's c_proj in attn and mlp) is offered per parent.
            name = suffix if len(groups) == 1 or len(parts) < 2 else f"{parts[-2]}.{suffix}"
            t = targets.setdefault(name, Target(name=name, group=_group_of(parts)))
            t.modules.append(m)
            t.shapes.append(modules[m])
    for t in targets.values():
        indices = {mt.group(1) for mt in (_LAYER_INDEX.search(m) for m in t.modules) if mt}
        t.layers = len(indices) if indices else len(t.modules)
    order = {g: i for i, g in enumerate(GROUPS)}
    ordered = sorted(targets.values(), key=lambda t: (order[t.group], _natural_rank(t.name), t.name))
    return TargetReport(model=info.source, total_params=info.num_parameters, targets=ordered,
                        linear_modules=modules, output_modules=outputs)


_CANONICAL = ["q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "c_attn", "query_key_value",
              "gate_proj", "up_proj", "down_proj", "c_fc", "c_proj"]


def _natural_rank(name: str) -> int:
    base = name.split(".")[-1]
    return _CANONICAL.index(base) if base in _CANONICAL else len(_CANONICAL)




def trainable_line(report: TargetReport, selection, r: int, dora: bool = False) -> str:
    """'Trainable: 4.2 M of 1.24 B parameters (0.34 %)' — the live line in the window and CLI."""
    lora = report.lora_params(selection, r, dora)
    total = report.total_params + lora
    pct = 100.0 * lora / total if total else 0.0
    return f"Trainable: {format_count(lora)} of {format_count(total)} parameters ({pct:.2f} %)"
