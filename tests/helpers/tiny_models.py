"""Build tiny Llama / Qwen2 / GPT-2 shaped models and a byte-level BPE tokenizer, offline.

Hidden size 64, 2 layers: a few hundred KB on disk, a training step in milliseconds on a CPU.
"""
from __future__ import annotations

import json
from pathlib import Path

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "LoRA adds a low-rank update B times A to a frozen weight W.",
    "Quantized base weights let a large model fit on a small GPU.",
    "User: what is the capital of France? Assistant: Paris.",
    "Fine-tuning teaches a model a new style with few examples.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000.",
    "{\"answer\": \"yes\", \"confidence\": 0.9}",
]
SENTENCES = [
    "the cat sat on the mat and looked at the door",
    "a small model learns a simple pattern quickly",
    "lora studio trains adapters on quantized weights",
    "every step writes a line to the journal",
]


def make_tokenizer(folder: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS + SENTENCES, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", model_max_length=256,
                                   additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    fast.save_pretrained(folder)
    return fast


def make_tiny_model(folder: Path, kind: str = "llama", seed: int = 0) -> Path:
    import torch
    from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM,
                              Qwen2Config, Qwen2ForCausalLM)

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(folder)
    torch.manual_seed(seed)
    common = dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                  pad_token_id=tok.pad_token_id)
    if kind == "llama":
        cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False, **common)
        model = LlamaForCausalLM(cfg)
    elif kind == "qwen2":
        cfg = Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True, **common)
        model = Qwen2ForCausalLM(cfg)
    elif kind == "gpt2":
        cfg = GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=256, **common)
        model = GPT2LMHeadModel(cfg)
    else:
        raise ValueError(kind)
    model.save_pretrained(folder)
    return folder


def write_text_jsonl(path: Path, n: int = 48) -> Path:
    """A repetitive raw-text dataset: a tiny model's loss falls fast on it."""
    lines = [json.dumps({"text": SENTENCES[i % len(SENTENCES)]}) for i in range(n)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def add_chat_template(folder: Path) -> Path:
    """Give a saved tiny model a ChatML chat template (as transformers 5 stores it)."""
    (Path(folder) / "chat_template.jinja").write_text(CHATML, encoding="utf-8")
    return folder


def write_config(path: Path, model: Path, data: Path, **overrides) -> Path:
    """A small, fast run config; `overrides` are dotted keys like training__max_steps=5."""
    import yaml

    cfg = {"model": str(model), "quantization": "none", "device": "cpu",
           "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "targets": ["q_proj", "v_proj"]},
           "data": {"path": str(data), "format": "auto", "validation_split": 0.1},
           "training": {"max_steps": 10, "lr": 5e-3, "batch_size": 4, "grad_accum": 1, "seq_len": 64,
                        "seed": 0, "save_every": 5, "warmup_steps": 1}}
    for key, value in overrides.items():
        node = cfg
        parts = key.split("__")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    path.write_text(yaml.safe_dump(cfg))
    return path



def train_tiny_run(run_dir: Path, model: Path, data: Path, **overrides) -> Path:
    """A real run folder (config, journal, checkpoints, adapter) trained in-process in seconds."""
    from lorastudio.core.preflight import check_config
    from lorastudio.core.config import RunConfig
    from lorastudio.core.journal import JournalWriter
    from lorastudio.core.runs.folders import prepare_run
    from lorastudio.core.engine.trainer import Trainer

    Path(run_dir).parent.mkdir(parents=True, exist_ok=True)
    settings = {"quantization": "4bit", "training__max_steps": 4, "training__save_every": 2, **overrides}
    config_path = write_config(Path(run_dir).parent / f"{Path(run_dir).name}.yaml", model, data, **settings)
    config = RunConfig.load(config_path)
    info, _ = check_config(config)
    prepare_run(config, run_dir)
    journal = JournalWriter(Path(run_dir) / "events.jsonl")
    trainer = Trainer(config, info, Path(run_dir), journal)
    trainer.setup()
    trainer.start_event()
    status = trainer.train()
    journal.emit("end", status=status, adapter=str(trainer.adapter_path))
    journal.close()
    return Path(run_dir)
