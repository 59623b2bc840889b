"""The vision demo (issue 31): shop receipts drawn with Pillow, and a model that learns to read them
into one line of JSON. Nothing is downloaded: the images are drawn here, from a seed.

    python -m lorastudio.core.models.vision_demo DIR --model MODEL      # a vision-language model
    lorastudio train DIR/receipts.yaml
    lorastudio eval RUN                                                  # exact match, base vs adapter

writes DIR/images/*.png, DIR/receipts_train.jsonl, DIR/receipts_heldout.jsonl (chat rows: the receipt
as an image content part and the question; the answer as JSON) and DIR/receipts.yaml (the preset
resources/presets/receipts_demo.yaml with the model and the data filled in). docs/vision.md says how
to run it with a real model.

A receipt: a header band in the shop's colour with its name, the date, three to five items with
prices, the total, and a round badge saying how it was paid (blue CARD, green CASH). The answer:
    {"store": "Lumen Grocer", "payment": "card", "total": "23.40"}
`fields` picks which of these the answers hold: store and payment are colours as much as words (a
tiny random model's 56-pixel view still tells them apart: the tests' task); the total is text, for a
real model that reads. Held-out receipts are new draws (other items, prices, dates), so exact match
measures reading, not recall. Torch-free.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

STORES = {"Lumen Grocer": (46, 125, 50), "Hearth Bakery": (198, 40, 40), "Drift Pharmacy": (21, 101, 192),
          "Ember Hardware": (230, 120, 0)}
PAYMENTS = {"card": (30, 60, 200), "cash": (20, 150, 60)}
ITEMS = ("Bread", "Milk", "Apples", "Coffee", "Eggs", "Cheese", "Soap", "Tape", "Nails", "Tea", "Rice", "Honey",
         "Lamp bulb", "Plasters", "Butter", "Pasta")
FIELDS = ("store", "payment", "total")
TRAIN_FILE, HELDOUT_FILE, CONFIG_FILE, PRESET = "receipts_train.jsonl", "receipts_heldout.jsonl", "receipts.yaml", \
    "receipts_demo.yaml"


def question(fields=FIELDS) -> str:
    return f"Receipt as JSON: {', '.join(fields)}."


def draw_values(rng: random.Random) -> dict:
    """One receipt's values: store, payment, date, items (name, price in cents) and total."""
    items = [(name, rng.randrange(80, 1500, 5)) for name in rng.sample(ITEMS, rng.randint(3, 5))]
    total = sum(price for _, price in items)
    return {"store": rng.choice(list(STORES)), "payment": rng.choice(list(PAYMENTS)),
            "date": f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}", "items": items,
            "total": f"{total // 100}.{total % 100:02d}"}


def draw_receipt(values: dict, path: Path, width: int = 240) -> Path:
    """The receipt as a PNG `width` pixels wide (4:3 tall)."""
    from PIL import Image, ImageDraw, ImageFont
    height = width * 4 // 3
    unit = width / 240
    img = Image.new("RGB", (width, height), (250, 248, 240))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=max(8, round(14 * unit)))
    big = ImageFont.load_default(size=max(9, round(18 * unit)))
    band = round(height * 0.2)
    draw.rectangle([0, 0, width, band], fill=STORES[values["store"]])
    draw.text((round(10 * unit), round(band * 0.3)), values["store"], fill=(255, 255, 255), font=big)
    y = band + round(8 * unit)
    draw.text((round(10 * unit), y), values["date"], fill=(60, 60, 60), font=font)
    line = round(18 * unit)
    for name, cents in values["items"]:
        y += line
        draw.text((round(10 * unit), y), name, fill=(20, 20, 20), font=font)
        draw.text((width - round(70 * unit), y), f"{cents // 100}.{cents % 100:02d}", fill=(20, 20, 20), font=font)
    y += line + round(4 * unit)
    draw.line([round(10 * unit), y, width - round(10 * unit), y], fill=(20, 20, 20), width=max(1, round(unit)))
    draw.text((round(10 * unit), y + round(4 * unit)), "TOTAL", fill=(0, 0, 0), font=big)
    draw.text((width - round(80 * unit), y + round(4 * unit)), values["total"], fill=(0, 0, 0), font=big)
    r = round(width * 0.16)
    cx, cy = width // 2, height - r - round(8 * unit)
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=PAYMENTS[values["payment"]])
    draw.text((cx - round(22 * unit), cy - round(8 * unit)), values["payment"].upper(), fill=(255, 255, 255), font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def answer(values: dict, fields=FIELDS) -> str:
    return json.dumps({k: values[k] for k in fields})


def write_rows(folder: Path, name: str, n: int, rng: random.Random, fields, width: int) -> Path:
    rows = []
    for i in range(n):
        values = draw_values(rng)
        image = f"images/{name}-{i:03d}.png"
        draw_receipt(values, folder / image, width)
        rows.append({"messages": [
            {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question(fields)}]},
            {"role": "assistant", "content": answer(values, fields)}]})
    path = folder / (TRAIN_FILE if name == "train" else HELDOUT_FILE)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_demo(folder: Path, train: int = 240, heldout: int = 40, seed: int = 0, fields=FIELDS,
               width: int = 240) -> tuple[Path, Path]:
    """The receipts, drawn into `folder`: (training file, held-out file). Deterministic for a seed."""
    unknown = [f for f in fields if f not in FIELDS]
    if unknown or not fields:
        raise ValueError(f"fields {unknown or '(none)'}: choose from {', '.join(FIELDS)}")
    folder = Path(folder)
    rng = random.Random(seed)
    return (write_rows(folder, "train", train, rng, fields, width),
            write_rows(folder, "heldout", heldout, rng, fields, width))


def write_config(folder: Path, model: str, train: Path, heldout: Path) -> Path:
    """The receipts preset with the model and the data filled in, as DIR/receipts.yaml."""
    import yaml
    from lorastudio.core.models.demo import resource
    preset = yaml.safe_load(resource("presets", PRESET).read_text(encoding="utf-8")) or {}
    preset = {"model": str(model), **{k: v for k, v in preset.items() if k != "model"}}
    preset.setdefault("data", {}).update(path=str(Path(train).resolve()), validation_path=str(Path(heldout).resolve()))
    path = Path(folder) / CONFIG_FILE
    path.write_text(yaml.safe_dump(preset, sort_keys=False), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lorastudio.core.models.vision_demo",
                                description="Draw the receipts demo's images and data, and its config.")
    p.add_argument("folder", type=Path, help="where to write images/, the two data files and receipts.yaml")
    p.add_argument("--model", default="HuggingFaceTB/SmolVLM-256M-Instruct",
                   help="the vision-language model the config trains (a folder, or a Hub id in the local cache)")
    p.add_argument("--train", type=int, default=240, help="training receipts")
    p.add_argument("--heldout", type=int, default=40, help="held-out receipts")
    p.add_argument("--fields", default=",".join(FIELDS), help="the answer's keys, of store,payment,total")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    fields = tuple(f.strip() for f in args.fields.split(",") if f.strip())
    try:
        train, heldout = write_demo(args.folder, args.train, args.heldout, args.seed, fields)
    except ValueError as exc:
        p.error(f"--fields: {exc}")
    config = write_config(args.folder, args.model, train, heldout)
    print(f"Wrote {args.train} training and {args.heldout} held-out receipts under {args.folder}, and {config}\n"
          f"Next: lorastudio train {config}   then   lorastudio eval RUN")
    return 0


if __name__ == "__main__":
    sys.exit(main())
