"""The journal: writers refuse bad events; readers drop bad lines and wait for half-written ones; the
schema lists every field any writer writes."""
import ast
import json
from pathlib import Path

import pytest

from lorastudio.core.journal import SCHEMA, JournalFollower, JournalWriter, read_events, validate


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


# ---- the schema lists every field ----------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[2]
V01 = ROOT / "tests" / "data" / "run_v0_1" / "events.jsonl"


def test_strict_validation_refuses_what_the_schema_does_not_list():
    event = {"v": 1, "type": "eval", "time": 1.0, "step": 3, "loss": 1.5}
    assert validate(event, strict=True) is None
    assert validate({**event, "tokens": 12}, strict=True) is None               # listed, optional
    extra = {**event, "perplexity": 4.5, "bleu": 0.1}
    assert validate(extra) is None                                   # readers pass it through …
    assert validate(extra, strict=True) == "eval.bleu is not in the schema (nor perplexity)"   # … writers not
    assert validate({"v": 1, "type": "gossip", "time": 1.0}) is None
    assert validate({"v": 1, "type": "gossip", "time": 1.0}, strict=True) == "type 'gossip' is not in the schema"
    assert validate({**event, "tokens": "12"}) == "eval.tokens is '12'"        # an optional field's type counts


def test_a_journal_written_by_0_1_keeps_to_the_schema():
    """Every field 0.1 wrote is listed (so readers keep reading it) — and with the types 0.1 wrote."""
    lines = V01.read_text(encoding="utf-8").splitlines()
    assert len(lines) > 10
    assert [validate(json.loads(line), strict=True) for line in lines] == [None] * len(lines)


def test_the_tests_journal_check_finds_an_unlisted_field(tmp_path_factory):
    """tests/conftest.py runs this after every test that has a tmp_path (so not on this one's)."""
    from tests.helpers.journals import schema_problems
    root = tmp_path_factory.mktemp("unlisted")
    w = JournalWriter(root / "run" / "events.jsonl")
    w.emit("phase", name="loading", message="Loading")
    w.emit("end", status="completed", adapter=None, wandb_url="https://…")      # a writer the schema missed
    w.close()
    (root / "run" / "events.jsonl").open("a").write("{half a line")
    assert schema_problems(root) == ["run/events.jsonl:2: end.wandb_url is not in the schema"]


def test_memory_fields_of_a_gpu_are_listed():
    """What only a GPU run writes (not exercised on CPU): the device status and torch's counters."""
    from lorastudio.core.devices import GpuStatus, host_memory
    gpu = GpuStatus(used=1, total=2, utilization=50, temperature=60, power=100.5, power_limit=300.0)
    fields = {**host_memory(), **gpu.event_fields(), "step": 1, "cuda_allocated": 1, "cuda_reserved": 2,
              "cuda_peak": 3, "device_name": "NVIDIA H200"}
    assert validate({"v": 1, "type": "memory", "time": 1.0, **fields}, strict=True) is None


def literal_fields() -> list[tuple[str, str, str]]:
    """(where, type, field) for every journal call in core/ that names its type and fields literally:
    `*.emit("type", field=…)`, `make_event("type", field=…)`, and `*.progress(...)` (a phase)."""
    found = []
    for path in sorted((ROOT / "core").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in ("emit", "make_event") and node.args and isinstance(node.args[0], ast.Constant):
                type_ = node.args[0].value
            elif name == "progress" and isinstance(node.func, ast.Attribute) and len(node.args) == 3:
                type_ = "phase"
            else:
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            found += [(where, type_, kw.arg) for kw in node.keywords if kw.arg is not None]
            if name == "progress":
                found += [(where, "phase", "fraction"), (where, "phase", "message")]
    return found


def test_every_field_written_in_core_is_in_the_schema():
    """Read from the code, so paths the tests do not run (a GPU's, a rare failure's) count too;
    fields passed as **dict are checked by the journals the tests leave (tests/conftest.py)."""
    found = literal_fields()
    assert len(found) > 100 and {t for _w, t, _f in found} >= {"start", "step", "memory", "error", "retry"}
    unlisted = [f"{where}: {type_}.{field}" for where, type_, field in found
                if type_ not in SCHEMA or field not in SCHEMA[type_]]
    assert unlisted == []
