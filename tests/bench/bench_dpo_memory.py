"""Benchmark: GPU memory of DPO (and ORPO) against SFT at the same batch, through the real CLI.

python tests/bench/bench_dpo_memory.py MODEL_DIR [--quantization 4bit] [--steps 6] [--batch-size 4] [--seq-len 512]

Writes one data set of prompts with a chosen and a rejected answer, trains SFT on prompt + chosen
(batch B examples) and DPO and ORPO on the pairs (batch B pairs), a few steps each in the real
worker on CUDA, and prints one JSON line: each method's peak allocated memory (the journal's
`cuda_peak`, reset when training starts), tokens/s, and the DPO / SFT ratio that the goal bounds
(≤ 1.3: the reference is the same frozen base with the adapter switched off, no second copy).
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

WORDS = ("adapter rank frozen weight quantized gradient checkpoint token journal memory speed "
         "llama studio train model layer attention update matrix learning rate batch").split()


def write_data(folder: Path, n: int, words: int, seed: int = 0) -> tuple[Path, Path]:
    """(SFT file: prompt/completion, pair file: prompt/chosen/rejected) of the same prompts."""
    rng = random.Random(seed)
    text = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))    # noqa: E731
    sft, pairs = folder / "sft.jsonl", folder / "pairs.jsonl"
    with open(sft, "w") as fs, open(pairs, "w") as fp:
        for _ in range(n):
            prompt, chosen, rejected = text(words // 2), text(words // 2), text(words // 2)
            fs.write(json.dumps({"prompt": prompt, "completion": chosen}) + "\n")
            fp.write(json.dumps({"prompt": prompt, "chosen": chosen, "rejected": rejected}) + "\n")
    return sft, pairs


def run(work: Path, name: str, method: str, data: Path, a) -> dict:
    import yaml
    cfg = {"model": str(a.model), "quantization": a.quantization, "device": "cuda",
           "lora": {"r": a.rank, "alpha": 2 * a.rank, "dropout": 0.0, "targets": "all-linear"},
           "data": {"path": str(data), "validation_split": 0.0},
           "training": {"method": method, "max_steps": a.steps, "lr": 1e-5, "batch_size": a.batch_size,
                        "grad_accum": 1, "seq_len": a.seq_len, "save_every": 0, "warmup_steps": 1,
                        "memory_mode": a.memory_mode}}
    (work / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    run_dir = work / name
    proc = subprocess.run([sys.executable, "-m", "lorastudio.app.launcher", "train", str(work / f"{name}.yaml"),
                           "--run-dir", str(run_dir)], capture_output=True, text=True)
    from lorastudio.core.journal import read_events
    events = read_events(run_dir / "events.jsonl")
    steps = [e for e in events if e["type"] == "step"]
    memory = [e for e in events if e["type"] == "memory"]
    error = next((e for e in events if e["type"] == "error"), None)
    return {"exit": proc.returncode, "steps": len(steps),
            "peak_allocated_gib": round(max((m.get("cuda_peak", 0) for m in memory), default=0) / 2**30, 3),
            "peak_reserved_gib": round(max((m.get("cuda_reserved", 0) for m in memory), default=0) / 2**30, 3),
            "tokens_per_s_median": round(statistics.median(e["tokens_per_s"] for e in steps[2:]), 1)
            if len(steps) > 2 else None,
            "last_loss": steps[-1]["loss"] if steps else None,
            "error": f"{error['kind']}: {error['message']}" if error else None}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("model", type=Path)
    p.add_argument("--quantization", default="4bit")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--memory-mode", default="checkpoint", choices=["none", "checkpoint", "lean", "auto"])
    p.add_argument("--no-orpo", action="store_true", help="measure SFT and DPO only")
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-dpo-"))
    sft_data, pair_data = write_data(work, n=max(64, a.batch_size * a.steps), words=a.seq_len // 12)   # ~5 tokens a word with the bench tokenizer: each side ~1/5 of seq_len
    result = {"model": str(a.model), "quantization": a.quantization, "batch_size": a.batch_size,
              "seq_len": a.seq_len, "memory_mode": a.memory_mode,
              "sft": run(work, "sft", "sft", sft_data, a), "dpo": run(work, "dpo", "dpo", pair_data, a)}
    if not a.no_orpo:
        result["orpo"] = run(work, "orpo", "orpo", pair_data, a)
    sft_peak = result["sft"]["peak_allocated_gib"]
    for method in ("dpo", "orpo"):
        if method in result and sft_peak:
            result[f"{method}_over_sft"] = round(result[method]["peak_allocated_gib"] / sft_peak, 3)
    result["goal_dpo_le_1.3x_sft"] = result.get("dpo_over_sft") is not None and result["dpo_over_sft"] <= 1.3
    print(json.dumps(result))
    return 0 if result["sft"]["exit"] == 0 and result["dpo"]["exit"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
