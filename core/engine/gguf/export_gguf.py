"""GGUF export (heavy: gguf-py, numpy; torch only to turn tensors into arrays): a merged model, or a
LoRA adapter, as one file llama.cpp, Ollama and LM Studio load. Used by core/jobs/export_gguf.py.

A model file holds llama.cpp's metadata for the architecture (`{arch}.block_count`, head counts,
RoPE base …), the tokenizer as `tokenizer.ggml.*` (core/models/gguf_vocab.py) with the chat
template the run trained with, and the tensors under llama.cpp's names with q/k rows in its order
(gguf_tensor_names.py). 1-D tensors stay F32; 2-D ones take the chosen type (which tensor gets
which block type: core/models/gguf_arch.py's `tensor_kind`). Q8_0/Q5_0/Q4_0 (and Q5_1, a k-quant
fallback) use gguf-py's block quantizers (`gguf.quants.quantize`: llama.cpp's reference
rounding): Q8_0 is blocks of 32 int8 with one fp16 scale; a row whose length is not a multiple of
the block falls back to F16, and for the 4/5-bit types the output (or tied embedding) matrix
stays Q8_0, as llama-quantize keeps it at higher precision. The k-quant mixtures (q4_k_m, q5_k_m,
q6_k) mix Q4_K/Q5_K/Q6_K blocks by llama.cpp's rules, written by our quantizer (kquants.py).

An adapter file (`general.type = adapter`, `adapter.type = lora`, `adapter.lora.alpha`) holds
`<base tensor>.lora_a` (r × in) and `.lora_b` (out × r) per adapted weight, B's rows permuted
where the base's are; llama.cpp scales B·A by alpha / r. rsLoRA's alpha / √r is written as an
alpha of alpha·√r, which llama.cpp's alpha / r turns back into the same scale.

Tensors are written one at a time (the header first, from shapes alone), so memory stays at the
model plus one tensor, and `on_tensor` can stop between tensors.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from lorastudio.core.engine.gguf import kquants
from lorastudio.core.engine.gguf.tensor_names import (TensorNames, gguf_arch, permute_rows, qk_heads,
                                                      reorder_qkv_rows, unpermute_rows)
from lorastudio.core.models.gguf_arch import tensor_kind
from lorastudio.core.runs.export import GgufExportError
from lorastudio.core.models.gguf_vocab import GgufVocab

OnTensor = Callable[[int, int, str], None]          # (index, count, name); may raise to stop


def ggml_type(ftype: str):
    from gguf import GGMLQuantizationType as T
    return {"f32": T.F32, "f16": T.F16, "bf16": T.BF16, "q8_0": T.Q8_0, "q5_0": T.Q5_0, "q4_0": T.Q4_0}[ftype]


def file_type(ftype: str):
    from gguf import LlamaFileType as F
    return {"f32": F.ALL_F32, "f16": F.MOSTLY_F16, "bf16": F.MOSTLY_BF16, "q8_0": F.MOSTLY_Q8_0,
            "q5_0": F.MOSTLY_Q5_0, "q4_0": F.MOSTLY_Q4_0, "q4_k_m": F.MOSTLY_Q4_K_M, "q5_k_m": F.MOSTLY_Q5_K_M,
            "q6_k": F.MOSTLY_Q6_K}[ftype]


def tensor_type(name: str, shape: tuple[int, ...], ftype: str, tied: bool = False, config: dict | None = None):
    """The type one tensor is stored in, for file type `ftype` (the k-quant mixtures need the
    model's config.json: layer count, heads, experts)."""
    from gguf import GGMLQuantizationType as T
    return T[tensor_kind(name, shape, ftype, tied, config).upper()]


def encode(array: np.ndarray, qtype) -> tuple[np.ndarray, object | None]:
    """(data, raw_dtype) for GGUFWriter: plain F32/F16 arrays, or quantized bytes (k-quants by
    kquants.py, the 32-value blocks by gguf-py)."""
    from gguf import GGMLQuantizationType as T, quants
    if qtype == T.F32:
        return np.ascontiguousarray(array, dtype=np.float32), None
    if qtype == T.F16:
        return np.ascontiguousarray(array, dtype=np.float16), None
    if qtype in (T.Q4_K, T.Q5_K, T.Q6_K):
        return kquants.quantize(array, qtype.name.lower()), qtype
    return quants.quantize(np.ascontiguousarray(array, dtype=np.float32), qtype), qtype


def byte_shape(shape: tuple[int, ...], qtype) -> tuple[tuple[int, ...], int]:
    from gguf import GGMLQuantizationType as T, quants
    if qtype in (T.F32, T.F16):
        return shape, int(np.prod(shape)) * (4 if qtype == T.F32 else 2)
    shape_b = quants.quant_shape_to_byte_shape(shape, qtype)
    return shape_b, int(np.prod(shape_b))


# ---- metadata ---------------------------------------------------------------------------------
def head_counts(config: dict) -> tuple[int, int, int]:
    n_head = int(config["num_attention_heads"])
    n_kv = int(config.get("num_key_value_heads") or n_head)
    if config.get("model_type") == "falcon":        # multi-query (one kv head) unless the new decoder says
        n_kv = (int(config.get("num_kv_heads") or n_head) if config.get("new_decoder_architecture")
                else 1 if config.get("multi_query", True) else n_head)
    head_dim = int(config.get("head_dim") or config["hidden_size"] // n_head)
    return n_head, n_kv, head_dim


def rope_theta(config: dict) -> float:
    params = config.get("rope_parameters") or {}
    return float(params.get("rope_theta") or config.get("rope_theta") or 10000.0)


def add_model_metadata(writer, config: dict, name: str, ftype: str) -> None:
    import gguf
    n_head, n_kv, head_dim = head_counts(config)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_context_length(int(config.get("max_position_embeddings") or 2048))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps") or 1e-6))
    writer.add_rope_freq_base(rope_theta(config))
    writer.add_rope_dimension_count(head_dim)
    if config.get("head_dim") or head_dim * n_head != int(config["hidden_size"]):     # llama.cpp reads it as
        writer.add_key_length(head_dim)                                                 # written (Qwen3: always)
        writer.add_value_length(head_dim)
    writer.add_vocab_size(int(config["vocab_size"]))
    writer.add_file_type(int(file_type(ftype)))
    if ftype not in ("f32", "f16", "bf16"):
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def add_vocab(writer, vocab: GgufVocab) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    writer.add_token_merges(vocab.merges)
    for role, add in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                      ("eot", writer.add_eot_token_id), ("pad", writer.add_pad_token_id),
                      ("unk", writer.add_unk_token_id)):
        if getattr(vocab, role) is not None:
            add(int(getattr(vocab, role)))
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(False)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)


# ---- tensors ----------------------------------------------------------------------------------
@dataclass
class Planned:
    name: str                   # GGUF name
    source: str                 # where the data comes from (HF name, or an adapter key)
    shape: tuple[int, ...]
    qtype: object
    heads: int | None = None    # permute rows by this many heads
    qkv: tuple | None = None    # (order, n_head, n_kv): a fused qkv's rows as llama.cpp's converter orders them
    values: np.ndarray | None = None    # data computed here (rope_freqs), not taken from the source


def plan_model_tensors(shapes: dict[str, tuple[int, ...]], config: dict, ftype: str) -> list[Planned]:
    """GGUF tensors for a model's HF state dict (names -> shapes)."""
    arch = gguf_arch(config.get("model_type", ""))
    if arch is None:
        raise GgufExportError(f"no GGUF architecture for model type {config.get('model_type')!r}", "")
    names = TensorNames(arch.name, int(config["num_hidden_layers"]))
    tied = bool(config.get("tie_word_embeddings"))
    n_head, n_kv, _ = head_counts(config)
    planned = []
    for hf_name, shape in shapes.items():
        if (tied and hf_name == "lm_head.weight") or hf_name.endswith("rotary_emb.inv_freq"):
            continue
        name = names.gguf_name(hf_name)
        if name is None:
            raise GgufExportError(f"tensor {hf_name} has no llama.cpp name for a {arch.name} model",
                                  "the model has parts this exporter does not know; merge it and convert "
                                  "with llama.cpp's convert_hf_to_gguf.py")
        heads = qk_heads(name, n_head, n_kv) if arch.permute_qk else None
        planned.append(Planned(name, hf_name, tuple(shape), tensor_type(name, tuple(shape), ftype, tied, config),
                               heads))
    return planned


def write_gguf(path: Path, arch: str, metadata: Callable[[object], None], planned: list[Planned],
               data: Callable[[Planned], np.ndarray], on_tensor: OnTensor | None = None) -> int:
    """Write a GGUF file: metadata, then each planned tensor from `data(p)` (float32, HF row
    order; permuted and encoded here). Returns the file size."""
    import gguf
    writer = gguf.GGUFWriter(str(path), arch)
    metadata(writer)
    for p in planned:
        shape, nbytes = byte_shape(p.shape, p.qtype)
        raw = None if p.qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16) else p.qtype
        dtype = np.uint8 if raw is not None else (np.float32 if p.qtype == gguf.GGMLQuantizationType.F32
                                                  else np.float16)
        writer.add_tensor_info(p.name, shape, np.dtype(dtype), nbytes, raw_dtype=raw)
    writer.write_header_to_file(path=Path(path))
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    try:
        for i, p in enumerate(planned):
            if on_tensor is not None:
                on_tensor(i, len(planned), p.name)
            array = np.asarray(data(p), dtype=np.float32).reshape(p.shape)
            if p.heads:
                array = permute_rows(array, p.heads)
            if p.qkv:
                array = reorder_qkv_rows(array, *p.qkv)
            encoded, _raw = encode(array, p.qtype)
            writer.write_tensor_data(encoded)
    finally:
        writer.close()
    return Path(path).stat().st_size


def to_numpy(tensor) -> np.ndarray:
    return tensor.detach().float().cpu().numpy()


def write_model(path: Path, state: dict, config: dict, vocab: GgufVocab, name: str, ftype: str,
                on_tensor: OnTensor | None = None) -> int:
    """A merged model's state dict (torch tensors) -> one GGUF file."""
    planned = plan_model_tensors({k: tuple(v.shape) for k, v in state.items()}, config, ftype)
    arch = gguf_arch(config["model_type"]).name
    factors = llama3_rope_factors(config)
    if factors is not None:         # Llama 3.1+: one small F32 tensor, as llama.cpp's converter writes it
        from gguf import GGMLQuantizationType as T
        planned.insert(0, Planned("rope_freqs.weight", "", tuple(factors.shape), T.F32, values=factors))

    def metadata(writer):
        add_model_metadata(writer, config, name, ftype)
        add_vocab(writer, vocab)
    return write_gguf(path, arch, metadata, planned,
                      lambda p: p.values if p.values is not None else to_numpy(state[p.source]), on_tensor)


def llama3_rope_factors(config: dict) -> np.ndarray | None:
    """Llama 3.1+'s RoPE scaling ('llama3') as llama.cpp reads it: one factor a frequency pair,
    dividing that frequency (`rope_freqs.weight`, head_dim/2 values). Frequencies whose wavelength
    is shorter than original context / high_freq_factor keep 1, longer than original context /
    low_freq_factor get `factor`, and between the two the smooth blend Meta's reference uses. None for
    any other RoPE."""
    rope = config.get("rope_scaling") or config.get("rope_parameters") or {}
    if (rope.get("rope_type") or rope.get("type")) != "llama3":
        return None
    _, _, head_dim = head_counts(config)
    factor = float(rope.get("factor", 8.0))
    low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    old_context = float(rope.get("original_max_position_embeddings", 8192))
    freqs = 1.0 / (rope_theta(config) ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    wavelen = 2 * math.pi / freqs
    smooth = (old_context / wavelen - low) / (high - low)
    factors = np.where(wavelen < old_context / high, 1.0,
                       np.where(wavelen > old_context / low, factor, 1.0 / ((1 - smooth) / factor + smooth)))
    return factors.astype(np.float32)


# ---- LoRA adapters ----------------------------------------------------------------------------
def read_adapter(adapter_dir: Path) -> tuple[dict, dict]:
    """(adapter_config.json, {key: float32 array}) of a PEFT adapter folder."""
    from safetensors.torch import load_file
    config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text(encoding="utf-8"))
    tensors = {k: to_numpy(v) for k, v in load_file(str(Path(adapter_dir) / "adapter_model.safetensors")).items()}
    return config, tensors


def adapter_alpha(adapter_config: dict) -> float:
    """adapter.lora.alpha such that llama.cpp's alpha / r is PEFT's scale."""
    alpha, r = float(adapter_config["lora_alpha"]), int(adapter_config["r"])
    return alpha * math.sqrt(r) if adapter_config.get("use_rslora") else alpha


def lora_pairs(tensors: dict) -> dict[str, tuple[str, str]]:
    """HF module name -> (lora_A key, lora_B key)."""
    pairs = {}
    for key in tensors:
        if ".lora_A." in key:
            module = key.split(".lora_A.")[0].removeprefix("base_model.model.")
            b_key = key.replace(".lora_A.", ".lora_B.")
            if b_key not in tensors:
                raise GgufExportError(f"the adapter has {key} but no {b_key}", "the adapter file is incomplete")
            pairs[module] = (key, b_key)
        elif "lora_embedding" in key or "lora_magnitude" in key:
            raise GgufExportError(f"the adapter holds {key}, which a GGUF LoRA cannot carry",
                                  "export the merged model instead (without --adapter-only)")
    return pairs


def plan_adapter_tensors(tensors: dict, config: dict, ftype: str) -> list[Planned]:
    arch = gguf_arch(config["model_type"])
    names = TensorNames(arch.name, int(config["num_hidden_layers"]))
    n_head, n_kv, _ = head_counts(config)
    qtype = ggml_type(ftype)
    planned = []
    for module, (a_key, b_key) in lora_pairs(tensors).items():
        if module.rsplit(".base_layer", 1)[0].endswith(".experts"):
            raise GgufExportError(f"the adapter adapts the experts' 3-D weights ({module.split('.base_layer')[0]}), "
                                  "which this GGUF LoRA writer does not write yet",
                                  "export the merged model instead (without --adapter-only), or train with "
                                  "lora.targets that leave the experts out (e.g. q_proj, k_proj, v_proj, o_proj)")
        base = names.gguf_name(module + ".weight")
        if base is None:
            raise GgufExportError(f"the adapter adapts {module}, which has no llama.cpp name",
                                  "export the merged model instead (without --adapter-only)")
        heads = qk_heads(base, n_head, n_kv) if arch.permute_qk else None
        qkv = (arch.qkv_order, n_head, n_kv) if arch.qkv_order and ".attn_qkv." in base else None
        planned.append(Planned(base + ".lora_a", a_key, tuple(tensors[a_key].shape), qtype))
        planned.append(Planned(base + ".lora_b", b_key, tuple(tensors[b_key].shape), qtype, heads, qkv))
    return planned


def write_adapter(path: Path, adapter_dir: Path, config: dict, name: str, ftype: str,
                  on_tensor: OnTensor | None = None) -> int:
    """A PEFT LoRA adapter -> a GGUF LoRA file for the base model with this config.json."""
    import gguf
    adapter_config, tensors = read_adapter(adapter_dir)
    planned = plan_adapter_tensors(tensors, config, ftype)
    if not planned:
        raise GgufExportError(f"{adapter_dir} holds no LoRA A/B tensors", "the adapter is empty or not LoRA")

    def metadata(writer):
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_name(name)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, adapter_alpha(adapter_config))
    return write_gguf(path, gguf_arch(config["model_type"]).name, metadata, planned,
                      lambda p: tensors[p.source], on_tensor)


def adapter_tensor_diff(path: Path, tensors: dict, config: dict, ftype: str) -> tuple[int, float]:
    """(tensor count, largest |difference|) between a written GGUF LoRA, read back with gguf-py,
    and the PEFT tensors it was written from, put in llama.cpp's row order as the writer does."""
    from gguf import GGUFReader, quants
    reader = GGUFReader(str(path))
    back = {t.name: quants.dequantize(t.data, t.tensor_type).reshape([int(x) for x in reversed(t.shape)])
            for t in reader.tensors}
    worst = 0.0
    planned = plan_adapter_tensors(tensors, config, ftype)
    for p in planned:
        want = np.asarray(tensors[p.source], dtype=np.float32)
        if p.heads:
            want = permute_rows(want, p.heads)
        if p.qkv:
            want = reorder_qkv_rows(want, *p.qkv)
        if p.name not in back:
            raise GgufExportError(f"the written adapter has no {p.name}", "the file is incomplete; export again")
        worst = max(worst, float(np.abs(back[p.name].astype(np.float32) - want).max()))
    return len(planned), worst


def read_lora_gguf(path: Path, config: dict) -> tuple[float, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """(alpha, {HF module: (A, B in HF row order)}) from a GGUF LoRA file: the reader side, used
    by the fidelity check to rebuild base + adapter from the file alone."""
    from gguf import GGUFReader, quants
    reader = GGUFReader(str(path))
    alpha = float(reader.get_field("adapter.lora.alpha").contents())
    arch = gguf_arch(config["model_type"])
    names = TensorNames(arch.name, int(config["num_hidden_layers"]))
    n_head, n_kv, _ = head_counts(config)
    arrays = {t.name: quants.dequantize(t.data, t.tensor_type).reshape([int(x) for x in reversed(t.shape)])
              for t in reader.tensors}
    by_base = {}
    for layer in range(int(config["num_hidden_layers"])):
        for module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                       "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
            hf = f"model.layers.{layer}.{module}"
            base = names.gguf_name(hf + ".weight")
            if base and base + ".lora_a" in arrays:
                b = arrays[base + ".lora_b"].astype(np.float32)
                heads = qk_heads(base, n_head, n_kv) if arch.permute_qk else None
                by_base[hf] = (arrays[base + ".lora_a"].astype(np.float32), unpermute_rows(b, heads) if heads else b)
    return alpha, by_base

