"""What GGUF export can write, torch-free: architectures and file types.

Architectures: transformers `model_type` -> llama.cpp's `general.architecture`, and whether
llama.cpp's converter permutes the q/k rows (core/engine/gguf/tensor_names.py says why). Tested
end to end (written, read back by transformers' GGUF loader, logits compared): llama (SmolLM2,
Llama 2/3 without RoPE scaling), qwen2, qwen3. Mistral is written as llama.cpp writes it, as the
llama architecture. Gemma (norm offsets, a different embedding scale) and Phi-3 (fused qkv,
long-RoPE factors) are refused: a file that loads but answers wrongly is worse than none.

Types: the bits a weight takes in each type, for the size estimate. 1-D tensors (norms, biases)
stay F32, as llama.cpp writes them. K-quants (q4_k_m …) come from llama.cpp's llama-quantize.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass


@dataclass(frozen=True)
class GgufArch:
    name: str               # general.architecture in the file
    permute_qk: bool        # llama.cpp's interleaved RoPE order for q/k rows


ARCHITECTURES = {
    "llama": GgufArch("llama", True),
    "mistral": GgufArch("llama", True),
    "qwen2": GgufArch("qwen2", False),
    "qwen3": GgufArch("qwen3", False),
}
REFUSED = {"gemma": "Gemma", "gemma2": "Gemma 2", "gemma3": "Gemma 3", "gemma3_text": "Gemma 3",
           "phi3": "Phi-3"}

# type -> bits per weight of a 2-D tensor (a 32-value block: q8_0 = 32 int8 + one fp16 scale = 34 bytes)
TYPE_BITS = {"f32": 32.0, "f16": 16.0, "bf16": 16.0, "q8_0": 8.5, "q5_0": 5.5, "q4_0": 4.5}
ADAPTER_TYPES = ("f16", "bf16", "f32")
TYPE_NOTES = {"f32": "exact, largest", "f16": "near-exact, llama.cpp's default", "bf16": "near-exact",
              "q8_0": "8-bit, about half of f16, hardly any loss", "q5_0": "5-bit", "q4_0": "4-bit, smallest, lossy"}
# Types only llama.cpp's quantizer writes well (k-quants need its per-block search or an imatrix).
EXTERNAL_TYPES = ("q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k",
                  "iq4_xs", "iq4_nl", "iq3_xxs", "iq2_xs")
QUANTIZE_TOOL = "llama-quantize"


def architecture_problem(config: dict) -> tuple[str, str] | None:
    """(message, hint) when a model with this config.json cannot be exported, else None."""
    model_type = config.get("model_type", "")
    supported = ", ".join(sorted(ARCHITECTURES))
    if model_type not in ARCHITECTURES:
        family = REFUSED.get(model_type, f"'{model_type or 'unknown'}'")
        return (f"GGUF export does not support {family} models yet",
                f"supported: {supported} (Llama 2/3, SmolLM2, Mistral, Qwen2, Qwen3); export the adapter or "
                "merge it (`lorastudio merge`) and convert with llama.cpp's convert_hf_to_gguf.py")
    rope = config.get("rope_scaling") or config.get("rope_parameters") or {}
    rope_type = rope.get("rope_type") or rope.get("type") or "default"
    if rope_type != "default":
        return (f"the model uses '{rope_type}' RoPE scaling, which this exporter does not write",
                "merge it (`lorastudio merge`) and convert with llama.cpp's convert_hf_to_gguf.py")
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
