"""The dashboard's Qt-free model: events folded into series, figures and a final status."""
import pytest

from lorastudio.app.dashboard.run_state import RunState, ema
from lorastudio.core.formatting import format_duration, format_rate

GIB = 1024 ** 3


def ev(type_, t=100.0, **fields):
    return {"v": 1, "type": type_, "time": t, **fields}


def step(n, loss, t=100.0, total=10):
    return ev("step", t, step=n, total_steps=total, epoch=n / total, loss=loss, lr=1e-4 * n, grad_norm=1.0,
              tokens_per_s=1000.0 + n, elapsed_s=float(n), eta_s=float(total - n))


def test_steps_evals_and_end_fill_the_series_and_status():
    s = RunState()
    s.apply(ev("start", config={}, devices=[], versions={}, trainable_params=1000, total_params=10**6, total_steps=10))
    for n in range(1, 5):
        s.apply(step(n, 2.0 / n))
    s.apply(ev("eval", step=4, loss=0.7))
    assert s.status == "running" and s.step == 4 and s.total_steps == 10
    assert s.loss.x == [1, 2, 3, 4] and s.loss.y[-1] == pytest.approx(0.5)
    assert s.eval_loss.y == [0.7] and s.fraction == pytest.approx(0.4)
    s.apply(ev("end", status="completed", adapter="/runs/x/adapter"))
    assert s.finished and s.status == "completed" and s.adapter == "/runs/x/adapter"
    assert s.log[-1].endswith("adapter saved to /runs/x/adapter")


def test_memory_on_cpu_uses_ram_for_the_gauge_and_on_cuda_the_device():
    s = RunState()
    s.apply(ev("memory", t=10.0, rss=GIB, ram_used=4 * GIB, ram_total=16 * GIB))
    assert not s.has_cuda and s.memory_gauge() == ("RAM", 4 * GIB, 16 * GIB)
    s.apply(ev("memory", t=12.0, rss=GIB, ram_used=4 * GIB, ram_total=16 * GIB, cuda_allocated=2 * GIB,
               cuda_reserved=3 * GIB, cuda_peak=3 * GIB, device_used=5 * GIB, device_total=24 * GIB,
               device_name="RTX 4090"))
    assert s.has_cuda and s.memory_gauge() == ("VRAM", 5 * GIB, 24 * GIB)
    assert s.vram_allocated.x == [2.0]            # seconds since the first event
    assert s.device_name == "RTX 4090"


def test_error_keeps_message_and_hint_and_puts_the_traceback_in_the_log():
    s = RunState()
    s.apply(ev("error", kind="oom", message="CUDA out of memory", hint="lower batch_size", traceback="Traceback…\nboom"))
    assert s.error["hint"] == "lower batch_size"
    assert "Traceback…\nboom" in s.log


def test_ema_is_bias_corrected_and_zero_weight_is_identity():
    assert ema([1.0, 2.0, 3.0], 0) == [1.0, 2.0, 3.0]
    smoothed = ema([4.0, 4.0, 4.0], 0.9)
    assert smoothed == pytest.approx([4.0, 4.0, 4.0])     # a constant stays constant (no pull to 0)
    assert ema([0.0, 10.0], 0.5)[1] == pytest.approx(10 * 0.5 / 0.75)


def test_formatting():
    assert format_duration(None) == "—"
    assert format_duration(65) == "1:05" and format_duration(3725) == "1:02:05"
    assert format_rate(950.4) == "950" and format_rate(12_345) == "12.3 k"
