"""Benchmark: the memory model's predicted peak against the measured one, on the GPU machine.

    source tests/bench/gpu_env.sh && python tests/bench/bench_memory_fit.py [--write] [--only llama-1b]

For each configuration below (Llama-3.2-1B, Llama-3.1-8B, Qwen2.5-0.5B and Mistral-7B shapes with
random weights from make_model.py; 4-bit and 8-bit; seq_len 1024 and 2048; each memory mode) it
trains a few steps through the real CLI (`lorastudio train`, the real worker), reads the peak
allocated memory from the journal (torch.cuda.max_memory_allocated, reset when training starts)
and prints predicted vs measured and the error. Then one run deliberately too large (a 16-bit 1B
with memory mode none, batch 64 × 2048 tokens) must end completed after an automatic OOM retry.

--write fits the activation constants (measured − the other terms) / the analytic activation term,
per model_type/mode/quantization and pooled per mode, and writes them with the date and GPU into
resources/data/memory_calibration.json; it then prints the errors again with those constants
(in-sample) and, more honestly, with each run's own architecture left out (pooled constants only).

Budget: ~6–8 minutes on an H100 (models built once under --work, 3 steps a run). One JSON line
per run goes to stdout as it finishes, the table at the end.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.bench.bench_train import write_data  # noqa: E402

GIB = 1 << 30
# (shape, quantization, seq_len, memory mode, batch): every shape, both quantizations, both lengths
# and every mode appear; 13 runs.
CONFIGS = [
    ("llama-1b", "4bit", 1024, "none", 4), ("llama-1b", "4bit", 2048, "checkpoint", 4),
    ("llama-1b", "4bit", 2048, "lean", 4), ("llama-1b", "8bit", 2048, "none", 4),
    ("qwen2.5-0.5b", "4bit", 2048, "none", 4), ("qwen2.5-0.5b", "8bit", 1024, "lean", 4),
    ("qwen2.5-0.5b", "4bit", 1024, "checkpoint", 4),
    ("llama-8b", "4bit", 1024, "checkpoint", 2), ("llama-8b", "4bit", 2048, "none", 2),
    ("llama-8b", "8bit", 2048, "lean", 2),
    ("mistral-7b", "4bit", 2048, "checkpoint", 2), ("mistral-7b", "8bit", 1024, "none", 2),
    ("mistral-7b", "4bit", 1024, "lean", 2),
]
OOM_DEMO = ("llama-1b", "none", 2048, "none", 64)


def ensure_model(work: Path, shape: str) -> Path:
    out = work / "models" / shape
    if not (out / "shape.json").is_file():
        subprocess.run([sys.executable, str(ROOT / "tests" / "bench" / "make_model.py"), str(out), "--shape", shape],
                       check=True)
    return out


def bench_config(model: Path, data: Path, quant: str, seq: int, mode: str, batch: int, steps: int,
                 oom_retry: bool = False) -> dict:
    return {"model": str(model), "quantization": quant, "device": "cuda",
            "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "targets": "all-linear"},
            "data": {"path": str(data), "validation_split": 0.0},
            "training": {"max_steps": steps, "lr": 2e-4, "batch_size": batch, "grad_accum": 1, "seq_len": seq,
                         "save_every": 0, "warmup_steps": 1, "memory_mode": mode, "oom_retry": oom_retry}}


def repredict(rows: list[dict], work: Path) -> None:
    """Predict saved rows again with today's memory model and shipped constants, from header-only
    models of the same shapes (the runs' own folders stay on the GPU machine)."""
    import yaml
    from tests.helpers.model_shapes import header_only_model
    data = work / "data.jsonl"
    data.write_text('{"text": "x"}\n')
    for r in rows:
        model = work / "models" / r["shape"]
        if not (model / "config.json").is_file():
            header_only_model(model, r["shape"])
        config = work / f"{r['name']}.yaml"
        config.write_text(yaml.safe_dump(bench_config(model, data, r["quantization"], r["seq_len"], r["mode"],
                                                      r["batch"], 3)))
        r["config"] = str(config)
        r.update(predict(r))


def run_config(work: Path, shape: str, quant: str, seq: int, mode: str, batch: int, steps: int,
               oom_retry: bool = False) -> dict:
    import yaml
    model = ensure_model(work, shape)
    name = f"{shape}-{quant}-{seq}-{mode}-b{batch}"
    folder = work / "runs" / f"{name}-{int(time.time())}"
    folder.mkdir(parents=True)
    data = work / f"data-{seq}.jsonl"
    if not data.is_file():
        write_data(data, examples=max(64, batch * (steps + 2)), words=seq)
    (folder / "c.yaml").write_text(yaml.safe_dump(bench_config(model, data, quant, seq, mode, batch, steps, oom_retry)))
    began = time.time()
    proc = subprocess.run([sys.executable, "-m", "lorastudio.app.launcher", "train", str(folder / "c.yaml"),
                           "--run-dir", str(folder / "run")], capture_output=True, text=True)
    from lorastudio.core.journal import read_events
    events = read_events(folder / "run" / "events.jsonl")
    peaks = [e["cuda_peak"] for e in events if e["type"] == "memory" and "cuda_peak" in e]
    start = [e for e in events if e["type"] == "start"]
    end = events[-1] if events and events[-1]["type"] == "end" else {}
    row = {"name": name, "shape": shape, "quantization": quant, "seq_len": seq, "mode": mode, "batch": batch,
           "exit": proc.returncode, "status": end.get("status"), "seconds": round(time.time() - began, 1),
           "measured": max(peaks) if peaks else None,
           "mode_used": start[-1].get("memory_mode") if start else None,
           "kernels": start[-1].get("kernels") if start else None,
           "device": next((e.get("device_name") for e in events if e["type"] == "memory"), None),
           "retries": [e for e in events if e["type"] == "retry"], "config": str(folder / "run" / "config.yaml")}
    if proc.returncode and not oom_retry:
        row["tail"] = (folder / "run" / "worker.log").read_text()[-1500:] if (folder / "run" / "worker.log").is_file() \
            else proc.stderr[-1500:]
    return row


def time_fit_command(config: Path) -> float:
    """`lorastudio fit` in a fresh interpreter (the goal: under a second, torch never imported)."""
    began = time.time()
    subprocess.run([sys.executable, "-m", "lorastudio.app.launcher", "fit", str(config), "--auto"],
                   capture_output=True, text=True)
    seconds = time.time() - began
    print(f"lorastudio fit --auto: {seconds:.2f} s wall", flush=True)
    return seconds


def predict(row: dict, calibration=None) -> dict:
    """The model's prediction for a run as it trained (its final config, its mode and kernels)."""
    from lorastudio.core.config import RunConfig
    from lorastudio.core.fit.calibration import Calibration
    from lorastudio.core.fit.memory_model import estimate
    from lorastudio.core.models.info import read_model_info
    from lorastudio.core.fit.calibration import SHIPPED, read_calibration
    config = RunConfig.load(row["config"])
    info = read_model_info(config.model)
    # The shipped constants only: the run just measured refined its own constant in LORASTUDIO_HOME,
    # and that would make the "as shipped" column in-sample.
    calibration = calibration or read_calibration(SHIPPED)
    fused = "liger" in (row.get("kernels") or [])
    mode = row.get("mode_used") or row["mode"]
    est = estimate(config, info, mode, fused_loss=fused, calibration=calibration)
    unit = estimate(config, info, mode, fused_loss=fused, calibration=Calibration())
    act = unit.term("activations").bytes
    return {"predicted": est.allocated, "fixed": unit.allocated - act, "act_at_one": act,
            "model_type": info.model_type, "constant": est.constant, "source": est.constant_source}


def fit_constants(rows: list[dict]) -> dict[str, dict]:
    """key -> {"value", "runs"}: per model_type/mode/quantization and pooled per mode/quantization
    and per mode; each a ratio of sums (measured − fixed) / analytic (a least-squares slope)."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        for key in (f"{r['model_type']}/{r['mode_used']}/{r['quantization']}", f"*/{r['mode_used']}/{r['quantization']}",
                    f"*/{r['mode_used']}"):
            groups.setdefault(key, []).append(r)
    out = {}
    for key, members in groups.items():
        num = sum((m["measured"] - m["fixed"]) * m["act_at_one"] for m in members)
        den = sum(m["act_at_one"] ** 2 for m in members)
        if den and 0.05 < num / den < 20:
            out[key] = {"value": round(num / den, 4), "runs": len(members)}
    return out


def table(rows: list[dict], key: str = "predicted") -> str:
    lines = [f"{'configuration':<38}{'mode':>11}{'predicted':>11}{'measured':>10}{'error':>8}",
             "-" * 78]
    errors = []
    for r in rows:
        if not r.get("measured"):
            lines.append(f"{r['name']:<38}{'—':>11}   failed: exit {r['exit']} ({r.get('status')})")
            continue
        err = (r[key] - r["measured"]) / r["measured"]
        errors.append(abs(err))
        lines.append(f"{r['name']:<38}{r['mode_used'] or r['mode']:>11}{r[key] / GIB:>9.2f} G{r['measured'] / GIB:>8.2f} G"
                     f"{err:>+8.1%}")
    if errors:
        lines.append(f"mean |error| {sum(errors) / len(errors):.1%}, max {max(errors):.1%}, "
                     f"within 10 %: {sum(e <= 0.10 for e in errors)}/{len(errors)}")
    return "\n".join(lines)


def refit_prediction(row: dict, calibration) -> int:
    """The allocated peak with other constants: the model is linear in the activation constant."""
    constant, _ = calibration.constant(row["model_type"], row["mode_used"] or row["mode"], row["quantization"])
    return int(row["fixed"] + constant * row["act_at_one"])


def write_and_check(measured: list[dict], write: bool) -> None:
    """Fit the constants on every measured run (written into the shipped file with --write), print the
    in-sample errors, then the honest ones: each shape predicted with pooled constants fitted on the
    other shapes only (leave one shape out)."""
    from lorastudio.core.atomic_files import atomic_write_json
    from lorastudio.core.fit.calibration import SHIPPED, Calibration
    device, today = measured[0].get("device") or "GPU", _dt.date.today().isoformat()
    constants = {k: {**v, "gpu": device, "date": today, "source": "tests/bench/bench_memory_fit.py"}
                 for k, v in fit_constants(measured).items()}
    if write:
        atomic_write_json(SHIPPED, {"version": 1, "note": "Activation constants of core/fit/memory_model.py "
                                    "(measured / analytic), written by tests/bench/bench_memory_fit.py --write.",
                                    "constants": constants})
        print(f"\nWrote {len(constants)} constants to {SHIPPED}")
    fitted = Calibration(constants)
    for r in measured:
        r["refit"] = refit_prediction(r, fitted)
        others = [o for o in measured if o["shape"] != r["shape"]]
        pooled = Calibration({k: v for k, v in fit_constants(others).items() if k.startswith("*/")})
        r["left_out"] = refit_prediction(r, pooled)
    print("\nWith the fitted constants (in-sample):\n" + table(measured, "refit"))
    print("\nEach shape left out (pooled constants fitted on the other shapes):\n" + table(measured, "left_out"))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "lorastudio-bench-fit",
                   help="models are built here once and reused")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--only", default="", help="run only configurations whose name contains this")
    p.add_argument("--shapes", default="", help="comma-separated shapes to run (default: all)")
    p.add_argument("--write", action="store_true", help="write the fitted constants into the shipped file")
    p.add_argument("--no-oom-demo", action="store_true")
    p.add_argument("--out", type=Path, help="also write every row as JSON here")
    p.add_argument("--merge", type=Path, nargs="+", help="run nothing: fit and print from rows saved with --out "
                   "(runs split over several device calls)")
    a = p.parse_args()
    if a.merge:
        rows = [r for f in a.merge for r in json.loads(f.read_text())]
        measured = [r for r in rows if r.get("measured") and "fixed" in r]
        repredict(measured, Path(tempfile.mkdtemp(prefix="bench-fit-merge-")))
        print("With the constants as shipped when measured:\n" + table(measured))
        write_and_check(measured, a.write)
        for demo in (r for r in rows if r.get("retries")):
            print(oom_line(demo))
        return 0
    a.work.mkdir(parents=True, exist_ok=True)
    shapes = set(filter(None, a.shapes.split(",")))
    rows = []
    began = time.time()
    for shape, quant, seq, mode, batch in CONFIGS:
        if a.only and a.only not in f"{shape}-{quant}-{seq}-{mode}" or shapes and shape not in shapes:
            continue
        row = run_config(a.work, shape, quant, seq, mode, batch, a.steps)
        if row["measured"]:
            row.update(predict(row))
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k not in ("retries",)}), flush=True)
        if len(rows) == 1:
            row["fit_seconds"] = time_fit_command(Path(row["config"]))
    print("\nWith the constants as shipped:\n" + table(rows), flush=True)
    measured = [r for r in rows if r.get("measured")]
    if measured and (a.write or len({r["shape"] for r in measured}) > 1):
        write_and_check(measured, a.write)
    if not a.no_oom_demo and not a.only and (not shapes or OOM_DEMO[0] in shapes):
        shape, quant, seq, mode, batch = OOM_DEMO
        demo = run_config(a.work, shape, quant, seq, mode, batch, steps=4, oom_retry=True)
        print("\n" + oom_line(demo), flush=True)
        rows.append(demo)
    print(f"\nTotal {time.time() - began:.0f} s")
    if a.out:
        a.out.write_text(json.dumps(rows, indent=2, default=str))
    return 0 if measured and all(r.get("status") == "completed" for r in rows) else 1


def oom_line(demo: dict) -> str:
    changes = [c for e in demo["retries"] for c in e.get("changes", [])]
    n = len(demo["retries"])
    return (f"Too large on purpose ({demo['name']}): ended {demo['status']} after {n} automatic "
            f"retr{'y' if n == 1 else 'ies'} in {demo['seconds']} s; changes: "
            + ", ".join(f"{c['key']} {c['old']} → {c['new']}" for c in changes)
            + (f"; peak {demo['measured'] / GIB:.2f} GiB" if demo.get("measured") else ""))


if __name__ == "__main__":
    sys.exit(main())
