"""DDP speed on several GPUs (issue 18): the same shape and micro-batch per GPU on 1 and on N
processes, through the real CLI and worker (tests/bench/bench_train.py).

python tests/bench/bench_ddp.py [--shape llama-8b] [--processes 2] [--mb 2] [--seq 2048] [--steps 25]
Builds (or reuses) the shape with random weights (tests/bench/make_model.py), then prints one JSON
line: tokens/s of each run (the median step after 5; a step's tokens are all ranks'), peak memory
of rank 0, and the speed-up (goal on 2×H200, 8B shape: ≥ 1.8×).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def one(model: Path, processes: int, a) -> dict:
    p = subprocess.run([sys.executable, str(HERE / "bench_train.py"), str(model), "--quantization", a.quantization,
                        "--steps", str(a.steps), "--seq-len", str(a.seq), "--batch-size", str(a.mb),
                        "--targets", "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
                        "--processes", str(processes)], capture_output=True, text=True)
    lines = [line for line in p.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"processes": processes, "error": (p.stdout + p.stderr)[-2000:]}
    r = json.loads(lines[-1])
    return {"processes": processes, "exit": r["exit"], "tok_s": r["tokens_per_s_median"],
            "peak_gib_rank0": round(r["peak_allocated_gib"], 2), "end": r["end"]}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--models", type=Path, default=Path("/tmp/bench-models"))
    p.add_argument("--shape", default="llama-8b")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--mb", type=int, default=2)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--quantization", default="4bit")
    a = p.parse_args()
    model = a.models / a.shape
    if not (model / "config.json").exists():
        subprocess.run([sys.executable, str(HERE / "make_model.py"), str(model), "--shape", a.shape], check=True)
    single, several = one(model, 1, a), one(model, a.processes, a)
    speedup = (several["tok_s"] / single["tok_s"]) if several.get("tok_s") and single.get("tok_s") else None
    print(json.dumps({"shape": a.shape, "mb_per_gpu": a.mb, "seq": a.seq, "single": single, "several": several,
                      "speedup": round(speedup, 3) if speedup else None}))
    return 0 if speedup else 1


if __name__ == "__main__":
    sys.exit(main())
