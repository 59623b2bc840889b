"""The Dataset panel lists the datasets of the local Hugging Face caches the way the model panel
lists cached models, and choosing one previews it (hf:NAME)."""
import json

import pytest

from lorastudio.app.dataset.dataset_panel import DatasetPanel


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hfdatasets"))
    repo = tmp_path / "hub" / "datasets--acme--qa"
    snap = repo / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "train.jsonl").write_text("".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) + "\n"
                                             for i in range(3)))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc")
    return tmp_path / "hub"


def test_cached_datasets_are_offered_and_previewed(qtbot, hub, tmp_path):
    panel = DatasetPanel()
    qtbot.addWidget(panel)
    assert not panel.cache_button.isEnabled()            # listed once the panel is on screen
    panel.show()
    qtbot.waitUntil(lambda: panel.cache_button.isEnabled(), timeout=10_000)
    actions = panel.cache_menu.actions()
    assert [a.text().split()[0] for a in actions] == ["acme/qa"]
    actions[0].trigger()
    assert panel.path() == "hf:acme/qa"
    qtbot.waitUntil(lambda: panel.preview is not None, timeout=10_000)
    assert panel.preview.ok and panel.preview.columns == ["prompt", "completion"]
    assert panel.preview.rows[0].where == "train.jsonl, line 1"
    panel.resize(760, 520)
    qtbot.wait(50)
    panel.grab().save(str(tmp_path / "cached-datasets.png"))


def test_no_cached_dataset_leaves_the_button_off_and_says_where(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "empty-ds"))
    panel = DatasetPanel()
    qtbot.addWidget(panel)
    panel.show()
    qtbot.waitUntil(lambda: "No datasets" in panel.cache_button.toolTip(), timeout=10_000)
    assert not panel.cache_button.isEnabled() and "empty-hub" in panel.cache_button.toolTip()


def test_packing_is_a_dataset_option_on_by_default(qtbot, tmp_path):
    panel = DatasetPanel()
    qtbot.addWidget(panel)
    box = panel.options.packing_box
    assert box.isChecked() and panel.options.values()["packing"] is True
    qtbot.keyClick(box, " ")                          # the keyboard toggles it
    assert panel.options.values()["packing"] is False
    panel.options.set_values({"packing": True})
    assert box.isChecked()
