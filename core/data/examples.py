"""Rows to examples, one at a time: column mapping, format detection on the first rows, the
bad-row policy. Torch-free. Streaming, so a 400,000-row file is never a list in memory; the
trainer's token table (core/engine/batching/token_cache.py) and `load_examples` both read through here.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Iterator

from lorastudio.core.data.files import BadRow, DataError, Row
from lorastudio.core.data.formats import (DETECT_ROWS, FORMAT_TITLES, Example, apply_columns,
                                          check_some_row_fits, columns_of, detect_format, to_example)
from lorastudio.core.data.dataset_rows import source_rows
from lorastudio.core.data.images import resolve_paths
from lorastudio.core.data.sources import Source, resolve


@dataclass
class ExampleStream:
    """`examples` is consumed once; `bad_rows` fills as it is read."""
    source: str
    format: str
    reason: str
    examples: Iterator[Example]
    bad_rows: list[BadRow] = field(default_factory=list)


def stream_examples(spec, data_cfg, source: Source | None = None) -> ExampleStream:
    """Examples of data.path (a file, a folder, hf:NAME[:SPLIT]) following data.on_bad_rows.
    The first rows are read at once (to detect the format); DataError for the first bad row
    under the "error" policy, or when no example at all is valid."""
    source = source or resolve(str(spec))
    label = source.label
    bad: list[BadRow] | None = [] if data_cfg.on_bad_rows == "skip" else None
    columns = columns_of(data_cfg)
    rows: Iterator[Row] = source_rows(source, bad, data_cfg.text_blocks)
    if columns:
        rows = (Row(r.where, apply_columns(r.value, columns, r.where, label)) for r in rows)
    head = list(itertools.islice(rows, DETECT_ROWS))
    if not head:
        raise DataError(f"{label}: no valid examples" + (f" ({len(bad)} bad rows skipped)" if bad else ""),
                        "the file needs at least one valid example")
    if data_cfg.format == "auto":
        fmt, reason = detect_format(head, label)
    else:
        fmt, reason = data_cfg.format, f"{FORMAT_TITLES[data_cfg.format]}: set by data.format"
    check_some_row_fits(head, fmt, label, columns)      # a wrong mapping, not rows to skip
    if columns:
        reason += f" (columns mapped: {', '.join(f'{k} <- {v}' for k, v in columns.items())})"
    stream = ExampleStream(label, fmt, reason, iter(()), bad if bad is not None else [])
    image_base = source.files[0].parent if source.files else None

    def examples() -> Iterator[Example]:
        n = 0
        for row in itertools.chain(head, rows):
            try:
                example = to_example(row, fmt, label)
            except DataError as exc:
                if bad is None:
                    raise
                bad.append(BadRow(row.where, exc.message.split(": ", 1)[-1]))
                continue
            if example.images:              # paths relative to the data file's folder
                example.images = resolve_paths(example.images, image_base)
            n += 1
            yield example
        if not n:
            raise DataError(f"{label}: every row was bad ({len(bad or [])} skipped)", "fix the file")
    stream.examples = examples()
    return stream
