"""The inspector reports what the trainer trains on, and every format trains through the CLI."""
import json
import os
import subprocess
import sys

import pytest

from lorastudio.core.config import DataSection
from lorastudio.core.engine.batches import prepare_data
from lorastudio.core.journal import read_events
from lorastudio.core.engine.model_loading import load_tokenizer

from test_data import CHAT, jsonl

FORMAT_ROWS = {
    "text": {"text": "the cat sat on the mat and looked at the door"},
    "prompt_completion": {"prompt": "the cat sat", "completion": "on the mat"},
    "alpaca": {"instruction": "continue", "input": "the cat sat", "output": "on the mat"},
    "messages": CHAT,
    "sharegpt": {"conversations": [{"from": "human", "value": "the cat"}, {"from": "gpt", "value": "sat on the mat"}]},
}


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "lorastudio.app.launcher", *args], capture_output=True,
                          text=True, timeout=300, env=env)


def test_inspector_json_matches_the_trainers_tokens(tmp_path, tiny_chat_llama):
    rows = [CHAT, {"messages": [{"role": "user", "content": "a small model"},
                                {"role": "assistant", "content": "learns a simple pattern quickly"}]}]
    path = jsonl(tmp_path / "c.jsonl", rows)
    result = cli("inspect", str(path), "--model", str(tiny_chat_llama), "--example", "2", "--json", "--seq-len", "256")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["format"] == "messages" and report["chat_template"] == "model"
    assert report["examples"] == 2 and report["usable_examples"] == 2
    trainer_data = prepare_data(DataSection(path=str(path), validation_split=0.0),
                                load_tokenizer(tiny_chat_llama, False), 256, 1, 0)
    item = trainer_data.train_set.items[1]
    assert [t["id"] for t in report["example"]["tokens"]] == item.input_ids
    assert [t["trained"] for t in report["example"]["tokens"]] == [l != -100 for l in item.labels]
    assert report["tokens"] == trainer_data.train_set.tokens
    assert report["trained_tokens"] == trainer_data.train_set.trained_tokens
    assert sum(report["histogram"]["counts"]) == 2


def test_inspector_text_marks_trained_tokens(tmp_path, tiny_chat_llama):
    path = jsonl(tmp_path / "c.jsonl", [CHAT])
    result = cli("inspect", str(path), "--model", str(tiny_chat_llama))
    assert result.returncode == 0, result.stderr
    assert "Format:    chat messages" in result.stdout
    assert "⟦on the mat<|im_end|>\n⟧" in result.stdout
    assert "Lengths:   min" in result.stdout


def test_inspector_bad_input_is_a_located_message(tmp_path, tiny_llama):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok"}\n{oops\n')
    result = cli("inspect", str(path), "--model", str(tiny_llama))
    assert result.returncode == 2 and "d.jsonl, line 2: not valid JSON" in result.stderr
    assert "hint:" in result.stderr and "Traceback" not in result.stderr
    skipped = cli("inspect", str(path), "--model", str(tiny_llama), "--skip-bad-rows")
    assert skipped.returncode == 0 and "Bad rows skipped: 1: line 2" in skipped.stdout


@pytest.mark.slow
@pytest.mark.parametrize("fmt", sorted(FORMAT_ROWS))
def test_every_format_trains_through_the_cli(tmp_path, tiny_chat_llama, fmt):
    data = jsonl(tmp_path / "d.jsonl", [FORMAT_ROWS[fmt]] * 12)
    config = tmp_path / "c.yaml"
    config.write_text(f"model: {tiny_chat_llama}\nquantization: none\ndevice: cpu\n"
                      f"data: {{path: {data}, validation_split: 0.2}}\n"
                      "training: {max_steps: 3, seq_len: 128, batch_size: 2, lr: 1.0e-2, save_every: 0}\n")
    result = cli("train", str(config), "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stdout + result.stderr
    events = read_events(tmp_path / "run" / "events.jsonl")
    data_event = next(e for e in events if e["type"] == "data")
    assert data_event["format"] == fmt and data_event["examples"] == 10
    if fmt != "text":
        assert 0 < data_event["trained_tokens"] < data_event["tokens"]       # masked
    else:
        assert data_event["trained_tokens"] == data_event["tokens"] - data_event["examples"]
    assert events[-1]["status"] == "completed"
