"""Merge-and-save, the safe way: checks here (torch-free), the work in a worker process.

`lorastudio merge RUN OUT [--checkpoint STEP] [--dtype bf16|fp16|fp32] [--max-shard-size 5GB]`
Before anything loads: the output must be empty or absent (or --overwrite), must not be inside
the base model's folder or the run folder, and the disk must have room for the estimated output.
The worker (core/merge_worker.py) writes into a hidden temporary folder beside OUT and renames it
when complete, so a cancelled, killed or failed merge leaves no OUT behind.
"""
from __future__ import annotations

import datetime as _dt
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from lorastudio.core.devices import format_bytes
from lorastudio.core.journal import JournalFollower
from lorastudio.core.runs.export import ExportError, adapter_source, read_run
from lorastudio.core.atomic_files import atomic_write_text
from lorastudio.core.models.info import ModelError, read_model_info

MERGES_DIR = "merges"
DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
SAFETY_MARGIN = 1.05            # shards + index + tokenizer, with a little room to spare
EXTRA_BYTES = 64 * 2**20


class MergeError(ExportError):
    kind = "merge"


@dataclass
class MergeJob:
    run_dir: Path
    out: Path
    adapter: Path
    base: Path
    dtype: str
    max_shard_size: str
    device: str
    prompts: list[str]
    estimate: int
    overwrite: bool

    def to_yaml(self) -> str:
        return yaml.safe_dump({"job": "merge", "run_dir": str(self.run_dir), "out": str(self.out),
                               "adapter": str(self.adapter), "base": str(self.base), "dtype": self.dtype,
                               "max_shard_size": self.max_shard_size, "device": self.device,
                               "prompts": self.prompts, "estimate": self.estimate,
                               "overwrite": self.overwrite}, sort_keys=False, allow_unicode=True)


def parse_size(text: str) -> int:
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
    t = text.strip().upper()
    for unit in sorted(units, key=len, reverse=True):
        if t.endswith(unit) and t[: -len(unit)].strip().replace(".", "", 1).isdigit():
            return int(float(t[: -len(unit)]) * units[unit])
    if t.isdigit():
        return int(t)
    raise MergeError(f"--max-shard-size {text!r} is not a size", "write it like 5GB, 500MB or 2GiB")


def estimate_output(base: Path, dtype: str) -> int:
    info = read_model_info(str(base))
    return int(info.num_parameters * DTYPE_BYTES[dtype] * SAFETY_MARGIN) + EXTRA_BYTES


def check_target(out: Path, run_dir: Path, base: Path, overwrite: bool) -> None:
    out = Path(out).resolve()
    for protected, what in ((base.resolve(), "the base model's folder"), (run_dir.resolve(), "the run folder")):
        if out == protected or protected in out.parents:
            raise MergeError(f"{out} is inside {what}", "choose an output folder elsewhere; "
                             "LoRA Studio never writes into the base model or the run")
        if out in protected.parents:
            raise MergeError(f"{out} contains {what}", "choose a new, empty output folder")
    if out.is_file():
        raise MergeError(f"{out} is a file", "choose a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise MergeError(f"{out} is not empty", "choose an empty or new folder, or pass --overwrite")


def check_disk(out: Path, estimate: int) -> None:
    parent = Path(out).resolve().parent
    while not parent.exists():
        parent = parent.parent
    free = shutil.disk_usage(parent).free
    if free < estimate:
        raise MergeError(f"not enough disk space for the merged model: it needs about "
                         f"{format_bytes(estimate)}, {parent} has {format_bytes(free)} free",
                         "free some space or choose another disk; nothing was written")


def default_prompts(run_dir: Path, config, limit: int = 4) -> list[str]:
    """Prompts for the fidelity check: the user turns (or text starts) of the run's data."""
    from lorastudio.core.data.files import DataError, iter_rows
    from lorastudio.core.data.formats import row_format, to_example
    prompts: list[str] = []
    try:
        rows = iter_rows(Path(config.data.validation_path or config.data.path), bad=[])
        for row in rows:
            fmt = row_format(row.value)
            if fmt is None:
                continue
            ex = to_example(row, fmt, "data")
            text = ex.text[:200] if not ex.is_chat else next(
                (m["content"] for m in ex.messages if m["role"] == "user"), "")
            if text.strip():
                prompts.append(text)
            if len(prompts) >= limit:
                break
    except (DataError, OSError):
        pass
    return prompts or ["Hello! Please introduce yourself.", "The capital of France is"]


def prepare_job(args) -> MergeJob:
    run_dir = Path(args.run).resolve()
    summary = read_run(run_dir)
    adapter = adapter_source(run_dir, args.checkpoint)
    try:
        base = read_model_info(summary.config.model).path
    except ModelError as exc:
        raise MergeError(f"base model: {exc.message}", exc.hint) from None
    out = Path(args.out).resolve()
    check_target(out, run_dir, base, args.overwrite)
    parse_size(args.max_shard_size)
    estimate = estimate_output(base, args.dtype)
    check_disk(out, estimate)
    if args.prompts:
        try:
            prompts = [line.strip() for line in Path(args.prompts).read_text(encoding="utf-8").splitlines()
                       if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise MergeError(f"--prompts {args.prompts}: cannot be read ({exc})", "give a UTF-8 text file") from None
    else:
        prompts = default_prompts(run_dir, summary.config)
    return MergeJob(run_dir, out, adapter, base, args.dtype, args.max_shard_size, args.device,
                    prompts, estimate, args.overwrite)


def start_merge(job: MergeJob) -> tuple[Path, subprocess.Popen]:
    stamp = _dt.datetime.now().strftime("%Y-%m-%d_%H%M%S")
    (job.run_dir / MERGES_DIR).mkdir(parents=True, exist_ok=True)
    job_dir, n = job.run_dir / MERGES_DIR / stamp, 2
    while True:
        try:
            job_dir.mkdir()
            break
        except FileExistsError:
            job_dir, n = job.run_dir / MERGES_DIR / f"{stamp}-{n}", n + 1
    atomic_write_text(job_dir / "job.yaml", job.to_yaml())
    with open(job_dir / "worker.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "lorastudio.core.jobs.merge", str(job_dir)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return job_dir, proc


def print_fidelity(f: dict) -> None:
    agree = f"{f['greedy_agree']}/{f['prompts']}"
    print(f"Fidelity ({f['prompts']} prompts, {f['dtype']}): max |Δlogit| {f['max_abs_diff']:.3g}, "
          f"mean {f['mean_abs_diff']:.3g}; greedy continuations agree on {agree}")
    if f["flagged"]:
        print(f"  warning: the difference exceeds what {f['dtype']} rounding explains "
              f"(tolerance {f['tolerance']:.3g}); compare the merged model before shipping it")


def cmd_merge(args) -> int:
    try:
        job = prepare_job(args)
    except ExportError as exc:
        print(f"error: {exc.message}" + (f"\n  hint: {exc.hint}" if exc.hint else ""), file=sys.stderr)
        return 2
    print(f"Merging {job.adapter} into {job.base} ({job.dtype}); about {format_bytes(job.estimate)} to write")
    job_dir, proc = start_merge(job)
    follower = JournalFollower(job_dir / "events.jsonl")
    previous = signal.signal(signal.SIGINT, lambda *_: proc.send_signal(signal.SIGTERM))
    try:
        while True:
            exited = proc.poll() is not None
            for ev in follower.poll():
                if ev["type"] == "phase":
                    print(f"[{int(100 * ev.get('fraction', 0)):3d}%] {ev.get('message') or ev['name']}")
                elif ev["type"] == "fidelity":
                    print_fidelity(ev)
                elif ev["type"] == "error":
                    print(f"error ({ev['kind']}): {ev['message']}\n  hint: {ev['hint']}")
                elif ev["type"] == "end":
                    proc.wait()
                    if ev["status"] == "completed":
                        print(f"Merged model saved to {ev.get('output')}")
                        return 0
                    print(f"Merge {ev['status']}; nothing was written to {job.out}")
                    return 1
            if exited:
                print(f"error: the merge worker exited with code {proc.returncode}; see {job_dir / 'worker.log'}",
                      file=sys.stderr)
                return 1
            time.sleep(0.2)
    finally:
        signal.signal(signal.SIGINT, previous)
