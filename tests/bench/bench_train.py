"""Benchmark: train a real-shaped model through the real CLI and worker; report speed and memory.

python tests/bench/bench_train.py MODEL_DIR --quantization 4bit --steps 30 --seq-len 1024 --batch-size 4
Prints one JSON line: median tokens/s over steps after the first 5, peak allocated and reserved
VRAM from the journal's memory events, device used/total from NVML, and the loss trend.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

WORDS = ("adapter rank frozen weight quantized gradient checkpoint token journal memory speed "
         "llama studio train model layer attention update matrix learning rate batch").split()


def write_data(path: Path, examples: int, words: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with open(path, "w") as fh:
        for _ in range(examples):
            fh.write(json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(words))}) + "\n")
    return path


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("model", type=Path)
    p.add_argument("--quantization", default="4bit")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--targets", default="all-linear")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--memory-mode", default="checkpoint", choices=["none", "checkpoint", "lean", "auto"])
    p.add_argument("--packing", action="store_true", help="data.packing on (rows are full anyway)")
    p.add_argument("--no-fused", action="store_true", help="PEFT's own LoRA layers (training.fused_lora false)")
    p.add_argument("--processes", type=int, default=1, help="distributed.processes (one GPU each)")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    data = write_data(work / "data.jsonl", examples=400, words=a.seq_len)   # long enough to fill seq_len
    targets = a.targets if a.targets == "all-linear" else a.targets.split(",")
    cfg = {"model": str(a.model), "quantization": a.quantization, "device": "cuda",
           "lora": {"r": a.rank, "alpha": 2 * a.rank, "dropout": 0.0, "targets": targets},
           "data": {"path": str(data), "validation_split": 0.0, "packing": a.packing},
           "training": {"max_steps": a.steps, "lr": 2e-4, "batch_size": a.batch_size, "grad_accum": 1,
                        "seq_len": a.seq_len, "save_every": 0, "warmup_steps": 2,
                        "memory_mode": a.memory_mode, "fused_lora": not a.no_fused},
           "distributed": {"processes": a.processes}}
    import yaml
    (work / "c.yaml").write_text(yaml.safe_dump(cfg))
    run_dir = work / "run"
    proc = subprocess.run([sys.executable, "-m", "lorastudio.app.launcher", "train", str(work / "c.yaml"),
                           "--run-dir", str(run_dir)], capture_output=True, text=True)
    from lorastudio.core.journal import read_events
    events = read_events(run_dir / "events.jsonl")
    steps = [e for e in events if e["type"] == "step"]
    memory = [e for e in events if e["type"] == "memory"]
    start = next((e for e in events if e["type"] == "start"), {})
    result = {
        "quantization": a.quantization, "exit": proc.returncode, "steps": len(steps),
        "seq_len": a.seq_len, "batch_size": a.batch_size, "rank": a.rank, "targets": a.targets,
        "trainable_params": start.get("trainable_params"), "total_params": start.get("total_params"),
        "tokens_per_s_median": statistics.median(e["tokens_per_s"] for e in steps[5:]) if len(steps) > 5 else None,
        "peak_allocated_gib": max((m.get("cuda_peak", 0) for m in memory), default=0) / 2**30,
        "peak_reserved_gib": max((m.get("cuda_reserved", 0) for m in memory), default=0) / 2**30,
        "device_used_gib": max((m.get("device_used", 0) for m in memory), default=0) / 2**30,
        "device_total_gib": max((m.get("device_total", 0) for m in memory), default=0) / 2**30,
        "losses": [e["loss"] for e in steps],
        "first_loss": steps[0]["loss"] if steps else None, "last_loss": steps[-1]["loss"] if steps else None,
        "memory_mode": start.get("memory_mode"), "kernels": start.get("kernels"),
        "logs": [e["message"] for e in events if e["type"] == "log"][:6],
        "end": events[-1] if events else None,
    }
    line = json.dumps(result)
    print(line)
    if a.out:
        a.out.write_text(line + "\n")
    if proc.returncode:
        print(proc.stdout[-3000:], proc.stderr[-3000:], (run_dir / "worker.log").read_text()[-4000:], sep="\n")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
