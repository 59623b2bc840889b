"""Write the sample dataset: support-ticket triage for Brightloom, a fictional smart-home brand.

    python resources/data/make_sample.py        # rewrites sample_train.jsonl and sample_heldout.jsonl

Every example is a chat: a customer's message, and the answer as one line of JSON in a fixed shape,
    {"product": "Tally Plug", "issue": "connectivity", "urgency": "high"}
A small instruct model answers such messages in friendly prose; a few minutes of LoRA training
teach it the shape (format validity) and, mostly, the fields (exact match). The held-out set uses
phrasings the training set never shows, so the metric measures the task, not recall.

Deterministic (seeded); all text written for this project. Standard library only.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

PRODUCTS = ["Lumen Lamp", "Hearth Thermostat", "Tally Plug", "Drift Speaker", "Beacon Doorbell",
            "Nimbus Hub", "Pebble Sensor", "Ember Kettle"]
# issue -> (training phrasings, held-out phrasings); {p} is the product
ISSUES = {
    "connectivity": (["My {p} keeps dropping off the Wi-Fi.", "The app says my {p} is offline again.",
                      "I can't get the {p} to connect to my router.", "The {p} loses its network every night."],
                     ["Since the router update the {p} will not join the network."]),
    "battery": (["The battery in my {p} drains in a day.", "My {p} won't hold a charge anymore.",
                 "The {p} shows a low battery warning right after charging."],
                ["Fully charged this morning and my {p} is already dead."]),
    "billing": (["I was charged twice for the {p}.", "My invoice for the {p} has the wrong price.",
                 "I need a refund for the {p} I returned."],
                ["There is an extra fee on my card from the {p} order."]),
    "setup": (["How do I pair the {p} with the app?", "The {p} setup gets stuck at step three.",
               "I don't understand how to install my new {p}."],
              ["The quick start guide for the {p} makes no sense to me."]),
    "noise": (["My {p} makes a buzzing sound.", "There is a loud click from the {p} every few minutes.",
               "The {p} hums even when it is switched off."],
              ["A high-pitched whine comes out of the {p} at night."]),
    "damage": (["The {p} arrived with a cracked case.", "My {p} got scorched near the cable.",
                "The box was crushed and the {p} is bent."],
               ["One corner of the {p} was shattered when I opened the parcel."]),
}
URGENCY = {
    "high": (["This is urgent, please help today.", "I need this fixed right now.", "It's an emergency."],
             ["Please treat this as top priority."]),
    "medium": (["Could you look into it?", "Please let me know what to do.", "Thanks for helping."],
               ["I'd appreciate a reply this week."]),
    "low": (["No rush, whenever you have time.", "It's not a big deal, just letting you know.",
             "Whenever convenient is fine."],
            ["Low priority, only curious."]),
}
GREETINGS = (["Hi,", "Hello there.", "Hey support,", ""], ["Good evening team,"])
SYSTEM = "You triage Brightloom support tickets."


def example(rng: random.Random, held_out: bool) -> dict:
    pick = 1 if held_out else 0
    product = rng.choice(PRODUCTS)
    issue = rng.choice(sorted(ISSUES))
    urgency = rng.choice(sorted(URGENCY))
    greeting = rng.choice(GREETINGS[pick] + ([] if held_out else GREETINGS[0]))
    parts = [greeting, rng.choice(ISSUES[issue][pick]).format(p=product), rng.choice(URGENCY[urgency][pick])]
    message = " ".join(p for p in parts if p)
    answer = json.dumps({"product": product, "issue": issue, "urgency": urgency})
    return {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": message},
                         {"role": "assistant", "content": answer}]}


def build(n_train: int = 320, n_heldout: int = 48, seed: int = 7) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    return [example(rng, False) for _ in range(n_train)], [example(rng, True) for _ in range(n_heldout)]


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    train, heldout = build()
    write(here / "sample_train.jsonl", train)
    write(here / "sample_heldout.jsonl", heldout)
    print(f"wrote {len(train)} training and {len(heldout)} held-out examples to {here}")
