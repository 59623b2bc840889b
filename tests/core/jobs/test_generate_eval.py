"""The playground's generation worker and `lorastudio eval`, on a tiny chat model and a real run."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lorastudio.core import cli
from lorastudio.core.cli.evaluate import format_table
from lorastudio.core.engine.evaluate import score
from lorastudio.core.journal import read_events
from lorastudio.core.plans.generate import GenerateRequest, start_generate
from lorastudio.core.runs.heldout import adapter_choices, heldout_prompts, read_eval
from lorastudio.core.runtime.follower import JobWatch, follow

ANSWER = '{"answer": "yes", "confidence": 0.9}'


def chat_rows(n: int) -> list[dict]:
    questions = ["the cat sat on the mat", "a small model learns", "every step writes a line", "the quick brown fox"]
    return [{"messages": [{"role": "user", "content": questions[i % len(questions)]},
                          {"role": "assistant", "content": ANSWER}]} for i in range(n)]


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory, tiny_chat_llama):
    from tests.helpers.tiny_models import train_tiny_run
    root = tmp_path_factory.mktemp("chatrun")
    data, heldout = root / "train.jsonl", root / "heldout.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in chat_rows(32)))
    heldout.write_text("".join(json.dumps(r) + "\n" for r in chat_rows(4)))
    run = train_tiny_run(root / "run", tiny_chat_llama, data, quantization="none", training__max_steps=12,
                         lora__targets="all-linear", training__lr=2e-2, training__save_every=6, data__validation_path=str(heldout))
    return run, heldout


def generate(run: Path, messages: list[dict], settings: dict | None = None, checkpoint: int | None = None
             ) -> list[dict]:
    """The playground's generation job (inline with the `inline_jobs` fixture): its journal."""
    events: list[dict] = []
    follow(start_generate(GenerateRequest(run, messages, settings, checkpoint=checkpoint)), events.append)
    return events


def test_the_job_streams_tokens_for_base_and_adapter(chat_run, inline_jobs):
    run, _ = chat_run
    assert [c[1] for c in adapter_choices(run)] == [None, 12, 6]
    prompt = [{"role": "user", "content": "the cat sat on the mat"}]
    events = generate(run, prompt, {"max_new_tokens": 12, "temperature": 0.0})
    assert events[-1]["status"] == "completed", events
    tokens = [e for e in events if e["type"] == "token"]
    answers = {e["side"]: e for e in events if e["type"] == "answer"}
    assert set(answers) == {"base", "adapter"}
    for side in ("base", "adapter"):
        assert "".join(e["text"] for e in tokens if e["side"] == side) == answers[side]["text"]
    sides = [e["side"] for e in tokens]
    assert set(sides[:4]) == {"base", "adapter"}        # interleaved: both answers grow together
    assert answers["adapter"]["text"] != answers["base"]["text"]


def test_a_checkpoint_and_sampling_settings_are_honoured(chat_run, inline_jobs):
    run, _ = chat_run
    prompt = [{"role": "user", "content": "a small model learns"}]
    runs = []
    for _ in range(2):
        events = generate(run, prompt, {"max_new_tokens": 6, "temperature": 1.5, "top_p": 0.95, "seed": 3,
                                        "sides": ["base"]}, checkpoint=6)
        runs.append([e["text"] for e in events if e["type"] == "answer"])
        assert "checkpoints/step-000006" in next(e for e in events if e.get("name") == "generating")["adapter"]
    assert runs[0] == runs[1] and len(runs[0]) == 1          # same seed, same answer; base only


def test_a_run_without_an_adapter_fails_plainly(tmp_path, chat_run, inline_jobs):
    run, _ = chat_run
    empty = tmp_path / "empty-run"
    empty.mkdir()
    (empty / "config.yaml").write_text((run / "config.yaml").read_text())
    events = generate(empty, [{"role": "user", "content": "hi"}])
    error = next(e for e in events if e["type"] == "error")
    assert "no final adapter" in error["message"] and events[-1]["status"] == "failed"
    assert error["kind"] == "export" and "train (or resume) it first" in error["hint"]


@pytest.mark.slow
def test_a_stopped_generation_keeps_the_answers_so_far(chat_run):
    """SIGTERM to a real generation worker mid-answer: it ends "stopped" with the text so far."""
    run, _ = chat_run
    handle = start_generate(GenerateRequest(run, [{"role": "user", "content": "the cat sat on the mat"}],
                                            {"max_new_tokens": 2000, "temperature": 0.0}))   # the base never stops
    watch, events, deadline = JobWatch(handle), [], time.time() + 120
    while not any(e["type"] == "token" for e in events):
        assert time.time() < deadline and not watch.ended, events
        time.sleep(0.1)
        events += watch.poll()
    assert handle.stop()
    while not watch.ended:
        assert time.time() < deadline, events
        time.sleep(0.1)
        events += watch.poll()
    assert watch.outcome.status == "stopped" and handle.process.wait(timeout=30) == 0
    answers = {e["side"]: e for e in events if e["type"] == "answer"}
    assert set(answers) == {"base", "adapter"} and 0 < answers["base"]["tokens"] < 2000
    for side, answer in answers.items():
        assert "".join(e["text"] for e in events if e["type"] == "token" and e["side"] == side) == answer["text"]


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


def test_eval_reports_base_and_adapter_side_by_side(chat_run, capfd, inline_jobs):
    run, heldout = chat_run
    assert cli.main(["eval", str(run), "--data", str(heldout), "--limit", "2"]) == 0
    out, err = capfd.readouterr()
    header, loss_line = out.splitlines()[1:3]
    assert out.startswith(f"Evaluated on {heldout}: 4 examples for the loss, 2 prompts answered greedily")
    assert header.split() == ["base", "adapter"] and loss_line.startswith("held-out loss")
    assert "JSON format valid" in out and out.rstrip().endswith(f"Saved to {run / 'eval.json'}")
    assert "· Loading the base model and the adapter" in err and "· adapter: answering prompts 1-2 of 2" in err
    result = read_eval(run)
    assert result["base"]["prompts"] == 2 and result["adapter"]["loss"] < result["base"]["loss"]
    assert result["adapter"]["json_valid"] >= result["base"]["json_valid"]
    assert format_table(result).splitlines()[0].split() == ["base", "adapter"]
    job_dir = max((run / "evals").iterdir())               # the job's own folder, under the run
    events = read_events(job_dir / "events.jsonl")
    assert [e["result"] for e in events if e["type"] == "evaluation"] == [result]
    assert events[-1]["status"] == "completed" and events[-1]["output"] == str(run / "eval.json")
    fractions = [e["fraction"] for e in events if e["type"] == "phase"]
    assert fractions == sorted(fractions) and fractions[-1] < 1


def test_eval_json_prints_what_it_stores(chat_run, capfd, inline_jobs):
    run, heldout = chat_run
    assert cli.main(["eval", str(run), "--data", str(heldout), "--limit", "1", "--checkpoint", "6", "--json"]) == 0
    printed = json.loads(capfd.readouterr().out)
    assert printed == read_eval(run) and printed["checkpoint"] == 6 and printed["base"]["prompts"] == 1
    assert "checkpoints/step-000006" in printed["adapter_path"]


def test_eval_of_bad_data_is_a_located_message(chat_run, tmp_path, capfd, inline_jobs):
    run, _ = chat_run
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(chat_rows(1)[0]) + "\n{oops\n")
    before = read_eval(run)
    assert cli.main(["eval", str(run), "--data", str(bad)]) == 1
    error, hint = capfd.readouterr().err.splitlines()[-2:]
    assert error.startswith("error: ") and "bad.jsonl, line 2: not valid JSON" in error
    assert hint.startswith("  hint: ")
    assert read_eval(run) == before                          # nothing stored


def test_eval_of_a_missing_run_says_so(tmp_path, capfd):
    assert cli.main(["eval", str(tmp_path / "nope")]) == 2
    assert "not a run folder" in capfd.readouterr().err
    assert not (tmp_path / "nope").exists()                  # refused before a job folder was made
