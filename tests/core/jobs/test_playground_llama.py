"""The Playground's llama.cpp engine (the generation worker, inline): its greedy answers equal the
transformers engine's on the runs' held-out prompts (f16 base and adapters), up to three adapters
answer beside the base in one request (both engines), `auto` falls back to transformers in words for
a model llama.cpp cannot be given, and a cancel stops llama.cpp between tokens."""
from __future__ import annotations

import json

import pytest

from tests.helpers.tiny_models import add_chat_template, make_tiny_model, train_tiny_run
from tests.helpers.training import jsonl

from lorastudio.core.plans.generate import (WorkerRequest, cancel_generation, close_generation_worker,
                                            new_worker_dir, request_generation, start_generate)
from lorastudio.core.runs.heldout import heldout_prompts
from lorastudio.core.runtime.follower import follow

QUESTIONS = ["the cat sat", "a small model learns", "every step writes a line", "the quick brown fox",
             "lora studio trains adapters", "numbers one two three", "what is the capital", "the door opened"]
ANSWERS = {"mat": "on the mat", "door": "looked at the door", "json": '{"answer": "yes"}'}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three runs on one tiny chat Llama, each answering every question its own way; 10% held out."""
    root = tmp_path_factory.mktemp("pg-llama")
    model = add_chat_template(make_tiny_model(root / "tiny-chat-llama"))
    out = {}
    for name, answer in ANSWERS.items():
        rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": answer}]}
                for q in QUESTIONS * 4]
        out[name] = train_tiny_run(root / "runs" / name, model, jsonl(root / f"{name}.jsonl", rows), name=name,
                                   quantization="none", training__lr=1e-2, training__max_steps=60,
                                   training__save_every=30, lora__targets=TARGETS)
    return out


def served(tmp_path, requests: list[dict], cancel: int | None = None) -> list[dict]:
    """An inline worker that answers `requests` (request_generation's keyword arguments) and closes."""
    job_dir = new_worker_dir(tmp_path / "playground")
    for i, request in enumerate(requests, 1):
        request_generation(job_dir, i, request.pop("run"), request.pop("messages"),
                           {"max_new_tokens": 12, **request.pop("settings", {})}, cache=tmp_path / "data", **request)
        if cancel == i:
            cancel_generation(job_dir, i)
    close_generation_worker(job_dir)
    events: list[dict] = []
    follow(start_generate(WorkerRequest(job_dir)), events.append)
    return events


def answers(events) -> dict:
    return {(e["request"], e["side"]): e["text"] for e in events if e["type"] == "answer"}


def tokens(events) -> dict:
    return {(e["request"], e["side"]): e["tokens"] for e in events if e["type"] == "answer"}


def whole_characters(text: str) -> str:
    """The random tiny base ends some answers in byte tokens that make no character: transformers
    shows them as U+FFFD, llama.cpp sends whole characters only and drops them (the token counts
    still agree)."""
    return text.rstrip("\ufffd")


@pytest.mark.slow
def test_llama_cpp_answers_equal_transformers_greedy_answers_on_heldout_prompts(runs, tmp_path, inline_jobs):
    prompts = heldout_prompts(runs["mat"])
    assert len(prompts) >= 3
    requests = [{"run": runs["mat"], "messages": p["messages"], "engine": engine}
                for p in prompts for engine in ("transformers", "llama.cpp")]
    events = served(tmp_path, requests)
    got, counts = answers(events), tokens(events)
    assert [e["status"] for e in events if e.get("name") == "answered"] == ["completed"] * len(requests)
    for n in range(len(prompts)):
        by_transformers, by_llama = 2 * n + 1, 2 * n + 2
        for side in ("base", "adapter"):
            assert counts[(by_llama, side)] == counts[(by_transformers, side)], (prompts[n]["label"], side)
            assert whole_characters(got[(by_llama, side)]) == whole_characters(got[(by_transformers, side)]), \
                (prompts[n]["label"], side)
        assert got[(by_llama, "adapter")] == got[(by_transformers, "adapter")] == ANSWERS["mat"]
    phases = [e for e in events if e["type"] == "phase"]
    assert [e["message"] for e in phases if e["name"] == "generating"][:2] == ["Generating", "Generating with llama.cpp"]
    writes = [e["name"] for e in phases if e["name"] in ("base", "adapter")]
    assert writes == ["base", "adapter"]            # written once, then reused by every llama.cpp request
    assert (tmp_path / "data" / "gguf-cache").is_dir() and list((runs["mat"] / "gguf-cache").glob("adapter-*.gguf"))


@pytest.mark.slow
def test_three_adapters_answer_beside_the_base_with_either_engine(runs, tmp_path, inline_jobs):
    chat = [{"role": "user", "content": "the cat sat"}]
    compare = [runs["door"], runs["json"]]
    events = served(tmp_path, [{"run": runs["mat"], "messages": list(chat), "engine": engine, "compare": compare}
                               for engine in ("llama.cpp", "transformers")])
    got = answers(events)
    for request in (1, 2):
        assert got[(request, "adapter")] == ANSWERS["mat"]
        assert got[(request, "adapter2")] == ANSWERS["door"]
        assert got[(request, "adapter3")] == ANSWERS["json"]
    assert whole_characters(got[(1, "base")]) == whole_characters(got[(2, "base")])
    sides = {e["side"] for e in events if e["type"] == "token" and e["request"] == 1}
    assert sides == {"base", "adapter", "adapter2", "adapter3"}      # each streamed (llama.cpp decodes
    # requests with different adapters one after another, not in one batch)
    generating = next(e for e in events if e.get("name") == "generating" and e["request"] == 1)
    assert generating["sides"] == ["base", "adapter", "adapter2", "adapter3"]


@pytest.mark.slow
def test_a_cancel_stops_llama_cpp_between_tokens(runs, tmp_path, inline_jobs):
    events = served(tmp_path, [{"run": runs["mat"], "messages": [{"role": "user", "content": "x"}],
                                "engine": "llama.cpp", "settings": {"max_new_tokens": 100000}}], cancel=1)
    assert [e["status"] for e in events if e.get("name") == "answered"] == ["stopped"]
    assert max(e["tokens"] for e in events if e["type"] == "answer") < 1000


def test_auto_falls_back_to_transformers_in_words_and_llama_cpp_refuses(tmp_path, tiny_gpt2, inline_jobs):
    data = jsonl(tmp_path / "d.jsonl", [{"text": "the cat sat on the mat"}] * 16)
    run = train_tiny_run(tmp_path / "runs" / "gpt2-run", tiny_gpt2, data, quantization="none",
                         lora__targets=["c_attn"], training__max_steps=2)
    chat = [{"role": "user", "content": "the cat"}]
    events = served(tmp_path, [{"run": run, "messages": list(chat), "engine": "auto"},
                               {"run": run, "messages": list(chat), "engine": "llama.cpp"}])
    answered = {e["request"]: e["status"] for e in events if e.get("name") == "answered"}
    assert answered == {1: "completed", 2: "failed"}
    note = next(e["message"] for e in events if e["type"] == "log" and e.get("request") is None
                and "llama.cpp cannot answer" in e["message"])
    assert "does not support 'gpt2' models" in note and "answering with transformers" in note
    error = next(e for e in events if e["type"] == "error")
    assert error["request"] == 2 and "does not support 'gpt2' models" in error["message"]
    assert json.dumps(error)    # a plain event, in words
