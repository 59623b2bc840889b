"""The receipts demo (issue 31): images drawn offline, the preset filled in, and a tiny random
vision-language model trained on it through `lorastudio train` and scored by `lorastudio eval`
(held-out exact match and JSON validity, base against base + adapter)."""
from __future__ import annotations

import json

import yaml

from lorastudio.core.cli import main as cli_main
from lorastudio.core.models import vision_demo
from tests.helpers.tiny_vlms import make_vlm

EMBEDDING_SCALE = 6.0
TINY_STEPS, TINY_LR = 1200, 5e-3        # about 25 s on 2 cores


def test_the_demo_draws_receipts_and_fills_the_preset(tmp_path, capsys):
    from PIL import Image
    assert vision_demo.main([str(tmp_path / "demo"), "--model", "some/model", "--train", "6", "--heldout", "3"]) == 0
    config = yaml.safe_load((tmp_path / "demo" / "receipts.yaml").read_text())
    assert config["model"] == "some/model" and config["lora"]["vision"] == "none"
    rows = [json.loads(line) for line in open(config["data"]["path"])]
    held = [json.loads(line) for line in open(config["data"]["validation_path"])]
    assert len(rows) == 6 and len(held) == 3
    answer = json.loads(rows[0]["messages"][1]["content"])
    assert set(answer) == {"store", "payment", "total"} and answer["store"] in vision_demo.STORES
    image = tmp_path / "demo" / rows[0]["messages"][0]["content"][0]["image"]
    with Image.open(image) as img:
        assert img.size == (240, 320)
        assert img.getpixel((5, 5)) == vision_demo.STORES[answer["store"]]       # the shop's colour band
    # the same seed draws the same receipts; held-out receipts are other draws
    again = tmp_path / "again"
    vision_demo.write_demo(again, 6, 3)
    assert (again / "receipts_train.jsonl").read_text() == (tmp_path / "demo" / "receipts_train.jsonl").read_text()
    assert (again / rows[0]["messages"][0]["content"][0]["image"]).read_bytes() == image.read_bytes()
    assert not {r["messages"][1]["content"] for r in held} <= {r["messages"][1]["content"] for r in rows}


def with_a_trained_scale(model, scale: float = EMBEDDING_SCALE) -> None:
    """A random model drawn at std 0.02 cannot make any token likely: its tied output matrix keeps
    every logit within about ±1, so no LoRA update brings the loss much under log(vocabulary). Its
    token embedding and its projector's output layer are drawn larger (× scale), the order of a
    trained model's, so LoRA has logits to move and image features as large as the words'."""
    from safetensors.torch import load_file, save_file
    path = model / "model.safetensors"
    weights = load_file(path)
    for name in [k for k in weights if k.endswith("embed_tokens.weight") or k.startswith("visual.merger.mlp.2.")]:
        weights[name] = weights[name] * scale
    save_file(weights, path, metadata={"format": "pt"})


def test_a_tiny_vision_language_model_learns_the_receipts_json(tmp_path, monkeypatch, inline_jobs, capsys):
    """Store and payment only (colours a 56-pixel view keeps; the total is text a tiny random model
    cannot read), the preset's LoRA (language model only). The base answers nothing of the shape;
    the adapter reads the shop and the payment off held-out receipts (docs/vision.md has the figures:
    16 of 16 at 1,200 steps; 600–900 steps stay at chance, 1 in 8, and adapting the projector and
    tower too kept it there)."""
    monkeypatch.setenv("LORASTUDIO_CACHE", str(tmp_path / "cache"))
    model = make_vlm(tmp_path / "model", "qwen2_vl", vision_depth=3)      # 3: for the mmproj (test_vision_gguf)
    with_a_trained_scale(model)
    train, heldout = vision_demo.write_demo(tmp_path / "demo", train=64, heldout=16, fields=("store", "payment"))
    path = vision_demo.write_config(tmp_path / "demo", str(model), train, heldout)
    config = yaml.safe_load(path.read_text())
    config["device"] = "cpu"
    config["training"].update(max_steps=TINY_STEPS, lr=TINY_LR, seq_len=256, save_every=0, warmup_steps=2)
    path.write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    assert cli_main(["train", str(path), "--run-dir", str(run)]) == 0
    capsys.readouterr()
    assert cli_main(["eval", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    base, adapter = result["base"], result["adapter"]
    assert base["prompts"] == adapter["prompts"] == 16
    assert base["exact_match"] == 0.0 and base["json_valid"] == 0.0, base
    assert adapter["json_valid"] == 1.0 and adapter["loss"] < base["loss"] / 10, adapter
    assert adapter["exact_match"] >= 0.75, adapter          # chance is 1 in 8
    # as GGUF: llama.cpp, with the model and its mmproj, reads the first training receipt as transformers does
    out = tmp_path / "gguf" / "receipts-f16.gguf"
    assert cli_main(["export-gguf", str(run), str(out), "--type", "f16"]) == 0
    capsys.readouterr()
    from lorastudio.core.journal import read_events
    job = next((run / "gguf-exports").iterdir())
    fidelity = next(e for e in read_events(job / "events.jsonl") if e["type"] == "fidelity")
    assert fidelity["image_checked"] and not fidelity["flagged"], fidelity
    reference = json.loads(train.read_text().splitlines()[0])["messages"][1]["content"]
    assert json.loads(fidelity["image_answer"]) == json.loads(reference), fidelity["image_answer"]
    assert fidelity["image_agree"] and fidelity["image_max_tokens"] == 2
