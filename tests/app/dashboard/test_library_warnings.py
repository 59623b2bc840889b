"""Library warnings (transformers' FutureWarnings and the like) stay in worker.log; the log pane
shows the run's own messages — and the last lines of worker.log only when the worker crashed."""
import subprocess
import sys

import pytest
from conftest import fill_cpu_run

from lorastudio.core.journal import JournalWriter
from lorastudio.core.runtime.launcher import JobHandle

WARNING = ("/x/transformers/modeling_utils.py:3304: FutureWarning: `is_gradient_checkpointing` is deprecated "
           "and will be removed in v6.")


def test_worker_log_lines_stay_out_of_the_pane(qtbot, page, tmp_path):
    run_dir = tmp_path / "run"
    writer = JournalWriter(run_dir / "events.jsonl")
    (run_dir / "worker.log").write_text(WARNING + "\n  warnings.warn(\n")
    page.dashboard.reset(str(run_dir))
    page.process.follow(run_dir)
    writer.emit("phase", name="training", message="Training 2 steps")
    writer.emit("log", level="warning", message="Note: 3 training examples were truncated")
    with qtbot.waitSignal(page.process.finished, timeout=5000):
        writer.emit("end", status="completed", adapter=str(run_dir / "adapter"))
    writer.close()
    pane = page.dashboard.log_pane.toPlainText()
    assert "— Training 2 steps" in pane and "[warning] Note: 3 training examples were truncated" in pane
    assert "FutureWarning" not in pane and "warnings.warn" not in pane


def test_after_a_crash_the_pane_shows_how_worker_log_ends(qtbot, page, tmp_path):
    run_dir = tmp_path / "run"
    JournalWriter(run_dir / "events.jsonl").close()
    with open(run_dir / "worker.log", "wb") as log:
        popen = subprocess.Popen([sys.executable, "-c", f"import sys; print({WARNING!r}, file=sys.stderr); "
                                  "print('Fatal Python error: Segmentation fault', file=sys.stderr); sys.exit(139)"],
                                 stderr=log)
    page.dashboard.reset(str(run_dir))
    with qtbot.waitSignal(page.process.finished, timeout=10_000):
        page.process.follow(run_dir, JobHandle("train", run_dir, popen))
    qtbot.waitUntil(lambda: "Segmentation fault" in page.dashboard.log_pane.toPlainText(), timeout=5000)
    pane = page.dashboard.log_pane.toPlainText()
    assert "[error] crashed: The training worker exited unexpectedly (exit code 139)." in pane
    assert pane.index("worker.log ends with:") < pane.index("Fatal Python error: Segmentation fault")


@pytest.mark.slow
def test_a_real_run_keeps_transformers_warnings_in_worker_log(qtbot, page, tiny_llama, text_jsonl):
    fill_cpu_run(qtbot, page, tiny_llama, text_jsonl, max_steps=2, seq_len=32, batch_size=2, grad_accum=1,
                 warmup_steps=0, save_every=0)
    page.start()
    qtbot.waitUntil(lambda: page.running, timeout=20_000)
    qtbot.waitUntil(lambda: page.dashboard.state.finished, timeout=240_000)
    run_dir = page.process.run_dir
    worker_log = (run_dir / "worker.log").read_text()
    pane = page.dashboard.log_pane.toPlainText()
    assert page.dashboard.state.status == "completed", pane[-3000:]
    assert "FutureWarning" in worker_log                 # PEFT asks the model is_gradient_checkpointing
    assert "— run completed; adapter saved to" in pane
    assert "Warning" not in pane and "warnings.warn" not in pane, pane
