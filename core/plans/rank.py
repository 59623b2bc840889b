"""The rank job's plan: which adapter to analyse (`find_target`), and `start_rank`. Torch-free.

`lorastudio rank RUN [--checkpoint STEP]` and the window's Rank view start the rank job
(core/jobs/rank.py): it answers with one `report` event (core/runs/rank_report.py reads it).
Job folders (also the resize job's, core/plans/resize.py): RUN/rank/<stamp>; for a bare adapter
folder, DATA_HOME/rank/<stamp>.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lorastudio.core.runs.checkpoints import adapter_complete
from lorastudio.core.runs.export import ExportError, adapter_source, read_run
from lorastudio.core.runs.folders import data_home
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
    """Start the rank job (one `report` event) in a fresh JOBS_DIR/rank/<stamp>/ folder."""
    return launch("rank", new_job_dir(target.jobs_dir), {"adapter": str(target.adapter)})
