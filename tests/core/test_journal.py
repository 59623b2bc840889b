"""The journal: writers refuse bad events; readers drop bad lines and wait for half-written ones."""
import json

import pytest

from lorastudio.core.journal import JournalFollower, JournalWriter, read_events, validate


def step_fields(step=1):
    return dict(step=step, total_steps=10, epoch=0.1, loss=2.5, lr=1e-4, grad_norm=0.3,
                tokens_per_s=1000.0, elapsed_s=1.0, eta_s=9.0)


def test_round_trip(tmp_path):
    w = JournalWriter(tmp_path / "events.jsonl")
    w.emit("phase", name="loading")
    w.emit("step", **step_fields())
    w.emit("end", status="completed", adapter="/x/adapter")
    w.close()
    events = read_events(tmp_path / "events.jsonl")
    assert [e["type"] for e in events] == ["phase", "step", "end"]
    assert all(e["v"] == 1 and isinstance(e["time"], float) for e in events)


def test_writer_refuses_a_bad_event(tmp_path):
    w = JournalWriter(tmp_path / "events.jsonl")
    with pytest.raises(ValueError, match="step.loss"):
        w.emit("step", **{**step_fields(), "loss": "high"})
    with pytest.raises(ValueError, match="end.status"):
        w.emit("end", status="done", adapter=None)


def test_reader_skips_malformed_and_invalid_lines(tmp_path, caplog):
    path = tmp_path / "events.jsonl"
    good = {"v": 1, "type": "eval", "time": 1.0, "step": 3, "loss": 1.5}
    path.write_text("\n".join([
        json.dumps(good), "{not json", json.dumps({**good, "v": 99}),
        json.dumps({**good, "loss": None}), json.dumps(good)]) + "\n")
    events = read_events(path)
    assert len(events) == 2 and events[0] == good
    assert "dropped" in caplog.text


def test_follower_keeps_a_partial_last_line_until_complete(tmp_path):
    path = tmp_path / "events.jsonl"
    follower = JournalFollower(path)
    assert follower.poll() == []                       # no file yet
    line = json.dumps({"v": 1, "type": "log", "time": 1.0, "level": "info", "message": "héllo"})
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(line[:20])
    assert follower.poll() == []
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line[20:] + "\n")
    assert [e["message"] for e in follower.poll()] == ["héllo"]
    assert follower.poll() == []


def test_validate_rejects_bool_for_int_and_non_finite():
    assert validate({"v": 1, "type": "eval", "time": 1.0, "step": True, "loss": 1.0})
    assert validate({"v": 1, "type": "eval", "time": 1.0, "step": 1, "loss": float("inf")})
    assert validate({"v": 1, "type": "eval", "time": 1.0, "step": 1, "loss": 1.0}) is None
