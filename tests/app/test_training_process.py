"""The QObject around the worker: typed signals from the journal, the worker.log tail, and a
worker that dies without an `end` event reported as a failure instead of waited on forever."""
import subprocess
import sys

from lorastudio.app.train.training_process import TrainingProcess
from lorastudio.core.journal import JournalWriter


def test_typed_signals_and_log_tail(qtbot, tmp_path):
    run_dir = tmp_path / "run"
    writer = JournalWriter(run_dir / "events.jsonl")
    (run_dir / "worker.log").write_text("UserWarning: something\n")
    proc = TrainingProcess(poll_ms=50)
    lines, steps = [], []
    proc.log_line.connect(lines.append)
    proc.step.connect(steps.append)
    proc.follow(run_dir)
    writer.emit("step", step=1, total_steps=2, epoch=0.5, loss=1.0, lr=1e-4, grad_norm=None, tokens_per_s=5.0,
                elapsed_s=1.0, eta_s=1.0)
    with qtbot.waitSignal(proc.finished, timeout=5000) as finished:
        writer.emit("end", status="completed", adapter="/x/adapter")
    assert finished.args == ["completed", "/x/adapter"]
    assert [s["step"] for s in steps] == [1]
    assert lines == ["UserWarning: something"]
    writer.close()


def test_a_worker_that_dies_without_end_is_reported(qtbot, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    proc = TrainingProcess(poll_ms=50)
    proc.popen = subprocess.Popen([sys.executable, "-c", "import sys; print('Segmentation fault', file=sys.stderr); sys.exit(139)"],
                                  stderr=open(run_dir / "worker.log", "wb"))
    errors = []
    proc.error.connect(errors.append)
    with qtbot.waitSignal(proc.finished, timeout=10_000) as finished:
        proc.follow(run_dir)
    assert finished.args == ["failed", None]
    assert errors[0]["message"] == "The training worker exited unexpectedly (exit code 139)."
    assert "worker.log" in errors[0]["hint"]
    assert not proc.is_running()
