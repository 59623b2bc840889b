"""CPU measurement: real tokens/s with packing against padding, interleaved step by step.

python tests/bench/bench_packing_cpu.py [--steps 8] [--seq-len 1024] [--batch-size 8] [--rows 160]

Two trainers (our Trainer, the real loading and data code) on the same log-normal workload as
bench_data_epoch.py and the same small Llama (hidden 256, 4 layers), one with data.packing true and
one false, take their optimizer steps alternately — micro-batch k holds the same examples in both —
so a busy machine slows both alike. Prints one JSON line: real tokens/s of each, the ratio, the
largest step-loss difference, and the eval loss of the unchanged models (packed vs padded).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.bench.bench_data_epoch import build_small_model, write_workload  # noqa: E402


def trainer_for(config: dict, work: Path, name: str):
    import yaml
    from lorastudio.core.config import RunConfig
    from lorastudio.core.engine.trainer import Trainer
    from lorastudio.core.journal import JournalWriter
    from lorastudio.core.preflight import check_config
    (work / f"{name}.yaml").write_text(yaml.safe_dump(config))
    cfg = RunConfig.load(work / f"{name}.yaml")
    info, _ = check_config(cfg)
    (work / name).mkdir()
    trainer = Trainer(cfg, info, work / name, JournalWriter(work / name / "events.jsonl"))
    trainer.setup()
    return trainer


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--rows", type=int, default=160)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=8)
    a = p.parse_args()
    os.environ.setdefault("LORASTUDIO_CACHE", tempfile.mkdtemp(prefix="bench-cache-"))
    work = Path(tempfile.mkdtemp(prefix="bench-pack-cpu-"))
    model = build_small_model(work / "small-llama")
    data = work / "lognormal.jsonl"
    write_workload(data, a.rows)
    base = {"model": str(model), "quantization": "none", "device": "cpu",
            "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "targets": "all-linear"},
            "data": {"path": str(data), "validation_split": 0.1},
            "training": {"max_steps": a.steps, "lr": 2e-4, "batch_size": a.batch_size, "seq_len": a.seq_len,
                         "save_every": 0, "memory_mode": "none", "seed": 0}}
    trainers = {on: trainer_for({**base, "data": {**base["data"], "packing": on}}, work, f"packing-{on}")
                for on in (True, False)}
    evals = {on: t.evaluate() for on, t in trainers.items()}
    seconds = {True: 0.0, False: 0.0}
    tokens = {True: 0, False: 0}
    losses = {True: [], False: []}
    for _ in range(a.steps):
        for on, t in trainers.items():
            t0 = time.perf_counter()
            loss, _norm, n = t.one_step()
            seconds[on] += time.perf_counter() - t0
            tokens[on] += n
            losses[on].append(loss)
    rate = {on: tokens[on] / seconds[on] for on in (True, False)}
    print(json.dumps({"steps": a.steps, "seq_len": a.seq_len, "batch_size": a.batch_size,
                      "packing_mode": trainers[True].data.packing, "real_tokens": tokens[True],
                      "tok_s_packed": round(rate[True]), "tok_s_padded": round(rate[False]),
                      "speedup": round(rate[True] / rate[False], 2),
                      "max_step_loss_diff": max(abs(x - y) for x, y in zip(losses[True], losses[False])),
                      "eval_loss_packed": evals[True], "eval_loss_padded": evals[False],
                      "eval_diff": abs(evals[True] - evals[False])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
