"""Issue 27, class 3: a worker that outlives its run. Real processes: `lorastudio train` starts a
real training worker; its run folder deleted, replaced, or its lock removed → the worker stops at once
(a journal line through its open journal where there is one) and never writes at that path again;
a foreground `lorastudio train` ended with SIGTERM stops its worker (--detach stays the way to leave
one running)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lorastudio.core.journal import read_events
from lorastudio.core.processes import pid_alive
from tests.helpers.tiny_models import write_config

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[3]


def env(home: Path) -> dict:
    return {**os.environ, "LORASTUDIO_HOME": str(home),
            "PYTHONPATH": str(ROOT.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def cli(home: Path, *args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lorastudio.app.launcher", *map(str, args)], env=env(home),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def wait_for(predicate, timeout: float, what: str):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def worker_pid(run: Path) -> int | None:
    try:
        status = json.loads((run / "status.json").read_text())
    except (OSError, ValueError):
        return None
    steps = [e for e in read_events(run / "events.jsonl") if e["type"] == "step"]
    return status.get("pid") if status.get("state") == "running" and steps else None


@pytest.fixture
def long_run(tmp_path, tiny_llama, text_jsonl):
    config = write_config(tmp_path / "c.yaml", tiny_llama, text_jsonl, training__max_steps=100_000,
                          training__save_every=0, training__seq_len=32, training__batch_size=1)
    home = tmp_path / "home"
    run = tmp_path / "run"
    started = cli(home, "train", config, "--run-dir", run, "--detach")
    assert started.wait(60) == 0, started.stdout.read().decode()
    pid = wait_for(lambda: worker_pid(run), 90, "the worker's first step")
    yield run, pid
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


def gone(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    return not pid_alive(pid)


def test_a_deleted_run_folder_stops_its_worker_which_never_recreates_it(long_run):
    run, pid = long_run
    shutil.rmtree(run)
    t0 = time.time()
    wait_for(lambda: gone(pid), 10, "the worker to stop")
    print(f"\nstopped {time.time() - t0:.1f} s after the folder was deleted")
    time.sleep(6)                                   # past a heartbeat: nothing comes back
    assert not run.exists()


def test_a_replaced_run_folder_stops_its_worker_with_a_journal_line_and_stays_untouched(long_run):
    run, pid = long_run
    moved = run.with_name("run-moved")
    run.rename(moved)
    run.mkdir()
    (run / "mine.txt").write_text("someone else's folder now")
    wait_for(lambda: gone(pid), 10, "the worker to stop")
    time.sleep(6)
    assert sorted(p.name for p in run.iterdir()) == ["mine.txt"]
    events = read_events(moved / "events.jsonl")
    error = next(e for e in events if e["type"] == "error")
    assert error["kind"] == "run_lost" and f"the run folder {run} was replaced by another folder" in error["message"]
    assert events[-1]["type"] == "end" and events[-1]["status"] == "failed"


def test_a_removed_lock_stops_the_worker(long_run):
    run, pid = long_run
    (run / ".lock").unlink()
    wait_for(lambda: gone(pid), 10, "the worker to stop")
    events = read_events(run / "events.jsonl")
    assert any(e["type"] == "error" and "lock" in e["message"] for e in events)


def test_sigterm_to_a_foreground_train_stops_its_worker(tmp_path, tiny_llama, text_jsonl):
    config = write_config(tmp_path / "c.yaml", tiny_llama, text_jsonl, training__max_steps=100_000,
                          training__save_every=0, training__seq_len=32, training__batch_size=1)
    run = tmp_path / "run"
    foreground = cli(tmp_path / "home", "train", config, "--run-dir", run)
    pid = wait_for(lambda: worker_pid(run), 90, "the worker's first step")
    foreground.send_signal(signal.SIGTERM)
    wait_for(lambda: gone(pid), 30, "the worker to stop")
    foreground.wait(30)
    events = read_events(run / "events.jsonl")
    assert events[-1]["type"] == "end" and events[-1]["status"] == "stopped"
