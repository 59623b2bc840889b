"""Issue 33, point 8: without a GPU the fit area speaks of this computer's RAM (the memory model's
terms on the CPU plus the worker's runtime, no CUDA context), hides the card selector and "Make it
fit", and estimates the time a step takes from the model's size and this CPU's rate: PyTorch's,
measured once per machine in a child process, then what finished CPU runs on it reached."""
import pytest

from lorastudio.core.devices import GpuInfo
from lorastudio.core.fit.cpu import cpu_estimate, known_rate, learn_cpu_rate, measure_rate, rate_path, step_flops
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
    qtbot.waitUntil(lambda: "a step on this CPU" in fit.verdict.text(), timeout=60_000)     # the probe: a child process
    assert "up to about" in fit.verdict.text() or "under a second" in fit.verdict.text()
    text = fit.verdict.text()
    assert text.startswith("Estimated RAM ") and "GiB of " in text and ("— fits" in text or "— does not fit" in text)
    assert "card" not in text and "peak" not in text
    keys = [k for k, _b in fit.bar.terms]
    assert "context" not in keys and "slack" not in keys and keys[-1] == "runtime"
    assert "CUDA" not in fit.bar.toolTip() and "Python and PyTorch" in fit.bar.toolTip()
    assert "GFLOP/s, measured by PyTorch on this machine" in fit.bar.toolTip()
    estimate = fit.cpu_estimate
    config = fit.config
    t = config.training
    assert estimate.flops_per_step == step_flops(config, fit.info, estimate.memory.mode)
    assert estimate.flops_per_step >= t.batch_size * t.seq_len * t.grad_accum * fit.info.num_parameters * 4
    assert estimate.seconds_per_step == pytest.approx(estimate.flops_per_step / estimate.rate)
    assert estimate.rate == known_rate()[0]                     # kept for the next start
    assert fit.fit_button.isHidden()


def test_a_gpu_brings_the_gpu_words_back(qtbot, page, small_model):
    page.hardware_panel.set_devices(([GpuInfo(0, "Some GPU", 24 * GIB, 0)], {}))
    fit = page.fit_indicator
    assert not fit.on_cpu() and not fit.target_combo.isHidden()
    load_model(qtbot, page, small_model)
    assert fit.verdict.text().startswith("Estimated peak ") and "of 24.0 GiB" in fit.verdict.text()


def test_the_cpu_rate_is_probed_then_learnt_from_runs_and_the_ram_counts_the_runtime(small_model, runs_home):
    from lorastudio.core.config import RunConfig
    from lorastudio.core.models.info import read_model_info
    assert known_rate() is None and not rate_path().exists()
    rate = measure_rate()
    assert rate > 1e9 and rate_path().parent == runs_home           # PyTorch does more than a GFLOP/s anywhere
    assert known_rate() == (pytest.approx(rate, rel=1e-6), "measured by PyTorch on this machine")
    config = RunConfig.from_dict({"model": str(small_model), "device": "cpu", "quantization": "none",
                                  "data": {"path": "/d.jsonl"}})
    info = read_model_info(small_model)
    est = cpu_estimate(config, info)
    assert est.memory.term("runtime").bytes > 0 and est.ram == sum(t.bytes for t in est.memory.terms)
    assert est.seconds_per_step == pytest.approx(est.flops_per_step / rate, rel=1e-6)
    # a finished CPU run: 100 tokens/s (steps 1-2 are warm-up and not counted) × parameters × 4
    steps = [{"type": "step", "step": n, "tokens_per_s": speed} for n, speed in ((1, 5.0), (2, 7.0), (3, 100.0),
                                                                               (4, 100.0), (5, 300.0))]
    entry = learn_cpu_rate(steps, info, "none")
    assert entry["runs"] == 1 and entry["flops_per_s"] == pytest.approx(100.0 * info.num_parameters * 4, rel=1e-6)
    learnt = known_rate()
    assert learnt[0] == entry["flops_per_s"] and learnt[1] == "learnt from 1 CPU run on this machine"
    assert cpu_estimate(config, info).rate == learnt[0]
    assert learn_cpu_rate(steps[:2], info, "none") is None          # warm-up steps alone teach nothing
    rate_path().write_text("{not json")
    assert known_rate() is None                                     # a damaged file: measured again


def test_the_datas_first_rows_make_the_time_an_estimate_instead_of_a_bound(qtbot, page, small_model):
    """With a data file chosen, a step is its examples at the length the first rows suggest (the demo:
    about 77 tokens an example by characters, 70 by its tokenizer), not the full token budget."""
    from lorastudio.core.data.preview import read_preview
    from lorastudio.core.fit.cpu import example_tokens
    from lorastudio.core.models.demo import sample_train
    from tests.app.conftest import load_data
    rows = [row.value for row in read_preview(sample_train()).rows]
    assert 60 <= example_tokens(rows) <= 85
    assert example_tokens([]) is None and example_tokens([{"text": ""}]) is None
    assert example_tokens([{"text": "x" * 350}]) == 100
    fit = page.fit_indicator
    load_model(qtbot, page, small_model)
    qtbot.waitUntil(lambda: "a step on this CPU" in fit.verdict.text(), timeout=60_000)
    assert "up to about" in fit.verdict.text() and "token budget" in fit.bar.toolTip()
    bound = fit.cpu_estimate.seconds_per_step
    load_data(qtbot, page, sample_train())
    qtbot.waitUntil(lambda: fit.per_example is not None, timeout=10_000)
    t = fit.config.training
    assert fit.per_example == example_tokens(rows)
    assert fit.cpu_estimate.seconds_per_step == pytest.approx(bound * min(fit.per_example, t.seq_len) / t.seq_len)
    assert "up to" not in fit.verdict.text() and "a step on this CPU" in fit.verdict.text()
    assert f"{t.batch_size * t.grad_accum} examples a step at about" in fit.bar.toolTip()
