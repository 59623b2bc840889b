"""Starting the rank jobs, with the checks that come first. Torch-free.

`lorastudio rank RUN [--checkpoint STEP]` and the window's Rank view start the rank job
(core/jobs/rank.py): it answers with one `report` event (core/runs/rank_report.py reads it).
`lorastudio resize RUN OUT --rank K | --energy E` and the view's "Save a smaller adapter…" start the
resize job (core/jobs/resize.py), after these checks: K ≥ 1 and at most the adapter's rank, E in
(0, 1], OUT outside the run and the source adapter, empty or absent unless overwriting. The job
writes into a hidden folder beside OUT and renames it when complete (core/atomic_files.atomic_dir).
Job folders: RUN/rank/<stamp>; for a bare adapter folder, DATA_HOME/rank/<stamp>.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lorastudio.core.runs.checkpoints import adapter_complete
from lorastudio.core.runs.export import ExportError, adapter_source, ensure_free_target, read_run
from lorastudio.core.runs.folders import data_home
from lorastudio.core.runs.rank_report import CONFIG_FILE
from lorastudio.core.runtime.launcher import JobHandle, launch, new_job_dir

RANK_JOBS_DIR = "rank"


class RankPlanError(ExportError):
    kind = "adapter"


@dataclass
class RankTarget:
    """The adapter folder to read, and the run it belongs to (None for a bare adapter folder)."""
    adapter: Path
    run_dir: Path | None
    checkpoint: int | None = None

    @property
    def jobs_dir(self) -> Path:
        return (self.run_dir if self.run_dir is not None else data_home()) / RANK_JOBS_DIR

    @property
    def label(self) -> str:
        return str(self.run_dir if self.run_dir is not None else self.adapter)


def find_target(path: Path, checkpoint: int | None = None) -> RankTarget:
    """A run folder (its final adapter, or a checkpoint's) or a PEFT adapter folder."""
    path = Path(path).resolve()
    if checkpoint is None and adapter_complete(path) and not (path / "config.yaml").is_file():
        return RankTarget(path, None)
    read_run(path)                                  # a clear error when it is not a run folder
    return RankTarget(adapter_source(path, checkpoint), path, checkpoint)


def start_rank(target: RankTarget) -> JobHandle:
    return launch("rank", new_job_dir(target.jobs_dir), {"job": "rank", "adapter": str(target.adapter)})


def adapter_rank(adapter: Path) -> int:
    """The largest rank in an adapter's config (r, or a rank_pattern value)."""
    try:
        cfg = json.loads((Path(adapter) / CONFIG_FILE).read_text(encoding="utf-8"))
        return max([int(cfg["r"]), *map(int, (cfg.get("rank_pattern") or {}).values())])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RankPlanError(f"{Path(adapter) / CONFIG_FILE}: no rank can be read ({exc})",
                            "choose a PEFT LoRA adapter folder") from None


@dataclass
class ResizeJob:
    target: RankTarget
    out: Path
    rank: int | None
    energy: float | None
    overwrite: bool

    def to_spec(self) -> dict:
        """The resize job's job.yaml."""
        title = f"{Path(self.target.label).name}, resized"
        return {"job": "resize", "adapter": str(self.target.adapter), "out": str(self.out), "rank": self.rank,
                "energy": self.energy, "overwrite": self.overwrite, "title": title}


def check_resize(target: RankTarget, out: Path, rank: int | None, energy: float | None, overwrite: bool) -> ResizeJob:
    if (rank is None) == (energy is None):
        raise RankPlanError("give either a rank (--rank K) or an energy share (--energy 0.99)",
                            "--rank keeps K ranks in every module; --energy picks each module's rank")
    if rank is not None:
        r = adapter_rank(target.adapter)
        if not 1 <= rank <= r:
            raise RankPlanError(f"--rank {rank} is outside 1…{r} (the adapter's rank is {r})",
                                f"choose a rank from 1 to {r - 1} to make it smaller")
    if energy is not None and not 0 < energy <= 1:
        raise RankPlanError(f"--energy {energy} is not a share between 0 and 1",
                            "write it like 0.99 (keep 99 % of each update)")
    out = Path(out).resolve()
    for protected, what in ((target.run_dir, "the run folder"), (target.adapter, "the adapter folder")):
        if protected is not None and (out == protected or protected in out.parents or out in protected.parents):
            raise RankPlanError(f"{out} is inside or around {what}",
                                "choose an output folder elsewhere; the run and its adapter are only read")
    if out.is_file():
        raise RankPlanError(f"{out} is a file", "choose a folder")
    ensure_free_target(out, overwrite)
    return ResizeJob(target, out, rank, energy, overwrite)


def start_resize(job: ResizeJob) -> JobHandle:
    return launch("resize", new_job_dir(job.target.jobs_dir), job.to_spec())
