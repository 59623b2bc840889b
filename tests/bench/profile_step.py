"""Where a training step's GPU time goes: torch.profiler over one real step, ours or Unsloth's.

python tests/bench/profile_step.py MODEL_DIR [--seq 2048] [--mb 4] [--memory-mode checkpoint] [--no-fused]
       [--peer ours|unsloth] [--json OUT.json] [--syncs] [--host N]
python tests/bench/profile_step.py MODEL_DIR --vs unsloth [--memory-mode checkpoint[,lean]] [--seq 2048] [--mb 2]

One process, one model: ours is loaded through core.engine.model_loading (as a run loads it), the
peer the way ../shared/peers/unsloth_qlora.py loads it (NF4, r 16 on q,k,v,o,gate,up,down, its
offloaded checkpointing for every memory mode but `none`). Both train on the same token ids (a CPU
generator seeded 0) with the same fused AdamW, 3 warm-up steps, 10 timed steps (step time, tok/s),
then 2 profiled ones. It prints the GPU time a step by kernel group and the largest kernels.
`--vs unsloth` runs ours (for each memory mode listed) and then the peer, each in its own process,
back to back, and prints one Markdown table of the groups side by side.

Groups: a kernel launched by a GEMM operator (mm, addmm, addmm_, ...) whose input shapes have a
dimension equal to the LoRA rank is a LoRA GEMM, any other GEMM is a base (frozen-weight) GEMM;
the rest go by kernel name (dequantization, attention, cross-entropy, optimizer, copies,
host<->device memcpy), and everything else is "norms/RoPE/elementwise".
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
GROUPS = ["GEMMs bf16 (base)", "LoRA GEMMs", "dequantization", "attention", "norms/RoPE/elementwise",
          "cross-entropy", "copies/casts", "optimizer", "memcpy H2D/D2H"]
GEMM_OPS = {"aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm", "aten::matmul",
            "aten::_addmm_activation", "aten::linear", "aten::addbmm"}
GEMM_NAMES = ("gemm", "xmma", "cutlass", "nvjet", "sm90_", "sm80_", "cublas", "splitK", "gemv")
COPY_OPS = {"aten::copy_", "aten::_to_copy", "aten::to", "aten::cat", "aten::clone", "aten::contiguous",
            "aten::index_select", "aten::stack"}


def group(kernel: str, op: str | None = None, shapes=None, rank: int = 16) -> str:
    k = kernel.lower()
    if kernel.startswith("Memcpy HtoD") or kernel.startswith("Memcpy DtoH"):
        return "memcpy H2D/D2H"
    if kernel.startswith("Memcpy") or kernel.startswith("Memset"):
        return "copies/casts"
    if any(n in k for n in ("flash", "fmha", "attn", "sdpa", "attention")):
        return "attention"
    if any(n.lower() in k for n in GEMM_NAMES) or op in GEMM_OPS:
        if op in GEMM_OPS and shapes and any(rank in (s or ()) for s in shapes if isinstance(s, (list, tuple))):
            return "LoRA GEMMs"
        if not ("elementwise" in k or "copy" in k or "reduce" in k):
            return "GEMMs bf16 (base)"
    if "dequant" in k:
        return "dequantization"
    if any(n in k for n in ("cross_entropy", "crossentropy", "log_softmax", "logsoftmax", "nll_loss", "_ce_")):
        return "cross-entropy"
    if "adam" in k or "multi_tensor_apply" in k or (op and ("adam" in op or "_foreach" in op)):
        return "optimizer"
    if "copy" in k or "catarray" in k or (op in COPY_OPS):
        return "copies/casts"
    return "norms/RoPE/elementwise"


def report_syncs(step) -> None:
    """Run one step with CUDA's sync debug mode on and print, for each synchronizing call, the
    innermost frames outside torch that led to it (a sync stops the host running ahead of the GPU)."""
    import traceback
    import warnings

    import torch
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


def load_ours(a):
    from lorastudio.core.config import RunConfig
    from lorastudio.core.engine.model_loading import load_for_training, trainable_parameters
    from lorastudio.core.models.info import read_model_info
    cfg = RunConfig.from_dict({"model": a.model, "quantization": "4bit", "device": "cuda",
                               "lora": {"r": a.rank, "alpha": 2 * a.rank, "dropout": 0.0, "targets": TARGETS},
                               "data": {"path": "unused.jsonl"},
                               "training": {"memory_mode": a.memory_mode, "fused_lora": not a.no_fused}})
    lm = load_for_training(cfg, read_model_info(a.model))
    print("\n".join(lm.notes))
    return lm.model, list(trainable_parameters(lm.model)), {"kernels": list(lm.kernels),
                                                            "memory_mode": a.memory_mode}


def load_unsloth(a):
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
    import unsloth  # noqa: F401  (first: it patches transformers)
    import torch
    from unsloth import FastLanguageModel
    offload = a.memory_mode != "none"
    model, _ = FastLanguageModel.from_pretrained(model_name=a.model, max_seq_length=a.seq, dtype=torch.bfloat16,
                                                 load_in_4bit=True, local_files_only=True)
    model = FastLanguageModel.get_peft_model(model, r=a.rank, lora_alpha=2 * a.rank, lora_dropout=0, bias="none",
                                             random_state=0, target_modules=TARGETS,
                                             use_gradient_checkpointing="unsloth" if offload else False)
    return model, [p for p in model.parameters() if p.requires_grad], {
        "unsloth": getattr(unsloth, "__version__", "?"), "memory_mode": "offload" if offload else "none"}


def profile_one(a) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    model, params, info = (load_unsloth if a.peer == "unsloth" else load_ours)(a)
    model.train()
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True)
    vocab = model.get_input_embeddings().weight.shape[0]
    x = torch.randint(0, vocab, (a.mb, a.seq), generator=torch.Generator().manual_seed(0)).to("cuda")
    losses = []

    def step():
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    torch.cuda.reset_peak_memory_stats()
    for _ in range(3):
        losses.append(step().detach())
    torch.cuda.synchronize()
    if a.syncs:
        report_syncs(step)
    t = time.perf_counter()
    for _ in range(10):
        step()
    torch.cuda.synchronize()
    ms = (time.perf_counter() - t) / 10 * 1000
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(f"[{a.peer}] step {ms:.0f} ms, {a.mb * a.seq / ms * 1000:,.0f} tok/s, peak {peak:.2f} GiB", flush=True)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
        for _ in range(2):
            step()
        torch.cuda.synchronize()
    events = prof.events()
    total = collections.Counter()          # kernel name -> µs, over the 2 steps
    calls = collections.Counter()
    for ev in events:
        if ev.device_type != torch.autograd.DeviceType.CPU and not ev.is_async:
            total[ev.name] += ev.time_range.elapsed_us()
            calls[ev.name] += 1
    placed = collections.Counter()          # (group, kernel) -> µs, from the operator that launched it
    attributed = collections.Counter()
    for ev in events:
        if ev.device_type == torch.autograd.DeviceType.CPU and ev.kernels:
            for k in ev.kernels:
                placed[(group(k.name, ev.name, ev.input_shapes, a.rank), k.name)] += k.duration
                attributed[k.name] += k.duration
    for name, us in total.items():          # kernels no operator claimed (Triton launches, memcpy): by name
        rest = us - attributed.get(name, 0)
        if rest > 0:
            placed[(group(name, None, None, a.rank), name)] += rest
    groups = collections.Counter()
    for (g, _), us in placed.items():
        groups[g] += us / 2 / 1000
    top = sorted(((us / 2 / 1000, g, name[:100], calls[name] // 2) for (g, name), us in placed.items()), reverse=True)
    busy = sum(groups.values())
    result = {"peer": a.peer, **info, "seq": a.seq, "mb": a.mb, "step_ms": round(ms, 1),
              "tok_s": round(a.mb * a.seq / ms * 1000), "peak_gib": round(peak, 2), "gpu_busy_ms": round(busy, 1),
              "groups_ms": {g: round(groups.get(g, 0.0), 2) for g in GROUPS},
              "loss_first3": [round(float(v), 4) for v in losses],
              "top": [{"ms": round(t_ms, 2), "group": g, "kernel": n, "calls": c} for t_ms, g, n, c in top[:40]]}
    print(f"GPU kernel time {busy:.0f} ms a step of {ms:.0f} ms wall ({busy / ms:.0%} busy)")
    print("per step, by group (ms):", ", ".join(f"{g} {v:.1f}" for g, v in groups.most_common()))
    for t_ms, g, name, n in top[:25]:
        print(f"{t_ms:8.2f} ms {n:5d}x [{g}] {name}")
    if a.host:
        host = sorted(((ev.self_cpu_time_total / 2 / 1000, ev.count // 2, ev.key[:90]) for ev in prof.key_averages()
                       if ev.self_cpu_time_total > 0), reverse=True)
        print(f"host: self CPU time per step {sum(h[0] for h in host):.0f} ms (profiler overhead included); top calls:")
        for t_ms, n, key in host[:a.host]:
            print(f"{t_ms:8.2f} ms {n:6d}x {key}")
    return result


def table(results: list[dict]) -> str:
    def name(r):
        return f"Unsloth {r.get('unsloth', '')} ({r['memory_mode']})" if r["peer"] == "unsloth" \
            else f"ours ({r['memory_mode']})"
    head = "| GPU ms a step | " + " | ".join(name(r) for r in results) + " |"
    out = [head, "|---" * (len(results) + 1) + "|"]
    for g in GROUPS:
        out.append(f"| {g} | " + " | ".join(f"{r['groups_ms'][g]:.1f}" for r in results) + " |")
    out.append("| **GPU busy (sum)** | " + " | ".join(f"**{r['gpu_busy_ms']:.1f}**" for r in results) + " |")
    out.append("| step (wall, 10 steps) | " + " | ".join(f"{r['step_ms']:.1f}" for r in results) + " |")
    out.append("| tokens/s | " + " | ".join(f"{r['tok_s']:,}" for r in results) + " |")
    out.append("| peak allocated GiB | " + " | ".join(f"{r['peak_gib']:.2f}" for r in results) + " |")
    return "\n".join(out)


def compare(a) -> int:
    """Ours for each memory mode listed, then the peer, each its own process, back to back."""
    runs = [("ours", m) for m in a.memory_mode.split(",")] + [(a.vs, a.memory_mode.split(",")[0])]
    results = []
    for peer, mode in runs:
        out = f"/tmp/profile-{Path(a.model).name}-{peer}-{mode}.json"
        cmd = [sys.executable, __file__, a.model, "--seq", str(a.seq), "--mb", str(a.mb), "--rank", str(a.rank),
               "--memory-mode", mode, "--peer", peer, "--json", out] + (["--no-fused"] if a.no_fused else [])
        print("$", " ".join(cmd), flush=True)
        p = subprocess.run(cmd)
        if p.returncode == 0 and Path(out).exists():
            results.append(json.loads(Path(out).read_text()))
        else:
            print(f"{peer} ({mode}) failed: exit {p.returncode}", flush=True)
    if results:
        print(table(results))
        if a.json:
            Path(a.json).write_text(json.dumps(results, indent=1))
    return 0 if len(results) == len(runs) else 1


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--mb", type=int, default=4)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--memory-mode", default="checkpoint", help="ours: none|checkpoint|lean (with --vs: a list)")
    p.add_argument("--no-fused", action="store_true")
    p.add_argument("--peer", default="ours", choices=["ours", "unsloth"])
    p.add_argument("--vs", choices=["unsloth"], help="profile ours and this peer back to back, one table")
    p.add_argument("--json", help="write the result (with --vs: all results) here")
    p.add_argument("--syncs", action="store_true", help="print where each host-device sync of a step comes from")
    p.add_argument("--host", type=int, default=0, help="also list the N host-side calls with the most self CPU time")
    a = p.parse_args()
    if a.vs:
        return compare(a)
    result = profile_one(a)
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
