"""The playground's generation worker and `lorastudio eval`, on a tiny chat model and a real run."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lorastudio.core import cli
from lorastudio.core.jobs.evaluate import format_table, score
from lorastudio.core.journal import JournalFollower
from lorastudio.core.runs.heldout import adapter_choices, heldout_prompts, read_eval, start_generation

ANSWER = '{"answer": "yes", "confidence": 0.9}'


def chat_rows(n: int) -> list[dict]:
    questions = ["the cat sat on the mat", "a small model learns", "every step writes a line", "the quick brown fox"]
    return [{"messages": [{"role": "user", "content": questions[i % len(questions)]},
                          {"role": "assistant", "content": ANSWER}]} for i in range(n)]


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory, tiny_chat_llama):
    from tiny_models import train_tiny_run
    root = tmp_path_factory.mktemp("chatrun")
    data, heldout = root / "train.jsonl", root / "heldout.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in chat_rows(32)))
    heldout.write_text("".join(json.dumps(r) + "\n" for r in chat_rows(4)))
    run = train_tiny_run(root / "run", tiny_chat_llama, data, quantization="none", training__max_steps=12,
                         lora__targets="all-linear", training__lr=2e-2, training__save_every=6, data__validation_path=str(heldout))
    return run, heldout


def follow(job_dir: Path, proc, timeout: float = 120) -> list[dict]:
    follower, events, deadline = JournalFollower(job_dir / "events.jsonl"), [], time.time() + timeout
    while time.time() < deadline:
        events += follower.poll()
        if events and events[-1]["type"] == "end":
            proc.wait()
            return events
        if proc.poll() is not None:
            events += follower.poll()
            break
        time.sleep(0.1)
    raise AssertionError(f"no end event: {events} / {(job_dir / 'worker.log').read_text()}")


@pytest.mark.slow
def test_the_worker_streams_tokens_for_base_and_adapter(chat_run):
    run, _ = chat_run
    assert [c[1] for c in adapter_choices(run)] == [None, 12, 6]
    prompt = [{"role": "user", "content": "the cat sat on the mat"}]
    job_dir, proc = start_generation(run, prompt, {"max_new_tokens": 12, "temperature": 0.0})
    events = follow(job_dir, proc)
    assert events[-1]["status"] == "completed", events
    tokens = [e for e in events if e["type"] == "token"]
    answers = {e["side"]: e for e in events if e["type"] == "answer"}
    assert set(answers) == {"base", "adapter"}
    for side in ("base", "adapter"):
        assert "".join(e["text"] for e in tokens if e["side"] == side) == answers[side]["text"]
    sides = [e["side"] for e in tokens]
    assert set(sides[:4]) == {"base", "adapter"}        # interleaved: both answers grow together
    assert answers["adapter"]["text"] != answers["base"]["text"]


@pytest.mark.slow
def test_a_checkpoint_and_sampling_settings_are_honoured(chat_run):
    run, _ = chat_run
    prompt = [{"role": "user", "content": "a small model learns"}]
    runs = []
    for _ in range(2):
        job_dir, proc = start_generation(run, prompt, {"max_new_tokens": 6, "temperature": 1.5, "top_p": 0.95,
                                                       "seed": 3, "sides": ["base"]}, checkpoint=6)
        events = follow(job_dir, proc)
        runs.append([e["text"] for e in events if e["type"] == "answer"])
        assert "checkpoints/step-000006" in next(e for e in events if e.get("name") == "generating")["adapter"]
    assert runs[0] == runs[1] and len(runs[0]) == 1          # same seed, same answer; base only


@pytest.mark.slow
def test_a_run_without_an_adapter_fails_plainly(tmp_path, chat_run):
    run, _ = chat_run
    empty = tmp_path / "empty-run"
    empty.mkdir()
    (empty / "config.yaml").write_text((run / "config.yaml").read_text())
    job_dir, proc = start_generation(empty, [{"role": "user", "content": "hi"}])
    events = follow(job_dir, proc)
    error = next(e for e in events if e["type"] == "error")
    assert "no final adapter" in error["message"] and events[-1]["status"] == "failed"


def test_heldout_prompts_come_from_the_run_validation_file(chat_run):
    run, _ = chat_run
    prompts = heldout_prompts(run)
    assert len(prompts) == 4 and prompts[0]["reference"] == ANSWER
    assert prompts[0]["messages"] == [{"role": "user", "content": "the cat sat on the mat"}]


def test_heldout_prompts_fall_back_to_the_sample_set():
    prompts = heldout_prompts(None)
    assert len(prompts) == 24 and json.loads(prompts[0]["reference"])["product"]
    assert prompts[0]["messages"][0]["role"] == "system"


def test_score_json_and_text_tasks():
    refs = ['{"a": 1, "b": "x"}', '{"a": 2, "b": "y"}']
    assert score(['{"b": "x", "a": 1}', '{"a": 3, "b": "y"}'], refs) == \
        {"exact_match": 0.5, "json_valid": 1.0, "prompts": 2}
    assert score(["Sure! Here it is", '{"a": 2}'], refs)["json_valid"] == 0.0
    assert score(["Paris ", "no"], ["Paris", "yes"]) == {"exact_match": 0.5, "prompts": 2}


@pytest.mark.slow
def test_eval_reports_base_and_adapter_side_by_side(chat_run, capfd):
    run, heldout = chat_run
    assert cli.main(["eval", str(run), "--data", str(heldout), "--limit", "2"]) == 0
    out = capfd.readouterr().out
    header, loss_line = out.splitlines()[1:3]
    assert header.split() == ["base", "adapter"] and loss_line.startswith("held-out loss")
    assert "JSON format valid" in out
    result = read_eval(run)
    assert result["base"]["prompts"] == 2 and result["adapter"]["loss"] < result["base"]["loss"]
    assert result["adapter"]["json_valid"] >= result["base"]["json_valid"]
    assert format_table(result).splitlines()[0].split() == ["base", "adapter"]


@pytest.mark.slow
def test_eval_of_a_missing_run_says_so(tmp_path, capfd):
    assert cli.main(["eval", str(tmp_path / "nope")]) == 2
    assert "not a run folder" in capfd.readouterr().err
