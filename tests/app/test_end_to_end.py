"""Point and click: a real worker trains the tiny Llama; the dashboard follows; Stop stops it.

Slow (the worker imports torch and transformers), so marked; CI still runs them.
"""
import time
from pathlib import Path

import pytest
from conftest import fill_cpu_run
from PySide6.QtCore import QElapsedTimer, Qt, QTimer
from PySide6.QtWidgets import QMessageBox

pytestmark = pytest.mark.slow
WORKER_TIMEOUT_MS = 240_000


def fill(qtbot, page, model, data, max_steps):
    fill_cpu_run(qtbot, page, model, data, lr="5e-3", max_steps=max_steps, seq_len=64, batch_size=4, grad_accum=1,
                 warmup_steps=1, save_every=0)
    assert page.start_bar.start_button.isEnabled(), page.start_bar.reason_label.text()


class LatencyProbe:
    """A 20 ms timer that records how late each tick fires: the window's worst freeze."""

    def __init__(self, interval_ms: int = 20):
        self.interval, self.worst, self.ticks = interval_ms, 0.0, 0
        self.clock = QElapsedTimer()
        self.timer = QTimer(interval=interval_ms)
        self.timer.setTimerType(Qt.PreciseTimer)
        self.timer.timeout.connect(self._tick)

    def start(self):
        self.clock.start()
        self.timer.start()

    def _tick(self):
        late = self.clock.restart() - self.interval
        self.ticks += 1
        self.worst = max(self.worst, late)

    def stop(self):
        self.timer.stop()


FREEZE_MS = 250


def test_train_tiny_llama_by_pointing_and_clicking(qtbot, page, tiny_llama, text_jsonl, runs_home):
    fill(qtbot, page, tiny_llama, text_jsonl, max_steps=6)
    probe = LatencyProbe()
    probe.start()                                       # measure from the click to the end of the run
    qtbot.mouseClick(page.start_bar.start_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: page.running, timeout=20_000)
    run_dir = page.process.run_dir
    assert run_dir.parent == runs_home / "runs" and (run_dir / "config.yaml").is_file()
    d = page.dashboard

    qtbot.waitUntil(lambda: d.state.step >= 1, timeout=WORKER_TIMEOUT_MS)
    qtbot.waitUntil(lambda: d.state.finished, timeout=WORKER_TIMEOUT_MS)
    probe.stop()

    assert d.state.status == "completed", d.log_pane.toPlainText()[-3000:]
    assert d.loss_plot.plot.point_count("train") == 6
    assert d.lr_plot.point_count("lr") == 6
    assert d.progress.value() == 1000 and d.progress_label.text().startswith("Step 6 / 6")
    adapter = run_dir / "adapter"
    assert d.banner.title.text() == "Training completed"
    assert d.banner.message.text() == f"Adapter saved to {adapter}"
    assert (adapter / "adapter_config.json").is_file()
    assert d.cards["ram"].value.text() != "—"           # the worker reported memory
    assert not page.running and page.start_bar.start_button.isEnabled()
    assert page.scroll.widget().isEnabled()
    print(f"latency: {probe.ticks} ticks, worst {probe.worst} ms late")
    # A freeze (waiting on the worker, a blocking read) shows as seconds. One offscreen repaint of the
    # six pyqtgraph plots takes 60-130 ms of software rendering on a loaded 2-core machine (0.1 and
    # 0.2 alike: 100 ms failed a third of the runs of either), so the line is drawn at 250 ms.
    assert probe.ticks > 50 and probe.worst < FREEZE_MS, f"the event loop was {probe.worst} ms late"


def test_stop_asks_and_the_run_ends_stopped_with_an_adapter(qtbot, page, tiny_llama, text_jsonl, monkeypatch):
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a[1]) or QMessageBox.Yes)
    fill(qtbot, page, tiny_llama, text_jsonl, max_steps=5000)
    qtbot.mouseClick(page.start_bar.start_button, Qt.LeftButton)
    d = page.dashboard
    qtbot.waitUntil(lambda: d.state.step >= 2, timeout=WORKER_TIMEOUT_MS)
    assert page.start_bar.stop_button.isEnabled()
    qtbot.mouseClick(page.start_bar.stop_button, Qt.LeftButton)
    assert asked == ["Stop training?"]
    t0 = time.monotonic()
    qtbot.waitUntil(lambda: d.state.finished, timeout=60_000)
    assert d.state.status == "stopped", d.log_pane.toPlainText()[-3000:]
    assert d.state.step < 5000 and time.monotonic() - t0 < 60
    assert d.banner.title.text() == "Training stopped"
    assert d.state.adapter and (Path(d.state.adapter) / "adapter_config.json").is_file()
    assert "adapter saved to" in d.banner.message.text()
    assert not page.running


def test_declining_the_stop_question_keeps_training(qtbot, page, tiny_llama, text_jsonl, monkeypatch):
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.No)
    fill(qtbot, page, tiny_llama, text_jsonl, max_steps=5000)
    qtbot.mouseClick(page.start_bar.start_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: page.dashboard.state.step >= 1, timeout=WORKER_TIMEOUT_MS)
    page.request_stop()
    qtbot.wait(1000)
    assert page.running and page.process.is_running()
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.Yes)
    page.request_stop()
    qtbot.waitUntil(lambda: page.dashboard.state.finished, timeout=60_000)
