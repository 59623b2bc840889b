"""Build a model of a real shape with random weights (speed and memory do not depend on values).

python tests/bench/make_model.py OUT_DIR --shape llama-1b      (llama-1b, llama-8b, qwen2.5-0.5b, mistral-7b,
                                                               qwen3-30b-a3b)
Weights are created directly on the GPU in bf16 when one is present (seconds, not minutes). The
shapes are tests/helpers/model_shapes.py's, which the memory model's tests read as headers only.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))     # a script run from anywhere
from tests.helpers.model_shapes import SHAPES  # noqa: E402


def build(out: Path, shape: str, layers: int | None = None) -> Path:
    import torch
    import transformers
    from tests.helpers.tiny_models import make_tokenizer

    out.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(out)
    dims = dict(SHAPES[shape])
    if layers:                                       # the shape's layers, fewer of them (a 30B MoE on one card)
        dims["num_hidden_layers"] = layers
    model_type = dims.pop("model_type")
    prefix = {"llama": "Llama", "qwen2": "Qwen2", "mistral": "Mistral", "qwen3_moe": "Qwen3Moe"}[model_type]
    config_cls = getattr(transformers, f"{prefix}Config")
    model_cls = getattr(transformers, f"{prefix}ForCausalLM")
    cfg = config_cls(max_position_embeddings=8192, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                     pad_token_id=tok.pad_token_id, **dims)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_default_dtype(torch.bfloat16)          # created in bf16: no fp32 copy of an 8B model
    try:
        with torch.device(device):
            model = model_cls(cfg)
    finally:
        torch.set_default_dtype(torch.float32)
    model.save_pretrained(out, max_shard_size="4GB")
    (out / "shape.json").write_text(json.dumps({"shape": shape, "params": sum(p.numel() for p in model.parameters())}))
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--shape", default="llama-1b", choices=sorted(SHAPES))
    parser.add_argument("--layers", type=int, default=None, help="fewer decoder layers than the shape has")
    args = parser.parse_args()
    print(build(args.out, args.shape, args.layers))
