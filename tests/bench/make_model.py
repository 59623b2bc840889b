"""Build a model of a real shape with random weights (speed and memory do not depend on values).

python tests/bench/make_model.py OUT_DIR --shape llama-1b
Weights are created directly on the GPU in bf16 when one is present (seconds, not minutes).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SHAPES = {
    # Llama-3.2-1B: 1.24 B parameters with the tied 128,256-token embedding.
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0),
    # Llama-3.1-8B: 8.03 B parameters.
    "llama-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False, rope_theta=500000.0),
}


def build(out: Path, shape: str) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))     # a script run from anywhere
    from tests.helpers.tiny_models import make_tokenizer

    out.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(out)
    cfg = LlamaConfig(max_position_embeddings=8192, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, **SHAPES[shape])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(out, max_shard_size="2GB")
    (out / "shape.json").write_text(json.dumps({"shape": shape, "params": sum(p.numel() for p in model.parameters())}))
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--shape", default="llama-1b", choices=sorted(SHAPES))
    args = parser.parse_args()
    print(build(args.out, args.shape))
