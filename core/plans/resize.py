"""The resize job's plan: the checks that come first, and `start_resize`. Torch-free.

`lorastudio resize RUN OUT --rank K | --energy E` and the Rank view's "Save a smaller adapter…"
start the resize job (core/jobs/resize.py) after these checks: K ≥ 1 and at most the adapter's
rank, E in (0, 1], OUT outside the run and the source adapter, empty or absent unless overwriting.
The job writes into a hidden folder beside OUT and renames it when complete
(core/atomic_files.atomic_dir). Its folder is beside the rank job's (core/plans/rank.py).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lorastudio.core.plans.rank import RankPlanError, RankTarget
from lorastudio.core.runs.output_paths import check_output
from lorastudio.core.runs.rank_report import CONFIG_FILE
from lorastudio.core.runtime.launcher import JobHandle, launch, new_job_dir


@dataclass(frozen=True)
class ResizeRequest:
    """What the user asked for: `lorastudio resize` and the resize dialog build one."""
    target: RankTarget
    out: Path
    rank: int | None = None
    energy: float | None = None
    overwrite: bool = False


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
    """A checked resize (plan_resize): what the resize job's job.yaml says."""
    target: RankTarget
    out: Path
    rank: int | None
    energy: float | None
    overwrite: bool
    replaces: str | None = None         # what --overwrite replaces (core/runs/output_paths.py)

    def to_spec(self) -> dict:
        """The resize job's job.yaml."""
        title = f"{Path(self.target.label).name}, resized"
        return {"adapter": str(self.target.adapter), "out": str(self.out), "rank": self.rank,
                "energy": self.energy, "overwrite": self.overwrite, "title": title,
                "replaces": self.replaces}


def plan_resize(request: ResizeRequest) -> ResizeJob:
    """The checks before anything loads; a RankPlanError says what to change. Off the GUI thread."""
    target, out, rank, energy, overwrite = (request.target, request.out, request.rank, request.energy,
                                            request.overwrite)
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
    replaces = check_output(out, "a resized adapter", overwrite, error=RankPlanError)
    return ResizeJob(target, out, rank, energy, overwrite, replaces)


def start_resize(job: ResizeJob) -> JobHandle:
    """Start the resize job in a fresh folder beside the rank job's."""
    return launch("resize", new_job_dir(job.target.jobs_dir), job.to_spec())
