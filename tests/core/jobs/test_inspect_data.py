"""The inspector reports what the trainer trains on, and every format trains through the CLI.

`lorastudio inspect` runs its job inline (the `inline_jobs` fixture): the same job, journal and
printing, without a fresh interpreter importing transformers; one test checks the real process."""
import dataclasses
import json
import subprocess
import sys
import time

import pytest

from lorastudio.core.config import DataSection
from lorastudio.core.engine.batches import prepare_data
from lorastudio.core.journal import read_events
from lorastudio.core.engine.model_loading import load_tokenizer

from tests.helpers.training import CHAT, jsonl

FORMAT_ROWS = {
    "text": {"text": "the cat sat on the mat and looked at the door"},
    "prompt_completion": {"prompt": "the cat sat", "completion": "on the mat"},
    "alpaca": {"instruction": "continue", "input": "the cat sat", "output": "on the mat"},
    "messages": CHAT,
    "sharegpt": {"conversations": [{"from": "human", "value": "the cat"}, {"from": "gpt", "value": "sat on the mat"}]},
}


def cli(*args, env=None):
    """The command line in a real process (the terminal's view, and training)."""
    return subprocess.run([sys.executable, "-m", "lorastudio.app.launcher", *args], capture_output=True,
                          text=True, timeout=300, env=env)


@pytest.fixture
def inspect(capfd, inline_jobs, runs_home):
    """`lorastudio inspect ARGS` in this process (the job runs inline): (exit status, stdout, stderr).
    Afterwards no job folder is left in DATA_HOME/inspections."""
    from lorastudio.core import cli as commands

    def run(*args):
        code = commands.main(["inspect", *map(str, args)])
        out, err = capfd.readouterr()
        assert not (runs_home / "inspections").exists() or list((runs_home / "inspections").iterdir()) == []
        return code, out, err
    return run


def test_inspector_json_matches_the_trainers_tokens(tmp_path, tiny_chat_llama, inspect):
    rows = [CHAT, {"messages": [{"role": "user", "content": "a small model"},
                                {"role": "assistant", "content": "learns a simple pattern quickly"}]}]
    path = jsonl(tmp_path / "c.jsonl", rows)
    code, out, err = inspect(path, "--model", tiny_chat_llama, "--example", "2", "--json", "--seq-len", "256")
    assert code == 0, err
    report = json.loads(out)
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


def test_inspector_text_marks_trained_tokens(tmp_path, tiny_chat_llama, inspect):
    path = jsonl(tmp_path / "c.jsonl", [CHAT])
    code, out, err = inspect(path, "--model", tiny_chat_llama)
    assert code == 0, err
    assert out.startswith(f"File:      {path}\nFormat:    chat messages")
    assert "⟦on the mat<|im_end|>\n⟧" in out
    assert "Lengths:   min" in out and "Example 1 (line 1, ok):" in out


def test_the_report_is_the_jobs_journal_event(tmp_path, tiny_chat_llama, inline_jobs):
    from lorastudio.core.engine.inspect_data import inspect_data
    from lorastudio.core.runtime.launcher import launch
    path = jsonl(tmp_path / "c.jsonl", [CHAT] * 3)
    data = DataSection(path=str(path), train_on="all")
    spec = {"model": str(tiny_chat_llama), "seq_len": 64, "example": 3, "data": dataclasses.asdict(data)}
    handle = launch("inspect_data", tmp_path / "job", spec)
    events = read_events(handle.journal)
    assert [e["type"] for e in events] == ["phase", "phase", "phase", "report", "end"]
    assert [e["name"] for e in events[:3]] == ["tokenizer", "reading", "encoding"]
    assert events[-1]["status"] == "completed" and handle.returncode() == 0
    assert events[3]["report"] == inspect_data(data, str(tiny_chat_llama), 64, 3)
    assert events[3]["report"]["example"]["index"] == 3 and events[3]["report"]["seq_len"] == 64


def test_inspector_bad_input_is_a_located_message(tmp_path, tiny_llama, inspect):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok"}\n{oops\n')
    code, _out, err = inspect(path, "--model", tiny_llama)
    error, hint = err.splitlines()[-2:]                  # the CLI's last words; the job's traceback is in its log
    assert code == 2 and error.startswith("error: ") and "d.jsonl, line 2: not valid JSON" in error
    assert hint.startswith("  hint: ") and "on_bad_rows" in hint
    code, out, _err = inspect(path, "--model", tiny_llama, "--json")
    assert code == 2 and json.loads(out)["error"].endswith(error.split("d.jsonl", 1)[1])
    assert "on_bad_rows" in json.loads(out)["hint"]
    code, out, _err = inspect(path, "--model", tiny_llama, "--skip-bad-rows")
    assert code == 0 and "Bad rows skipped: 1: line 2" in out


def test_refused_options_and_models_are_said_plainly(tmp_path, tiny_llama, inspect):
    path = jsonl(tmp_path / "d.jsonl", [{"text": "a cat"}])
    code, _out, err = inspect(path, "--model", tiny_llama, "--seq-len", "4")
    assert code == 2 and err == "error: --seq-len: 4 is not allowed; a whole number ≥ 8\n"
    code, out, _err = inspect(path, "--model", tiny_llama, "--columns", "answer=reply", "--json")
    assert code == 2 and json.loads(out)["error"].startswith("data.columns: {'answer': 'reply'} is not allowed")
    code, _out, err = inspect(path, "--model", tmp_path / "no-model")
    assert code == 2 and "error: " in err and "hint: " in err
    code, _out, err = inspect(path, "--model", tiny_llama, "--example", "5")
    assert code == 2 and err.splitlines()[-2:] == ["error: --example 5 is out of range", "  hint: choose 1 to 1"]


def test_an_inspector_failure_shows_its_traceback_and_exit_status_1(tmp_path, tiny_llama, inspect, monkeypatch):
    from lorastudio.core.engine import inspect_data as inspection

    def broken(*_args, **_kw):
        raise RuntimeError("boom")
    monkeypatch.setattr(inspection, "inspect_data", broken)
    path = jsonl(tmp_path / "d.jsonl", [{"text": "a cat"}])
    code, out, err = inspect(path, "--model", tiny_llama)
    assert code == 1 and out == "" and "Traceback" in err and err.endswith("error: RuntimeError: boom\n")
    code, out, _err = inspect(path, "--model", tiny_llama, "--json")
    assert code == 1 and json.loads(out) == {"error": "RuntimeError: boom", "hint": ""}


@pytest.mark.slow
def test_in_a_real_process_the_terminal_sees_no_traceback(tmp_path, tiny_llama):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok"}\n{oops\n')
    result = cli("inspect", str(path), "--model", str(tiny_llama))
    assert result.returncode == 2 and "d.jsonl, line 2: not valid JSON" in result.stderr
    assert "hint:" in result.stderr and "Traceback" not in result.stderr and result.stdout == ""


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


# ---- progress on a long inspection (issue 27, class 8) -------------------------------------------
def big_file(path, rows: int = 40_000):
    """A generated text file large enough to take several chunks of the token cache's build."""
    path.write_text("".join(json.dumps({"text": f"the cat {i} sat on the mat number {i * 7}"}) + "\n"
                            for i in range(rows)), encoding="utf-8")
    return path


def test_a_large_file_yields_progress_events_while_reading_and_tokenizing(tmp_path, tiny_llama, inline_jobs,
                                                                         monkeypatch):
    from lorastudio.core.data import sources
    from lorastudio.core.engine import inspect_data as engine
    from lorastudio.core.runtime.launcher import launch
    monkeypatch.setattr(sources, "PROGRESS_EVERY_S", 0.0)       # every chunk, so a few MB say something
    monkeypatch.setattr(sources, "HASH_CHUNK", 1 << 16)
    monkeypatch.setattr(engine, "PROGRESS_EVERY_S", 0.0)
    monkeypatch.setenv("LORASTUDIO_CACHE", str(tmp_path / "cache"))
    data = DataSection(path=str(big_file(tmp_path / "big.jsonl")))
    spec = {"model": str(tiny_llama), "seq_len": 64, "example": 1, "data": dataclasses.asdict(data)}
    handle = launch("inspect_data", tmp_path / "job", spec)
    events = read_events(handle.journal)
    assert events[-1]["status"] == "completed"
    phases = [e for e in events if e["type"] == "phase"]
    reading = [e for e in phases if e["name"] == "reading" and "big.jsonl: " in e["message"] and e["message"].startswith("Reading ")]
    encoding = [e for e in phases if e["name"] == "encoding" and e["message"].startswith("Tokenizing: ")]
    assert reading and all(0.3 < e["fraction"] <= 0.5 and "MiB" in e["message"] for e in reading), phases
    assert len(encoding) >= 5, phases                           # 40,000 rows: ~19 chunks of 2,048
    fractions = [e["fraction"] for e in encoding]
    assert fractions == sorted(fractions) and 0.5 < fractions[0] and fractions[-1] < 0.95
    assert [e["fraction"] for e in phases] == sorted(e["fraction"] for e in phases)   # never goes back


def test_progress_comes_at_most_once_a_second(tmp_path, tiny_llama, monkeypatch):
    from lorastudio.core.data import sources
    from lorastudio.core.engine.inspect_data import inspect_data
    monkeypatch.setattr(sources, "PROGRESS_EVERY_S", 0.0)       # the cache says every chunk; the job thins it
    monkeypatch.setenv("LORASTUDIO_CACHE", str(tmp_path / "cache"))     # built here, never a cache hit
    said = []
    inspect_data(DataSection(path=str(big_file(tmp_path / "big.jsonl"))), str(tiny_llama), 48,
                 progress=lambda name, fraction, message: said.append((time.monotonic(), name, fraction)))
    timed = [t for t, name, fraction in said if fraction not in (0.1, 0.3, 0.5)]   # beyond the three fixed ones
    assert all(b - a >= 1.0 for a, b in zip(timed, timed[1:])), said


def test_the_cli_shows_a_long_inspections_progress_on_stderr(tmp_path, tiny_llama, inspect, monkeypatch):
    from lorastudio.core.cli import inspect_data as command
    from lorastudio.core.data import sources
    from lorastudio.core.engine import inspect_data as engine
    monkeypatch.setattr(sources, "PROGRESS_EVERY_S", 0.0)
    monkeypatch.setattr(engine, "PROGRESS_EVERY_S", 0.0)
    monkeypatch.setattr(command, "SHOW_PROGRESS_AFTER_S", 0.0)   # as if the file took minutes
    monkeypatch.setenv("LORASTUDIO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "HASH_CHUNK", 1 << 16)
    code, out, err = inspect(big_file(tmp_path / "big.jsonl"), "--model", tiny_llama, "--json")
    assert code == 0, err
    assert json.loads(out)["examples"] == 40_000                  # stdout stays the report alone
    lines = err.splitlines()
    assert any(line.startswith("Inspecting: ") and "Tokenizing: " in line for line in lines), err
    assert any(line.startswith("Inspecting: ") and "Reading " in line and "big.jsonl: " in line for line in lines), err


def test_a_short_inspection_stays_quiet(tmp_path, tiny_llama, inspect):
    code, out, err = inspect(jsonl(tmp_path / "d.jsonl", [{"text": "the cat sat"}] * 3), "--model", tiny_llama)
    assert code == 0 and "Inspecting:" not in err, err
