"""The Train page's "will it fit?": the verdict and bar beside Start follow the form, consumer
cards are what-if targets without a GPU, "Make it fit" puts settings that fit into the form, and
Start warns first when the estimate exceeds the GPU that is really here."""
import time

import pytest

from lorastudio.core.devices import GpuInfo
from tests.app.conftest import load_model
from tests.helpers.model_shapes import header_only_model

GIB = 1 << 30


@pytest.fixture
def llama_8b(tmp_path):
    return header_only_model(tmp_path / "llama-8b", "llama-8b")


def quantize(page, quantization="4bit"):
    page.hardware_panel.set_values({**page.hardware_panel.values(), "quantization": quantization})


def set_training(page, **values):
    for key, value in values.items():
        page.training_panel.widgets[f"training.{key}"].setValue(value)


def test_the_verdict_follows_the_form_and_the_card(qtbot, page, llama_8b):
    fit = page.fit_indicator
    assert "choose a model" in fit.verdict.text() and not fit.fit_button.isEnabled()
    load_model(qtbot, page, llama_8b)
    quantize(page)
    set_training(page, batch_size=1, grad_accum=8, seq_len=1024)
    fit.target_combo.setCurrentIndex(fit.target_combo.findText("24 GiB card"))
    assert fit.verdict.text().startswith("Estimated peak ") and fit.verdict.text().endswith("of 24.0 GiB — fits")
    small = fit.estimate.peak
    set_training(page, batch_size=16, grad_accum=1, seq_len=4096)         # the form changed: so does the verdict
    assert fit.estimate.peak > small and fit.verdict.text().endswith("— does not fit")
    assert fit.fit_button.isEnabled()
    assert [t for t, _b in fit.bar.terms][:4] == ["weights", "lora", "activations", "loss"]
    assert "Base weights (4-bit NF4)" in fit.bar.toolTip()
    fit.target_combo.setCurrentIndex(fit.target_combo.findText("8 GiB card"))
    assert "of 8.0 GiB — does not fit" in fit.verdict.text()


def test_make_it_fit_applies_settings_that_fit_to_the_form(qtbot, page, llama_8b):
    fit = page.fit_indicator
    load_model(qtbot, page, llama_8b)
    quantize(page)
    set_training(page, batch_size=16, grad_accum=1, seq_len=2048)
    fit.target_combo.setCurrentIndex(fit.target_combo.findText("16 GiB card"))
    assert not fit.fits()
    with qtbot.waitSignal(fit.apply_requested, timeout=10_000) as applied:
        fit.fit_button.click()
    assert applied.args[0]["training.batch_size"] < 16
    qtbot.waitUntil(fit.fits, timeout=5000)
    w = page.training_panel.widgets
    assert w["training.batch_size"].value() * w["training.grad_accum"].value() == 16   # the effective batch kept
    assert fit.verdict.text().endswith("of 16.0 GiB — fits") and not fit.fit_button.isEnabled()


def test_start_warns_when_the_real_gpu_is_too_small(qtbot, page, llama_8b, monkeypatch, tmp_path):
    from lorastudio.app.train import train_page
    asked = []
    monkeypatch.setattr(train_page, "confirm_start", lambda parent, ind: asked.append(ind.verdict.text()) or "cancel")
    page.hardware_panel.set_devices(([GpuInfo(0, "Small GPU", 6 * GIB, 0)], {}))     # as if NVML found one
    assert page.fit_indicator.target_combo.currentText() == "cuda:0 — Small GPU (6.0 GiB)"
    load_model(qtbot, page, llama_8b)
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "hello"}\n' * 8)
    page.dataset_panel.load(str(data))
    qtbot.waitUntil(lambda: page.dataset_panel.preview is not None, timeout=10_000)
    assert page.hardware_panel.values()["device"] == "cuda:0"
    set_training(page, batch_size=8, grad_accum=1, seq_len=2048)
    assert page.fit_indicator.target().detected and page.fit_indicator.will_not_fit_on_this_gpu()
    page.start()
    assert asked and "of 6.0 GiB — does not fit" in asked[0]
    assert not page.running and not page._checking                      # cancelled: nothing started


def test_an_update_is_quick(qtbot, page, llama_8b):
    """Not a timing test (those live in tests/bench): what depends only on the model is computed
    once, so an update is a little arithmetic. The time is printed for the report."""
    load_model(qtbot, page, llama_8b)
    quantize(page)
    fit = page.fit_indicator
    began = time.perf_counter()
    for _ in range(20):
        fit.refresh()
    print(f"\nfit indicator update (8B shape, auto mode): {(time.perf_counter() - began) / 20 * 1000:.1f} ms")
    from lorastudio.core.fit import memory_model
    assert any(key[0] == "weights" for key in memory_model._MEMO)       # the headers' sums are reused
