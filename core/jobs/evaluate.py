"""`lorastudio eval RUN [--data FILE] [--checkpoint STEP] [--limit N]`: the base model against
base + adapter on held-out data, side by side; stored in RUN/eval.json.

Two measures a side:
  * held-out loss: mean cross-entropy on the answer tokens (as training counts them);
  * the task: a greedy answer to each prompt compared with the reference — exact match (after
    trimming whitespace; JSON answers compare as parsed objects), and, when the references are
    JSON objects, format validity (the answer parses as a JSON object with the reference's keys).
The CLI runs this module as a worker (`python -m lorastudio.core.jobs.evaluate ...`), keeping itself
torch-free; the window reads eval.json through core/playground.read_eval.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from pathlib import Path

from lorastudio.core.runs.heldout import EVAL_FILE, split_prompt

GEN_BATCH = 8


def parse_json_object(text: str) -> dict | None:
    text = text.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def score(answers: list[str], references: list[str]) -> dict:
    """exact_match, and json_valid when most references are JSON objects (fractions 0→1)."""
    refs_json = [parse_json_object(r) for r in references]
    is_json_task = sum(r is not None for r in refs_json) * 2 > len(references)
    exact = valid = 0
    for answer, ref, ref_obj in zip(answers, references, refs_json):
        obj = parse_json_object(answer) if is_json_task else None
        if ref_obj is not None and obj is not None:
            exact += obj == ref_obj
            valid += set(obj) == set(ref_obj)
        else:
            exact += " ".join(answer.split()) == " ".join(ref.split())
    n = max(len(references), 1)
    result = {"exact_match": exact / n, "prompts": len(references)}
    if is_json_task:
        result["json_valid"] = valid / n
    return result


def load_heldout(config, data: Path | None):
    """The held-out examples: --data, else the run's validation file, else its validation split."""
    from lorastudio.core.engine.batches import load_examples, split
    if data is not None:
        return load_examples(Path(data), config.data).examples, str(data)
    if config.data.validation_path:
        return load_examples(Path(config.data.validation_path), config.data).examples, config.data.validation_path
    examples = load_examples(Path(config.data.path), config.data).examples
    _train, held = split(examples, config.data.validation_split or 0.1, config.training.seed)
    return held, f"{config.data.path} (validation split)"


def heldout_loss(pair, encoded, side: str, batch_size: int) -> float | None:
    import torch
    from lorastudio.core.engine.batches import collate, count_label_tokens, pad_id_of
    from lorastudio.core.engine.inference import side_context
    if not encoded.items:
        return None
    total, count = 0.0, 0
    with torch.no_grad(), side_context(pair.model, side):
        for i in range(0, len(encoded.items), batch_size):
            batch = collate(encoded.items[i:i + batch_size], pad_id_of(pair.tokenizer))
            n = count_label_tokens(batch)
            batch = {k: v.to(pair.device) for k, v in batch.items()}
            total += float(pair.model(**batch, num_items_in_batch=n).loss) * n
            count += n
    return total / max(count, 1)


def evaluate_run(run_dir: Path, data: Path | None = None, checkpoint: int | None = None, limit: int = 48,
                 say=lambda text: None) -> dict:
    from lorastudio.core.engine.batches import encode_examples
    from lorastudio.core.engine.inference import SIDES, encode_prompt, greedy_batch, load_pair
    started = time.time()
    say("Loading the base model and the adapter")
    pair = load_pair(run_dir, checkpoint)
    examples, source = load_heldout(pair.config, data)
    encoded = encode_examples(examples, pair.tokenizer, pair.config.data, pair.config.training.seq_len)
    chats = [split_prompt(ex.messages) for ex in examples if ex.is_chat][:limit]
    chats = [(prompt, ref) for prompt, ref in chats if ref is not None]
    prompts = [encode_prompt(pair.tokenizer, prompt) for prompt, _ in chats]
    references = [ref for _, ref in chats]
    longest = max((len(pair.tokenizer(r)["input_ids"]) for r in references), default=0)
    result = {"run": str(run_dir), "data": source, "checkpoint": checkpoint, "adapter": str(pair.adapter),
              "examples": len(encoded.items), "date": _dt.datetime.now().isoformat(timespec="seconds")}
    answers: dict[str, list[str]] = {}
    for side in SIDES:
        say(f"{side}: held-out loss on {len(encoded.items)} examples")
        loss = heldout_loss(pair, encoded, side, pair.config.training.batch_size)
        answers[side] = []
        for i in range(0, len(prompts), GEN_BATCH):
            say(f"{side}: answering prompts {i + 1}-{min(i + GEN_BATCH, len(prompts))} of {len(prompts)}")
            answers[side] += greedy_batch(pair, prompts[i:i + GEN_BATCH], side, longest + 16)
        result[side] = {"loss": loss, **score(answers[side], references)}
    result["samples"] = [{"prompt": p[-1]["content"], "reference": r, "base": b, "adapter": a}
                         for (p, r), b, a in zip(chats[:6], answers["base"], answers["adapter"])]
    result["seconds"] = round(time.time() - started, 1)
    return result


def format_table(result: dict) -> str:
    rows = [("held-out loss", "loss", "{:.4f}"), ("exact match", "exact_match", "{:.0%}"),
            ("JSON format valid", "json_valid", "{:.0%}")]
    lines = [f"{'':<20}{'base':>12}{'adapter':>12}"]
    for label, key, fmt in rows:
        base, adapter = result["base"].get(key), result["adapter"].get(key)
        if base is None and adapter is None:
            continue
        show = lambda v: fmt.format(v) if v is not None else "–"          # noqa: E731
        lines.append(f"{label:<20}{show(base):>12}{show(adapter):>12}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from lorastudio.core.runs.export import ExportError, read_run
    from lorastudio.core.atomic_files import atomic_write_json
    parser = argparse.ArgumentParser(prog="lorastudio eval")
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--checkpoint", type=int, default=None)
    parser.add_argument("--limit", type=int, default=48)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    run_dir = args.run.resolve()
    try:
        read_run(run_dir)
        result = evaluate_run(run_dir, args.data, args.checkpoint, args.limit,
                              say=lambda text: print(f"· {text}", file=sys.stderr, flush=True))
    except ExportError as exc:
        print(f"error: {exc.message}" + (f"\n  hint: {exc.hint}" if exc.hint else ""), file=sys.stderr)
        return 2
    except Exception as exc:           # noqa: BLE001 — DataError, ModelError, ConfigError: say it plainly
        hint = getattr(exc, "hint", "")
        print(f"error: {getattr(exc, 'message', exc)}" + (f"\n  hint: {hint}" if hint else ""), file=sys.stderr)
        return 1
    atomic_write_json(run_dir / EVAL_FILE, result)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"Evaluated on {result['data']}: {result['examples']} examples for the loss, "
          f"{result['base']['prompts']} prompts answered greedily ({result['seconds']} s)")
    print(format_table(result))
    print(f"Saved to {run_dir / EVAL_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
