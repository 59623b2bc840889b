"""What a data file trains on, as a plain dict: format, token counts, lengths, example N with its
loss mask.

The numbers come from the very functions the trainer uses (batches.load_examples,
batches.encode_examples, chat_masks.encode), so they cannot disagree with training. Needs the
model's tokenizer (transformers), hence the inspection job (core/jobs/inspect_data.py) runs it
for the window and the CLI, never they themselves.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from lorastudio.core.config import DataSection
from lorastudio.core.data.files import DataError
from lorastudio.core.models.info import resolve_model_path

HIST_BINS = 20
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


def inspect_data(data_cfg: DataSection, model: str, seq_len: int, example: int = 1,
                 progress: Progress = lambda name, fraction, message: None) -> dict:
    """The report (see the keys below); DataError for bad data or an example out of range,
    ModelError for a model whose tokenizer cannot be loaded."""
    from lorastudio.core.data.chat_masks import encode, fit_length, has_chat_template
    from lorastudio.core.engine.batches import encode_examples, load_examples
    from lorastudio.core.engine.model_loading import load_tokenizer

    progress("tokenizer", 0.1, "Loading the tokenizer")
    tokenizer = load_tokenizer(resolve_model_path(model), trust_remote_code=False)
    progress("reading", 0.3, f"Reading {Path(data_cfg.path).name}")
    loaded = load_examples(Path(data_cfg.path), data_cfg)
    progress("encoding", 0.5, f"Tokenizing {len(loaded.examples):,} examples")
    encoded = encode_examples(loaded.examples, tokenizer, data_cfg, seq_len)
    lengths = sorted(len(e.input_ids) for e in encoded.items)
    report = {
        "file": loaded.source, "format": loaded.format, "reason": loaded.reason,
        "chat_template": "model" if has_chat_template(tokenizer) else "fallback",
        "examples": len(loaded.examples), "usable_examples": len(encoded.items),
        "tokens": encoded.tokens, "trained_tokens": encoded.trained_tokens, "seq_len": seq_len,
        "lengths": {"min": lengths[0] if lengths else 0, "p50": percentile(lengths, 0.5),
                    "p90": percentile(lengths, 0.9), "p99": percentile(lengths, 0.99),
                    "max": lengths[-1] if lengths else 0,
                    "mean": round(sum(lengths) / len(lengths), 1) if lengths else 0},
        "histogram": histogram(lengths),
        "truncated": encoded.truncated, "dropped_too_long": encoded.dropped_too_long,
        "dropped_no_target": encoded.dropped_no_target,
        "bad_rows": [{"where": b.where, "problem": b.problem} for b in loaded.bad_rows],
        "notes": encoded.notes,
    }
    if not 1 <= example <= len(loaded.examples):
        raise DataError(f"--example {example} is out of range", f"choose 1 to {len(loaded.examples)}")
    ex = loaded.examples[example - 1]
    full = encode(ex, tokenizer, data_cfg.train_on)
    fitted = fit_length(full, seq_len, data_cfg.too_long)
    shown = fitted or full
    report["example"] = {
        "index": example, "where": ex.where,
        "status": "dropped: longer than seq_len" if fitted is None else
                  ("dropped: nothing to train after masking" if fitted.trained_tokens == 0 else
                   ("truncated" if fitted.truncated else "ok")),
        "tokens": [{"id": i, "text": tokenizer.decode([i]), "trained": lab != -100}
                   for i, lab in zip(shown.input_ids, shown.labels)],
        "trained": shown.trained_tokens, "total": len(shown.input_ids),
    }
    return report
