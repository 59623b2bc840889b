"""Issue 27, class 5: one bad file never breaks a whole view. Each reader of run files — the Runs
page's history (RunHistory, what the window's refresher calls), `summarize`, the live-run finder,
the adapter picker's listing, the journal follower (the dashboard's and the CLI's), and `resume` —
is given each kind of garbage in each file of one run: it survives, names that file, and the other
runs still show."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lorastudio.core.journal import JournalFollower
from lorastudio.core.runs.listing import RunHistory, find_live_runs, runs_with_adapters, summarize
from lorastudio.core.runs.resume import ResumeError, plan_resume
from tests.helpers.runs_fixtures import make_run

GARBAGE = {
    "non-utf8": lambda p: p.write_bytes(b'{"pid": 12, "state": "\xff\xfe\xc3("}\n'),
    "truncated-json": lambda p: p.write_bytes(b'{"pid": 12, "state": "runn'),
    "binary-zeros": lambda p: p.write_bytes(b"\0" * 4096),
    "a-directory": lambda p: (p.mkdir(), (p / "inside.txt").write_text("x")),
    "empty": lambda p: p.write_bytes(b""),
}
FILES = ["status.json", "config.yaml", "events.jsonl", "checkpoints/step-000050/state.json"]


def spoil(path: Path, kind: str) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    GARBAGE[kind](path)


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    good = [make_run(root, f"good-{i}", "completed", 60, checkpoints=(50,)) for i in range(2)]
    bad = make_run(root, "bad", "stopped", 60, checkpoints=(50,))
    return root, good, bad


@pytest.mark.parametrize("kind", list(GARBAGE))
@pytest.mark.parametrize("name", FILES)
def test_every_reader_survives_garbage_in_one_file_and_names_it(runs, name, kind):
    root, good, bad = runs
    spoil(bad / name, kind)
    rows = {row.path.name: row for row in RunHistory(root).refresh()}
    assert {"good-0", "good-1", "bad"} <= set(rows)                      # the rest still show
    assert all(rows[g.name].status == "completed" and not rows[g.name].problems for g in good)
    row = rows["bad"]
    named = " ".join(row.problems) + " " + str((row.error or {}).get("message", ""))
    if name in ("status.json", "config.yaml", "events.jsonl") and kind not in ("empty", "truncated-json") \
            and not (name == "events.jsonl" and kind != "a-directory"):
        assert str(bad / name) in named, (row.problems, row.error)
    summarize(bad)
    find_live_runs(root)
    runs_with_adapters(root)
    follower = JournalFollower(bad / "events.jsonl")
    follower.poll()
    if name == "events.jsonl" and kind == "a-directory":
        assert follower.problem and str(bad / "events.jsonl") in follower.problem
    try:
        plan_resume(bad)
    except ResumeError as exc:                                           # refused in words, naming the file
        print(f"\nresume, {name} {kind}: {exc}")
        assert str(bad / name.split("/")[0]) in str(exc) or "not a run folder" in str(exc) or name == "status.json"


def test_the_issue_example_non_utf8_status_json(runs):
    """Non-UTF-8 bytes in one run's status.json blanked the Runs page and made resume print a traceback."""
    root, _good, bad = runs
    (bad / "status.json").write_bytes(b'{"pid": \xff\xff}')
    rows = {row.path.name: row for row in RunHistory(root).refresh()}
    assert len(rows) == 3 and f"{bad / 'status.json'} is not UTF-8 text (byte 0xff" in " ".join(rows["bad"].problems)
    plan, _config = plan_resume(bad)                 # status garbage: no live worker, so it resumes
    assert plan.step == 50
