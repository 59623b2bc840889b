"""Benchmark: one epoch of real-looking instruction data, packing on and off, against Unsloth's SFTTrainer.

python tests/bench/bench_data_epoch.py MODEL_DIR [--rows 3000] [--seq-len 2048] [--batch-size 8] [--out r.jsonl]
(MODEL_DIR: e.g. `python tests/bench/make_model.py /tmp/llama-1b --shape llama-1b`.)

The workload (issue 13): a JSONL of `--rows` texts whose lengths follow a log-normal (median 200
words, sigma 0.8) drawn from a fixed word list with a fixed seed. Each run is its own process:
  ours-packed   our trainer through the real CLI (`python -m lorastudio.app.launcher train`), NF4,
                LoRA r16 all-linear, one epoch, data.packing true — with an empty token cache, so
                its data phase includes tokenizing;
  ours-padded   the same with data.packing false (its data phase is a token-cache hit);
  unsloth       Unsloth's FastLanguageModel + trl's SFTTrainer on the same file, same rows, batch,
                seq_len, rank and targets (its padding-free default), when `import unsloth` works
                with the peer site (.peers/ beside this repo, or --peer-site) on the path.
Real tokens are the tokens of the (seq_len-truncated) examples, no padding. Prints one Markdown
table (epoch seconds, real tokens/s, data-phase seconds, peak GiB) and one JSON line per run.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WORDS = ("the of and to in is that for it as with was on be by this are or from at an which have not "
         "model data train adapter rank weight token layer memory speed learning rate batch gradient "
         "question answer explain write code function value example result number list step first "
         "because however therefore people time work system process use make good new important").split()
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def write_workload(path: Path, rows: int, seed: int = 13) -> dict:
    """Log-normal lengths: median 200 words, sigma 0.8 (mean ≈ 275 words)."""
    rng = random.Random(seed)
    words = 0
    with open(path, "w", encoding="utf-8") as fh:
        for _ in range(rows):
            n = max(5, int(round(math.exp(rng.gauss(math.log(200), 0.8)))))
            words += n
            fh.write(json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(n))}) + "\n")
    return {"rows": rows, "words": words}


def ours(model: Path, data: Path, work: Path, packing: bool, a, cache: Path) -> dict:
    import yaml
    cfg = {"model": str(model), "quantization": a.quantization, "device": a.device,
           "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "targets": "all-linear"},
           "data": {"path": str(data), "validation_split": 0.0, "packing": packing},
           "training": {"max_steps": 0, "epochs": 1, "lr": 2e-4, "batch_size": a.batch_size, "grad_accum": 1,
                        "seq_len": a.seq_len, "save_every": 0, "warmup_steps": 5, "log_every": 10,
                        "memory_mode": a.memory_mode}}
    name = "packed" if packing else "padded"
    (work / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    run_dir = work / f"run-{name}"
    env = dict(os.environ, LORASTUDIO_CACHE=str(cache))
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "lorastudio.app.launcher", "train", str(work / f"{name}.yaml"),
                           "--run-dir", str(run_dir)], capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.time() - t0
    from lorastudio.core.journal import read_events
    events = read_events(run_dir / "events.jsonl")
    steps = [e for e in events if e["type"] == "step"]
    data_ev = next((e for e in events if e["type"] == "data"), {})
    data_phase = next((e for e in events if e["type"] == "phase" and e.get("name") == "data"), None)
    epoch_s = round(steps[-1]["elapsed_s"], 1) if steps else None
    memory = [e for e in events if e["type"] == "memory"]
    result = {"who": f"ours-{name}", "exit": proc.returncode, "steps": len(steps), "epoch_s": epoch_s,
              "wall_s": round(wall, 1), "real_tokens": data_ev.get("tokens"),
              "tok_s": round(data_ev["tokens"] / epoch_s) if epoch_s and data_ev.get("tokens") else None,
              "data_s": round(data_ev["time"] - data_phase["time"], 2) if data_phase and data_ev else None,
              "cache_hit": data_ev.get("cache_hit"), "packing": data_ev.get("packing"),
              "packing_note": data_ev.get("packing_note"),
              "peak_gib": round(max((m.get("cuda_peak", 0) for m in memory), default=0) / 2**30, 2),
              "last_loss": steps[-1]["loss"] if steps else None}
    if proc.returncode:
        result["tail"] = (proc.stderr[-1500:] + (run_dir / "worker.log").read_text()[-2500:]
                          if (run_dir / "worker.log").exists() else proc.stderr[-3000:])
    return result


UNSLOTH = textwrap.dedent('''
    import json, os, sys, tempfile, time
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
    import unsloth  # noqa: F401  (first: it patches transformers)
    from unsloth import FastLanguageModel
    import torch
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer
    path, data, seq, mb = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    model, tok = FastLanguageModel.from_pretrained(model_name=path, max_seq_length=seq, dtype=torch.bfloat16,
                                                   load_in_4bit=True, local_files_only=True)
    model = FastLanguageModel.get_peft_model(model, r=16, lora_alpha=32, lora_dropout=0, bias="none",
                                             random_state=0, target_modules=%(targets)r,
                                             use_gradient_checkpointing="unsloth")
    ds = load_dataset("json", data_files=data, split="train")
    args = SFTConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=mb, gradient_accumulation_steps=1,
                     num_train_epochs=1, learning_rate=2e-4, warmup_steps=5, logging_steps=10, save_strategy="no",
                     report_to="none", bf16=True, max_length=seq, dataset_text_field="text", seed=0)
    trainer = SFTTrainer(model=model, processing_class=tok, train_dataset=ds, args=args)
    real = sum(min(len(ids), seq) for ids in trainer.train_dataset["input_ids"])
    torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    out = trainer.train()
    torch.cuda.synchronize()
    dt = time.perf_counter() - t
    print("RESULT", json.dumps({"who": "unsloth", "exit": 0, "epoch_s": round(dt, 1), "real_tokens": real,
          "tok_s": round(real / dt), "train_runtime": out.metrics.get("train_runtime"),
          "padding_free": getattr(trainer.args, "padding_free", None), "packing": getattr(trainer.args, "packing", None),
          "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}), flush=True)
''') % {"targets": TARGETS}


def unsloth(model: Path, data: Path, work: Path, a) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(a.peer_site), os.environ.get("PYTHONPATH")) if p))
    if subprocess.run([sys.executable, "-c", "import unsloth"], capture_output=True, env=env).returncode:
        return {"who": "unsloth", "exit": None, "note": f"`import unsloth` fails (peer site {a.peer_site}): left out"}
    script = work / "unsloth_sft.py"
    script.write_text(UNSLOTH)
    t0 = time.time()
    p = subprocess.run([sys.executable, str(script), str(model), str(data), str(a.seq_len), str(a.batch_size)],
                       capture_output=True, text=True, env=env)
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("RESULT "):
            return dict(json.loads(line[7:]), wall_s=round(time.time() - t0, 1))
    return {"who": "unsloth", "exit": p.returncode, "tail": (p.stdout + p.stderr)[-3000:]}


def build_small_model(folder: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from tests.helpers.tiny_models import make_tokenizer
    folder.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(folder)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("model", type=Path)
    p.add_argument("--rows", type=int, default=3000)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--memory-mode", default="auto", choices=["none", "checkpoint", "lean", "auto"])
    p.add_argument("--device", default="cuda", help="cpu for the CPU measurement (then --who ours-packed,ours-padded)")
    p.add_argument("--quantization", default="4bit", help="4bit is NF4; none for a CPU run")
    p.add_argument("--small-model", action="store_true",
                   help="first build a small Llama (hidden 256, 4 layers, 4096 positions) into MODEL_DIR (CPU runs)")
    p.add_argument("--who", default="ours-packed,ours-padded,unsloth")
    p.add_argument("--peer-site", type=Path, default=ROOT / ".peers")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    if a.small_model:
        build_small_model(a.model)
    work = Path(tempfile.mkdtemp(prefix="bench-epoch-"))
    data = work / "lognormal.jsonl"
    shape = write_workload(data, a.rows)
    print(f"workload: {shape['rows']:,} rows, {shape['words']:,} words -> {data}", flush=True)
    cache = work / "token-cache"                # empty: the first of our runs tokenizes
    results = []
    for who in a.who.split(","):
        if who == "unsloth":
            r = unsloth(a.model.resolve(), data, work, a)
        else:
            r = ours(a.model.resolve(), data, work, who == "ours-packed", a, cache)
        results.append(r)
        print(json.dumps(r), flush=True)
        if a.out:
            with open(a.out, "a") as fh:
                fh.write(json.dumps(r) + "\n")
    print("\n| run | epoch s | real tokens | real tokens/s | data phase s | cache hit | peak GiB |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['who']} | {r.get('epoch_s')} | {r.get('real_tokens')} | {r.get('tok_s')} | "
              f"{r.get('data_s', '')} | {r.get('cache_hit', '')} | {r.get('peak_gib', '')} |")
    return 0 if all(r.get("exit") in (0, None) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
