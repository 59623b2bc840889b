"""What a data file trains on, as a plain dict: format, token counts, lengths, example N with its
loss mask.

The numbers come from the trainer's own token table (core/engine/batching/token_cache.py: the
same cache entry a run with these settings reads), so they cannot disagree with training. Needs the
model's tokenizer (transformers), hence the inspection job (core/jobs/inspect_data.py) runs it
for the window and the CLI, never they themselves.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from lorastudio.core.config import DataSection
from lorastudio.core.data.files import DataError
from lorastudio.core.models.info import (ModelError, needs_tokenizer_remote_code, resolve_model_path,
                                        tokenizer_remote_code_files)

HIST_BINS = 20
PROGRESS_EVERY_S = 1.0        # phase events of a long read or build: at most one a second
Progress = Callable[[str, float, str], None]        # (phase name, fraction 0→1, message)


def percentile(sorted_values: list[int], q: float) -> int:
    if not sorted_values:
        return 0
    return sorted_values[min(len(sorted_values) - 1, int(round(q * (len(sorted_values) - 1))))]


def histogram(values: list[int], bins: int = HIST_BINS) -> dict:
    if not values:
        return {"edges": [], "counts": []}
    lo, hi = min(values), max(values)
    width = max(1, -(-(hi - lo + 1) // bins))
    edges = [lo + i * width for i in range(bins + 1)]
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, (v - lo) // width)] += 1
    return {"edges": edges, "counts": counts}


def length_summary(lengths: list[int]) -> dict:
    """min, percentiles, max and mean of sorted lengths."""
    return {"min": lengths[0] if lengths else 0, "p50": percentile(lengths, 0.5),
            "p90": percentile(lengths, 0.9), "p99": percentile(lengths, 0.99),
            "max": lengths[-1] if lengths else 0,
            "mean": round(sum(lengths) / len(lengths), 1) if lengths else 0}


def inspect_data(data_cfg: DataSection, model: str, seq_len: int, example: int = 1,
                 progress: Progress = lambda name, fraction, message: None) -> dict:
    """The report (see the keys below); DataError for bad data or an example out of range,
    ModelError for a model whose tokenizer cannot be loaded. Reads the trainer's token table
    (built here if no run built it yet, reused by the run after)."""
    import itertools

    import numpy as np

    from lorastudio.core.data.chat_masks import has_chat_template
    from lorastudio.core.data.pairs import is_pair_file, pair_report
    from lorastudio.core.data.examples import stream_examples
    from lorastudio.core.engine.batches import table_set
    from lorastudio.core.engine.batching.token_cache import EMPTY_ANSWER, OK, TOO_LONG, encode_bounded, load_or_build
    from lorastudio.core.engine.model_loading import load_tokenizer

    progress("tokenizer", 0.1, "Loading the tokenizer")
    folder = resolve_model_path(model)
    if needs_tokenizer_remote_code(Path(folder)):       # transformers would ask to run the model's code
        raise ModelError(f"the tokenizer in {folder} ships its own Python code "
                         f"({', '.join(tokenizer_remote_code_files(Path(folder)))}) that the inspector does not run",
                         "inspect with a model whose tokenizer is built into transformers; to train with this one "
                         "set trust_remote_code: true in the run's config, only if you trust its source")
    processor = vision_processor(folder)         # a vision-language model: examples with images through it
    tokenizer = processor.tokenizer if processor is not None else load_tokenizer(folder, trust_remote_code=False)
    progress("reading", 0.3, f"Reading {Path(data_cfg.path).name}")
    if is_pair_file(Path(data_cfg.path), data_cfg):          # preference pairs: both sides of pair N
        report, lengths = pair_report(data_cfg, tokenizer, seq_len, example)
        return {**report, "lengths": length_summary(lengths), "histogram": histogram(lengths)}
    said = {"at": 0.0, "encoding": False}

    def encoding() -> None:                   # after the read that keys the token cache
        if not said["encoding"]:
            said["encoding"] = True
            progress("encoding", 0.5, "Tokenizing the examples (or reading them from the token cache)")

    def building(fraction, message):          # only a long read or build says more, at most once a second
        import time
        reading = message.startswith(("Reading", "Checking"))   # the token cache reads every byte first (its key)
        if not reading:
            encoding()
        if fraction is None or not 0 < fraction < 1 or time.monotonic() - said["at"] < PROGRESS_EVERY_S:
            return
        said["at"] = time.monotonic()
        if reading:
            progress("reading", 0.3 + 0.2 * fraction, message)
        else:
            progress("encoding", 0.5 + 0.45 * fraction, message)
    table = load_or_build(data_cfg.path, data_cfg, tokenizer, seq_len, building, processor=processor)
    encoding()
    encoded = table_set(table, np.arange(len(table)))
    lengths = sorted(int(n) for n in encoded.items.lengths())
    meta = table.meta
    report = {
        "file": meta["source"], "format": meta["format"], "reason": meta["reason"],
        "chat_template": "model" if has_chat_template(tokenizer) else "fallback",
        "examples": len(table), "usable_examples": len(encoded.items),
        "tokens": encoded.tokens, "trained_tokens": encoded.trained_tokens, "seq_len": seq_len,
        "lengths": length_summary(lengths),
        "histogram": histogram(lengths),
        "truncated": encoded.truncated, "dropped_too_long": encoded.dropped_too_long,
        "dropped_no_target": encoded.dropped_no_target, "dropped_empty_answer": encoded.dropped_empty_answer,
        "bad_rows": meta["bad_rows"], "notes": encoded.notes,
    }
    if not 1 <= example <= len(table):
        raise DataError(f"--example {example} is out of range", f"choose 1 to {len(table)}")
    status = int(table.status[example - 1])
    shown = table.item(example - 1)
    if status == TOO_LONG:        # not kept in the table: its first seq_len tokens, read again
        ex = next(itertools.islice(stream_examples(data_cfg.path, data_cfg).examples, example - 1, None))
        shown = encode_bounded(ex, tokenizer, data_cfg.train_on, seq_len, "truncate")[1]
    report["example"] = {
        "index": example, "where": shown.where,
        "status": "dropped: longer than seq_len" if status == TOO_LONG else
                  ("dropped: the assistant answer is empty" if status == EMPTY_ANSWER else
                   "dropped: nothing to train after masking" if status != OK else
                   ("truncated" if shown.truncated else "ok")),
        "tokens": [{"id": i, "text": tokenizer.decode([i]), "trained": lab != -100}
                   for i, lab in zip(shown.input_ids, shown.labels)],
        "trained": shown.trained_tokens, "total": len(shown.input_ids),
    }
    if processor is not None:       # where the image tokens sit and how many (never trained)
        from lorastudio.core.engine.vision.encoding import image_token_id
        image_id = image_token_id(processor)
        report["example"]["images"] = list(shown.images)
        report["example"]["image_tokens"] = [i for i, t in enumerate(shown.input_ids) if t == image_id]
        report["images"] = len(table.meta.get("images", []))
    return report


def vision_processor(folder):
    """The processor of a vision-language model folder, or None for a text-only one."""
    from lorastudio.core.engine.vision.loading import is_vision, load_processor
    from lorastudio.core.models.info import read_model_info
    info = read_model_info(str(folder))
    return load_processor(info) if is_vision(info) else None
