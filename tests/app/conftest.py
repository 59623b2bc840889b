"""Fixtures for the window's tests: an isolated settings file, runs folder and HF cache."""
from __future__ import annotations

import pytest
from PySide6.QtCore import QSettings

from lorastudio.app.thread_pool import wait_for_background
from lorastudio.app.compat import pin_none

pin_none()          # see app/compat.py: PySide6 6.12.0 on Python 3.11 leaks references to None


def pytest_collection_modifyitems(items):
    # The offscreen platform plugin (the tests' "screen") warns that it cannot propagate size hints
    # when a top-level window is shown; that is a property of the test platform, not of our code.
    for item in items:
        if "tests/app" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.qt_log_ignore("does not support propagateSizeHints"))


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, so no test reads the machine's real one."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture(autouse=True)
def drain_background(qapp):
    """Let pool threads finish before widgets are deleted (a late answer to a dead widget)."""
    yield
    wait_for_background(10_000)
    qapp.processEvents()


@pytest.fixture
def settings(tmp_path) -> QSettings:
    return QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)


@pytest.fixture
def window(qtbot, settings, runs_home):
    from lorastudio.app.main_window import MainWindow
    win = MainWindow(settings=settings, runs_root=runs_home / "runs")
    qtbot.addWidget(win)
    win.resize(1280, 800)
    win.show()
    qtbot.waitUntil(lambda: win.train_page.hardware_panel.gpus is not None, timeout=5000)
    yield win
    win.train_page.process.detach()


@pytest.fixture
def page(window):
    return window.train_page


def load_model(qtbot, page, path) -> None:
    page.model_panel.load(str(path))
    qtbot.waitUntil(lambda: page.model_panel.state in ("ready", "failed"), timeout=10_000)


def load_data(qtbot, page, path) -> None:
    page.dataset_panel.load(str(path))
    qtbot.waitUntil(lambda: page.dataset_panel.preview is not None, timeout=10_000)


def set_cpu_merge(dialog, out) -> None:
    """The merge dialog set to write `out` in fp32 on the CPU (what the tiny runs merge as)."""
    dialog.out_edit.setText(str(out))
    dialog.dtype_combo.setCurrentIndex(dialog.dtype_combo.findData("fp32"))
    dialog.device_combo.setCurrentText("cpu")


def fill_cpu_run(qtbot, page, model, data, lr: str | None = None, **training) -> None:
    """The Train page set for a short fp32 run on the CPU: `model` and `data` loaded, the training
    widgets given (max_steps=, seq_len=, batch_size=, grad_accum=, warmup_steps=, save_every=)."""
    load_model(qtbot, page, model)
    load_data(qtbot, page, data)
    page.hardware_panel.set_values({"quantization": "none", "compute_dtype": "fp32", "device": "cpu"})
    w = page.training_panel.widgets
    for key, value in training.items():
        w[f"training.{key}"].setValue(value)
    if lr is not None:
        w["training.lr"].setText(lr)
