"""Tiny random models of every family GGUF export covers (issue 32), offline: transformers' own
config classes with tiny sizes (hidden 64, 2 layers, 4 heads), the byte-level BPE tokenizer of
tiny_models.py and a ChatML template. A few hundred KB each, built in well under a second.

`FAMILIES` maps a family's name (as the docs and the issue's table say it) to (model_type, the
config's tiny settings); `make_family(folder, name)` saves one, `lora_adapter(folder, out)` gives
it a random (non-zero) PEFT LoRA on its attention and MLP projections.
"""
from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.tiny_models import add_chat_template, make_tokenizer

_BASE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=512)
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64, "rope_theta": 500000.0}

# family -> (config class name in transformers, tiny settings)
FAMILIES: dict[str, tuple[str, dict]] = {
    "Llama 3.1": ("LlamaConfig", {**_BASE, "rope_scaling": LLAMA3_ROPE}),
    "Mistral": ("MistralConfig", {**_BASE, "sliding_window": None}),
    "Qwen2": ("Qwen2Config", {**_BASE, "tie_word_embeddings": True}),
    "Qwen3": ("Qwen3Config", {**_BASE, "head_dim": 32, "tie_word_embeddings": True}),
    # llama.cpp scales Gemma's attention by 1/sqrt(head_dim), which is query_pre_attn_scalar in every
    # released Gemma but the 27B ones: the tiny ones say so too
    "Gemma 2": ("Gemma2Config", {**_BASE, "head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 16}),
    "Gemma 3": ("Gemma3TextConfig", {**_BASE, "head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 16}),
    "Phi-3": ("Phi3Config", {**_BASE, "num_key_value_heads": 4, "pad_token_id": 0}),
    "Qwen3-MoE": ("Qwen3MoeConfig", {**_BASE, "head_dim": 16, "num_experts": 4, "num_experts_per_tok": 2,
                                     "moe_intermediate_size": 32, "decoder_sparse_step": 1}),
    "Mixtral": ("MixtralConfig", {**_BASE, "num_local_experts": 4, "num_experts_per_tok": 2}),
    "OLMo 2": ("Olmo2Config", _BASE),
    "Granite": ("GraniteConfig", _BASE),
    "Cohere": ("CohereConfig", _BASE),
    "StarCoder2": ("Starcoder2Config", _BASE),
    "GPT-NeoX": ("GPTNeoXConfig", {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                                    "num_attention_heads": 4, "max_position_embeddings": 512}),
    "Falcon": ("FalconConfig", {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                                "new_decoder_architecture": False, "multi_query": True, "parallel_attn": True,
                                "bias": False, "max_position_embeddings": 512}),
    "Falcon (new decoder)": ("FalconConfig", {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                                              "new_decoder_architecture": True, "num_kv_heads": 2, "bias": False,
                                              "max_position_embeddings": 512}),
}


# Mixture-of-experts families (issue 28) that are not GGUF-export families: hidden 64, 2 layers, 4 experts.
MOE_FAMILIES: dict[str, tuple[str, dict]] = {
    # layer 0 dense (first_k_dense_replace), layer 1 4 routed experts + 1 shared expert; MLA attention
    # (MLA has as many key/value heads as query heads)
    "DeepSeek-V3": ("DeepseekV3Config", {**_BASE, "num_key_value_heads": 4, "n_routed_experts": 4,
                                         "num_experts_per_tok": 2,
                                         "moe_intermediate_size": 32, "first_k_dense_replace": 1,
                                         "n_shared_experts": 1, "n_group": 1, "topk_group": 1,
                                         "q_lora_rank": None, "kv_lora_rank": 16, "qk_rope_head_dim": 8,
                                         "qk_nope_head_dim": 8, "v_head_dim": 16,
                                         "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}}),
    # attention sinks, a sliding and a full layer, experts stored as 3-D tensors with biases
    "gpt-oss": ("GptOssConfig", {**_BASE, "num_local_experts": 4, "num_experts_per_tok": 2, "head_dim": 16,
                                 "sliding_window": 16, "layer_types": ["sliding_attention", "full_attention"]}),
    # more layouts of transformers' checkpoint conversion: Mixtral's with the router renamed (Phi-3.5-MoE),
    # w1..w3 experts and dense first layers under feed_forward (LFM2-MoE), experts under feed_forward
    # (Jamba, attention layers only), and one whose experts the targets report does not map (Granite-MoE)
    "Phi-3.5-MoE": ("PhimoeConfig", {**_BASE, "num_local_experts": 4, "num_experts_per_tok": 2,
                                     "router_jitter_noise": 0.0}),     # no random routing: paths comparable
    "LFM2-MoE": ("Lfm2MoeConfig", {**_BASE, "moe_intermediate_size": 32, "num_experts": 4, "num_experts_per_tok": 2,
                                   "num_dense_layers": 1, "layer_types": ["full_attention", "full_attention"]}),
    "Jamba": ("JambaConfig", {**_BASE, "num_experts": 4, "num_experts_per_tok": 2, "expert_layer_period": 1,
                              "expert_layer_offset": 0, "attn_layer_period": 1, "attn_layer_offset": 0,
                              "use_mamba_kernels": False}),
    "Granite-MoE": ("GraniteMoeConfig", {**_BASE, "num_local_experts": 4, "num_experts_per_tok": 2}),
}
MOE = ("Qwen3-MoE", "Mixtral", "DeepSeek-V3", "gpt-oss")


def make_family(folder: Path, family: str, seed: int = 0) -> Path:
    """A tiny random model of `family` with tokenizer and ChatML template, saved in `folder`."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(folder)
    add_chat_template(folder)
    cls_name, settings = FAMILIES[family] if family in FAMILIES else MOE_FAMILIES[family]
    ids = dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
               pad_token_id=tok.pad_token_id)
    config = getattr(transformers, cls_name)(**{**ids, **settings})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():               # random weights a little larger than init, so answers are not all ties
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.08)
    model.save_pretrained(folder)
    return folder


def lora_targets(folder: Path) -> list[str]:
    """The projection names a LoRA adapts in this model (attention and MLP, not experts or the router)."""
    config = json.loads((Path(folder) / "config.json").read_text())
    return {"gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
            "falcon": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
            "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
            "starcoder2": ["q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj"],
            "qwen3_moe": ["q_proj", "k_proj", "v_proj", "o_proj"],
            "mixtral": ["q_proj", "k_proj", "v_proj", "o_proj"],
            }.get(config["model_type"], ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


def lora_adapter(folder: Path, out: Path, r: int = 4, seed: int = 1) -> Path:
    """A PEFT LoRA adapter for the model in `folder` with random A and B (so it changes the answers)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=lora_targets(folder),
                                            lora_dropout=0.0))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_" in name:
                p.normal_(0.0, 0.1)
    peft.save_pretrained(out)
    return Path(out)
