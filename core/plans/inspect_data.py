"""The question the `inspect_data` job answers (core/jobs/inspect_data.py): which file, read how,
tokenized by which model, and which example to show. Both askers — the Dataset panel and
`lorastudio inspect` — build one of these and start the job with `start_inspect_data`, in a fresh
DATA_HOME/inspections/<stamp>/ folder (the asker removes it once answered). Torch-free."""
from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass, replace

from lorastudio.core.config import ConfigError, DataSection
from lorastudio.core.runs.folders import INSPECTIONS_DIR, data_home
from lorastudio.core.runtime.launcher import JobHandle, launch, new_job_dir


@dataclass(frozen=True)
class InspectRequest:
    path: str
    model: str
    seq_len: int = 512
    example: int = 1
    format: str = "auto"
    columns: tuple[tuple[str, str], ...] = ()
    train_on: str = "completions"
    too_long: str = "truncate"
    skip_bad_rows: bool = False
    text_blocks: str = "paragraph"

    def with_example(self, example: int) -> "InspectRequest":
        return replace(self, example=example)

    def spec(self) -> dict:
        """The job's job.yaml; ConfigError for an option the config refuses."""
        if not isinstance(self.seq_len, int) or self.seq_len < 8:
            raise ConfigError("--seq-len", self.seq_len, "a whole number ≥ 8")
        data = DataSection(path=self.path, format=self.format, columns=dict(self.columns), train_on=self.train_on,
                           too_long=self.too_long, on_bad_rows="skip" if self.skip_bad_rows else "error",
                           text_blocks=self.text_blocks)
        return {"model": self.model, "seq_len": self.seq_len, "example": self.example, "data": dataclasses.asdict(data)}


def start_inspect_data(request: InspectRequest) -> JobHandle:
    """Start the inspector; ConfigError for a refused option (nothing started), OSError when the
    data directory cannot take a job folder or the interpreter cannot start."""
    spec = request.spec()
    job_dir = new_job_dir(data_home() / INSPECTIONS_DIR)
    try:
        return launch("inspect_data", job_dir, spec)
    except OSError:
        shutil.rmtree(job_dir, ignore_errors=True)
        raise
