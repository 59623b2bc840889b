"""The generation worker that stays (the generate job serving its inbox) and the end of an answer
(end of turn; a complete JSON object on a JSON task)."""
from __future__ import annotations

import json
import time

import pytest

from lorastudio.core.engine.inference import json_answer_settled, json_object_end
from lorastudio.core.journal import read_events
from lorastudio.core.plans.generate import (WorkerRequest, cancel_generation, close_generation_worker,
                                            new_worker_dir, request_generation, start_generate)
from lorastudio.core.runtime.follower import JobWatch, follow
from lorastudio.core.runtime.inbox import INBOX_FILE, Inbox, send

ANSWER = '{"answer": "yes", "confidence": 0.9}'
CAT = [{"role": "user", "content": "the cat sat on the mat"}]


@pytest.fixture(scope="module")
def json_run(tmp_path_factory, tiny_chat_llama):
    from tests.helpers.tiny_models import train_tiny_run
    root = tmp_path_factory.mktemp("worker")
    questions = ["the cat sat on the mat", "a small model learns", "every step writes a line", "the quick brown fox"]
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": questions[i % 4]},
                                                     {"role": "assistant", "content": ANSWER}]}) + "\n"
                            for i in range(32)))
    return train_tiny_run(root / "run", tiny_chat_llama, data, quantization="none", training__max_steps=12,
                          lora__targets="all-linear", training__lr=2e-2, training__save_every=6)


@pytest.mark.parametrize("text, end", [
    ('{"a": 1} and more', 8),
    ('Sure! ```json\n{"a": {"b": [1, 2]}}\n```', 34),
    ('{"a": "a } inside", "b": "\\" {"}  tail', 32),         # braces and escaped quotes in strings
    ('{"a": 1', None), ('no object at all', None), ('Here: {"a": 2} ok', 14), ('}{}', 3),
])
def test_the_end_of_a_json_object_is_found_outside_strings(text, end):
    assert json_object_end(text) == end
    if end:
        assert isinstance(json.loads(text[text.index("{"):end]), dict)


@pytest.mark.parametrize("text, settled", [
    ('{"a": 1}', True), ('  {"a": ', False), ('`', False), ('``', False), ('```json\n{"a"', False),
    ('```json\n{"a": 1}', True), ('', False), ('\n', False), ('Sure', True), ('`x', True), ('[1, 2]', True),
])
def test_a_json_answer_is_settled_once_its_score_cannot_change(text, settled):
    """Complete, or begun in a way parse_json_object can never accept: more tokens change nothing."""
    from lorastudio.core.engine.evaluate import parse_json_object
    assert json_answer_settled(text) == settled
    if settled and json_object_end(text) is None:
        assert parse_json_object(text + ' {"a": 1}') is None and parse_json_object(text + "}") is None


def test_an_inbox_hands_over_complete_lines_once(tmp_path):
    inbox = Inbox(tmp_path)
    assert inbox.poll() == []                                # no file yet
    send(tmp_path, {"type": "generate", "id": 1})
    with open(tmp_path / INBOX_FILE, "a", encoding="utf-8") as fh:
        fh.write('not json\n{"type": "cancel", "id": 1}\n{"type": "clo')       # a line still being written
    assert inbox.poll() == [{"type": "generate", "id": 1}, {"type": "cancel", "id": 1}]
    with open(tmp_path / INBOX_FILE, "a", encoding="utf-8") as fh:
        fh.write('se"}\n')
    assert inbox.poll() == [{"type": "close"}] and inbox.poll() == []


def test_json_answers_stop_at_the_end_of_the_object(json_run):
    import torch
    from lorastudio.core.engine.inference import (JsonObjectDone, encode_prompt, greedy_batch, load_pair,
                                                  stop_ids)
    pair = load_pair(json_run)
    tok = pair.tokenizer
    assert tok.convert_tokens_to_ids("<|im_end|>") in stop_ids(tok, pair.model)     # the template's end of turn
    # the criterion, row by row, as generate() calls it after each new token
    rows = [tok('{"a": "}", "b": 1} and then more', add_special_tokens=False)["input_ids"],
            tok('Sure, here is a long answer with no object', add_special_tokens=False)["input_ids"]]
    width, prompt = 3, [7, 8, 9]
    done = JsonObjectDone(tok, width)
    closes = next(i for i in range(1, len(rows[0]) + 1) if json_object_end(tok.decode(rows[0][:i])))
    for n in range(1, min(len(r) for r in rows) + 1):
        ids = torch.tensor([prompt + row[:n] for row in rows])
        assert done(ids, None).tolist() == [n >= closes, True]      # prose: settled at its first token
    # in generation: each answer is the free answer cut after its object
    prompts = [encode_prompt(tok, [{"role": "user", "content": q}])
               for q in ("the cat sat on the mat", "a small model learns", "hello there")]
    free = greedy_batch(pair, prompts, "adapter", 40)
    cut = greedy_batch(pair, prompts, "adapter", 40, json_answers=True)
    for whole, short in zip(free, cut):
        end = json_object_end(whole)
        assert whole.startswith(short) and (short == whole[:end].strip() if end else json_answer_settled(short)
                                            or short == whole)


def served(json_run, tmp_path, messages: list[dict]) -> list[dict]:
    """A worker (inline) that finds `messages` in its inbox, then `close`: its journal."""
    job_dir = new_worker_dir(tmp_path / "playground")
    for message in messages:
        send(job_dir, message)
    close_generation_worker(job_dir)
    events: list[dict] = []
    follow(start_generate(WorkerRequest(job_dir)), events.append)
    return events


def ask(request_id, run, **settings):
    return {"type": "generate", "id": request_id, "run": str(run), "checkpoint": settings.pop("checkpoint", None),
            "messages": CAT, "max_new_tokens": 8, "temperature": 0.0, **settings}


def test_a_worker_loads_once_and_answers_each_request(json_run, tmp_path, inline_jobs):
    events = served(json_run, tmp_path, [ask(1, json_run), ask(2, json_run, checkpoint=99), ask(3, json_run),
                                         ask(4, json_run, checkpoint=6)])
    assert events[-1]["status"] == "completed"
    answered = {e["request"]: e["status"] for e in events if e.get("name") == "answered"}
    assert answered == {1: "completed", 2: "failed", 3: "completed", 4: "completed"}
    loads = [e["request"] for e in events if e.get("name") == "loading"]
    assert loads == [1, 4]       # request 2 names no adapter (refused before a load), 3 reuses 1's model
    error = next(e for e in events if e["type"] == "error")
    assert error["request"] == 2 and "has no checkpoint at step 99" in error["message"]
    answers = {(e["request"], e["side"]): e["text"] for e in events if e["type"] == "answer"}
    assert answers[(1, "adapter")] == answers[(3, "adapter")] and answers[(1, "base")] == answers[(3, "base")]
    for (request, side), text in answers.items():
        assert "".join(e["text"] for e in events if e["type"] == "token" and e["request"] == request
                       and e["side"] == side) == text
    assert "checkpoints/step-000006" in next(e for e in events if e.get("name") == "generating"
                                             and e["request"] == 4)["adapter"]


def test_an_idle_worker_ends_by_itself(json_run, tmp_path, inline_jobs):
    job_dir = new_worker_dir(tmp_path)
    request_generation(job_dir, 1, json_run, CAT, {"max_new_tokens": 4})
    started = time.monotonic()
    outcome = follow(start_generate(WorkerRequest(job_dir, idle_s=0.3)))
    assert outcome.status == "completed" and time.monotonic() - started < 60
    events = read_events(job_dir / "events.jsonl")
    assert [e["status"] for e in events if e.get("name") == "answered"] == ["completed"]
    assert any("ends" in e.get("message", "") for e in events if e["type"] == "log")


@pytest.mark.slow
def test_a_real_worker_answers_a_second_prompt_without_loading(json_run, tmp_path):
    """A real process: the second request is answered without a model load, a cancel stops an
    answer between tokens and the worker goes on, SIGTERM ends it."""
    job_dir = new_worker_dir(tmp_path)
    request_generation(job_dir, 1, json_run, CAT, {"max_new_tokens": 8})
    handle = start_generate(WorkerRequest(job_dir))
    watch, events = JobWatch(handle), []

    def until(check, limit=120):
        deadline = time.time() + limit
        while not check():
            assert time.time() < deadline and not watch.ended, events
            time.sleep(0.05)
            events.extend(watch.poll())

    def answered(request_id):
        return any(e.get("name") == "answered" and e.get("request") == request_id for e in events)

    until(lambda: answered(1))
    asked = time.time()
    request_generation(job_dir, 2, json_run, CAT, {"max_new_tokens": 8})
    until(lambda: answered(2), 60)
    second_s = time.time() - asked
    assert [e["request"] for e in events if e.get("name") == "loading"] == [1]
    assert second_s < 10, second_s                # the model was already loaded (a load costs seconds)

    request_generation(job_dir, 3, json_run, CAT, {"max_new_tokens": 100000, "sides": ["base"]})
    until(lambda: any(e["type"] == "token" and e.get("request") == 3 for e in events), 60)
    cancel_generation(job_dir, 3)
    until(lambda: answered(3), 60)
    assert next(e for e in events if e.get("name") == "answered" and e["request"] == 3)["status"] == "stopped"
    assert handle.returncode() is None                        # the worker itself goes on

    assert handle.stop()
    deadline = time.time() + 30
    while not watch.ended:
        assert time.time() < deadline, events
        time.sleep(0.05)
        events.extend(watch.poll())
    assert watch.outcome.status == "stopped" and handle.process.wait(timeout=30) == 0
