"""Before a run the banner says what comes next: which of model and dataset is still missing, what
blocks Start, or that Start is one key away — never "choose a model" once one is chosen."""
import os

from conftest import load_data, load_model

from lorastudio.app.dashboard.status_banner import FIRST_STEP, SET_UP, TITLES, next_step

READY = (TITLES["idle"], "Model and dataset chosen: press Start (Ctrl+Return).")


def test_next_step_for_each_partial_state():
    assert next_step("Choose a model.", "Choose a dataset file.") == (SET_UP, FIRST_STEP)
    assert next_step(None, "Choose a dataset file.") == \
        (SET_UP, "Model ready — now choose a dataset (Ctrl+Shift+O), then press Start.")
    assert next_step("Choose a model.", None) == \
        (SET_UP, "Dataset ready — now choose a model (Ctrl+O), then press Start.")
    assert next_step("Reading the model…", "Choose a dataset file.") == \
        (SET_UP, "Reading the model… Then choose a dataset (Ctrl+Shift+O).")
    assert next_step("Model: no config.json in /x", None) == (SET_UP, "Model: no config.json in /x")
    assert next_step(None, "Dataset: line 3 is not JSON") == (SET_UP, "Dataset: line 3 is not JSON")
    assert next_step(None, None, "Rank: 0 is not allowed — a whole number ≥ 1") == \
        (SET_UP, "Model and dataset ready — one setting to fix before Start: Rank: 0 is not allowed — a whole "
                 "number ≥ 1")
    assert next_step(None, None, "", checking=True) == (TITLES["idle"], "Checking the model and data…")
    assert next_step(None, None) == READY


def shot(widget, name):
    if os.environ.get("LORASTUDIO_SHOTS"):
        widget.grab().save(os.path.join(os.environ["LORASTUDIO_SHOTS"], name))


def test_the_train_page_banner_follows_the_form(qtbot, page, tiny_llama, text_jsonl):
    banner = page.dashboard.banner
    assert (banner.title.text(), banner.message.text()) == (SET_UP, FIRST_STEP)
    shot(page.window(), "banner-1-empty.png")
    load_model(qtbot, page, tiny_llama)
    assert banner.message.text() == "Model ready — now choose a dataset (Ctrl+Shift+O), then press Start."
    shot(page.window(), "banner-2-model.png")
    load_data(qtbot, page, text_jsonl)
    page.hardware_panel.set_values({"quantization": "none", "compute_dtype": "auto", "device": "cpu"})
    assert (banner.title.text(), banner.message.text()) == READY
    assert "Choose a model" not in banner.message.text()
    shot(page.window(), "banner-3-ready.png")
    page.training_panel.widgets["training.seq_len"].setValue(0)
    assert banner.title.text() == SET_UP
    assert banner.message.text().startswith("Model and dataset ready — one setting to fix before Start: ")
    shot(page.window(), "banner-4-setting.png")
