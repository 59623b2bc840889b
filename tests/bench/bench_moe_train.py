"""Benchmark: a Qwen3-30B-A3B-shaped model (fewer layers) trained through the real CLI with the experts
adapted, on the grouped path (training.fused_lora) and on PEFT's own path: tokens/s, peak allocated
memory from the journal, and the memory model's prediction for each (issue 28's goals).

    source tests/bench/gpu_env.sh && python tests/bench/bench_moe_train.py --layers 6 [--seq-len 2048]

The layer count scales the experts' part of memory and time evenly (every layer of Qwen3-30B-A3B is
an MoE layer), so the full model's figures are the memory model's, checked here on the layers run.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.bench.bench_memory_fit import predict  # noqa: E402
from tests.bench.bench_train import write_data  # noqa: E402

GIB = 1 << 30
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "mlp.experts.gate_up_proj", "mlp.experts.down_proj"]


def run(work: Path, model: Path, data: Path, fused: bool, seq: int, batch: int, steps: int, mode: str) -> dict:
    import yaml
    from lorastudio.core.journal import read_events
    name = f"qwen3-30b-a3b-{'grouped' if fused else 'peft'}-{mode}-{seq}-b{batch}"
    folder = work / "runs" / f"{name}-{int(time.time())}"
    folder.mkdir(parents=True)
    cfg = {"model": str(model), "quantization": "4bit", "device": "cuda",
           "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "targets": TARGETS},
           "data": {"path": str(data), "validation_split": 0.0},
           "training": {"max_steps": steps, "lr": 2e-4, "batch_size": batch, "grad_accum": 1, "seq_len": seq,
                        "save_every": 0, "warmup_steps": 1, "memory_mode": mode, "oom_retry": False,
                        "fused_lora": fused}}
    (folder / "c.yaml").write_text(yaml.safe_dump(cfg))
    began = time.time()
    proc = subprocess.run([sys.executable, "-m", "lorastudio.app.launcher", "train", str(folder / "c.yaml"),
                           "--run-dir", str(folder / "run")], capture_output=True, text=True)
    events = read_events(folder / "run" / "events.jsonl") if (folder / "run" / "events.jsonl").is_file() else []
    steps_ev = [e for e in events if e["type"] == "step"]
    peaks = [e["cuda_peak"] for e in events if e["type"] == "memory" and "cuda_peak" in e]
    start = next((e for e in reversed(events) if e["type"] == "start"), {})
    later = steps_ev[1:] or steps_ev           # the first step includes the kernels' warm-up
    tps = [e.get("tokens_per_s") for e in later if e.get("tokens_per_s")]
    row = {"name": name, "shape": "qwen3-30b-a3b", "quantization": "4bit", "seq_len": seq, "mode": mode,
           "batch": batch, "exit": proc.returncode, "seconds": round(time.time() - began, 1),
           "measured": max(peaks) if peaks else None, "mode_used": start.get("memory_mode"),
           "kernels": start.get("kernels"), "trainable": start.get("trainable_params"),
           "tokens_per_s": round(sum(tps) / len(tps), 1) if tps else None,
           "config": str(folder / "run" / "config.yaml")}
    if not peaks:
        log = folder / "run" / "worker.log"
        row["tail"] = (log.read_text()[-2500:] if log.is_file() else "") + proc.stderr[-1500:]
    else:
        row.update(predict(row))
        row["error"] = round((row["predicted"] - row["measured"]) / row["measured"], 4)
    return row


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "lorastudio-bench-moe")
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--mode", default="checkpoint")
    p.add_argument("--paths", default="grouped,peft")
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    model = a.work / f"qwen3-30b-a3b-{a.layers}l"
    if not (model / "shape.json").is_file():
        subprocess.run([sys.executable, str(ROOT / "tests" / "bench" / "make_model.py"), str(model), "--shape",
                        "qwen3-30b-a3b", "--layers", str(a.layers)], check=True)
    data = write_data(a.work / f"data-{a.seq_len}.jsonl", examples=64, words=a.seq_len)
    rows = []
    for path in a.paths.split(","):
        row = run(a.work, model, data, path == "grouped", a.seq_len, a.batch, a.steps, a.mode)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{'configuration':<44}{'tokens/s':>10}{'predicted':>11}{'measured':>10}{'error':>8}")
    for r in rows:
        if r.get("measured"):
            print(f"{r['name']:<44}{r['tokens_per_s'] or 0:>10,.0f}{r['predicted'] / GIB:>9.2f} G"
                  f"{r['measured'] / GIB:>8.2f} G{r['error']:>+8.1%}")
        else:
            print(f"{r['name']:<44}   failed: exit {r['exit']}")
    if a.out:
        a.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
