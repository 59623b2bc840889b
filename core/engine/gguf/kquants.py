"""K-quants in numpy: Q4_K, Q5_K and Q6_K blocks as llama.cpp reads them, and the *_M mixtures.

gguf-py reads k-quants but does not write them; this module writes them, in the exact byte
layout of ggml's `block_q4_K`, `block_q5_K` and `block_q6_K` (gguf-py's `gguf.quants` dequantizers
are the reference the tests hold us to). A row is cut into super-blocks of 256 values:

  Q4_K (144 bytes)  d, dmin (fp16) · 12 bytes of 6-bit scales and mins for 8 sub-blocks of 32 ·
                    256 4-bit values.  value = d·sc[j]·q − dmin·m[j]
  Q5_K (176 bytes)  the same, with a fifth bit per value in 32 bytes of high bits.
  Q6_K (210 bytes)  256 6-bit values (4 low bits, 2 high bits apart) · 16 int8 scales for
                    sub-blocks of 16 · d (fp16).  value = d·sc[j]·(q − 32)

How the scales are found follows the rules of llama.cpp's reference quantizer (ggml-quants.c,
used by `llama-quantize` without an importance matrix); the code is ours and works on every
sub-block of a chunk of rows at once:
  * Q4_K/Q5_K: each sub-block of 32 gets a scale and a min by a weighted least-squares search
    (weights |x| + rms of the sub-block): starting from min/max, for a ladder of candidate
    inverse scales around nmax/(max−min) the values are rounded, the best scale and min for
    those levels are solved in closed form, and the candidate with the smallest weighted
    squared error is kept (the min is never above 0). The 8 scales and mins are then stored
    as 6-bit multiples of two fp16 super-scales, and the values rounded again with the
    scales as stored.
  * Q6_K: each sub-block of 16 gets a signed scale by the same kind of search around
    −32/max (weights x², 19 candidates); the 16 scales are stored as int8 multiples of one
    fp16 scale, and the values rounded again with them.
The error of every candidate comes from running sums (Σw·l, Σw·l², Σw·l·x), so a candidate
costs a few passes over the chunk, and the rounded levels are only kept for the final scales.
Sub-blocks are laid out as columns, so that every step is one contiguous numpy pass. Against
ggml's own quantizer (ggml_quantize_chunk) on the same values, 96–99 % of the blocks come out
byte-identical and the RMSE is the same to 1e-4 (the rest: float sums in another order).

Which tensor gets which type in Q4_K_M / Q5_K_M / Q6_K (`tensor_qtype`, defined torch- and
numpy-free in core/models/gguf_arch.py for the size estimates too) follows llama.cpp's
`llama_tensor_get_type`: the output matrix (or a tied embedding, which doubles as it) Q6_K;
attn_v and ffn_down Q6_K in the first and last eighth of the layers and every third layer
between (Q4_K_M, Q5_K_M); everything else the mixture's base type. A row whose length is not a
multiple of 256 falls back as llama.cpp does: Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0 (the output
matrix straight to Q8_0), and F16 if even that does not divide.

Speed (tests/bench/bench_kquants.py speed): about 25 ns of CPU per value for Q4_K and 23 for
Q6_K on a 2-core AMD EPYC VM, so Llama-3-8B's q4_k_m takes about 4 minutes on 2 busy cores.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from lorastudio.core.models.gguf_arch import kquant_tensor_kind

try:
    from numpy._core.umath import clip as _clip        # the ufunc itself: np.clip wraps it in Python
except ImportError:                                     # pragma: no cover - numpy < 2
    _clip = np.clip

QK_K = 256
GROUP_MAX_EPS = 1e-15
BLOCK_BYTES = {"q4_k": 144, "q5_k": 176, "q6_k": 210}
CHUNK_BLOCKS = 1024         # super-blocks per chunk (256 Ki values: working arrays of 1 MB each)



# ---- the scale searches ------------------------------------------------------------------------
# Sub-blocks are columns: x is (values per sub-block, sub-blocks), so a per-sub-block scalar is a
# row vector, and every step is a contiguous pass over the chunk (numpy's fast loops) rather than
# a loop over short rows.
def _coldot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->j", a, b)


def _scale_min_search(x: np.ndarray, nmax: int, rmin: float, rdelta: float,
                      nstep: int) -> tuple[np.ndarray, np.ndarray]:
    """Per column of x (sub-blocks, float32): (scale ≥ 0, m ≥ 0) with x ≈ scale·l − m, l in 0..nmax.
    Weighted by rms(column) + |x|. Starts from min/max (min ≤ 0); then candidates
    iscale = (nmax + rmin + rdelta·k) / (max − min), k = 0..nstep, each taken relative to the best
    min found so far (as llama.cpp's search does), least-squares scale and min for its levels.

    A candidate's error needs no pass over the values: for the least-squares scale and min the
    residual is orthogonal to the levels and to 1, so Σw·r² = Σw·x² − scale·Σw·l·x − min·Σw·x
    (min clamped to 0: the same with min = 0)."""
    f32 = np.float32
    n = x.shape[0]
    w = np.abs(x)
    w += np.sqrt(_coldot(x, x) / f32(n))
    wx = w * x
    sum_w = w.sum(axis=0)
    sum_x = wx.sum(axis=0)
    sum_x2 = _coldot(wx, x)
    lo = np.minimum(x.min(axis=0), f32(0))
    hi = x.max(axis=0)
    flat = hi == lo
    l = np.empty_like(x)
    wl = np.empty_like(x)

    def sums(iscale, mn):
        np.subtract(x, mn, out=l)
        np.multiply(l, iscale, out=l)
        np.rint(l, out=l)
        _clip(l, f32(0), f32(nmax), out=l)
        np.multiply(w, l, out=wl)
        return wl.sum(axis=0), _coldot(wl, l), _coldot(wx, l)

    with np.errstate(divide="ignore", invalid="ignore"):
        plain = f32(nmax) / (hi - lo)
        best_scale = f32(1) / plain
        best_min = lo.copy()
        s_l, s_l2, s_xl = sums(plain, lo)              # plain min/max: Σ w·(scale·l + min − x)² in full
        best_err = (best_scale * (best_scale * s_l2 + 2 * lo * s_l - 2 * s_xl)
                    + lo * (lo * sum_w - 2 * sum_x) + sum_x2)
        for k in range(nstep + 1):
            step = f32(rmin) + f32(rdelta) * f32(k) + f32(nmax)
            s_l, s_l2, s_xl = sums(step / (hi - best_min), best_min)
            D = sum_w * s_l2 - s_l * s_l
            scale = (sum_w * s_xl - sum_x * s_l) / D
            mn = (s_l2 * sum_x - s_l * s_xl) / D
            pos = mn > 0
            if pos.any():
                mn[pos] = 0
                scale[pos] = s_xl[pos] / s_l2[pos]
            err = sum_x2 - scale * s_xl - mn * sum_x
            better = (D > 0) & (err < best_err)
            np.copyto(best_err, err, where=better)
            np.copyto(best_scale, scale, where=better)
            np.copyto(best_min, mn, where=better)
    best_scale[flat] = 0
    best_min[flat] = lo[flat]
    return np.maximum(best_scale, f32(0)), np.maximum(-best_min, f32(0))


def _signed_scale_search(x: np.ndarray, nmax: int = 32) -> np.ndarray:
    """Per column of x (sub-blocks of 16): a signed scale with x ≈ scale·l, l in −nmax..nmax−1,
    weighted by x²; candidates iscale = −(nmax + 0.1·k) / max for k = −9..9 (max: the value of
    largest magnitude). 0 for an all-zero column."""
    f32, f64 = np.float32, np.float64
    idx = np.abs(x).argmax(axis=0)
    peak = np.take_along_axis(x, idx[None, :], axis=0)[0]
    zero = np.abs(peak) < GROUP_MAX_EPS
    peak = np.where(zero, f32(1), peak)
    w = x * x
    wx = w * x
    l = np.empty_like(x)
    wl = np.empty_like(x)

    def sums(iscale):
        np.multiply(x, iscale, out=l)
        np.rint(l, out=l)
        _clip(l, f32(-nmax), f32(nmax - 1), out=l)
        np.multiply(w, l, out=wl)
        return _coldot(wx, l).astype(f64), _coldot(wl, l).astype(f64)

    with np.errstate(divide="ignore", invalid="ignore"):
        s_lx, s_l2 = sums(f32(-nmax) / peak)
        scale = np.where(s_l2 > 0, s_lx / s_l2, 0.0)
        best = scale * s_lx
        for k in range(-9, 10):
            if k == 0:
                continue
            s_lx, s_l2 = sums(-(f32(nmax) + f32(0.1) * f32(k)) / peak)
            better = (s_l2 > 0) & (s_lx * s_lx > best * s_l2)
            if better.any():
                new = s_lx / s_l2
                scale = np.where(better, new, scale)
                best = np.where(better, new * s_lx, best)
    return np.where(zero, 0.0, scale).astype(f32)


# ---- blocks --------------------------------------------------------------------------------------
def _fp16(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fp16 bytes (n, 2), the value as float32 after the round trip)."""
    h = a.astype(np.float16)
    return h.view(np.uint8).reshape(-1, 2), h.astype(np.float32)


def _pack_scales_k4(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """8 6-bit scales and 8 6-bit mins -> the 12 bytes get_scale_min_k4 reads."""
    out = np.empty((ls.shape[0], 12), dtype=np.uint8)
    out[:, 0:4] = ls[:, 0:4] | ((ls[:, 4:8] >> 4) << 6)
    out[:, 4:8] = lm[:, 0:4] | ((lm[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (ls[:, 4:8] & 0x0F) | ((lm[:, 4:8] & 0x0F) << 4)
    return out


def _affine_blocks(blocks: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int):
    """Q4_K/Q5_K common part: (d bytes, dmin bytes, 12 scale bytes, levels (nb, 8, 32) uint8)."""
    nb = blocks.shape[0]
    x = np.ascontiguousarray(blocks.reshape(nb * 8, 32).T)            # (32, sub-blocks)
    scales, mins = _scale_min_search(x, nmax, rmin, rdelta, nstep)
    scales, mins = scales.reshape(nb, 8), mins.reshape(nb, 8)
    max_scale = np.maximum(scales.max(axis=1), np.float32(0))
    max_min = np.maximum(mins.max(axis=1), np.float32(0))
    with np.errstate(divide="ignore"):
        inv_scale = np.where(max_scale > 0, np.float32(63) / max_scale, np.float32(0)).astype(np.float32)
        inv_min = np.where(max_min > 0, np.float32(63) / max_min, np.float32(0)).astype(np.float32)
    ls = np.minimum(np.rint(inv_scale[:, None] * scales), 63).astype(np.uint8)
    lm = np.minimum(np.rint(inv_min[:, None] * mins), 63).astype(np.uint8)
    d_bytes, d = _fp16(max_scale / np.float32(63))
    m_bytes, dmin = _fp16(max_min / np.float32(63))
    sc = (d[:, None] * ls).astype(np.float32).reshape(-1)                # per sub-block, as stored
    dm = (dmin[:, None] * lm).astype(np.float32).reshape(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = x + dm
        q /= sc
    np.rint(q, out=q)
    q[:, sc == 0] = 0
    np.clip(q, 0, nmax, out=q)
    return d_bytes, m_bytes, _pack_scales_k4(ls, lm), q.astype(np.uint8).T.reshape(nb, 8, 32)


def _nibbles(q: np.ndarray) -> np.ndarray:
    """(nb, 8, 32) levels -> (nb, 128) bytes: sub-block 2i in the low nibbles, 2i+1 in the high."""
    q = q.reshape(q.shape[0], 4, 2, 32)
    return ((q[:, :, 0, :] & 0x0F) | ((q[:, :, 1, :] & 0x0F) << 4)).reshape(q.shape[0], 128)


def quantize_blocks_q4_k(blocks: np.ndarray, search: bool = True) -> np.ndarray:
    """(nb, 256) float32 -> (nb, 144) uint8. search=False: plain min/max scales (for comparison)."""
    d, dmin, scales, q = _affine_blocks(blocks, 15, -1.0, 0.1, 20 if search else -1)
    return np.concatenate([d, dmin, scales, _nibbles(q)], axis=1)


def quantize_blocks_q5_k(blocks: np.ndarray, search: bool = True) -> np.ndarray:
    """(nb, 256) float32 -> (nb, 176) uint8. search=False: plain min/max scales (for comparison)."""
    d, dmin, scales, q = _affine_blocks(blocks, 31, -0.5, 0.1, 15 if search else -1)
    high = (q >> 4).astype(np.uint8)                             # (nb, 8, 32): bit j of qh[l] is sub-block j
    qh = np.zeros((q.shape[0], 32), dtype=np.uint8)
    for j in range(8):
        qh |= high[:, j, :] << j
    return np.concatenate([d, dmin, scales, qh, _nibbles(q)], axis=1)


def quantize_blocks_q6_k(blocks: np.ndarray) -> np.ndarray:
    """(nb, 256) float32 -> (nb, 210) uint8."""
    nb = blocks.shape[0]
    x = np.ascontiguousarray(blocks.reshape(nb * 16, 16).T)            # (16, sub-blocks)
    scales = _signed_scale_search(x).reshape(nb, 16)
    idx = np.abs(scales).argmax(axis=1)
    max_scale = np.take_along_axis(scales, idx[:, None], axis=1)[:, 0]
    zero = np.abs(max_scale) < GROUP_MAX_EPS
    iscale = np.float32(-128) / np.where(zero, np.float32(1), max_scale)
    d_bytes, d = _fp16(np.where(zero, np.float32(0), np.float32(1) / iscale))
    sc = np.minimum(np.rint(iscale[:, None] * scales), 127).astype(np.int8)
    sc[zero] = 0
    step = (d[:, None] * sc).astype(np.float32).reshape(-1)            # per sub-block, as stored
    with np.errstate(divide="ignore", invalid="ignore"):
        q = x / step
    np.rint(q, out=q)
    q[:, step == 0] = 0
    np.clip(q, -32, 31, out=q)
    q += 32
    q = q.astype(np.uint8).T.reshape(nb, 256)
    q[zero] = 0                                                 # an all-zero block is all zero bytes
    q = q.reshape(nb, 2, 4, 32)                                 # two halves of 128, four runs of 32
    low, high = q & 0x0F, q >> 4
    ql = np.concatenate([low[:, :, 0] | (low[:, :, 2] << 4), low[:, :, 1] | (low[:, :, 3] << 4)], axis=2)
    qh = high[:, :, 0] | (high[:, :, 1] << 2) | (high[:, :, 2] << 4) | (high[:, :, 3] << 6)
    return np.concatenate([ql.reshape(nb, 128), qh.reshape(nb, 64), sc.view(np.uint8), d_bytes], axis=1)


BLOCK_QUANTIZERS = {"q4_k": quantize_blocks_q4_k, "q5_k": quantize_blocks_q5_k, "q6_k": quantize_blocks_q6_k}


def default_threads() -> int:
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def quantize(array: np.ndarray, kind: str, threads: int | None = None) -> np.ndarray:
    """A float array whose last dimension is a multiple of 256 -> its bytes in `kind` (q4_k, q5_k,
    q6_k), shaped like gguf-py's quant_shape_to_byte_shape. Chunks of CHUNK_BLOCKS super-blocks,
    on `threads` threads (numpy lets go of the GIL in its loops): memory stays at the array, its
    bytes and a few chunks."""
    quantize_blocks = BLOCK_QUANTIZERS[kind]
    shape = array.shape
    if not shape or shape[-1] % QK_K:
        raise ValueError(f"{kind} needs rows that are a multiple of {QK_K} values, not {shape}")
    flat = np.ascontiguousarray(array, dtype=np.float32).reshape(-1, QK_K)
    nb = flat.shape[0]
    out = np.empty((nb, BLOCK_BYTES[kind]), dtype=np.uint8)

    def work(start):
        stop = min(nb, start + CHUNK_BLOCKS)
        out[start:stop] = quantize_blocks(flat[start:stop])

    starts = range(0, nb, CHUNK_BLOCKS)
    threads = default_threads() if threads is None else threads
    if threads <= 1 or nb <= CHUNK_BLOCKS:
        for start in starts:
            work(start)
    else:
        with ThreadPoolExecutor(threads) as pool:
            for _ in pool.map(work, starts):
                pass
    return out.reshape(*shape[:-1], shape[-1] // QK_K * BLOCK_BYTES[kind])


# ---- which tensor gets which type ----------------------------------------------------------------
# The rules are torch- and numpy-free (the size estimates before a job need them too), in
# core/models/gguf_arch.py; named here as the quantizer's side of them.
tensor_qtype = kquant_tensor_kind
