"""The Train form is a lossless view of a RunConfig: a config with every key at a non-default value
goes into the form (load_config, Clone config on the Runs page, a saved form) and comes back the
same; the widgets change only their own keys. The Memory choice is training.memory_mode, and
"Make it fit" puts its memory mode into it as it is."""
import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import load_model
from PySide6.QtCore import Qt
from tests.helpers.config_keys import changed_configs
from tests.helpers.model_shapes import header_only_model

from lorastudio.app.train.train_form import check_form
from lorastudio.core.config import MEMORY_MODE_HELP, MEMORY_MODES, RunConfig, TrainingSection, field_help

V01 = Path(__file__).resolve().parents[2] / "data" / "run_v0_1"


@pytest.fixture
def pairs(tmp_path) -> Path:
    """Prompt/completion rows under the column names the every-key config maps."""
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
                            for i in range(24)))
    return path


@pytest.fixture
def configs(tiny_llama, pairs, tmp_path) -> list[RunConfig]:
    return changed_configs(model=str(tiny_llama), data__path=str(pairs),
                           data__validation_path=str(tmp_path / "held-out.jsonl"))


def read_back(page) -> RunConfig:
    """The config the form stands for, built the way Start builds it (check_form), the widgets'
    own complaints (a missing validation file, …) aside."""
    values = page.values()
    values["problems"] = []
    check = check_form(values)
    assert check.config is not None, check.problems
    return check.config


def wait_loaded(qtbot, page) -> None:
    qtbot.waitUntil(lambda: page.model_panel.state in ("ready", "failed")
                    and page.dataset_panel.preview is not None, timeout=10_000)


def test_every_key_goes_into_the_form_and_comes_back_the_same(qtbot, page, configs):
    for cfg in configs:
        page.load_config(cfg)
        assert read_back(page) == cfg                   # at once, before the model and data are read
        wait_loaded(qtbot, page)
        assert page.model_panel.state == "ready"
        assert read_back(page) == cfg                   # and after, with the targets and columns shown
        assert page.training_panel.widgets["training.memory_mode"].currentData() == cfg.training.memory_mode
        assert page.lora_panel.targets.selection() == ["q_proj", "k_proj", "o_proj"]


def test_a_widget_changes_its_own_key_and_nothing_else(qtbot, page, configs):
    cfg = configs[0]
    page.load_config(cfg)
    wait_loaded(qtbot, page)
    w = page.training_panel.widgets
    w["training.batch_size"].setValue(9)
    w["training.memory_mode"].setCurrentIndex(w["training.memory_mode"].findData("checkpoint"))
    w["training.epochs"].setValue(4.5)
    expected = cfg.to_dict()
    expected["training"].update(batch_size=9, memory_mode="checkpoint", epochs=4.5)
    assert read_back(page).to_dict() == expected


def a_run_with(run_dir: Path, cfg: RunConfig) -> Path:
    """A finished run folder (0.1's real one) whose config.yaml is `cfg`."""
    shutil.copytree(V01, run_dir)
    cfg.save(run_dir / "config.yaml")
    return run_dir


def test_clone_config_on_the_runs_page_keeps_every_key(qtbot, window, runs_home, configs):
    runs = window.runs_page
    dirs = [a_run_with(runs_home / "runs" / f"every-key-{i}", cfg) for i, cfg in enumerate(configs)]
    window.show_page(runs)
    qtbot.waitUntil(lambda: runs.model.rowCount() == len(configs), timeout=10_000)
    train = window.train_page
    for run_dir, cfg in zip(dirs, configs):
        runs.select(run_dir)
        runs.buttons["clone"].click()
        assert window.pages.currentWidget() is train
        wait_loaded(qtbot, train)
        assert read_back(train) == RunConfig.load(run_dir / "config.yaml") == cfg
        window.show_page(runs)


def test_a_device_this_machine_lacks_becomes_the_one_the_form_shows(qtbot, page, configs):
    raw = configs[0].to_dict()
    raw["device"] = "cuda:7"
    page.load_config(RunConfig.from_dict(raw))
    shown = page.hardware_panel.values()["device"]
    assert shown != "cuda:7" and read_back(page).device == shown
    assert read_back(page).to_dict() == {**raw, "device": shown}


def test_a_saved_form_keeps_every_key_over_a_restart(qtbot, window, settings, runs_home, configs):
    from lorastudio.app.main_window import MainWindow
    cfg = configs[1]                                 # the one with distributed.processes 3
    window.train_page.load_config(cfg)
    wait_loaded(qtbot, window.train_page)
    window.close()
    again = MainWindow(settings=settings, runs_root=runs_home / "runs")
    qtbot.addWidget(again)
    wait_loaded(qtbot, again.train_page)
    assert read_back(again.train_page) == cfg
    again.train_page.process.detach()


@pytest.mark.parametrize("older,memory,words", [
    (True, "auto", "training.gradient_checkpointing: true is an older key and changes nothing"),
    (False, "none", "training.gradient_checkpointing: false is an older key; it was read as "
                    "training.memory_mode: none"),
])
def test_an_older_run_clones_with_its_memory_key_mapped_and_a_note(qtbot, window, runs_home, older, memory, words):
    run_dir = runs_home / "runs" / V01.name
    shutil.copytree(V01, run_dir)                    # 0.1's config: gradient_checkpointing true, no memory_mode
    if not older:                                    # as 0.2 wrote it with the box unticked
        raw = yaml.safe_load((run_dir / "config.yaml").read_text())
        raw["training"].update(gradient_checkpointing=False, memory_mode="auto", fused_lora=True, oom_retry=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    runs = window.runs_page
    window.show_page(runs)
    qtbot.waitUntil(lambda: runs.model.rowCount() == 1, timeout=10_000)
    runs.select(run_dir)
    runs.buttons["clone"].click()
    train = window.train_page
    assert train.training_panel.widgets["training.memory_mode"].currentData() == memory
    assert read_back(train).training.memory_mode == memory
    assert words in window.statusBar().currentMessage()
    assert "gradient_checkpointing" not in json.dumps(train.form_state())


def test_a_form_saved_by_0_2_restores_with_its_checkbox_as_the_memory_choice(page):
    combo = page.training_panel.widgets["training.memory_mode"]
    notes = page.restore_form({"training": {"max_steps": 60, "gradient_checkpointing": False}})
    assert combo.currentData() == "none" and page.values()["training"]["memory_mode"] == "none"
    assert len(notes) == 1 and "read as training.memory_mode: none" in notes[0]
    assert "gradient_checkpointing" not in page.form_state()["training"]
    page.restore_form({"training": {"gradient_checkpointing": "yes", "memory_mode": "lean"}})   # unusable: dropped
    assert combo.currentData() == "lean"
    page.restore_form(["not", "a", "form"])                                                      # the defaults
    assert combo.currentData() == "auto" and page.values()["training"]["weight_decay"] == 0.0


def test_the_memory_choice_is_training_memory_mode(qtbot, page, tiny_llama, text_jsonl):
    combo = page.training_panel.widgets["training.memory_mode"]
    assert [combo.itemData(i) for i in range(combo.count())] == list(MEMORY_MODES) == ["auto", "none", "checkpoint", "lean"]
    assert [combo.itemText(i).split(" — ")[0] for i in range(combo.count())] == list(MEMORY_MODES)
    assert combo.toolTip() == field_help(TrainingSection, "memory_mode")
    assert combo.itemData(3, Qt.ToolTipRole) == "lean: " + MEMORY_MODE_HELP["lean"]
    assert combo.currentData() == "auto" and page.values()["training"]["memory_mode"] == "auto"
    load_model(qtbot, page, tiny_llama)
    page.dataset_panel.load(str(text_jsonl))
    qtbot.waitUntil(lambda: page.check.ok, timeout=10_000)
    combo.setCurrentIndex(combo.findData("checkpoint"))
    assert page.check.config.training.memory_mode == "checkpoint"
    page.training_panel.set_values({"training": {"memory_mode": "none"}})
    assert combo.currentData() == "none" and page.check.config.training.memory_mode == "none"
    page.training_panel.set_values({"training": {"memory_mode": "fast"}})       # not a mode: left as it was
    assert combo.currentData() == "none"


def test_apply_fit_puts_the_advice_into_the_form_as_it_is(qtbot, page):
    page.apply_fit({"training.batch_size": 2, "training.grad_accum": 8, "training.memory_mode": "lean",
                    "quantization": "4bit"})
    w = page.training_panel.widgets
    assert w["training.memory_mode"].currentData() == "lean"
    assert (w["training.batch_size"].value(), w["training.grad_accum"].value()) == (2, 8)
    values = page.values()
    assert values["training"]["memory_mode"] == "lean" and values["quantization"] == "4bit"


def test_make_it_fit_puts_lean_into_the_memory_choice(qtbot, page, tmp_path):
    """On an 8 GiB card a 7B Mistral in 4-bit at seq_len 4096 fits only lean (at a micro-batch of 1):
    "Make it fit" says so, and the form's Memory choice then says lean — not a checkbox's guess."""
    fit = page.fit_indicator
    load_model(qtbot, page, header_only_model(tmp_path / "mistral-7b", "mistral-7b"))
    page.hardware_panel.set_values({**page.hardware_panel.values(), "quantization": "4bit"})
    w = page.training_panel.widgets
    w["training.memory_mode"].setCurrentIndex(w["training.memory_mode"].findData("none"))
    for key, value in (("batch_size", 2), ("grad_accum", 1), ("seq_len", 4096)):
        w[f"training.{key}"].setValue(value)
    fit.target_combo.setCurrentIndex(fit.target_combo.findText("8 GiB card"))
    assert not fit.fits()
    with qtbot.waitSignal(fit.apply_requested, timeout=10_000) as applied:
        fit.fit_button.click()
    assert applied.args[0]["training.memory_mode"] == "lean"
    qtbot.waitUntil(fit.fits, timeout=5000)
    assert w["training.memory_mode"].currentData() == "lean"
    training = page.values()["training"]
    assert (training["memory_mode"], training["batch_size"], training["grad_accum"], training["seq_len"]) == \
        ("lean", 1, 2, 4096)
