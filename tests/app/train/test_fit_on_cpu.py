"""Issue 33, point 8: without a GPU the fit area speaks of this computer's RAM (the memory model's
terms on the CPU plus the worker's runtime, no CUDA context), hides the card selector and "Make it
fit", and estimates the time a step takes from the model's size and this CPU's measured rate."""
import pytest

from lorastudio.core.devices import GpuInfo
from lorastudio.core.fit.cpu import CPU_EFFICIENCY, cpu_estimate, measure_matmul_rate, step_flops
from tests.app.conftest import load_model
from tests.helpers.model_shapes import header_only_model

GIB = 1 << 30


@pytest.fixture
def small_model(tmp_path):
    return header_only_model(tmp_path / "llama-8b", "llama-8b")


def test_without_a_gpu_the_fit_area_speaks_of_ram_and_time(qtbot, page, small_model):
    fit = page.fit_indicator
    assert page.hardware_panel.gpus == []                       # the tests' machine: no CUDA GPU
    assert fit.on_cpu() and fit.target_combo.isHidden() and fit.fit_button.isHidden()
    load_model(qtbot, page, small_model)
    assert page.hardware_panel.values()["device"] == "cpu"
    qtbot.waitUntil(lambda: "a step on this CPU" in fit.verdict.text(), timeout=10_000)
    text = fit.verdict.text()
    assert text.startswith("Estimated RAM ") and "GiB of " in text and ("— fits" in text or "— does not fit" in text)
    assert "card" not in text and "peak" not in text
    keys = [k for k, _b in fit.bar.terms]
    assert "context" not in keys and "slack" not in keys and keys[-1] == "runtime"
    assert "CUDA" not in fit.bar.toolTip() and "Python and PyTorch" in fit.bar.toolTip()
    assert "measured float32 matrix product rate" in fit.bar.toolTip()
    estimate = fit.cpu_estimate
    config = fit.config
    t = config.training
    assert estimate.flops_per_step == step_flops(config, fit.info, estimate.memory.mode)
    assert estimate.flops_per_step >= t.batch_size * t.seq_len * t.grad_accum * fit.info.num_parameters * 4
    assert estimate.seconds_per_step == pytest.approx(estimate.flops_per_step / (estimate.rate * CPU_EFFICIENCY))
    assert fit.fit_button.isHidden()


def test_a_gpu_brings_the_gpu_words_back(qtbot, page, small_model):
    page.hardware_panel.set_devices(([GpuInfo(0, "Some GPU", 24 * GIB, 0)], {}))
    fit = page.fit_indicator
    assert not fit.on_cpu() and not fit.target_combo.isHidden()
    load_model(qtbot, page, small_model)
    assert fit.verdict.text().startswith("Estimated peak ") and "of 24.0 GiB" in fit.verdict.text()


def test_the_cpu_rate_is_measured_once_and_the_ram_counts_the_runtime(small_model):
    from lorastudio.core.config import RunConfig
    from lorastudio.core.models.info import read_model_info
    rate = measure_matmul_rate()
    assert rate > 1e8 and measure_matmul_rate() == rate
    config = RunConfig.from_dict({"model": str(small_model), "device": "cpu", "quantization": "none",
                                  "data": {"path": "/d.jsonl"}})
    est = cpu_estimate(config, read_model_info(small_model))
    assert est.memory.term("runtime").bytes > 0 and est.ram == sum(t.bytes for t in est.memory.terms)
    assert est.seconds_per_step > 0
