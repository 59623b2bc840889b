"""Write tiny GGUF files offline with gguf-py's GGUFWriter, the way llama.cpp's converter does.

The tensors come from the tiny Llama of tiny_models.py (hidden size 64, 2 layers), renamed to
llama.cpp's names, with q/k rows permuted as convert_hf_to_gguf.py does (transformers undoes it on
load) — names and permutation from core/engine/gguf/tensor_names.py, which the exporter uses too;
the byte-level BPE tokenizer goes in as `tokenizer.ggml.*` metadata, with a ChatML template.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.helpers.tiny_models import CHATML

from lorastudio.core.engine.gguf.tensor_names import TensorNames, permute_rows, unpermute_rows


def gguf_name(hf_name: str, n_layers: int = 2) -> str:
    """llama.cpp's name for a tiny Llama tensor (the one name table: gguf-py's, as the exporter uses)."""
    return TensorNames("llama", n_layers).gguf_name(hf_name)


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order (the exporter's permutation)."""
    return permute_rows(w, n_head)


def write_tiny_gguf(path: Path, hf_folder: Path, *, architecture: str = "llama", quantize: dict | None = None,
                    raw_types: dict | None = None) -> dict[str, np.ndarray]:
    """Write hf_folder's model as GGUF. `quantize` maps GGUF names to a GGMLQuantizationType to
    store them in; `raw_types` stores raw bytes under a type label (for unsupported-type tests).
    Returns the source tensors by HF name, as float32 numpy arrays (what an import must give back)."""
    import gguf
    from safetensors.numpy import load_file

    config = json.loads((hf_folder / "config.json").read_text())
    tok = json.loads((hf_folder / "tokenizer.json").read_text())
    tensors = load_file(str(hf_folder / "model.safetensors"))
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name("tiny-llama")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(float(config.get("rope_theta") or config.get("rope_parameters", {}).get("rope_theta", 10000.0)))
    writer.add_rope_dimension_count(config["hidden_size"] // config["num_attention_heads"])
    vocab = sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])
    for added in tok["added_tokens"]:
        vocab[added["id"]] = (added["content"], added["id"])
    special = {a["id"] for a in tok["added_tokens"]}
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([t for t, _ in vocab])
    writer.add_token_types([gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL
                            for i in range(len(vocab))])
    merges = tok["model"]["merges"]
    writer.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in merges])
    writer.add_bos_token_id(config["bos_token_id"])
    writer.add_eos_token_id(config["eos_token_id"])
    writer.add_pad_token_id(config["pad_token_id"])
    writer.add_chat_template(CHATML)
    expected = {}
    for hf_name, value in tensors.items():
        name = gguf_name(hf_name)
        data = value.astype(np.float32)
        expected[hf_name] = data
        if name.endswith("attn_q.weight"):
            data = permute(data, config["num_attention_heads"])
        elif name.endswith("attn_k.weight"):
            data = permute(data, config["num_key_value_heads"])
        qtype = (quantize or {}).get(name)
        if raw_types and name in raw_types:
            qtype = raw_types[name]
            block, size = gguf.GGML_QUANT_SIZES[qtype]
            raw = np.zeros((*data.shape[:-1], data.shape[-1] // block * size), dtype=np.uint8)
            writer.add_tensor(name, raw, raw_dtype=qtype)
        elif qtype is not None:
            packed = gguf.quants.quantize(data, qtype)
            writer.add_tensor(name, packed, raw_dtype=qtype)
            back = gguf.quants.dequantize(packed, qtype).reshape(data.shape)
            if name.endswith("attn_q.weight"):          # undo the permutation: HF order again
                back = unpermute(back, config["num_attention_heads"])
            elif name.endswith("attn_k.weight"):
                back = unpermute(back, config["num_key_value_heads"])
            expected[hf_name] = back.astype(np.float32)
        else:
            writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return expected


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    return unpermute_rows(w, n_head)
