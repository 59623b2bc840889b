"""The question the `inspect_data` job answers (core/jobs/inspect_data.py): which file, read how,
tokenized by which model, and which example to show. Both askers — the Dataset panel and
`lorastudio inspect` — build one of these, and `spec()` is the job's job.yaml. Torch-free."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace

from lorastudio.core.config import DataSection


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
        data = DataSection(path=self.path, format=self.format, columns=dict(self.columns), train_on=self.train_on,
                           too_long=self.too_long, on_bad_rows="skip" if self.skip_bad_rows else "error",
                           text_blocks=self.text_blocks)
        return {"model": self.model, "seq_len": self.seq_len, "example": self.example, "data": dataclasses.asdict(data)}
