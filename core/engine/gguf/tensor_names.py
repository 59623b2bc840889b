"""Tensor names and the q/k row order between transformers and GGUF (llama.cpp's files), both ways.

The name table is gguf-py's (`gguf.get_tensor_name_map`, the one llama.cpp's converter and
transformers' GGUF loader both use), so it is not written out a second time here. What this
module adds is the facts a writer must get right beside the names:

- llama.cpp's Llama graph applies RoPE to interleaved pairs (x0,x1),(x2,x3)…, transformers' to
  the two halves of each head. Its converter therefore reorders the rows of q_proj and k_proj
  (weights and biases) of Llama-family models head by head: within a head of d rows, row
  (half h, index i) moves to position 2i + h. `permute_rows` does that, `unpermute_rows` undoes it
  (what transformers' GGUF loader does on import). Qwen2/Qwen3 use the NEOX order and are not
  permuted. A LoRA update B·A to q/k is permuted the same way by permuting B's rows (A is
  untouched), so adapter and base stay consistent.
- Tied embeddings: no `output.weight` is written; llama.cpp (and transformers) fall back on
  `token_embd.weight`.

Used by the exporter (gguf_export.py) and by the tiny-GGUF test helper that feeds the importer.
"""
from __future__ import annotations

import numpy as np

from lorastudio.core.models.gguf_arch import ADAPTER_ARCHITECTURES, ARCHITECTURES, GgufArch


# The table of what is written (torch-free, for the checks before a job starts) is
# core/models/gguf_arch.py.


def supported_model_types() -> list[str]:
    return sorted(ARCHITECTURES)


def gguf_arch(model_type: str) -> GgufArch | None:
    """What llama.cpp calls this model type (for the merged writer, the plan's ARCHITECTURES check
    comes first; the adapter writer knows every family of ADAPTER_ARCHITECTURES)."""
    return ADAPTER_ARCHITECTURES.get(model_type)


def _name_map(arch: str, n_layers: int):
    import gguf
    key = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    return gguf.get_tensor_name_map(key, n_layers)


class TensorNames:
    """HF parameter name -> GGUF tensor name for one architecture and depth."""

    def __init__(self, arch: str, n_layers: int):
        self.map = _name_map(arch, n_layers)

    def gguf_name(self, hf_name: str) -> str | None:
        """`model.layers.0.self_attn.q_proj.weight` -> `blk.0.attn_q.weight`; None if unknown."""
        base, _, suffix = hf_name.rpartition(".")
        if suffix not in ("weight", "bias"):
            base, suffix = hf_name, ""
        name = self.map.get_name(base)
        if name is None:
            return None
        return f"{name}.{suffix}" if suffix else name


def qk_heads(gguf_name: str, n_head: int, n_head_kv: int) -> int | None:
    """How many heads to permute a tensor by (None: not a q/k tensor)."""
    if ".attn_q." in gguf_name:
        return n_head
    if ".attn_k." in gguf_name:
        return n_head_kv
    return None


def reorder_qkv_rows(w: np.ndarray, order: str, n_head: int, n_head_kv: int) -> np.ndarray:
    """The rows of a fused qkv (weight, bias or LoRA B) in the order llama.cpp's converter writes
    them: GPT-NeoX stores per head (q, k, v) and llama.cpp all q, all k, all v; Falcon stores per
    kv group (its q heads, k, v), llama.cpp again all q, all k, all v."""
    rows = w.shape[0]
    if order == "neox":
        d = rows // (3 * n_head)
        return w.reshape(n_head, 3, d, *w.shape[1:]).swapaxes(0, 1).reshape(w.shape)
    if order == "falcon":
        d = rows // (n_head + 2 * n_head_kv)
        g = w.reshape(n_head_kv, n_head // n_head_kv + 2, d, *w.shape[1:])
        q = g[:, :-2].reshape(-1, *w.shape[1:])
        k = g[:, -2].reshape(-1, *w.shape[1:])
        v = g[:, -1].reshape(-1, *w.shape[1:])
        return np.concatenate([q, k, v], axis=0)
    raise ValueError(order)


def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF half-split row order -> llama.cpp's interleaved order, per head (rows of a weight,
    a bias or a LoRA B)."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of `permute_rows`."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
