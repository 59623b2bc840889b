"""The plain peer: QLoRA the way the transformers + PEFT documentation teaches it.

python tests/bench/peer_hf_peft.py MODEL_DIR SEQ MICRO_BATCH [ckpt|none] [--bits 4|8]
NF4 (double quant, bf16 compute) base, `prepare_model_for_kbit_training` (with its gradient
checkpointing for `ckpt`), LoRA r=16 alpha=32 dropout=0 on q,k,v,o,gate,up,down, AdamW lr 1e-4,
full rows of random token ids, 3 warm-up steps then 12 timed ones — the same protocol as
the Unsloth reference script. Prints: RESULT {"tok_s": ..., "peak_train_gib": ..., ...}
"""
import argparse
import json
import time

import torch
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("seq", type=int)
    p.add_argument("mb", type=int)
    p.add_argument("mode", nargs="?", default="ckpt", choices=["ckpt", "none"])
    p.add_argument("--bits", type=int, default=4, choices=[4, 8])
    p.add_argument("--steps", type=int, default=12)
    a = p.parse_args()
    q = (BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                            bnb_4bit_compute_dtype=torch.bfloat16) if a.bits == 4
         else BitsAndBytesConfig(load_in_8bit=True))
    model = AutoModelForCausalLM.from_pretrained(a.model, quantization_config=q, dtype=torch.bfloat16,
                                                 device_map={"": 0})
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=a.mode == "ckpt")
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS,
                                             task_type="CAUSAL_LM"))
    model.config.use_cache = False
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    vocab = model.get_input_embeddings().weight.shape[0]
    x = torch.randint(0, vocab, (a.mb, a.seq), device="cuda")
    torch.cuda.reset_peak_memory_stats()
    warm = 3
    for i in range(a.steps + warm):
        if i == warm:
            torch.cuda.synchronize()
            t = time.perf_counter()
        out = model(input_ids=x, labels=x)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t
    print("RESULT", json.dumps(dict(peer="hf+peft", mode=a.mode, bits=a.bits, seq=a.seq, mb=a.mb,
                                    tok_s=round(a.steps * a.mb * a.seq / dt),
                                    peak_train_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2),
                                    reserved_gib=round(torch.cuda.max_memory_reserved() / 2**30, 2))), flush=True)


if __name__ == "__main__":
    main()
