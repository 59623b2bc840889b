"""Shared fixtures: tiny models and tokenizers built offline and saved with save_pretrained,
so every test loads them back through the real loading code."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("LORASTUDIO_NO_DEMO", "1")
# Tiny models on a 2-core machine: one thread each (the pytest process and every worker it starts);
# more only oversubscribe the cores — an 8-step run takes 0.6 s with one thread, 6 s with two.
os.environ.setdefault("OMP_NUM_THREADS", "1")     # windows start empty; see test_demo_first_start.py

from tests.helpers.tiny_models import add_chat_template, make_tiny_model, write_config, write_text_jsonl


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


@pytest.fixture
def make_config(tmp_path, tiny_llama, text_jsonl):
    def make(**overrides) -> Path:
        return write_config(tmp_path / "config.yaml", tiny_llama, text_jsonl, **overrides)
    return make


@pytest.fixture
def inline_jobs():
    """Jobs started through the launcher run in this process (the same code and files, without a
    fresh interpreter importing torch): for tests about results, not about processes."""
    from lorastudio.core.runtime.launcher import inline_jobs as inline
    with inline():
        yield


@pytest.fixture(autouse=True)
def journals_keep_to_the_schema(request):
    """Every journal a test leaves under its tmp_path holds only types and fields core.journal.SCHEMA
    lists (`validate(strict=True)`), whichever job wrote it, in this process or in another: a job
    that writes a field the schema does not know fails the test that ran it."""
    from tests.helpers.journals import schema_problems
    tmp = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if tmp is not None:
        problems = schema_problems(tmp)
        assert not problems, "journal fields missing from core.journal.SCHEMA:\n" + "\n".join(problems[:20])
