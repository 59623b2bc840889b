"""One run folder, one writer: a folder's lock is held by a real process; a second writer —
train, resume, export, merge, or the worker started by hand — is refused, naming the holder's
pid, and writes nothing; a holder killed with SIGKILL leaves no lock behind."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.tiny_models import write_config

from lorastudio.core import cli
from lorastudio.core.config import RunConfig
from lorastudio.core.journal import read_events
from lorastudio.core.runs.export import ExportError, export_adapter
from lorastudio.core.runs.locks import FolderBusy, acquire, holder, output_lock_path
from lorastudio.core.plans.train import resume_run
from lorastudio.core.runs.resume import ResumeError

HOLDER = Path(__file__).with_name("lock_holder.py")
ROOT = Path(__file__).resolve().parents[3]
ENV = {**os.environ, "PYTHONPATH": str(ROOT.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def hold(folder: Path, lock_file: Path | None = None) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(HOLDER), str(folder), *([str(lock_file)] if lock_file else [])],
                            stdout=subprocess.PIPE, env=ENV)
    assert proc.stdout.readline().strip() == b"locked"
    return proc


def kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture
def trained_run(tmp_path, tiny_llama, text_jsonl):
    from tests.helpers.training import train
    config = write_config(tmp_path / "c.yaml", tiny_llama, text_jsonl, quantization="none",
                          training__max_steps=2, training__save_every=1)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(RunConfig.load(config).to_yaml())
    train(config, run)
    return run


def test_a_second_process_is_refused_naming_the_first_and_a_killed_holder_leaves_no_lock(tmp_path):
    first = hold(tmp_path)
    try:
        with pytest.raises(FolderBusy, match=rf"in use by another LoRA Studio process \(pid {first.pid}, "
                                             r"holding it for a test\)") as refused:
            acquire(tmp_path, "training")
        assert "wait until it ends, or stop it first" in refused.value.hint
        assert holder(tmp_path) == {"pid": first.pid, "what": "holding it for a test"}
    finally:
        kill(first)                                     # a dead holder: the kernel dropped its lock
    assert (tmp_path / ".lock").exists() and holder(tmp_path) is None
    with acquire(tmp_path, "training"):
        assert holder(tmp_path)["pid"] == os.getpid()


def test_the_train_worker_started_by_hand_on_a_busy_folder_writes_nothing(tmp_path, make_config):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(RunConfig.load(make_config()).to_yaml())
    first = hold(run)
    try:
        done = subprocess.run([sys.executable, "-m", "lorastudio.core.jobs.train", str(run)],
                              capture_output=True, text=True, env=ENV, timeout=120)
    finally:
        kill(first)
    assert done.returncode == 1
    assert f"in use by another LoRA Studio process (pid {first.pid}" in done.stderr
    assert not (run / "events.jsonl").exists() and not (run / "status.json").exists()


def test_train_into_a_busy_run_dir_is_refused_before_config_yaml(tmp_path, make_config, capfd):
    run = tmp_path / "run"
    first = hold(run)
    try:
        code = cli.main(["train", str(make_config()), "--run-dir", str(run), "--detach"])
    finally:
        kill(first)
    out, err = capfd.readouterr()
    assert code == 2 and f"(pid {first.pid}" in err and "Traceback" not in out + err
    assert sorted(p.name for p in run.iterdir()) == [".lock"]       # no config.yaml, no journal


def test_resume_of_a_busy_run_is_refused(trained_run):
    first = hold(trained_run)
    try:
        with pytest.raises(ResumeError, match=rf"pid {first.pid}"):
            resume_run(trained_run)
    finally:
        kill(first)
    assert not any(e["type"] == "phase" and e.get("name") == "resuming"
                   for e in read_events(trained_run / "events.jsonl"))


def test_export_into_an_output_being_written_is_refused(trained_run, tmp_path):
    out = tmp_path / "exported"
    first = hold(tmp_path, output_lock_path(out))
    try:
        with pytest.raises(ExportError, match=rf"pid {first.pid}"):
            export_adapter(trained_run, out)
    finally:
        kill(first)
    assert not out.exists()
    assert export_adapter(trained_run, out) == out.resolve()       # the holder is dead: free again
    assert not output_lock_path(out).exists()                       # an output's lock file goes with it


def test_merge_into_an_output_being_written_is_refused(trained_run, tmp_path):
    from lorastudio.core.plans.merge import MergeError, MergeRequest, plan_merge
    out = tmp_path / "merged"
    first = hold(tmp_path, output_lock_path(out))
    args = MergeRequest(trained_run, out, device="cpu")
    try:
        with pytest.raises(MergeError, match=rf"pid {first.pid}"):
            plan_merge(args)
    finally:
        kill(first)
    assert not out.exists()


@pytest.mark.slow
def test_two_train_commands_started_together_into_one_run_dir(tmp_path, tiny_llama, text_jsonl):
    """The sweep's case: both started at once; one trains, the other is refused, and the journal
    holds one start and each step once."""
    run = tmp_path / "run"
    configs = [write_config(tmp_path / f"c{r}.yaml", tiny_llama, text_jsonl, quantization="none", lora__r=r,
                            training__max_steps=3) for r in (8, 16)]
    procs = [subprocess.Popen([sys.executable, "-m", "lorastudio.app.launcher", "train", str(c), "--run-dir", str(run),
                               "--detach"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
             for c in configs]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    started = [r for r in results if r[0] == 0]
    refused = [r for r in results if r[0] != 0]
    assert len(started) == 1 and len(refused) == 1, results
    assert ("in use by another LoRA Studio process (pid" in refused[0][2]
            or "already holds a run" in refused[0][2]), refused[0][2]
    deadline = time.time() + 180
    while time.time() < deadline and not any(e["type"] == "end" for e in read_events(run / "events.jsonl")):
        time.sleep(0.5)
    events = read_events(run / "events.jsonl")
    steps = [e["step"] for e in events if e["type"] == "step"]
    assert [e["type"] for e in events].count("start") == 1 and steps == sorted(set(steps)) == [1, 2, 3]
    r = RunConfig.load(run / "config.yaml").lora.r
    assert f"LoRA r={r}" in started[0][1]                 # config.yaml is the one that trained
