"""What the model will be trained on: `lorastudio inspect DATA --model MODEL [--json] [--example N]`.

Also `python -m lorastudio.core.jobs.inspect_data ... --json`, which the window runs as a worker (the
tokenizer needs transformers, which the window never imports). The numbers come from the very
functions the trainer uses (data.load_examples, data.encode_examples), so they cannot disagree.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lorastudio.core.config import ConfigError, DataSection
from lorastudio.core.data.files import DataError
from lorastudio.core.models.info import ModelError, resolve_model_path

HIST_BINS = 20


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


def inspect_data(data_cfg: DataSection, model: str, seq_len: int, example: int = 1) -> dict:
    from lorastudio.core.engine.batches import encode_examples, load_examples
    from lorastudio.core.engine.model_loading import load_tokenizer
    from lorastudio.core.data.chat_masks import encode, fit_length, has_chat_template

    tokenizer = load_tokenizer(resolve_model_path(model), trust_remote_code=False)
    loaded = load_examples(Path(data_cfg.path), data_cfg)
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


def marked_text(tokens: list[dict], color: bool) -> str:
    """The example's text with trained tokens highlighted (colour) or bracketed ⟦…⟧."""
    out, inside = [], False
    for tok in tokens:
        if tok["trained"] != inside:
            out.append(("\x1b[42;30m" if tok["trained"] else "\x1b[0m") if color else
                       ("⟦" if tok["trained"] else "⟧"))
            inside = tok["trained"]
        out.append(tok["text"])
    if inside:
        out.append("\x1b[0m" if color else "⟧")
    return "".join(out)


def print_report(r: dict, color: bool, out=sys.stdout) -> None:
    pct = 100 * r["trained_tokens"] / r["tokens"] if r["tokens"] else 0
    L = r["lengths"]
    lines = [
        f"File:      {r['file']}",
        f"Format:    {r['reason']}",
        f"Template:  {'the model' + chr(39) + 's chat template' if r['chat_template'] == 'model' else 'fallback (the model has no chat template)'}",
        f"Examples:  {r['examples']:,} read, {r['usable_examples']:,} usable",
        f"Tokens:    {r['tokens']:,} in total, {r['trained_tokens']:,} trained ({pct:.1f} %)",
        f"Lengths:   min {L['min']} · median {L['p50']} · p90 {L['p90']} · p99 {L['p99']} · max {L['max']} tokens",
        f"seq_len {r['seq_len']}: {r['truncated']} truncated · {r['dropped_too_long']} dropped (too long) · "
        f"{r['dropped_no_target']} dropped (nothing left to train)",
    ]
    if r["bad_rows"]:
        lines.append(f"Bad rows skipped: {len(r['bad_rows'])}: " +
                     "; ".join(f"{b['where']} ({b['problem']})" for b in r["bad_rows"][:10]))
    lines += [f"Note: {n}" for n in r["notes"]]
    ex = r["example"]
    lines += ["", f"Example {ex['index']} ({ex['where']}, {ex['status']}): {ex['total']} tokens, "
              f"{ex['trained']} trained {'(highlighted)' if color else '(inside ⟦ ⟧)'}",
              marked_text(ex["tokens"], color)]
    out.write("\n".join(lines) + "\n")


def run(args) -> int:
    try:
        columns = dict(pair.split("=", 1) for pair in args.columns.split(",") if pair) if args.columns else {}
        data_cfg = DataSection(path=str(args.data), format=args.format, columns=columns,
                               train_on=args.train_on, too_long=args.too_long,
                               on_bad_rows="skip" if args.skip_bad_rows else "error",
                               text_blocks=args.text_blocks)
        if args.seq_len < 8:
            raise ConfigError("--seq-len", args.seq_len, "a whole number ≥ 8")
        report = inspect_data(data_cfg, args.model, args.seq_len, args.example)
    except (ConfigError, ValueError) as exc:
        return _fail(str(exc), "", args.json)
    except (DataError, ModelError) as exc:
        return _fail(exc.message, exc.hint, args.json)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        print_report(report, color=sys.stdout.isatty() and not args.no_color)
    return 0


def _fail(message: str, hint: str, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"error": message, "hint": hint}, ensure_ascii=False))
    else:
        print(f"error: {message}" + (f"\n  hint: {hint}" if hint else ""), file=sys.stderr)
    return 2


def main(argv=None) -> int:
    from lorastudio.core.cli.data import inspect_arguments
    parser = argparse.ArgumentParser(prog="lorastudio inspect")
    inspect_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
