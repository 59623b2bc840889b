"""The base model against base + adapter on held-out data, side by side: a plain dict.

Two measures a side:
  * held-out loss: mean cross-entropy on the answer tokens (as training counts them);
  * the task: a greedy answer to each prompt compared with the reference — exact match (after
    trimming whitespace; JSON answers compare as parsed objects), and, when the references are
    JSON objects, format validity (the answer parses as a JSON object with the reference's keys).
    Generation stops at end of turn and, on a JSON task, once the answer's score is settled: it
    holds a complete object, or it began with prose (cut after its first word; `samples` show that).

Heavy (torch, the model) inside `evaluate_run` only; `score` and `parse_json_object` are plain
Python. The evaluation job (core/jobs/evaluate.py) runs this and stores the result in RUN/eval.json.
"""
from __future__ import annotations

import datetime as _dt
import json
import time
from pathlib import Path
from typing import Callable

from lorastudio.core.runs.heldout import split_prompt

GEN_BATCH = 8
LOSS_PROGRESS_S = 1.0      # the loss phase reports its batch at most this often (after the first)
Progress = Callable[[str, float, str], None]        # (phase name, fraction 0→1, message)


def parse_json_object(text: str) -> dict | None:
    text = text.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def is_json_task(references: list[str]) -> bool:
    """Most references are JSON objects: answers are scored (and cut) as JSON."""
    return sum(parse_json_object(r) is not None for r in references) * 2 > len(references)


def score(answers: list[str], references: list[str]) -> dict:
    """exact_match, and json_valid when most references are JSON objects (fractions 0→1)."""
    refs_json = [parse_json_object(r) for r in references]
    json_task = is_json_task(references)
    exact = valid = 0
    for answer, ref, ref_obj in zip(answers, references, refs_json):
        obj = parse_json_object(answer) if json_task else None
        if ref_obj is not None and obj is not None:
            exact += obj == ref_obj
            valid += set(obj) == set(ref_obj)
        else:
            exact += " ".join(answer.split()) == " ".join(ref.split())
    n = max(len(references), 1)
    result = {"exact_match": exact / n, "prompts": len(references)}
    if json_task:
        result["json_valid"] = valid / n
    return result


def load_heldout(config, data: Path | None):
    """The held-out examples: `data`, else the run's validation file, else its validation split."""
    from lorastudio.core.engine.batches import load_examples, split
    if data is not None:
        return load_examples(Path(data), config.data).examples, str(data)
    if config.data.validation_path:
        return load_examples(Path(config.data.validation_path), config.data).examples, config.data.validation_path
    examples = load_examples(Path(config.data.path), config.data).examples
    _train, held = split(examples, config.data.validation_split or 0.1, config.training.seed,
                         config.data.max_validation_examples)
    return held, f"{config.data.path} (validation split)"


def heldout_loss(pair, encoded, side: str, batch_size: int,
                 on_batch: Callable[[int, int], None] = lambda done, batches: None) -> float | None:
    """The mean held-out loss of one side; `on_batch(done, batches)` before each batch (progress)."""
    import torch
    from lorastudio.core.engine.batches import collate, count_label_tokens, pad_id_of
    from lorastudio.core.engine.inference import side_context
    if not encoded.items:
        return None
    images = image_inputs(pair, None, "the held-out data")
    total, count = 0.0, 0
    with torch.no_grad(), side_context(pair.model, side):
        batches = -(-len(encoded.items) // batch_size)
        for i in range(0, len(encoded.items), batch_size):
            on_batch(i // batch_size, batches)
            rows = encoded.items[i:i + batch_size]
            batch = collate(rows, pad_id_of(pair.tokenizer))
            if images is not None:
                batch.update(images(batch["input_ids"], rows))
            n = count_label_tokens(batch)
            batch = {k: v.to(pair.device) for k, v in batch.items()}
            total += float(pair.model(**batch, num_items_in_batch=n).loss) * n
            count += n
    return total / max(count, 1)


def image_prompts(pair, asked: list, source: str) -> list:
    """The prompts of `asked` [(prompt turns, reference, example)] encoded with their images (Encoded
    rows), when the model is a vision-language one and some example shows an image; else []."""
    if pair.processor is None or not any(ex.images for _p, _r, ex in asked):
        return []
    from lorastudio.core.engine.vision.encoding import ImageEncoder
    encoder = ImageEncoder(pair.processor, getattr(pair.config.data, "max_image_pixels", 0))
    return [encoder.prompt(prompt, ex, source) for prompt, _ref, ex in asked]


def image_inputs(pair, rows, source: str):
    """A vision-language model's image tensors for padded ids: f(ids) for the prompt `rows`, or
    f(ids, rows) when `rows` is None; None for a text-only model."""
    if pair.processor is None:
        return None
    from lorastudio.core.engine.vision.encoding import ImageBatcher
    batcher = ImageBatcher(pair.processor, getattr(pair.config.data, "max_image_pixels", 0), source)
    if rows is None:
        return lambda ids, given: batcher(list(given), ids)
    return lambda ids: batcher(list(rows), ids)


def evaluate_run(run_dir: Path, data: Path | None = None, checkpoint: int | None = None, limit: int = 48,
                 progress: Progress = lambda name, fraction, message: None, adapter_dir: Path | None = None) -> dict:
    """{run, data, checkpoint, adapter_path, examples, date, base: {loss, exact_match, prompts,
    json_valid?}, adapter: {the same}, samples, seconds}."""
    from lorastudio.core.engine.batches import encode_examples
    from lorastudio.core.engine.inference import SIDES, encode_prompt, greedy_batch, load_pair
    started = time.time()
    progress("loading", 0.02, "Loading the base model and the adapter")
    pair = load_pair(run_dir, checkpoint, adapter_dir=adapter_dir)
    examples, source = load_heldout(pair.config, data)
    encoded = encode_examples(examples, pair.tokenizer, pair.config.data, pair.config.training.seq_len,
                              pair.processor, source)
    asked = [(split_prompt(ex.messages), ex) for ex in examples if ex.is_chat][:limit]
    asked = [(prompt, ref, ex) for (prompt, ref), ex in asked if ref is not None]
    chats = [(prompt, ref) for prompt, ref, _ex in asked]
    pictured = image_prompts(pair, asked, source)     # a vision-language model: the prompts with their images
    prompts = ([row.input_ids for row in pictured] if pictured else
               [encode_prompt(pair.tokenizer, prompt) for prompt, _ in chats])
    references = [ref for _, ref in chats]
    longest = max((len(pair.tokenizer(r)["input_ids"]) for r in references), default=0)
    json_answers = is_json_task(references)        # an answer ends with its JSON object (or at end of turn)
    # "base" and "adapter" are the two sides' measures (below); the adapter's folder is "adapter_path".
    result = {"run": str(run_dir), "data": source, "checkpoint": checkpoint, "adapter_path": str(pair.adapter),
              "examples": len(encoded.items), "date": _dt.datetime.now().isoformat(timespec="seconds")}
    batches = range(0, len(prompts), GEN_BATCH)
    steps, done = len(SIDES) * (1 + len(batches)), 0

    def say(name: str, message: str, within: float = 0.0) -> None:
        progress(name, 0.1 + 0.9 * (done + within) / steps, message)

    shown = {"at": 0.0}

    def loss_batch(side: str, i: int, n: int) -> None:      # the loss phase moves, batch by batch
        if i and time.monotonic() - shown["at"] < LOSS_PROGRESS_S:
            return
        shown["at"] = time.monotonic()
        say("loss", f"{side}: held-out loss on {len(encoded.items)} examples, batch {i + 1} of {n}", i / n)

    answers: dict[str, list[str]] = {}
    for side in SIDES:
        say("loss", f"{side}: held-out loss on {len(encoded.items)} examples")
        loss = heldout_loss(pair, encoded, side, pair.config.training.batch_size,
                            lambda i, n, side=side: loss_batch(side, i, n))
        done += 1
        answers[side] = []
        for i in batches:
            say("answering", f"{side}: answering prompts {i + 1}-{min(i + GEN_BATCH, len(prompts))} of {len(prompts)}")
            answers[side] += greedy_batch(pair, prompts[i:i + GEN_BATCH], side, longest + 16, json_answers,
                                          images=image_inputs(pair, pictured[i:i + GEN_BATCH], source) if pictured else None)
            done += 1
        result[side] = {"loss": loss, **score(answers[side], references)}
    result["samples"] = [{"prompt": p[-1]["content"], "reference": r, "base": b, "adapter": a}
                         for (p, r), b, a in zip(chats[:6], answers["base"], answers["adapter"])]
    result["seconds"] = round(time.time() - started, 1)
    return result
