"""The QObject around the training job: typed signals from the journal, the worker.log tail, a
worker that dies without an `end` event reported (in core's one wording) instead of waited on
forever, and a run found running judged by its pid and heartbeat."""
import subprocess
import sys
import time

from tests.helpers.runs_fixtures import fake_worker

from lorastudio.app.train.training_process import CRASH_HINT, TrainingProcess
from lorastudio.core.atomic_files import atomic_write_json
from lorastudio.core.journal import JournalWriter
from lorastudio.core.runtime.launcher import JobHandle

GONE_PID = 2 ** 22 + 12345          # no such process


def test_typed_signals_and_log_tail(qtbot, tmp_path):
    run_dir = tmp_path / "run"
    writer = JournalWriter(run_dir / "events.jsonl")
    (run_dir / "worker.log").write_text("UserWarning: something\n")
    proc = TrainingProcess(poll_ms=50)
    lines, steps = [], []
    proc.log_line.connect(lines.append)
    proc.step.connect(steps.append)
    proc.follow(run_dir)
    assert proc.run_dir == run_dir and proc.following()
    writer.emit("step", step=1, total_steps=2, epoch=0.5, loss=1.0, lr=1e-4, grad_norm=None, tokens_per_s=5.0,
                elapsed_s=1.0, eta_s=1.0)
    with qtbot.waitSignal(proc.finished, timeout=5000) as finished:
        writer.emit("end", status="completed", adapter="/x/adapter")
    assert finished.args == ["completed", "/x/adapter"]
    assert [s["step"] for s in steps] == [1]
    assert lines == ["UserWarning: something"]
    assert not proc.following() and not proc.is_running()
    writer.close()


def test_a_resumed_journal_is_followed_past_its_first_end(qtbot, tmp_path):
    run_dir = tmp_path / "run"
    writer = JournalWriter(run_dir / "events.jsonl")
    writer.emit("end", status="failed", adapter=None)
    writer.emit("phase", name="resuming", message="Resuming from the beginning")
    proc = TrainingProcess(poll_ms=50)
    ends = []
    proc.finished.connect(lambda status, _a: ends.append(status))
    proc.follow(run_dir)
    qtbot.wait(300)
    assert ends == [] and proc.following()
    with qtbot.waitSignal(proc.finished, timeout=5000) as finished:
        writer.emit("end", status="completed", adapter="/x/adapter")
    assert finished.args == ["completed", "/x/adapter"] and ends == ["completed"]
    writer.close()


def test_a_worker_that_dies_without_end_is_reported(qtbot, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with open(run_dir / "worker.log", "wb") as log:
        popen = subprocess.Popen([sys.executable, "-c", "import sys; print('Segmentation fault', file=sys.stderr); "
                                  "sys.exit(139)"], stderr=log)
    proc = TrainingProcess(poll_ms=50)
    errors, lines = [], []
    proc.error.connect(errors.append)
    proc.log_line.connect(lines.append)
    with qtbot.waitSignal(proc.finished, timeout=10_000) as finished:
        proc.follow(run_dir, JobHandle("train", run_dir, popen))
    assert finished.args == ["failed", None]
    assert errors[0]["kind"] == "crashed"
    assert errors[0]["message"] == "The training worker exited unexpectedly (exit code 139)."
    assert errors[0]["hint"].startswith(CRASH_HINT) and "worker.log" in errors[0]["hint"]
    assert lines == ["Segmentation fault"]
    assert not proc.is_running()


def test_a_reattached_worker_that_is_gone_is_reported_but_a_resume_that_is_starting_is_not(qtbot, tmp_path,
                                                                                          monkeypatch):
    monkeypatch.setattr("lorastudio.core.runtime.follower.PID_CHECK_S", 0.1)
    run_dir = tmp_path / "run"
    writer = JournalWriter(run_dir / "events.jsonl")
    writer.emit("phase", name="resuming", message="Resuming from the beginning")
    atomic_write_json(run_dir / "status.json", {"pid": GONE_PID, "state": "resuming", "heartbeat": time.time()})
    proc = TrainingProcess(poll_ms=50)
    ends = []
    proc.finished.connect(lambda status, _a: ends.append(status))
    proc.follow(run_dir)
    qtbot.wait(400)
    assert ends == [] and proc.following()              # the new worker is on its way: keep reading

    atomic_write_json(run_dir / "status.json", {"pid": GONE_PID, "state": "running", "heartbeat": time.time()})
    errors = []
    proc.error.connect(errors.append)
    with qtbot.waitSignal(proc.finished, timeout=10_000) as finished:
        pass
    assert finished.args == ["failed", None]
    assert errors[0]["message"] == "The training worker exited unexpectedly (its process is gone)."
    assert errors[0]["hint"].startswith(CRASH_HINT)
    writer.close()


def test_stop_asks_a_reattached_worker_by_its_pid(qtbot, tmp_path):
    run_dir = tmp_path / "run"
    JournalWriter(run_dir / "events.jsonl").close()
    worker = fake_worker()
    try:
        atomic_write_json(run_dir / "status.json", {"pid": worker.pid, "state": "running", "heartbeat": time.time()})
        proc = TrainingProcess(poll_ms=50)
        proc.follow(run_dir)
        assert proc.is_running()
        assert proc.stop()
        assert worker.wait(timeout=10) == -15                 # SIGTERM: the graceful stop
        proc.detach()
        assert not proc.following()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
