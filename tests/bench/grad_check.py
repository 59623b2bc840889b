"""Are the benchmark's gradients real? Our training path's LoRA gradient norms against PEFT's reference.

python tests/bench/grad_check.py MODEL_DIR SEQ MICRO_BATCH [--memory-mode checkpoint] [--steps 3] [--tol 0.02]
Runs two processes on the same model folder (a process each: our loading patches model classes):
  ours  loaded through core.engine.model_loading (NF4, r 16 on q,k,v,o,gate,up,down, the fused path,
        the memory mode given), its LoRA weights (after its own initialisation) written to a file;
  ref   transformers + PEFT as documented (tests/bench/peer_hf_peft.py's recipe, PEFT's own LoRA
        layers, gradient checkpointing unless the mode is none) with those same LoRA weights loaded.
Both train SEQ x MICRO_BATCH random token ids (a CPU generator seeded 0) with AdamW lr 1e-4 and no
clipping; before each optimizer step the L2 norm of all LoRA gradients is recorded. The check
passes when every step's norm is finite, above zero, and within --tol (relative) of the reference's.
Prints: RESULT {"ok": ..., "ours": [...], "ref": [...], "worst_rel": ...}
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def lora_key(name: str) -> str:
    """A LoRA parameter's name without wrappers (prepare_model_for_kbit_training / checkpointing add none,
    but compile or distributed wrappers could)."""
    i = name.find("layers.")
    return name[i:] if i >= 0 else name


def train_norms(model, params, a) -> list[float]:
    import torch
    vocab = model.get_input_embeddings().weight.shape[0]
    x = torch.randint(0, vocab, (a.mb, a.seq), generator=torch.Generator().manual_seed(0)).to("cuda")
    opt = torch.optim.AdamW(params, lr=1e-4)
    model.train()
    norms = []
    for _ in range(a.steps):
        model(input_ids=x, labels=x).loss.backward()
        grads = [p.grad.float() for p in params if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()
                     if grads else 0.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return norms


def side_ours(a) -> dict:
    import torch
    from lorastudio.core.config import RunConfig
    from lorastudio.core.engine.model_loading import load_for_training
    from lorastudio.core.models.info import read_model_info
    torch.manual_seed(0)
    cfg = RunConfig.from_dict({"model": a.model, "quantization": "4bit", "device": "cuda",
                               "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "targets": TARGETS},
                               "data": {"path": "unused.jsonl"},
                               "training": {"memory_mode": a.memory_mode, "fused_lora": True}})
    lm = load_for_training(cfg, read_model_info(a.model))
    named = [(n, p) for n, p in lm.model.named_parameters() if p.requires_grad]
    torch.save({lora_key(n): p.detach().cpu() for n, p in named}, a.weights)
    return {"norms": train_norms(lm.model, [p for _, p in named], a), "kernels": list(lm.kernels),
            "params": len(named)}


def side_ref(a) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(a.model, quantization_config=q, dtype=torch.bfloat16,
                                                 device_map={"": 0})
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=a.memory_mode != "none")
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS,
                                             task_type="CAUSAL_LM"))
    model.config.use_cache = False
    theirs = torch.load(a.weights)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, _ in named if lora_key(n) not in theirs]
    if missing or len(named) != len(theirs):
        raise SystemExit(f"LoRA parameters differ: {len(named)} here, {len(theirs)} ours; missing e.g. {missing[:3]}")
    with torch.no_grad():
        for n, p in named:
            p.copy_(theirs[lora_key(n)])
    return {"norms": train_norms(model, [p for _, p in named], a), "params": len(named)}


def check(model: str, seq: int, mb: int, memory_mode: str = "checkpoint", steps: int = 3, tol: float = 0.02,
          timeout: int = 600) -> dict:
    """Both sides, each in its own process; the verdict as a dict (ok, norms, worst relative difference)."""
    work = Path(tempfile.mkdtemp(prefix="gradcheck-"))
    got = {}
    for side in ("ours", "ref"):
        cmd = [sys.executable, __file__, model, str(seq), str(mb), "--memory-mode", memory_mode, "--steps",
               str(steps), "--side", side, "--weights", str(work / "lora.pt"), "--out", str(work / f"{side}.json")]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"ok": False, "why": f"{side}: timed out after {timeout} s"}
        if p.returncode or not (work / f"{side}.json").exists():
            return {"ok": False, "why": f"{side}: exit {p.returncode}: {(p.stdout + p.stderr)[-1200:]}"}
        got[side] = json.loads((work / f"{side}.json").read_text())
    ours, ref = got["ours"]["norms"], got["ref"]["norms"]
    rel = [abs(o - r) / r if r > 0 else math.inf for o, r in zip(ours, ref)]
    worst = max(rel) if rel else math.inf
    ok = (len(ours) == len(ref) == steps and all(math.isfinite(v) and v > 0 for v in ours + ref) and worst <= tol)
    return {"ok": ok, "seq": seq, "mb": mb, "memory_mode": memory_mode, "ours": [round(v, 5) for v in ours],
            "ref": [round(v, 5) for v in ref], "worst_rel": round(worst, 5), "tol": tol,
            "kernels": got["ours"].get("kernels"), "lora_params": got["ours"].get("params")}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("seq", type=int)
    p.add_argument("mb", type=int)
    p.add_argument("--memory-mode", default="checkpoint", choices=["none", "checkpoint", "lean"])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--tol", type=float, default=0.02)
    p.add_argument("--side", choices=["ours", "ref"], help="(internal) run one side and write --out")
    p.add_argument("--weights")
    p.add_argument("--out")
    a = p.parse_args()
    if a.side:
        r = (side_ours if a.side == "ours" else side_ref)(a)
        Path(a.out).write_text(json.dumps(r))
        return 0
    r = check(a.model, a.seq, a.mb, a.memory_mode, a.steps, a.tol)
    print("RESULT", json.dumps(r), flush=True)
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
