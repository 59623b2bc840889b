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
# issue -> (training phrasings, held-out phrasings); {p} is the product. Many training phrasings a
# label, so that the adapter learns what a message means rather than a handful of sentences.
ISSUES = {
    "connectivity": (["My {p} keeps dropping off the Wi-Fi.", "The app says my {p} is offline again.",
                      "I can't get the {p} to connect to my router.", "The {p} loses its network every night.",
                      "My {p} disconnects from the internet all the time.", "The {p} cannot find my wireless network.",
                      "Bluetooth on the {p} keeps cutting out.", "The {p} shows no connection in the app.",
                      "My {p} went offline after I changed my Wi-Fi password."],
                     ["Since the router update the {p} will not join the network."]),
    "battery": (["The battery in my {p} drains in a day.", "My {p} won't hold a charge anymore.",
                 "The {p} shows a low battery warning right after charging.", "The {p} runs out of power too fast.",
                 "My {p} dies a few hours after a full charge.", "The {p} will not charge at all.",
                 "The battery life of my {p} got much worse.", "I have to recharge the {p} twice a day."],
                ["Fully charged this morning and my {p} is already dead."]),
    "billing": (["I was charged twice for the {p}.", "My invoice for the {p} has the wrong price.",
                 "I need a refund for the {p} I returned.", "I was billed for a {p} I never ordered.",
                 "The discount on my {p} was not applied.", "My credit card was charged the wrong amount for the {p}.",
                 "There is a payment I don't recognise for the {p}.", "The receipt for my {p} shows a double charge."],
                ["There is an extra fee on my card from the {p} order."]),
    "setup": (["How do I pair the {p} with the app?", "The {p} setup gets stuck at step three.",
               "I don't understand how to install my new {p}.", "The instructions for the {p} are confusing.",
               "I can't figure out how to set up the {p}.", "Where do I find the setup code for the {p}?",
               "The app won't let me add my new {p}.", "What are the steps to configure the {p}?"],
              ["The quick start guide for the {p} makes no sense to me."]),
    "noise": (["My {p} makes a buzzing sound.", "There is a loud click from the {p} every few minutes.",
               "The {p} hums even when it is switched off.", "A strange rattling comes from the {p}.",
               "The {p} beeps for no reason.", "My {p} squeaks whenever it runs.",
               "The {p} crackles and makes a lot of noise.", "I hear a constant ticking from the {p}."],
              ["A high-pitched whine comes out of the {p} at night."]),
    "damage": (["The {p} arrived with a cracked case.", "My {p} got scorched near the cable.",
                "The box was crushed and the {p} is bent.", "The screen of my {p} is broken.",
                "My {p} fell and now the cover is split.", "The {p} came with a dented side.",
                "There is a deep scratch and a chip on the {p}.", "Water got in and the {p} is damaged."],
               ["One corner of the {p} was shattered when I opened the parcel."]),
}
URGENCY = {
    "high": (["This is urgent, please help today.", "I need this fixed right now.", "It's an emergency.",
              "Please respond as soon as possible.", "This cannot wait, it is critical.",
              "I need an answer immediately.", "Please make this your highest priority.",
              "It is urgent because nothing works without it."],
             ["Please treat this as top priority."]),
    "medium": (["Could you look into it?", "Please let me know what to do.", "Thanks for helping.",
                "A reply in the next few days would be good.", "Can someone check this when possible?",
                "I would like this sorted soon, but it is not urgent.", "Please get back to me when you can.",
                "Some help within the week would be nice."],
               ["I'd appreciate a reply this week."]),
    "low": (["No rush, whenever you have time.", "It's not a big deal, just letting you know.",
             "Whenever convenient is fine.", "Not a priority at all, just a heads-up.",
             "This is minor, take your time.", "Just for your information, no need to hurry.",
             "It can wait, nothing important.", "Only a small thing, answer whenever."],
            ["Low priority, only curious."]),
}
GREETINGS = (["Hi,", "Hello there.", "Hey support,", "", "Dear Brightloom,", "Good morning,"], ["Good evening team,"])
SYSTEM = "You triage Brightloom support tickets."


def example(rng: random.Random, held_out: bool) -> dict:
    pick = 1 if held_out else 0
    product = rng.choice(PRODUCTS)
    issue = rng.choice(sorted(ISSUES))
    urgency = rng.choice(sorted(URGENCY))
    greeting = rng.choice(GREETINGS[pick] + ([] if held_out else GREETINGS[0]))
    problem, when = rng.choice(ISSUES[issue][pick]).format(p=product), rng.choice(URGENCY[urgency][pick])
    # training messages sometimes say the urgency first; the held-out ones never do
    parts = [greeting, when, problem] if not held_out and rng.random() < 0.25 else [greeting, problem, when]
    message = " ".join(p for p in parts if p)
    answer = json.dumps({"product": product, "issue": issue, "urgency": urgency})
    return {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": message},
                         {"role": "assistant", "content": answer}]}


def build(n_train: int = 480, n_heldout: int = 48, seed: int = 7) -> tuple[list[dict], list[dict]]:
    """The training set and the held-out set, each from its own seeded generator."""
    train_rng, held_rng = random.Random(seed), random.Random(seed + 1)
    return [example(train_rng, False) for _ in range(n_train)], [example(held_rng, True) for _ in range(n_heldout)]


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    train, heldout = build()
    write(here / "sample_train.jsonl", train)
    write(here / "sample_heldout.jsonl", heldout)
    print(f"wrote {len(train)} training and {len(heldout)} held-out examples to {here}")
