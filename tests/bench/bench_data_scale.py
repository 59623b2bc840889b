"""Benchmark: a large JSONL through the data pipeline — peak RSS of the worker and the cache's speed-up.

python tests/bench/bench_data_scale.py [--rows 400000] [--median-words 30] [--model DIR] [--steps 3]

Writes ROWS log-normal-length texts (sigma 0.8), then trains STEPS steps twice through the real CLI
(`python -m lorastudio.app.launcher train`, CPU, the tiny test Llama unless --model) with an empty
token cache: the first run tokenizes, the second must hit the cache. Prints one JSON line: the
data phase's seconds of each run (journal `phase data` -> `data` event), the speed-up, the cache
hit flags and the worker's peak RSS (VmHWM, read from /proc while it runs; goal < 2.5 GiB).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.bench.bench_data_epoch import WORDS  # noqa: E402


def write_rows(path: Path, rows: int, median: int, seed: int = 13) -> int:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for _ in range(rows):
            n = max(3, int(round(math.exp(rng.gauss(math.log(median), 0.8)))))
            fh.write(json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(n))}) + "\n")
    return path.stat().st_size


def peak_rss_of_worker(run_dir: Path, stop: threading.Event, out: dict) -> None:
    """The worker's pid is in status.json; its VmHWM is its peak resident set."""
    while not stop.is_set():
        try:
            pid = json.loads((run_dir / "status.json").read_text())["pid"]
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    out["peak"] = max(out.get("peak", 0), int(line.split()[1]) * 1024)
        except (OSError, ValueError, KeyError):
            pass
        stop.wait(0.2)


def one_run(config: Path, run_dir: Path, env: dict) -> dict:
    from lorastudio.core.journal import read_events
    stop, seen = threading.Event(), {}
    watcher = threading.Thread(target=peak_rss_of_worker, args=(run_dir, stop, seen), daemon=True)
    watcher.start()
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "lorastudio.app.launcher", "train", str(config), "--run-dir",
                           str(run_dir)], capture_output=True, text=True, env=env)
    stop.set()
    events = read_events(run_dir / "events.jsonl")
    phase = next((e for e in events if e["type"] == "phase" and e.get("name") == "data"), None)
    data = next((e for e in events if e["type"] == "data"), None)
    rss = [e["rss"] for e in events if e["type"] == "memory"]
    return {"exit": proc.returncode, "wall_s": round(time.time() - t0, 1),
            "data_s": round(data["time"] - phase["time"], 2) if phase and data else None,
            "cache_hit": data and data.get("cache_hit"), "examples": data and data.get("examples"),
            "tokens": data and data.get("tokens"), "peak_rss_gib": round(seen.get("peak", 0) / 2**30, 3),
            "journal_rss_gib": round(max(rss, default=0) / 2**30, 3),
            "tail": None if proc.returncode == 0 else (proc.stderr + proc.stdout)[-2000:]}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=400_000)
    p.add_argument("--median-words", type=int, default=30)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--model", type=Path, default=None)
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    model = a.model
    if model is None:
        from tests.helpers.tiny_models import make_tiny_model
        model = make_tiny_model(work / "tiny-llama", "llama")
    data = work / "big.jsonl"
    size = write_rows(data, a.rows, a.median_words)
    import yaml
    cfg = {"model": str(model), "quantization": "none", "device": "cpu",
           "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "targets": "all-linear"},
           "data": {"path": str(data), "validation_split": 0.0},
           "training": {"max_steps": a.steps, "batch_size": 8, "seq_len": a.seq_len, "save_every": 0,
                        "eval_every": 0}}
    (work / "c.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, LORASTUDIO_CACHE=str(work / "cache"), OMP_NUM_THREADS="1")
    first = one_run(work / "c.yaml", work / "run1", env)
    second = one_run(work / "c.yaml", work / "run2", env)
    result = {"rows": a.rows, "file_mb": round(size / 2**20, 1), "first": first, "second": second,
              "data_speedup": round(first["data_s"] / second["data_s"], 1)
              if first["data_s"] and second["data_s"] else None}
    print(json.dumps(result))
    return 0 if first["exit"] == 0 and second["exit"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
