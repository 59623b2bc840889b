"""Merge-and-save, the safe way: checks here (torch-free), the work in a worker process.

`lorastudio merge RUN OUT [--checkpoint STEP] [--dtype auto|bf16|fp16|fp32] [--max-shard-size 5GB]`
Before anything loads: the output must be empty or absent (or --overwrite), must not be inside
the base model's folder or the run folder, and the disk must have room for the estimated output.
The merge job (core/jobs/merge.py, started by `start_merge` in RUN/merges/<stamp>/) writes into a
hidden temporary folder beside OUT and renames it when complete, so a cancelled, killed or failed
merge leaves no OUT behind. The CLI's view of it is core/cli/merge.py, the window's
app/dialogs/merge_dialog.py.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorastudio.core.atomic_files import Leftover, tidy
from lorastudio.core.disk import existing_ancestor
from lorastudio.core.formatting import format_bytes
from lorastudio.core.runs.export import ExportError, adapter_source, read_run
from lorastudio.core.models.info import ModelError, read_model_info
from lorastudio.core.runtime.launcher import JobHandle, launch, new_job_dir
from lorastudio.core.runs.folders import MERGES_DIR
from lorastudio.core.runs.output_paths import check_output
from lorastudio.core.runs.locks import FolderBusy, acquire, discard_stale, output_lock_path, release_all

DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
SAFETY_MARGIN = 1.05            # shards + index + tokenizer, with a little room to spare
EXTRA_BYTES = 64 * 2**20


class MergeError(ExportError):
    kind = "merge"


@dataclass(frozen=True)
class MergeRequest:
    """What the user asked for: `lorastudio merge` and the Merge dialog build one."""
    run: Path
    out: Path
    checkpoint: int | None = None
    dtype: str = "auto"                 # auto: core/devices.default_merge_dtype for the device
    max_shard_size: str = "5GB"
    prompts: Path | None = None         # a file of prompts for the fidelity check (one a line)
    device: str = "auto"
    overwrite: bool = False


@dataclass
class MergeJob:
    """A checked merge (plan_merge): what the merge job's job.yaml says."""
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
    lock: Any = None             # the output's lock, handed to the merge job by start_merge
    replaces: str | None = None  # what --overwrite replaces (core/runs/output_paths.py), said by the job

    def to_spec(self) -> dict:
        """The merge job's job.yaml."""
        return {"run_dir": str(self.run_dir), "out": str(self.out), "adapter": str(self.adapter),
                "base": str(self.base), "dtype": self.dtype, "max_shard_size": self.max_shard_size,
                "device": self.device, "prompts": self.prompts, "estimate": self.estimate,
                "overwrite": self.overwrite, "replaces": self.replaces}


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


def check_target(out: Path, run_dir: Path, base: Path, overwrite: bool) -> str | None:
    """The one output-path rule (core/runs/output_paths.py), plus this run and its base by name;
    returns what --overwrite replaces, if anything."""
    out = Path(out).resolve()
    for protected, what in ((base.resolve(), "the base model's folder"), (run_dir.resolve(), "the run folder")):
        if out == protected or protected in out.parents:
            raise MergeError(f"{out} is inside {what}", "choose an output folder elsewhere; "
                             "LoRA Studio never writes into the base model or the run")
        if out in protected.parents:
            raise MergeError(f"{out} contains {what}", "choose a new, empty output folder")
    return check_output(out, "a merged model", overwrite, error=MergeError)


def disk_hint(dtype: str) -> str:
    """What else can make a merge fit: never a wider dtype."""
    return ("bf16 or fp16 (--dtype) needs half the room of fp32, or choose a folder on another disk"
            if dtype == "fp32" else "choose a folder on another disk")


def check_disk(out: Path, estimate: int, dtype: str = "bf16") -> None:
    parent = existing_ancestor(Path(out).resolve().parent)
    free = shutil.disk_usage(parent).free
    if free < estimate:
        raise MergeError(f"not enough disk space for the merged model: it needs about "
                         f"{format_bytes(estimate)} in {parent}, which has {format_bytes(free)} free",
                         f"free {format_bytes(estimate - free)} or more there; {disk_hint(dtype)}; "
                         "nothing was written")


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


def plan_merge(args: MergeRequest) -> MergeJob:
    """The checks before anything loads; a MergeError says what to change. Off the GUI thread."""
    if args.dtype == "auto":
        from dataclasses import replace
        from lorastudio.core.devices import default_merge_dtype
        args = replace(args, dtype=default_merge_dtype(args.device))
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
    try:        # one writer per output: held until start_merge hands it to the merge job (core/runs/locks.py)
        lock = acquire(out, "merging into it", output_lock_path(out))
    except FolderBusy as exc:
        raise MergeError(exc.message, exc.hint) from None
    try:
        tidy(out.parent)            # a killed merge's hidden folder goes before the space is counted
        replaces = check_target(out, run_dir, base, args.overwrite)
        estimate = estimate_output(base, args.dtype)
        check_disk(out, estimate, args.dtype)
    except BaseException:
        lock.release()
        raise
    if args.prompts:
        try:
            prompts = [line.strip() for line in Path(args.prompts).read_text(encoding="utf-8").splitlines()
                       if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise MergeError(f"--prompts {args.prompts}: cannot be read ({exc})", "give a UTF-8 text file") from None
    else:
        prompts = default_prompts(run_dir, summary.config)
    return MergeJob(run_dir, out, adapter, base, args.dtype, args.max_shard_size, args.device,
                    prompts, estimate, args.overwrite, lock, replaces)


def start_merge(job: MergeJob) -> JobHandle:
    """Start the merge job in a fresh RUN/merges/<stamp>/ folder; it holds the output's lock."""
    handle = None
    try:
        handle = launch("merge", new_job_dir(job.run_dir / MERGES_DIR), job.to_spec(), lock=job.lock)
        return handle
    finally:
        if job.lock is not None:
            release_all(job.lock, handed_over=handle is not None and handle.returncode() is None)
            job.lock = None


def clean_after(job: MergeJob) -> list[Leftover]:
    """After a merge that did not complete: the hidden folders its dead worker left beside OUT
    (and its lock file, which a killed worker cannot remove)."""
    discard_stale(output_lock_path(job.out))
    return tidy(Path(job.out).parent)
