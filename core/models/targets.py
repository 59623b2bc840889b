"""LoRA target discovery from safetensors headers alone. Torch-free.

A LoRA adapter on a linear map d_in → d_out adds A (r × d_in) and B (d_out × r):
r·(d_in + d_out) parameters per adapted module. For Llama-3.2-1B's q_proj (2048 → 2048) at r = 8
that is 8 × 4096 = 32,768 per layer, × 16 layers = 524,288. DoRA adds a magnitude vector of d_out.

Mixture-of-experts models (issue 28): transformers 5 holds a layer's experts as 3-D parameters
(`mlp.experts.gate_up_proj` [E, 2I, H], `mlp.experts.down_proj` [E, H, I]), fused at load time
from the checkpoint's per-expert tensors (`experts.N.gate_proj` / `w1`..`w3`, see transformers'
conversion_mapping); PEFT adapts them through `target_parameters`, E LoRA pairs per parameter:
E·r·(d_in + d_out). The report lists them by those in-memory names (group "experts"), with the
routers (group "router": never adapted by all-linear, as PEFT's all-linear leaves them), the shared
experts and the dense MLPs. `peft_targets` says what goes to PEFT as modules and as parameters.

A "linear-like" module is one whose `.weight` is a 2-D tensor and which is not an embedding.
GPT-2's Conv1D stores its weight transposed (d_in × d_out); the count is symmetric in d_in and
d_out, so it needs no special case (only the shown shape is swapped).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from lorastudio.core.models.info import ModelInfo
from lorastudio.core.models.vision import part_of, vision_family
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
GROUPS = ("attention", "mlp", "shared_experts", "experts", "router", "other")
_LAYER_INDEX = re.compile(r"\.(\d+)\.")

# Model types whose per-expert checkpoint tensors transformers 5.25 fuses into 3-D parameters at
# load (its conversion_mapping: the "mixtral" and "qwen2_moe" patterns); PEFT rewrites target names
# for the same types (peft/utils/transformers_weight_conversion.py).
MIXTRAL_STYLE = {"mixtral", "minimax", "minimax_m2", "phimoe"}
FUSED_EXPERT_TYPES = MIXTRAL_STYLE | {
    "qwen2_moe", "qwen3_moe", "qwen3_next", "deepseek_v2", "deepseek_v3", "deepseek_v32", "dots1", "ernie4_5_moe",
    "glm4_moe", "glm4_moe_lite", "glm_moe_dsa", "afmoe", "longcat_flash", "solar_open", "hunyuan_v1_moe", "flex_olmo",
    "olmoe", "exaone_moe", "cohere2_moe", "sarvam_mla", "mellum", "beam", "jamba", "lfm2_moe"}
LEAF_RENAMES = {"phimoe": {"gate": "router"}}        # phimoe's `.gate.weight` -> `.router.weight`
# Mixtures of experts whose experts are mapped above (held as in the checkpoint: gpt-oss). Another
# model type with experts holds them under names of its own conversion: refused, not guessed.
KNOWN_MOE_TYPES = FUSED_EXPERT_TYPES | {"gpt_oss"}
FUSED_EXPERT_LEAVES = {"gate_proj": "gate_up_proj", "up_proj": "gate_up_proj", "w1": "gate_up_proj",
                       "w3": "gate_up_proj", "down_proj": "down_proj", "w2": "down_proj"}
PARENT_RENAMES = {"block_sparse_moe": "mlp"}          # the mixtral pattern's `.block_sparse_moe.` -> `.mlp.`
TRANSPOSED_EXPERT_TYPES = {"gpt_oss"}                 # 3-D experts stored [E, d_in, d_out]
ROUTER_NAMES = {"gate", "router", "shared_expert_gate"}
SHARED_EXPERT_PARENTS = {"shared_expert", "shared_experts"}
# Leaf names PEFT's v4 -> v5 rewrite turns into expert parameters: a linear module with one of these
# names (DeepSeek's dense first layers, shared experts) must reach PEFT as a parameter (`NAME.weight`),
# or PEFT would adapt the experts in its place.
PEFT_REWRITTEN_LEAVES = {"gate", "gate_proj", "up_proj", "down_proj", "w1", "w2", "w3"}
_PER_EXPERT = re.compile(r"^(.*)\.experts\.(\d+)\.([^.]+)$")


@dataclass
class Target:
    name: str                    # what goes into lora.targets (a suffix, or parent.suffix)
    group: str                   # attention | mlp | shared_experts | experts | router | other
    modules: list[str] = field(default_factory=list)   # full module (or expert parameter) names it matches
    shapes: list[tuple[int, int]] = field(default_factory=list)  # (d_in, d_out) per module (per expert)
    layers: int = 0
    experts: int = 1             # LoRA pairs per module: the number of experts of a 3-D parameter

    @property
    def d_in(self) -> int:
        return self.shapes[0][0]

    @property
    def d_out(self) -> int:
        return self.shapes[0][1]

    def lora_params(self, r: int, dora: bool = False) -> int:
        return sum(self.experts * (r * (i + o) + (o if dora else 0)) for i, o in self.shapes)


@dataclass
class TargetReport:
    model: str
    total_params: int
    targets: list[Target]
    linear_modules: dict[str, tuple[int, int]]   # every linear-like module -> (d_in, d_out), in-memory names
    output_modules: set[str]
    expert_params: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # 3-D expert -> (E, d_in, d_out)
    routers: set[str] = field(default_factory=set)    # linear-like modules that route tokens to experts
    rewritten: set[str] = field(default_factory=set)  # linear modules PEFT must take as parameters (see above)
    unmapped_moe: str = ""       # the model type, when the model has experts this module has no map for

    def touches_unmapped_experts(self, selection: list[str] | str) -> bool:
        """An MoE of an unmapped type, and `selection` reaches beyond what the checkpoint and the
        loaded model are sure to share (all-linear, or anything under an MoE block)."""
        if not self.unmapped_moe:
            return False
        return selection == "all-linear" or any(
            ".experts." in m or m in self.routers or "block_sparse_moe" in m for m in self.matching_modules(selection))

    @property
    def is_moe(self) -> bool:
        return bool(self.expert_params or self.routers)

    def names(self) -> list[str]:
        return [t.name for t in self.targets]

    def grouped(self) -> dict[str, list[Target]]:
        return {g: [t for t in self.targets if t.group == g] for g in GROUPS}

    def matching_modules(self, selection: list[str] | str) -> list[str]:
        """The linear modules PEFT will adapt for `selection` (same matching rule as PEFT's); all-linear
        leaves out the output head and the routers."""
        if selection == "all-linear":
            return [m for m in self.linear_modules if m not in self.output_modules and m not in self.routers]
        return [m for m in self.linear_modules if _matches(m, selection)]

    def matching_experts(self, selection: list[str] | str) -> list[str]:
        """The 3-D expert parameters adapted for `selection` (all-linear takes every one)."""
        if selection == "all-linear":
            return list(self.expert_params)
        return [p for p in self.expert_params if _matches(p, selection)]

    def peft_targets(self, selection: list[str] | str) -> tuple[list[str], list[str]]:
        """(target_modules, target_parameters) for PEFT, as full names: the experts, the routers (custom
        modules in transformers 5) and the modules PEFT would otherwise rewrite go as parameters."""
        modules, params = [], []
        for m in self.matching_modules(selection):
            (params if m in self.routers or m in self.rewritten else modules).append(m)
        return modules, [m + ".weight" for m in params] + self.matching_experts(selection)

    def unknown(self, selection: list[str] | str) -> list[str]:
        if selection == "all-linear":
            return []
        known = list(self.linear_modules) + list(self.expert_params)
        return [t for t in selection if not any(m == t or m.endswith("." + t) for m in known)]

    def lora_params(self, selection: list[str] | str, r: int, dora: bool = False) -> int:
        linear = sum(r * (i + o) + (o if dora else 0)
                     for i, o in (self.linear_modules[m] for m in self.matching_modules(selection)))
        return linear + sum(e * r * (i + o) for e, i, o in (self.expert_params[p]
                                                            for p in self.matching_experts(selection)))

    def adapted_shapes(self, selection: list[str] | str) -> list[tuple[int, int, int]]:
        """(copies, d_in, d_out) of every adapted matrix: 1 for a linear module, E for an expert parameter."""
        return ([(1, *self.linear_modules[m]) for m in self.matching_modules(selection)]
                + [self.expert_params[p] for p in self.matching_experts(selection)])

    def to_dict(self, r: int, dora: bool = False) -> dict:
        return {"model": self.model, "total_params": self.total_params, "rank": r, "dora": dora,
                "unmapped_moe": self.unmapped_moe or None,
                "all_linear_params": self.lora_params("all-linear", r, dora),
                "targets": [{"name": t.name, "group": t.group, "modules": len(t.modules),
                             "layers": t.layers, "d_in": t.d_in, "d_out": t.d_out, "experts": t.experts,
                             "lora_params": t.lora_params(r, dora)} for t in self.targets]}


def _matches(name: str, selection: list[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in selection)


def _group_of(parts: list[str]) -> str:
    parents = [p.lower() for p in parts[:-1]]
    if any(p in SHARED_EXPERT_PARENTS for p in parents):
        return "shared_experts"
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
    family = vision_family(info)        # a vision-language model: lora.targets name its language model's layers
    found: dict[str, tuple[int, int]] = {}
    for name, (_dtype, shape) in info.tensors.items():
        if not name.endswith(".weight") or len(shape) != 2:
            continue
        module = name[: -len(".weight")]
        if family is not None and part_of(module, family) != "language":
            continue                    # the projector and vision tower: lora.vision (core/models/vision.py)
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


def _in_memory(name: str) -> str:
    return ".".join(PARENT_RENAMES.get(p, p) for p in name.split("."))


def memory_name(model_type: str, name: str) -> str:
    """A checkpoint's module name as transformers 5 names the module in memory."""
    if model_type not in MIXTRAL_STYLE:
        return name
    parent, _, leaf = _in_memory(name).rpartition(".")
    leaf = LEAF_RENAMES.get(model_type, {}).get(leaf, leaf)
    return f"{parent}.{leaf}" if parent else leaf


def has_experts(info: ModelInfo) -> bool:
    """The checkpoint holds experts (per-expert tensors, or a 3-D stack of them). Other 3-D tensors —
    a convolution's kernel (Mamba's conv1d), a vision tower's pooling probe (1 × 1 × D) — are not."""
    return any(".experts." in name or (len(shape) == 3 and ("expert" in name.lower() or "moe" in name.lower()))
               for name, (_dtype, shape) in info.tensors.items())


def moe_layout(info: ModelInfo, modules: dict[str, tuple[int, int]]):
    """(linear modules by their in-memory names without the fused per-expert ones, expert parameters
    -> (E, d_in, d_out), routers, modules PEFT must take as parameters) of a model as transformers 5
    holds it."""
    fused = info.model_type in FUSED_EXPERT_TYPES
    def rename(name: str) -> str:
        return memory_name(info.model_type, name)
    kept: dict[str, tuple[int, int]] = {}
    per_expert: dict[tuple[str, str], dict[str, list[tuple[int, int]]]] = {}
    blocks = set()
    for m, shape in modules.items():
        hit = _PER_EXPERT.match(m)
        if hit:
            blocks.add(rename(hit.group(1)))
        if hit and fused and hit.group(3) in FUSED_EXPERT_LEAVES:
            key = (rename(hit.group(1)), FUSED_EXPERT_LEAVES[hit.group(3)])
            per_expert.setdefault(key, {}).setdefault(hit.group(2), []).append(shape)
            continue
        kept[rename(m)] = shape
    experts: dict[str, tuple[int, int, int]] = {}
    for (block, leaf), by_expert in per_expert.items():
        parts = next(iter(by_expert.values()))          # gate + up (fused side by side), or down
        experts[f"{block}.experts.{leaf}"] = (len(by_expert), parts[0][0], sum(o for _i, o in parts))
    for name, (_dtype, shape) in info.tensors.items():  # 3-D experts held as in memory (gpt-oss)
        parts = name.split(".")
        if len(shape) == 3 and len(parts) > 2 and parts[-2] == "experts":
            e, a, b = shape
            experts[rename(name)] = (e, a, b) if info.model_type in TRANSPOSED_EXPERT_TYPES else (e, b, a)
            blocks.add(rename(".".join(parts[:-2])))
    routers = {m for m in kept if m.rsplit(".", 1)[-1] in ROUTER_NAMES and m.rsplit(".", 1)[0] in blocks}
    rewritten = {m for m in kept if fused and m.rsplit(".", 1)[-1] in PEFT_REWRITTEN_LEAVES} - routers
    return kept, experts, routers, rewritten


def discover_targets(info: ModelInfo) -> TargetReport:
    modules, outputs = linear_modules(info)
    modules, experts, routers, rewritten = moe_layout(info, modules)
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
        if all(m in routers for m in t.modules):
            t.group = "router"
    for name, (e, d_in, d_out) in experts.items():
        parts = name.split(".")
        t = targets.setdefault(".".join(parts[-3:]), Target(name=".".join(parts[-3:]), group="experts", experts=e))
        t.modules.append(name)
        t.shapes.append((d_in, d_out))
    for t in targets.values():
        indices = {mt.group(1) for mt in (_LAYER_INDEX.search(m) for m in t.modules) if mt}
        t.layers = len(indices) if indices else len(t.modules)
    order = {g: i for i, g in enumerate(GROUPS)}
    ordered = sorted(targets.values(), key=lambda t: (order[t.group], _natural_rank(t.name), t.name))
    unmapped = info.model_type if has_experts(info) and info.model_type not in KNOWN_MOE_TYPES else ""
    return TargetReport(model=info.source, total_params=info.num_parameters, targets=ordered,
                        linear_modules=modules, output_modules=outputs, expert_params=experts,
                        routers=routers, rewritten=rewritten, unmapped_moe=unmapped)


_CANONICAL = ["q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "c_attn", "query_key_value",
              "gate_proj", "up_proj", "gate_up_proj", "down_proj", "c_fc", "c_proj"]


def _natural_rank(name: str) -> int:
    base = name.split(".")[-1]
    return _CANONICAL.index(base) if base in _CANONICAL else len(_CANONICAL)




def trainable_line(report: TargetReport, selection, r: int, dora: bool = False) -> str:
    """'Trainable: 4.2 M of 1.24 B parameters (0.34 %)' — the live line in the window and CLI."""
    lora = report.lora_params(selection, r, dora)
    total = report.total_params + lora
    pct = 100.0 * lora / total if total else 0.0
    return f"Trainable: {format_count(lora)} of {format_count(total)} parameters ({pct:.2f} %)"
