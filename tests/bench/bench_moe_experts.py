"""Benchmark: one MoE layer's experts with LoRA — PEFT's path against the grouped path (issue 28).

    python tests/bench/bench_moe_experts.py                       # Qwen3-30B-A3B's layer, on CUDA if present
    python tests/bench/bench_moe_experts.py --tokens 1024 --experts 32 --hidden 512 --intermediate 256 --top-k 4

A Qwen3-MoE decoder of one layer (default: Qwen3-30B-A3B's layer shape — hidden 2048, 128 experts
of 768, 8 routed per token) with LoRA r 16 on `mlp.experts.gate_up_proj` and `mlp.experts.down_proj`
through PEFT's `target_parameters`, random weights in the compute dtype (bf16 on CUDA, fp32 on the
CPU). It times forward + backward of the whole layer over `--tokens` tokens, first on PEFT's
ParamWrapper (B·A added to every expert's weight at each forward) and then with the experts on
core/engine/training/expert_lora.py's grouped path, and prints one JSON line: seconds per step and
tokens/s of each, their ratio, peak CUDA memory of each (on a GPU) and the largest difference of the
LoRA gradients between the two.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--intermediate", type=int, default=768)
    p.add_argument("--experts", type=int, default=128)
    p.add_argument("--top-k", type=int, default=8)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--device", default="auto")
    a = p.parse_args()
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model
    from lorastudio.core.engine.training.expert_lora import group_expert_layers, ungroup_expert_layers

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    config = transformers.Qwen3MoeConfig(hidden_size=a.hidden, intermediate_size=4 * a.hidden, num_hidden_layers=1,
                                         num_attention_heads=16, num_key_value_heads=4, head_dim=128,
                                         num_experts=a.experts, num_experts_per_tok=a.top_k,
                                         moe_intermediate_size=a.intermediate, vocab_size=1024)
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    for param in model.parameters():
        param.requires_grad_(False)
    peft = get_peft_model(model, LoraConfig(r=a.rank, lora_alpha=2 * a.rank, lora_dropout=0.0, target_modules=[],
                                            target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]))
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.01)
    peft.train()
    block = peft.base_model.model.model.layers[0].mlp
    x = torch.randn(1, a.tokens, a.hidden, device=device, dtype=dtype, requires_grad=True)

    def step():
        peft.zero_grad(set_to_none=True)
        block(x).float().square().mean().backward()

    def timed() -> dict:
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        began = time.perf_counter()
        for _ in range(a.steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - began) / a.steps
        grads = {n: p.grad.float().clone() for n, p in peft.named_parameters() if p.requires_grad}
        return {"seconds": seconds, "tokens_per_s": a.tokens / seconds, "grads": grads,
                "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None}

    peft_path = timed()
    grouped_blocks, why_not = group_expert_layers(peft)
    grouped = timed()
    ungroup_expert_layers(peft)
    diff = max(float((grouped["grads"][n] - g).abs().max() / (g.abs().max() + 1e-12))
               for n, g in peft_path["grads"].items())
    print(json.dumps({"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                      "dtype": str(dtype), "tokens": a.tokens, "experts": a.experts, "top_k": a.top_k,
                      "hidden": a.hidden, "intermediate": a.intermediate, "rank": a.rank,
                      "grouped_blocks": grouped_blocks, "not_grouped": why_not,
                      "peft": {k: v for k, v in peft_path.items() if k != "grads"},
                      "grouped": {k: v for k, v in grouped.items() if k != "grads"},
                      "speedup": peft_path["seconds"] / grouped["seconds"],
                      "lora_grad_rel_diff": diff}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
