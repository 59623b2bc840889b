"""Write the sample preference pairs: the Brightloom ticket triage of make_sample.py, as pairs.

    python resources/data/make_preferences.py   # rewrites preference_train.jsonl and preference_heldout.jsonl

Each pair is a prompt (the system line and a customer's message, as chat messages), the correct
triage JSON as `chosen`, and a plausible wrong one as `rejected`: the same shape with one field
changed (the issue or the urgency, sometimes the product) —
    {"prompt": [{"role": "system", ...}, {"role": "user", ...}],
     "chosen": "{\"product\": \"Tally Plug\", \"issue\": \"battery\", \"urgency\": \"high\"}",
     "rejected": "{\"product\": \"Tally Plug\", \"issue\": \"noise\", \"urgency\": \"high\"}"}
An untuned model prefers either about half of the time; preference tuning should make it prefer
the correct one on held-out messages written with phrasings the training pairs never use.

Deterministic (seeded); the vocabulary is make_sample.py's, so both data sets tell one story.
Standard library only.
"""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_sample import ISSUES, PRODUCTS, URGENCY, example  # noqa: E402


def wrong_answer(rng: random.Random, answer: dict) -> dict:
    """The answer with one field changed to another plausible value."""
    field = rng.choices(["issue", "urgency", "product"], weights=[4, 4, 1])[0]
    choices = {"issue": sorted(ISSUES), "urgency": sorted(URGENCY), "product": PRODUCTS}[field]
    return {**answer, field: rng.choice([c for c in choices if c != answer[field]])}


def pair(rng: random.Random, held_out: bool) -> dict:
    messages = example(rng, held_out)["messages"]
    prompt, answer = messages[:-1], json.loads(messages[-1]["content"])
    return {"prompt": prompt, "chosen": json.dumps(answer), "rejected": json.dumps(wrong_answer(rng, answer))}


def build(n_train: int = 320, n_heldout: int = 48, seed: int = 11) -> tuple[list[dict], list[dict]]:
    """The training pairs and the held-out pairs, each from its own seeded generator."""
    train_rng, held_rng = random.Random(seed), random.Random(seed + 1)
    return [pair(train_rng, False) for _ in range(n_train)], [pair(held_rng, True) for _ in range(n_heldout)]


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    train, heldout = build()
    write(here / "preference_train.jsonl", train)
    write(here / "preference_heldout.jsonl", heldout)
    print(f"wrote {len(train)} training and {len(heldout)} held-out pairs to {here}")
