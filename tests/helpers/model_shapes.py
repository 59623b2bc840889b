"""Real model shapes (Llama-3.2-1B, Llama-3.1-8B, Qwen2.5-0.5B, Mistral-7B, Qwen3-30B-A3B) for the
memory model.

`SHAPES` feeds tests/bench/make_model.py (random weights, on the GPU machine); `header_only_model`
writes config.json and a sparse safetensors file holding only the header (names, dtypes and shapes;
the data reads as zeros and takes no disk) — all the torch-free memory model reads, in a few KB, so tests can use an 8B shape offline.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

SHAPES = {
    # Llama-3.2-1B: 1.24 B parameters with the tied 128,256-token embedding.
    "llama-1b": dict(model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                     num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True,
                     rope_theta=500000.0),
    # Llama-3.1-8B: 8.03 B parameters.
    "llama-8b": dict(model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                     num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False,
                     rope_theta=500000.0),
    # Qwen2.5-0.5B: 0.49 B parameters, q/k/v biases, tied embedding of 151,936 tokens.
    "qwen2.5-0.5b": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
                         rope_theta=1000000.0),
    # Mistral-7B-v0.1: 7.24 B parameters, 32,000-token vocabulary.
    "mistral-7b": dict(model_type="mistral", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=8, vocab_size=32000, tie_word_embeddings=False,
                       rope_theta=10000.0),
    # Qwen3-30B-A3B: 30.5 B parameters, 128 experts of 768 per layer, 8 routed per token (issue 28).
    # The checkpoint's per-expert names (`mlp.experts.N.gate_proj`), as on the Hub.
    "qwen3-30b-a3b": dict(model_type="qwen3_moe", hidden_size=2048, intermediate_size=6144, num_hidden_layers=48,
                          num_attention_heads=32, num_key_value_heads=4, head_dim=128, vocab_size=151936,
                          tie_word_embeddings=False, rope_theta=1000000.0, num_experts=128, num_experts_per_tok=8,
                          moe_intermediate_size=768, decoder_sparse_step=1, norm_topk_prob=True),
}
ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM",
                 "qwen3_moe": "Qwen3MoeForCausalLM"}


def tensor_shapes(shape: dict) -> dict[str, tuple[int, ...]]:
    h, i, n = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    head = shape.get("head_dim") or h // shape["num_attention_heads"]
    q, kv = shape["num_attention_heads"] * head, shape["num_key_value_heads"] * head
    out = {"model.embed_tokens.weight": (shape["vocab_size"], h), "model.norm.weight": (h,)}
    for layer in range(n):
        p = f"model.layers.{layer}."
        out.update({p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
                    p + "self_attn.q_proj.weight": (q, h), p + "self_attn.k_proj.weight": (kv, h),
                    p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, q)})
        if shape.get("num_experts"):
            e, mi = shape["num_experts"], shape["moe_intermediate_size"]
            out.update({p + "self_attn.q_norm.weight": (head,), p + "self_attn.k_norm.weight": (head,),
                        p + "mlp.gate.weight": (e, h)})
            for x in range(e):
                out.update({f"{p}mlp.experts.{x}.gate_proj.weight": (mi, h), f"{p}mlp.experts.{x}.up_proj.weight": (mi, h),
                            f"{p}mlp.experts.{x}.down_proj.weight": (h, mi)})
        else:
            out.update({p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h),
                        p + "mlp.down_proj.weight": (h, i)})
        if shape["model_type"] == "qwen2":
            out.update({p + "self_attn.q_proj.bias": (q,), p + "self_attn.k_proj.bias": (kv,),
                        p + "self_attn.v_proj.bias": (kv,)})
    if not shape["tie_word_embeddings"]:
        out["lm_head.weight"] = (shape["vocab_size"], h)
    return out


def header_only_model(folder: Path, name: str) -> Path:
    """A model folder of shape `name` whose safetensors file has a header and no data."""
    shape = SHAPES[name]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {**shape, "architectures": [ARCHITECTURES[shape["model_type"]]], "torch_dtype": "bfloat16",
              "max_position_embeddings": 8192}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    header, offset = {}, 0
    for tensor, dims in tensor_shapes(shape).items():
        size = 2
        for d in dims:
            size *= d
        header[tensor] = {"dtype": "BF16", "shape": list(dims), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    weights = folder / "model.safetensors"
    weights.write_bytes(struct.pack("<Q", len(raw)) + raw)
    os.truncate(weights, 8 + len(raw) + offset)        # a sparse file: the full size, no disk used
    return folder
