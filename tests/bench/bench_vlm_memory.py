"""Benchmark: the memory model against the measured peak for a Qwen2.5-VL-7B-shaped run with images
(issue 31's goal: within 10 %), on the GPU machine.

    source tests/bench/gpu_env.sh && python tests/bench/bench_vlm_memory.py [--work DIR] [--only all]

Builds a Qwen2.5-VL-7B-shaped model with random weights (the text model: hidden 3584, 28 layers,
vocab 152,064; the vision tower: 32 blocks of 1280, SwiGLU 3420, windowed attention) saved with a
Qwen2.5-VL processor (a small byte-level tokenizer: the values and the vocabulary's words do not
change memory), writes chat rows each holding one rendered image of --pixels pixels and an answer long
enough that every row is close to seq_len, trains each configuration a few steps through the real CLI
(`lorastudio train`, the real worker), reads the peak allocated memory from the journal and prints
it beside `estimate()`'s prediction for the run as it trained (its memory mode and kernels).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
GIB = 1 << 30

TEXT_7B = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
               num_key_value_heads=4, max_position_embeddings=32768, vocab_size=152064)
VISION_7B = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                 patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                 fullatt_block_indexes=[7, 15, 23, 31])
# (lora.vision, memory mode, batch): the default (language model only), and the tower adapted too
CONFIGS = [("none", "checkpoint", 2), ("all", "checkpoint", 2), ("projector", "none", 1)]


def build_model(out: Path, layers: int | None = None, headers_only: bool = False) -> Path:
    """The model saved with its processor; `headers_only`: built on the meta device and saved as a
    sparse safetensors file with the header alone (the memory model reads nothing else)."""
    import torch
    import transformers as tf
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from lorastudio.core.engine.vision.loading import image_only
    from tests.helpers.tiny_vlms import _tokenizer, chat_template

    if (out / "shape.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer(out, ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"])
    ids = {key: tok.convert_tokens_to_ids(t) for key, t in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    half = TEXT_7B["hidden_size"] // TEXT_7B["num_attention_heads"] // 2     # 64 rotary frequencies: 16 + 24 + 24
    text = dict(TEXT_7B, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                rope_parameters={"rope_type": "default", "mrope_section": [half // 4, 3 * half // 8, 3 * half // 8], "rope_theta": 1000000.0})
    if layers:
        text["num_hidden_layers"] = layers
    cfg = tf.Qwen2_5_VLConfig(text_config=text, vision_config=VISION_7B, tie_word_embeddings=False, **ids)
    device = "meta" if headers_only else "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = tf.Qwen2_5_VLForConditionalGeneration(cfg)
    finally:
        torch.set_default_dtype(torch.float32)
    params = sum(p.numel() for p in model.parameters())
    if headers_only:
        import os
        import struct
        header, offset = {}, 0
        for name, tensor in model.state_dict().items():
            size = tensor.numel() * 2
            header[name] = {"dtype": "BF16", "shape": list(tensor.shape), "data_offsets": [offset, offset + size]}
            offset += size
        raw = json.dumps(header).encode()
        (out / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
        os.truncate(out / "model.safetensors", 8 + len(raw) + offset)
        cfg.save_pretrained(out)
    else:
        model.save_pretrained(out, max_shard_size="4GB")
    del model
    images = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=28 * 28 * 1280, patch_size=14, merge_size=2,
                                      temporal_patch_size=2)
    processor = image_only(tf.Qwen2_5_VLProcessor)(image_processor=images, tokenizer=tok, chat_template=chat_template(
        "<|vision_start|><|image_pad|><|vision_end|>"))
    processor.save_pretrained(out)
    (out / "shape.json").write_text(json.dumps({"shape": "qwen2.5-vl-7b", "params": params}))
    return out


def write_data(folder: Path, model: Path, rows: int, side: int, seq_len: int) -> Path:
    """`rows` chat rows, each one side×side image (a drawn receipt-like card) and an answer that
    brings the row to about seq_len − 48 tokens."""
    from PIL import Image, ImageDraw
    from transformers import AutoTokenizer
    folder.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(model)
    image_tokens = (side // 28) ** 2
    words = "total paid card cash shop bread milk coffee tea apples rice".split()
    answer, i = [], 0
    while len(tok(" ".join(answer))["input_ids"]) < seq_len - image_tokens - 48:
        answer.append(words[i % len(words)] + str(i % 97))
        i += 1
    answer_text = " ".join(answer[:-1])
    with open(folder / "data.jsonl", "w") as fh:
        for n in range(rows):
            img = Image.new("RGB", (side, side), (250, 250, 245))
            draw = ImageDraw.Draw(img)
            for line in range(0, side, 24):
                draw.text((16, line), f"item {n}-{line} .... {line % 13}.{n % 100:02d}", fill=(20, 20, 20))
            img.save(folder / f"img{n:03d}.png")
            fh.write(json.dumps({"messages": [
                {"role": "user", "content": [{"type": "image", "image": f"img{n:03d}.png"},
                                             {"type": "text", "text": "Read the receipt."}]},
                {"role": "assistant", "content": answer_text}]}) + "\n")
    return folder / "data.jsonl"


def config_for(model: Path, data: Path, vision: str, mode: str, batch: int, seq_len: int, steps: int,
               device: str | None = None) -> dict:
    import torch
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return {"model": str(model), "quantization": "4bit", "device": device,
            "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "targets": "all-linear", "vision": vision},
            "data": {"path": str(data), "validation_split": 0.0},
            "training": {"max_steps": steps, "lr": 2e-4, "batch_size": batch, "grad_accum": 1, "seq_len": seq_len,
                         "save_every": 0, "warmup_steps": 1, "memory_mode": mode, "oom_retry": False}}


def run(work: Path, model: Path, data: Path, vision: str, mode: str, batch: int, seq_len: int, steps: int) -> dict:
    import yaml
    from lorastudio.core.config import RunConfig
    from lorastudio.core.fit.memory_model import estimate
    from lorastudio.core.journal import read_events
    from lorastudio.core.models.info import read_model_info
    from lorastudio.core.fit.calibration import SHIPPED, read_calibration
    name = f"vlm7b-{vision}-{mode}-b{batch}-{seq_len}"
    folder = work / "runs" / f"{name}-{int(time.time())}"
    folder.mkdir(parents=True)
    (folder / "c.yaml").write_text(yaml.safe_dump(config_for(model, data, vision, mode, batch, seq_len, steps)))
    began = time.time()
    proc = subprocess.run([sys.executable, "-m", "lorastudio.app.launcher", "train", str(folder / "c.yaml"),
                           "--run-dir", str(folder / "run")], capture_output=True, text=True)
    events = read_events(folder / "run" / "events.jsonl") if (folder / "run" / "events.jsonl").is_file() else []
    peaks = [e["cuda_peak"] for e in events if e["type"] == "memory" and "cuda_peak" in e]
    start = next((e for e in reversed(events) if e["type"] == "start"), {})
    row = {"name": name, "exit": proc.returncode, "seconds": round(time.time() - began, 1),
           "measured": max(peaks) if peaks else None, "mode_used": start.get("memory_mode"),
           "kernels": start.get("kernels"), "trainable": start.get("trainable_params")}
    if not peaks:
        log = folder / "run" / "worker.log"
        row["tail"] = (log.read_text()[-2500:] if log.is_file() else "") + proc.stderr[-1500:]
        return row
    config = RunConfig.load(folder / "run" / "config.yaml")
    est = estimate(config, read_model_info(config.model), row["mode_used"] or mode,
                   fused_loss="liger" in (row["kernels"] or []), calibration=read_calibration(SHIPPED))
    row["predicted"] = est.allocated
    row["terms"] = {t.key: round(t.bytes / GIB, 3) for t in est.terms}
    row["images"] = est.term("images").detail if any(t.key == "images" for t in est.terms) else None
    row["error"] = round((est.allocated - row["measured"]) / row["measured"], 4)
    return row


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "lorastudio-bench-vlm")
    p.add_argument("--side", type=int, default=896, help="image side in pixels (896: 1,024 image tokens)")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--layers", type=int, default=None, help="fewer text layers (a quick check)")
    p.add_argument("--only", default="", help="run only configurations whose lora.vision is this")
    p.add_argument("--out", type=Path)
    p.add_argument("--predict", type=Path, help="run nothing: predict the rows saved with --out again with "
                   "today's memory model, from a header-only model of the same shape and the same data")
    a = p.parse_args()
    if a.predict:
        return predict_again(a)
    began = time.time()
    model = build_model(a.work / "model", a.layers)
    print(f"model built in {time.time() - began:.0f} s", flush=True)
    data = write_data(a.work / "data", model, rows=16, side=a.side, seq_len=a.seq_len)
    rows = []
    for vision, mode, batch in CONFIGS:
        if a.only and vision != a.only:
            continue
        row = run(a.work, model, data, vision, mode, batch, a.seq_len, a.steps)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{'configuration':<36}{'predicted':>11}{'measured':>10}{'error':>8}")
    for r in rows:
        if r.get("measured"):
            print(f"{r['name']:<36}{r['predicted'] / GIB:>9.2f} G{r['measured'] / GIB:>8.2f} G{r['error']:>+8.1%}")
        else:
            print(f"{r['name']:<36}   failed: exit {r['exit']}")
    print(f"total {time.time() - began:.0f} s")
    if a.out:
        a.out.write_text(json.dumps(rows, indent=2))
    return 0 if rows and all(r.get("measured") for r in rows) else 1


def predict_again(a) -> int:
    import yaml
    from lorastudio.core.config import RunConfig
    from lorastudio.core.fit.calibration import SHIPPED, read_calibration
    from lorastudio.core.fit.memory_model import estimate
    from lorastudio.core.models.info import read_model_info
    model = build_model(a.work / "model-headers", a.layers, headers_only=True)
    data = write_data(a.work / "data", model, rows=16, side=a.side, seq_len=a.seq_len)
    info = read_model_info(model)
    for r in json.loads(a.predict.read_text()):
        if not r.get("measured"):
            continue
        vision, mode, batch = r["name"].split("-")[1], r["mode_used"], int(r["name"].split("-b")[1].split("-")[0])
        cfg_path = a.work / "again.yaml"
        cfg_path.write_text(yaml.safe_dump(config_for(model, data, vision, mode, batch, a.seq_len, 3, "cuda")))
        est = estimate(RunConfig.load(cfg_path), info, mode, fused_loss="liger" in (r["kernels"] or []),
                       calibration=read_calibration(SHIPPED))
        err = (est.allocated - r["measured"]) / r["measured"]
        print(f"{r['name']:<36}{est.allocated / GIB:>9.2f} G{r['measured'] / GIB:>8.2f} G{err:>+8.1%}   (was {r['error']:+.1%})")
        for t in est.terms:
            print(f"    {t.key:<12}{t.bytes / GIB:>8.3f} G  {t.detail[:140]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
