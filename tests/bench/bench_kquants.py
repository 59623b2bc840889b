"""K-quants (core/engine/gguf/kquants.py) measured: speed on an 8B shape, blocks and perplexity
against llama.cpp's own quantizer. Never run in CI.

  python tests/bench/bench_kquants.py speed [--layers 2] [--threads 2] [--full]
  python tests/bench/bench_kquants.py blocks --ggml-lib BUILD/bin/libggml-base.so
  python tests/bench/bench_kquants.py perplexity --llama-quantize BUILD/bin/llama-quantize
         --llama-perplexity BUILD/bin/llama-perplexity --f16 MODEL-f16.gguf --text TEXT.txt
         [--types q4_k_m,q5_k_m,q6_k] [--ctx 512] [--chunks 0] [--threads 2] [--work DIR]
  python tests/bench/bench_kquants.py make-f16 SOURCE.gguf OUT-f16.gguf [--dither] [--pad-to 768]

speed: random weights (normal, σ 0.02) of Llama-3-8B's shapes (hidden 4096, 32 layers, ffn
  14336, 8 kv heads of 128, vocabulary 128,256), quantized as q4_k_m (each tensor in the type
  llama.cpp's mixture gives it) layer by layer; `--layers N` times N layers and the embedding
  and output matrices and extrapolates to 32, `--full` does all 32. Prints minutes.
blocks: the same random and heavy-tailed matrices through ggml's `ggml_quantize_chunk` (loaded
  with ctypes from a llama.cpp build) and ours: the share of byte-identical blocks and the RMSE of
  each after gguf-py's dequantizer, per type.
perplexity: the same f16 GGUF quantized by llama-quantize and by us (tensor by tensor from the
  f16 values, with our mixture rules), then llama-perplexity on the same text for f16, theirs and
  ours. Prints each perplexity and ours/theirs (the goal: ≤ 1.01 for q4_k_m).
make-f16: any GGUF llama.cpp reads, dequantized by gguf-py and written as f16 (1-D tensors f32).
  `--dither` adds uniform noise of half a step of each 32-value block, so that a file that was
  already quantized (the demo's SmolLM2 ships as Q4_1) no longer sits on a 4-bit grid that a
  k-quant could reproduce by luck. `--pad-to 768` widens the hidden size of a Llama-family model
  with channels that stay zero (same outputs; `pad_hidden` says how), so that SmolLM2-135M's rows,
  576 wide and so all k-quant fallbacks, become 768 wide and take Q4_K/Q6_K blocks.
llama.cpp builds from the sources the llama-cpp-python sdist vendors (`pip download
llama-cpp-python --no-binary :all: --no-deps`, then `cmake -B build && cmake --build build
--target llama-quantize llama-perplexity`).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

LLAMA_8B = dict(hidden=4096, layers=32, ffn=14336, kv=1024, vocab=128256)


# ---- speed -------------------------------------------------------------------------------------
def layer_tensors(i: int, m: dict) -> list[tuple[str, tuple[int, int]]]:
    h, f, kv = m["hidden"], m["ffn"], m["kv"]
    return [(f"blk.{i}.attn_q.weight", (h, h)), (f"blk.{i}.attn_k.weight", (kv, h)),
            (f"blk.{i}.attn_v.weight", (kv, h)), (f"blk.{i}.attn_output.weight", (h, h)),
            (f"blk.{i}.ffn_gate.weight", (f, h)), (f"blk.{i}.ffn_up.weight", (f, h)),
            (f"blk.{i}.ffn_down.weight", (h, f))]


def quantize_one(name, shape, layer, n_layers, rng, threads) -> tuple[str, float, float]:
    """(block type, wall seconds, CPU seconds of all threads)."""
    from gguf import GGMLQuantizationType as T, quants

    from lorastudio.core.engine.gguf import kquants
    kind = kquants.tensor_qtype(name, shape, layer, n_layers, "q4_k_m")
    x = rng.standard_normal(shape, dtype=np.float32)
    x *= np.float32(0.02)
    t0, c0 = time.perf_counter(), time.process_time()
    if kind in kquants.BLOCK_BYTES:
        kquants.quantize(x, kind, threads=threads)
    else:
        quants.quantize(x, T[kind.upper()])
    return kind, time.perf_counter() - t0, time.process_time() - c0


def bench_speed(args) -> dict:
    """Time `--layers` layers (layer 0 has q6_k attn_v/ffn_down, layer 4 does not, then 5, 6 …) and
    the embedding and output matrices; extrapolate by each block type's seconds per weight."""
    from lorastudio.core.engine.gguf import kquants
    m, rng = LLAMA_8B, np.random.default_rng(0)
    n_layers = m["layers"]
    layers = list(range(n_layers)) if args.full else ([0, 4] + list(range(5, n_layers)))[:max(1, args.layers)]
    timed: dict[str, list[float]] = {}
    load = [os.getloadavg()[0]]
    for i in layers:
        for name, shape in layer_tensors(i, m):
            kind, dt, cpu = quantize_one(name, shape, i, n_layers, rng, args.threads)
            t = timed.setdefault(kind, [0, 0.0, 0.0])
            t[0], t[1], t[2] = t[0] + math.prod(shape), t[1] + dt, t[2] + cpu
            print(f"  {name:28s} {kind:5s} {dt:6.2f} s ({cpu:6.2f} s CPU)", flush=True)
    load.append(os.getloadavg()[0])
    wall = {k: v[1] / v[0] for k, v in timed.items()}
    cpu = {k: v[2] / v[0] for k, v in timed.items()}

    def whole(per_weight):
        return sum(per_weight[kquants.tensor_qtype(name, shape, i, n_layers, "q4_k_m")] * math.prod(shape)
                   for i in range(n_layers) for name, shape in layer_tensors(i, m))
    ends, ends_cpu = 0.0, 0.0
    for name, shape in (("token_embd.weight", (m["vocab"], m["hidden"])), ("output.weight", (m["vocab"], m["hidden"]))):
        kind, dt, c = quantize_one(name, shape, None, n_layers, rng, args.threads)
        ends, ends_cpu = ends + dt, ends_cpu + c
        print(f"  {name:28s} {kind:5s} {dt:6.2f} s ({c:6.2f} s CPU)", flush=True)
    load.append(os.getloadavg()[0])
    n = n_layers * sum(math.prod(s) for _, s in layer_tensors(0, m)) + 2 * m["vocab"] * m["hidden"]
    return {"what": "q4_k_m of Llama-3-8B shapes (random weights)", "threads": args.threads,
            "cores": len(os.sched_getaffinity(0)), "layers_timed": len(layers), "weights": n,
            "ns_per_weight_wall": {k: round(v * 1e9, 1) for k, v in wall.items()},
            "ns_per_weight_cpu": {k: round(v * 1e9, 1) for k, v in cpu.items()},
            "seconds_embedding_and_output": round(ends, 1),
            "minutes_8b_wall": round((whole(wall) + ends) / 60, 2),
            "cpu_minutes_8b": round((whole(cpu) + ends_cpu) / 60, 2),
            "load_average_1min_start_mid_end": [round(x, 2) for x in load]}


# ---- blocks against ggml -------------------------------------------------------------------------
def bench_blocks(args) -> dict:
    import ctypes

    from gguf import GGMLQuantizationType as T, quants

    from lorastudio.core.engine.gguf import kquants
    lib = ctypes.CDLL(str(args.ggml_lib))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    rng = np.random.default_rng(1)
    data = {"normal": (rng.standard_normal((512, 4096)) * 0.02).astype(np.float32),
            "t(3)": (rng.standard_t(3, (512, 4096)) * 0.01).astype(np.float32)}
    out = {}
    for name, x in data.items():
        x16 = x.astype(np.float16).astype(np.float32)           # as from an f16 file
        for kind in ("q4_k", "q5_k", "q6_k"):
            qt = T[kind.upper()]
            theirs = np.zeros((x.shape[0], x.shape[1] // 256 * kquants.BLOCK_BYTES[kind]), np.uint8)
            lib.ggml_quantize_chunk(int(qt), x16.ctypes.data, theirs.ctypes.data, 0, x.shape[0], x.shape[1], None)
            ours = kquants.quantize(x16, kind)
            size = kquants.BLOCK_BYTES[kind]
            same = float((ours.reshape(-1, size) == theirs.reshape(-1, size)).all(1).mean())
            err = {who: float(np.sqrt(np.mean((quants.dequantize(b, qt) - x16) ** 2))) for who, b in
                   (("ours", ours), ("ggml", theirs))}
            out[f"{name} {kind}"] = {"identical_blocks": round(same, 4), "rmse_ours": err["ours"],
                                     "rmse_ggml": err["ggml"], "ratio": round(err["ours"] / err["ggml"], 5)}
            print(f"  {name:7s} {kind}: {same:.2%} identical blocks, RMSE ours/ggml {err['ours'] / err['ggml']:.5f}",
                  flush=True)
    return out


# ---- GGUF in, GGUF out ---------------------------------------------------------------------------
def copy_metadata(reader, writer, ftype: int | None, overrides: dict | None = None) -> None:
    """Every key of `reader` into `writer` but the file type (set to `ftype`); `overrides`: key ->
    value, in the key's own type (new keys: uint32)."""
    import gguf
    skip = {"GGUF.version", "GGUF.tensor_count", "GGUF.kv_count", "general.architecture", "general.file_type",
            "general.quantization_version"}
    overrides = dict(overrides or {})
    for field in reader.fields.values():
        if field.name in skip:
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, overrides.pop(field.name, field.contents()), vtype, sub_type=sub)
    for key, value in overrides.items():
        writer.add_uint32(key, int(value))
    if ftype is not None:
        writer.add_file_type(ftype)
        if ftype not in (int(gguf.LlamaFileType.ALL_F32), int(gguf.LlamaFileType.MOSTLY_F16)):
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def model_config(reader) -> dict:
    """What tensor_kind needs, from a GGUF's own metadata."""
    arch = reader.get_field("general.architecture").contents()

    def get(key, default=0):
        f = reader.get_field(f"{arch}.{key}")
        return f.contents() if f is not None else default
    return {"model_type": arch, "num_hidden_layers": int(get("block_count")),
            "num_attention_heads": int(get("attention.head_count")),
            "num_key_value_heads": int(get("attention.head_count_kv") or get("attention.head_count")),
            "num_local_experts": int(get("expert_count"))}


def rewrite(source: Path, out: Path, tensor_type, ftype: int | None) -> dict:
    """source -> out with each tensor re-encoded as tensor_type(name, shape) says (a block-type name)."""
    import gguf
    from gguf import GGMLQuantizationType as T, quants

    from lorastudio.core.engine.gguf import kquants
    reader = gguf.GGUFReader(str(source))
    writer = gguf.GGUFWriter(str(out), reader.get_field("general.architecture").contents())
    copy_metadata(reader, writer, ftype)
    plan = []
    for t in reader.tensors:
        shape = tuple(int(x) for x in reversed(t.shape))
        kind = tensor_type(t.name, shape, t.tensor_type)
        qt = T[kind.upper()]
        if qt in (T.F32, T.F16):
            dtype = np.float32 if qt == T.F32 else np.float16
            writer.add_tensor_info(t.name, shape, np.dtype(dtype), math.prod(shape) * np.dtype(dtype).itemsize)
        else:
            shape_b = quants.quant_shape_to_byte_shape(shape, qt)
            writer.add_tensor_info(t.name, shape_b, np.dtype(np.uint8), math.prod(shape_b), raw_dtype=qt)
        plan.append((t, shape, qt))
    writer.write_header_to_file(path=out)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    kinds, seconds = {}, 0.0
    for t, shape, qt in plan:
        x = quants.dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float32)
        t0 = time.perf_counter()
        if qt == T.F32:
            data = x
        elif qt == T.F16:
            data = x.astype(np.float16)
        elif qt.name.lower() in kquants.BLOCK_BYTES:
            data = kquants.quantize(x, qt.name.lower())
        else:
            data = quants.quantize(x, qt)
        seconds += time.perf_counter() - t0
        kinds[qt.name] = kinds.get(qt.name, 0) + 1
        writer.write_tensor_data(data)
    writer.close()
    return {"tensor_types": kinds, "quantize_seconds": round(seconds, 1)}


def make_f16(args) -> dict:
    """SOURCE -> OUT as f16 (1-D tensors f32), optionally dithered and with the hidden size padded."""
    import gguf
    from gguf import quants
    reader = gguf.GGUFReader(str(args.source))
    arch = reader.get_field("general.architecture").contents()
    arrays = {t.name: quants.dequantize(t.data, t.tensor_type).reshape([int(x) for x in reversed(t.shape)])
              .astype(np.float32) for t in reader.tensors}
    rng = np.random.default_rng(0)
    if args.dither:                     # half a step of noise in each 32-value block of the 2-D tensors
        for name, x in arrays.items():
            if x.ndim == 2 and x.shape[1] % 32 == 0:
                b = x.reshape(-1, 32)
                step = (b.max(1, keepdims=True) - b.min(1, keepdims=True)) / 15
                b += (rng.random(b.shape, dtype=np.float32) - np.float32(0.5)) * step
    overrides = {}
    if args.pad_to:
        overrides = pad_hidden(arrays, reader, arch, args.pad_to, rng)
    writer = gguf.GGUFWriter(str(args.out), arch)
    copy_metadata(reader, writer, int(gguf.LlamaFileType.MOSTLY_F16), overrides)
    for name, x in arrays.items():
        writer.add_tensor(name, x if x.ndim < 2 else x.astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"out": str(args.out), "dither": bool(args.dither), "pad_to": args.pad_to, "metadata": overrides,
            "tensors": len(arrays)}


def pad_hidden(arrays: dict, reader, arch: str, to: int, rng) -> dict:
    """A Llama-family model with hidden size h as one with hidden size `to` that computes the same:
    the residual stream's extra channels start at 0 (embedding columns of zeros) and stay 0 (zero
    rows in attn_output and ffn_down); the matrices that read the stream get extra columns of noise
    the size of their weights (multiplied by those zeros: they only make the rows look like weights
    to a quantizer); RMSNorm's mean over `to` channels is h/to of the mean over h, so its weights
    and epsilon are scaled to give the same result. Rows that now divide by 256 take k-quant blocks
    where the original fell back (SmolLM2-135M: 576 -> 768)."""
    def get(key):
        f = reader.get_field(f"{arch}.{key}")
        return f.contents() if f is not None else None
    h = int(get("embedding_length"))
    extra, ratio = to - h, h / to
    head = int(get("attention.key_length") or h // int(get("attention.head_count")))
    for name, x in list(arrays.items()):
        if x.ndim == 1 and x.shape[0] == h:                       # RMSNorm weights
            arrays[name] = np.concatenate([x * np.float32(math.sqrt(ratio)), np.zeros(extra, np.float32)])
        elif name in ("token_embd.weight", "output.weight"):
            arrays[name] = np.concatenate([x, np.zeros((x.shape[0], extra), np.float32)], axis=1)
        elif name.endswith(("attn_output.weight", "ffn_down.weight")):
            arrays[name] = np.concatenate([x, np.zeros((extra, x.shape[1]), np.float32)], axis=0)
        elif x.ndim == 2 and x.shape[1] == h:                      # q, k, v, gate, up: read the stream
            noise = rng.standard_normal((x.shape[0], extra)).astype(np.float32) * x.std()
            arrays[name] = np.concatenate([x, noise], axis=1)
        elif x.ndim >= 1 and h in x.shape:
            raise ValueError(f"pad_hidden does not know how to pad {name} {x.shape}")
    eps = float(get("attention.layer_norm_rms_epsilon"))
    return {f"{arch}.embedding_length": to, f"{arch}.attention.layer_norm_rms_epsilon": eps * ratio,
            f"{arch}.attention.key_length": head, f"{arch}.attention.value_length": head}


# ---- perplexity ----------------------------------------------------------------------------------
def perplexity(binary: Path, model: Path, text: Path, ctx: int, chunks: int, threads: int) -> float:
    cmd = [str(binary), "-m", str(model), "-f", str(text), "-c", str(ctx), "-t", str(threads), "-b", str(ctx)]
    if chunks:
        cmd += ["--chunks", str(chunks)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = re.search(r"Final estimate: PPL = ([0-9.]+)", done.stdout + done.stderr)
    if not found:
        raise RuntimeError(f"llama-perplexity gave no estimate for {model}:\n{(done.stdout + done.stderr)[-2000:]}")
    return float(found.group(1))


def bench_perplexity(args) -> dict:
    from lorastudio.core.models.gguf_arch import tensor_kind
    work = Path(args.work or Path(args.f16).parent)
    work.mkdir(parents=True, exist_ok=True)
    import gguf
    reader = gguf.GGUFReader(str(args.f16))
    config = model_config(reader)
    tied = "output.weight" not in {t.name for t in reader.tensors}
    del reader
    result = {"f16": perplexity(args.llama_perplexity, args.f16, args.text, args.ctx, args.chunks, args.threads)}
    print(f"  f16: PPL {result['f16']:.4f}", flush=True)
    for ftype in args.types.split(","):
        theirs, ours = work / f"theirs-{ftype}.gguf", work / f"ours-{ftype}.gguf"
        t0 = time.perf_counter()
        subprocess.run([str(args.llama_quantize), str(args.f16), str(theirs), ftype.upper(), str(args.threads)],
                       check=True, capture_output=True)
        their_seconds = time.perf_counter() - t0
        file_type = int(getattr(gguf.LlamaFileType, f"MOSTLY_{ftype.upper()}"))
        info = rewrite(Path(args.f16), ours,
                       lambda name, shape, qtype: "f32" if qtype == gguf.GGMLQuantizationType.F32 and len(shape) < 2
                       else tensor_kind(name, shape, ftype, tied, config), file_type)
        mine = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(ours)).tensors}
        theirs_types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(theirs)).tensors}
        differ = sorted(n for n in mine if mine[n] != theirs_types.get(n))
        p_theirs = perplexity(args.llama_perplexity, theirs, args.text, args.ctx, args.chunks, args.threads)
        p_ours = perplexity(args.llama_perplexity, ours, args.text, args.ctx, args.chunks, args.threads)
        result[ftype] = {"theirs": p_theirs, "ours": p_ours, "ours_over_theirs": round(p_ours / p_theirs, 5),
                         "bytes_theirs": theirs.stat().st_size, "bytes_ours": ours.stat().st_size,
                         "types_differ": differ[:10], "types_ours": info["tensor_types"],
                         "seconds_theirs": round(their_seconds, 1), "seconds_ours_quantize": info["quantize_seconds"]}
        print(f"  {ftype}: PPL llama-quantize {p_theirs:.4f}, ours {p_ours:.4f} (ratio {p_ours / p_theirs:.4f}); "
              f"tensor types differ on {len(differ)}", flush=True)
    result["load_average"] = os.getloadavg()
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--layers", type=int, default=2, help="layers to time (2: one with q6_k tensors, one without)")
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--full", action="store_true", help="all 32 layers instead of extrapolating")
    b = sub.add_parser("blocks")
    b.add_argument("--ggml-lib", type=Path, required=True, help="libggml-base.so of a llama.cpp build")
    q = sub.add_parser("perplexity")
    q.add_argument("--llama-quantize", type=Path, required=True)
    q.add_argument("--llama-perplexity", type=Path, required=True)
    q.add_argument("--f16", type=Path, required=True, help="the f16 GGUF both quantize")
    q.add_argument("--text", type=Path, required=True, help="a plain text file")
    q.add_argument("--types", default="q4_k_m")
    q.add_argument("--ctx", type=int, default=512)
    q.add_argument("--chunks", type=int, default=0, help="at most this many chunks of --ctx tokens (0: all)")
    q.add_argument("--threads", type=int, default=2)
    q.add_argument("--work", type=Path, help="where the quantized files go (default: beside --f16)")
    m = sub.add_parser("make-f16")
    m.add_argument("source", type=Path)
    m.add_argument("out", type=Path)
    m.add_argument("--dither", action="store_true")
    m.add_argument("--pad-to", type=int, default=0, help="pad the hidden size to this many channels (e.g. 768)")
    args = p.parse_args(argv)
    run = {"speed": bench_speed, "blocks": bench_blocks, "perplexity": bench_perplexity, "make-f16": make_f16}
    print(json.dumps({args.what: run[args.what](args)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
