"""Where a training step's GPU time goes: torch.profiler over our real model loading and step.

python tests/bench/profile_step.py MODEL_DIR [--seq 2048] [--mb 4] [--memory-mode checkpoint] [--no-fused]
Loads the model through core.engine.model_loading (as a run does), trains 3 warm-up micro-steps,
profiles 2, and prints the CUDA kernels by total time, grouped into families.
"""
from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

FAMILIES = [("gemm", ("gemm", "xmma", "cutlass", "sm90", "nvjet")), ("flash/attention", ("flash", "fmha", "attn")),
            ("dequantize", ("dequant", "kDequantize")), ("copy/cast", ("copy", "Copy", "cast")),
            ("liger/triton", ("_kernel", "triton")), ("elementwise", ("elementwise", "vectorized")),
            ("reduce", ("reduce",))]


def family(name: str) -> str:
    for fam, keys in FAMILIES:
        if any(k in name for k in keys):
            return fam
    return "other"


def report_syncs(step) -> None:
    """Run one step with CUDA's sync debug mode on and print, for each synchronizing call, the
    innermost frames outside torch that led to it (a sync stops the host running ahead of the GPU)."""
    import traceback

    import torch
    import warnings
    seen = collections.Counter()

    def show(message, category, filename, lineno, file=None, line=None):
        frames = [f for f in traceback.extract_stack()[:-1] if "/torch/" not in f.filename
                  and "warnings.py" not in f.filename]
        seen[" <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames[-4:]))] += 1

    torch.cuda.set_sync_debug_mode("warn")
    old = warnings.showwarning
    warnings.showwarning = show
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = show
            step()
            torch.cuda.synchronize()
    finally:
        warnings.showwarning = old
        torch.cuda.set_sync_debug_mode("default")
    print(f"host-device syncs in one step: {sum(seen.values())}")
    for where, n in seen.most_common():
        print(f"  {n:3d}x {where}")


def main():
    import torch
    import yaml
    from torch.profiler import ProfilerActivity, profile

    from lorastudio.core.config import RunConfig
    from lorastudio.core.engine.model_loading import load_for_training, trainable_parameters
    from lorastudio.core.models.info import read_model_info

    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--mb", type=int, default=4)
    p.add_argument("--memory-mode", default="checkpoint")
    p.add_argument("--no-fused", action="store_true")
    p.add_argument("--syncs", action="store_true", help="print where each host-device sync of a step comes from")
    p.add_argument("--host", type=int, default=0, help="also list the N host-side calls with the most self CPU time")
    a = p.parse_args()
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    cfg = RunConfig.from_dict({"model": a.model, "quantization": "4bit", "device": "cuda",
                               "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "targets": targets},
                               "data": {"path": "unused.jsonl"},
                               "training": {"memory_mode": a.memory_mode, "fused_lora": not a.no_fused}})
    lm = load_for_training(cfg, read_model_info(a.model))
    print("\n".join(lm.notes))
    model = lm.model
    model.train()
    opt = torch.optim.AdamW(trainable_parameters(model), lr=1e-4, fused=True)
    vocab = model.get_input_embeddings().weight.shape[0]
    x = torch.randint(0, vocab, (a.mb, a.seq), device="cuda")

    def step():
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    if a.syncs:
        report_syncs(step)
    t = time.perf_counter()
    for _ in range(10):
        step()
    torch.cuda.synchronize()
    ms = (time.perf_counter() - t) / 10 * 1000
    print(f"step {ms:.0f} ms, {a.mb * a.seq / ms * 1000:,.0f} tok/s, peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    activities = [ProfilerActivity.CUDA] + ([ProfilerActivity.CPU] if a.host else [])
    with profile(activities=activities) as prof:
        for _ in range(2):
            step()
        torch.cuda.synchronize()
    fams = collections.Counter()
    rows = []
    for ev in prof.key_averages():
        # self time: with host events recorded, an operator's total also counts its kernels'
        t_us = getattr(ev, "self_device_time_total", 0) or getattr(ev, "self_cuda_time_total", 0)
        if t_us <= 0:
            continue
        fams[family(ev.key)] += t_us / 2 / 1000
        rows.append((t_us / 2 / 1000, ev.count // 2, ev.key[:110]))
    print(f"GPU kernel time {sum(fams.values()):.0f} ms a step of {ms:.0f} ms wall "
          f"({sum(fams.values()) / ms:.0%} busy: the rest is the host launching work)")
    print("per step, by family (ms):", ", ".join(f"{k} {v:.1f}" for k, v in fams.most_common()))
    for t_ms, n, key in sorted(rows, reverse=True)[:22]:
        print(f"{t_ms:8.2f} ms {n:5d}x {key}")
    if a.host:
        host = sorted(((ev.self_cpu_time_total / 2 / 1000, ev.count // 2, ev.key[:90]) for ev in prof.key_averages()
                       if ev.self_cpu_time_total > 0), reverse=True)
        print(f"host: self CPU time per step {sum(h[0] for h in host):.0f} ms (profiler overhead included); top calls:")
        for t_ms, n, key in host[:a.host]:
            print(f"{t_ms:8.2f} ms {n:6d}x {key}")


if __name__ == "__main__":
    main()
