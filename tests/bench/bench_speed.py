"""The speed and memory harness: our trainer against its peers, each in its own process.

python tests/bench/bench_speed.py --models /tmp/models --shapes llama-1b,llama-8b [--modes ckpt,none]
       [--peers ours,ours-lean,hf,unsloth] [--steps 25] [--out results.jsonl]

For each shape it builds (or reuses) a model folder of that shape with random weights, then for
each mode runs, on the same folder and the same row length and micro-batch:
  ours       our trainer through the real CLI and worker (tests/bench/bench_train.py): memory mode
             `checkpoint` for ckpt, `none` for none; tokens/s is the median step after 5;
  ours-lean  the same with memory mode `lean` (ckpt row only);
  hf         transformers + PEFT as documented (tests/bench/peer_hf_peft.py);
  unsloth    Unsloth's reference run (unsloth_qlora.py beside this repo's .peers/, or --unsloth-script),
             when `import unsloth` works; its ckpt mode is its offloaded checkpointing.
Peak memory is allocated GiB during training (each tool resets its peak after loading). It prints
one Markdown table with our ratio to each peer, and appends every result to --out.

Before timing a shape it checks that the gradients are real (tests/bench/grad_check.py): the L2 norm
of the LoRA gradients over the first --grad-steps steps of our path (the fused kernels, checkpointing
when ckpt is among the modes) equals PEFT's reference path's within 2 %, from the same LoRA weights
and tokens (a benchmark whose gradients vanish proves nothing). A shape that fails is reported and
makes the exit status 1; --no-grad-check skips it.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MICRO_BATCH = {"llama-1b": 4, "llama-8b": 2}


def run(cmd: list[str], timeout: int) -> tuple[dict | None, str]:
    t0 = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout} s"
    out = p.stdout + p.stderr
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[7:]), f"{time.time() - t0:.0f} s"
        if line.startswith("{"):
            return json.loads(line), f"{time.time() - t0:.0f} s"
    return None, out[-1500:]


def ours(model: Path, seq: int, mb: int, mode: str, steps: int, bits: int, timeout: int):
    r, why = run([sys.executable, str(HERE / "bench_train.py"), str(model), "--quantization", f"{bits}bit",
                  "--steps", str(steps), "--seq-len", str(seq), "--batch-size", str(mb),
                  "--targets", "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
                  "--memory-mode", mode], timeout)
    if r is None or r.get("exit"):
        return None, why if r is None else json.dumps(r)[-1500:]
    return {"tok_s": round(r["tokens_per_s_median"]), "peak_gib": round(r["peak_allocated_gib"], 2),
            "reserved_gib": round(r["peak_reserved_gib"], 2), "kernels": r.get("kernels")}, why


def peer(script: Path, model: Path, seq: int, mb: int, mode: str, timeout: int, extra=()):
    r, why = run([sys.executable, str(script), str(model), str(seq), str(mb), mode, *extra], timeout)
    if r is None:
        return None, why
    return {"tok_s": r["tok_s"], "peak_gib": r["peak_train_gib"], "reserved_gib": r["reserved_gib"]}, why


def unsloth_available() -> bool:
    return subprocess.run([sys.executable, "-c", "import unsloth"], capture_output=True).returncode == 0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--models", type=Path, default=Path("/tmp/bench-models"))
    p.add_argument("--shapes", default="llama-1b,llama-8b")
    p.add_argument("--modes", default="ckpt,none")
    p.add_argument("--peers", default="ours,ours-lean,hf,unsloth")
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--timeout", type=int, default=300)
    p.add_argument("--unsloth-script", type=Path, default=ROOT / ".peers" / "unsloth_qlora.py")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--no-grad-check", action="store_true", help="skip the gradient check against PEFT")
    p.add_argument("--grad-steps", type=int, default=3)
    p.add_argument("--grad-seq", type=int, default=None, help="row length of the gradient check (default --seq)")
    a = p.parse_args()
    peers = a.peers.split(",")
    if "unsloth" in peers and not (a.unsloth_script.exists() and unsloth_available()):
        print(f"Unsloth is not importable (or {a.unsloth_script} is missing): left out", flush=True)
        peers.remove("unsloth")
    rows = []
    for shape in a.shapes.split(","):
        model = a.models / shape
        if not (model / "config.json").exists():
            subprocess.run([sys.executable, str(HERE / "make_model.py"), str(model), "--shape", shape], check=True)
        mb = MICRO_BATCH.get(shape, 2)
        if not a.no_grad_check and a.bits == 4:
            rows.append(gradients(model, shape, a.grad_seq or a.seq, mb, "ckpt" in a.modes.split(","),
                                  a.grad_steps, a.timeout))
            print(json.dumps(rows[-1]), flush=True)
            if a.out:
                with open(a.out, "a") as fh:
                    fh.write(json.dumps(rows[-1]) + "\n")
        for mode in a.modes.split(","):
            jobs = {
                "ours": lambda: ours(model, a.seq, mb, "checkpoint" if mode == "ckpt" else "none", a.steps,
                                     a.bits, a.timeout),
                "ours-lean": lambda: ours(model, a.seq, mb, "lean", a.steps, a.bits, a.timeout),
                "hf": lambda: peer(HERE / "peer_hf_peft.py", model, a.seq, mb, mode, a.timeout,
                                   ("--bits", str(a.bits))),
                "unsloth": lambda: peer(a.unsloth_script, model, a.seq, mb,
                                        "offload" if mode == "ckpt" else "none", a.timeout),
            }
            for who in peers:
                if who == "ours-lean" and mode != "ckpt":
                    continue
                if who == "unsloth" and a.bits != 4:
                    continue
                result, why = jobs[who]()
                row = {"shape": shape, "mb": mb, "seq": a.seq, "bits": a.bits, "mode": mode, "who": who,
                       "result": result, "note": why}
                rows.append(row)
                print(json.dumps(row), flush=True)
                if a.out:
                    with open(a.out, "a") as fh:
                        fh.write(json.dumps(row) + "\n")
    print(table(rows))
    checks = [r for r in rows if r["who"] == "grad-check"]
    for r in checks:
        print(grad_line(r))
    return 0 if all(r["result"] and r["result"]["ok"] for r in checks) else 1


def gradients(model: Path, shape: str, seq: int, mb: int, ckpt: bool, steps: int, timeout: int) -> dict:
    """Our path's LoRA gradient norms against PEFT's reference (tests/bench/grad_check.py)."""
    sys.path.insert(0, str(HERE))
    import grad_check
    t0 = time.time()
    r = grad_check.check(str(model), seq, mb, "checkpoint" if ckpt else "none", steps, tol=0.02,
                         timeout=2 * timeout)
    return {"shape": shape, "mb": mb, "seq": seq, "bits": 4, "mode": "ckpt" if ckpt else "none",
            "who": "grad-check", "result": r, "note": f"{time.time() - t0:.0f} s"}


def grad_line(row: dict) -> str:
    r = row["result"]
    where = f"{row['shape']}, mb {row['mb']}, seq {row['seq']}, {row['mode']}"
    if not r.get("ours"):
        return f"gradients {where}: FAILED to run: {r.get('why', '')[-300:]}"
    return (f"gradients {where}: {'ok' if r['ok'] else 'FAIL'} — LoRA grad norms of the first steps, ours "
            f"{r['ours']} vs PEFT {r['ref']}, worst {r['worst_rel']:.2%} (tolerance {r['tol']:.0%})"
            + ("" if all(math.isfinite(v) and v > 0 for v in r["ours"]) else " — vanishing or non-finite"))


def table(rows: list[dict]) -> str:
    """One line per (shape, mode): each tool's tok/s and peak GiB, and our ratios to the peers."""
    out = ["| shape, mb, mode | ours | ours lean | HF+PEFT | Unsloth | ours ÷ HF | ours ÷ Unsloth |",
           "|---|---|---|---|---|---|---|"]
    keys = []
    rows = [r for r in rows if r["who"] != "grad-check"]
    for r in rows:
        k = (r["shape"], r["mb"], r["mode"], r["bits"])
        if k not in keys:
            keys.append(k)
    for k in keys:
        got = {r["who"]: r["result"] for r in rows if (r["shape"], r["mb"], r["mode"], r["bits"]) == k}

        def cell(who):
            r = got.get(who)
            return f"{r['tok_s']:,} tok/s, {r['peak_gib']:.2f} GiB" if r else "—"

        def ratio(who):
            o, p = got.get("ours"), got.get(who)
            if not (o and p):
                return "—"
            return f"{o['tok_s'] / p['tok_s']:.2f}× speed, {o['peak_gib'] / p['peak_gib']:.2f}× memory"
        out.append(f"| {k[0]} {k[3]}-bit, mb {k[1]}, {k[2]} | {cell('ours')} | {cell('ours-lean')} | "
                   f"{cell('hf')} | {cell('unsloth')} | {ratio('hf')} | {ratio('unsloth')} |")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
