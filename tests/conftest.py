"""Shared fixtures: tiny models and tokenizers built offline and saved with save_pretrained,
so every test loads them back through the real loading code."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import add_chat_template, make_tiny_model, write_text_jsonl  # noqa: E402


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama", "llama")


@pytest.fixture(scope="session")
def tiny_chat_llama(tmp_path_factory) -> Path:
    """The tiny Llama with a ChatML chat template."""
    folder = make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-chat-llama", "llama")
    return add_chat_template(folder)


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-gpt2", "gpt2")


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2", "qwen2")


@pytest.fixture
def text_jsonl(tmp_path) -> Path:
    return write_text_jsonl(tmp_path / "train.jsonl", 48)


@pytest.fixture
def runs_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LORASTUDIO_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def write_config(path: Path, model: Path, data: Path, **overrides) -> Path:
    """A small, fast run config; `overrides` are dotted keys like training__max_steps=5."""
    import yaml
    cfg = {"model": str(model), "quantization": "none", "device": "cpu",
           "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "targets": ["q_proj", "v_proj"]},
           "data": {"path": str(data), "format": "auto", "validation_split": 0.1},
           "training": {"max_steps": 10, "lr": 5e-3, "batch_size": 4, "grad_accum": 1, "seq_len": 64,
                        "seed": 0, "save_every": 5, "warmup_steps": 1, "gradient_checkpointing": True}}
    for key, value in overrides.items():
        node = cfg
        parts = key.split("__")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def make_config(tmp_path, tiny_llama, text_jsonl):
    def make(**overrides) -> Path:
        return write_config(tmp_path / "config.yaml", tiny_llama, text_jsonl, **overrides)
    return make
