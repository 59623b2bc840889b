"""The rows of a source as the job processes read them: what `datasets` wrote — one split of a
save_to_disk folder, or a build in the datasets cache — is read by `datasets` itself
(`load_from_disk`, `Dataset.from_file`), everything else by core/data/sources.py.

Only core/data/examples.py imports this module, so only the jobs (training, inspection,
evaluation) load `datasets`, and only when such a source is read; the window never does (the
import contracts check it) and previews the same Arrow files with pyarrow
(`sources.iter_source_rows`). Both number the rows over the split ("row 12"), so what the preview
names is what an error in training names. Locating, and its errors, happened in `sources.resolve`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from lorastudio.core.data.files import BadRow, DataError, Row
from lorastudio.core.data.sources import FILES, SAVED, Source, damaged_hint, iter_source_rows


def source_rows(source: Source, bad: list[BadRow] | None = None, text_blocks: str = "paragraph") -> Iterator[Row]:
    """Rows of the source, each saying where it came from; `bad` and `text_blocks` as for data files."""
    if source.kind == FILES:
        yield from iter_source_rows(source, bad, text_blocks)
        return
    for n, record in enumerate(_open(source), start=1):
        yield Row(f"row {n}", record)


def _open(source: Source):
    import datasets
    try:
        if source.kind == SAVED:
            dataset = datasets.load_from_disk(str(source.files[0].parent))
        else:
            dataset = datasets.concatenate_datasets([datasets.Dataset.from_file(str(f)) for f in source.files])
    except (OSError, ValueError) as exc:       # a file gone since resolve, or Arrow that does not parse
        raise DataError(f"{source.label}: {_culprit(source, exc)} is not a readable Arrow file ({exc})",
                        damaged_hint(source)) from None
    return dataset.with_format(None)           # plain Python rows, whatever format it was saved with


def _culprit(source: Source, exc: Exception) -> str:
    """The file behind a failed load: the one the error names, else the first that will not open alone."""
    import datasets
    if getattr(exc, "filename", None):
        return Path(exc.filename).name
    for f in source.files:
        try:
            datasets.Dataset.from_file(str(f))
        except (OSError, ValueError):
            return f.name
    return "one of " + ", ".join(f.name for f in source.files)
