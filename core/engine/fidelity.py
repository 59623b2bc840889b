"""Does a written model answer like base + adapter? The fidelity check shared by the merge and the
GGUF export jobs: the same prompts (chat-templated, cut to MAX_PROMPT_TOKENS) through the reference
and the written model, the largest and mean |Δ logit|, and whether greedy continuations agree.
"""
from __future__ import annotations

# Largest |Δlogit| / max(1, max |logit|) that rounding to the dtype explains (a merge adds the
# update to W and rounds once; base + adapter keeps them apart). Beyond it, the check flags.
RELATIVE_TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 5e-2}
MAX_PROMPT_TOKENS, NEW_TOKENS = 64, 16


def encode_prompts(tokenizer, prompts: list[str]) -> list[list[int]]:
    encoded = []
    for text in prompts:
        if getattr(tokenizer, "chat_template", None):
            ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=True,
                                                add_generation_prompt=True, return_dict=True)["input_ids"]
        else:
            ids = tokenizer(text)["input_ids"]
        encoded.append(list(ids)[-MAX_PROMPT_TOKENS:])
    return encoded


def run_prompts(model, tokenizer, prompts: list[list[int]], device: str) -> list[dict]:
    import torch
    out = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.no_grad():
        for ids in prompts:
            x = torch.tensor([ids], device=device)
            logits = model(input_ids=x).logits[0].float().cpu()
            gen = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=NEW_TOKENS,
                                 do_sample=False, pad_token_id=pad)
            out.append({"logits": logits, "greedy": gen[0, len(ids):].tolist()})
    return out


def compare(reference: list[dict], merged: list[dict], dtype: str) -> dict:
    diffs = [(r["logits"] - m["logits"]).abs() for r, m in zip(reference, merged)]
    max_diff = max(float(d.max()) for d in diffs)
    mean_diff = sum(float(d.sum()) for d in diffs) / sum(d.numel() for d in diffs)
    scale = max(1.0, max(float(r["logits"].abs().max()) for r in reference))
    tolerance = RELATIVE_TOLERANCE[dtype] * scale
    agree = sum(r["greedy"] == m["greedy"] for r, m in zip(reference, merged))
    return {"prompts": len(reference), "max_abs_diff": max_diff, "mean_abs_diff": mean_diff,
            "greedy_agree": agree, "flagged": max_diff > tolerance, "tolerance": tolerance, "dtype": dtype}
