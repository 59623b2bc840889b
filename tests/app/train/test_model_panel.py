"""The Model panel reads a model off the GUI thread and shows its facts, or an inline error."""
import shutil

from conftest import load_model

from lorastudio.core.models.info import read_model_info


def test_tiny_llama_shows_architecture_parameters_dtype_size_context(qtbot, page, tiny_llama):
    panel = page.model_panel
    load_model(qtbot, page, tiny_llama)
    assert panel.state == "ready" and not panel.error_label.isVisible()
    info = read_model_info(str(tiny_llama))
    shown = {k: v.text() for k, v in panel.values.items()}
    assert shown["architecture"] == "LlamaForCausalLM"
    assert shown["parameters"] == f"{info.num_parameters / 1e3:.1f} K"
    assert shown["dtype"] == info.dtype
    assert shown["context"] == "256 tokens"
    assert shown["chat"] == "no"
    assert shown["size"].endswith("KiB")
    assert panel.info_box.isVisible()


def test_a_folder_that_is_not_a_model_says_so_inline_and_blocks_start(qtbot, page, tmp_path):
    (tmp_path / "photos").mkdir()
    load_model(qtbot, page, tmp_path / "photos")
    panel = page.model_panel
    assert panel.state == "failed"
    assert panel.error_label.isVisible()
    assert "is not a model folder: it has no config.json" in panel.error_label.text()
    assert "Choose the folder that holds config.json" in panel.error_label.text()
    assert not panel.info_box.isVisible()
    assert not page.start_bar.start_button.isEnabled()
    assert page.start_bar.reason_label.text().startswith("Model:")


def test_a_hub_id_missing_from_the_cache_explains_how_to_get_it(qtbot, page):
    load_model(qtbot, page, "someone/not-downloaded")
    assert "not in the local Hugging Face cache" in page.model_panel.error_label.text()
    assert "hf download someone/not-downloaded" in page.model_panel.error_label.text()


def test_models_in_the_hf_cache_are_listed_with_size_and_load_by_id(qtbot, page, tiny_llama, isolated_cache):
    snap = isolated_cache / "models--acme--tiny" / "snapshots" / "abc123"
    shutil.copytree(tiny_llama, snap)
    (isolated_cache / "models--acme--tiny" / "refs").mkdir()
    (isolated_cache / "models--acme--tiny" / "refs" / "main").write_text("abc123")
    panel = page.model_panel
    panel.refresh_cache()
    qtbot.waitUntil(lambda: panel.cache_menu.actions() != [], timeout=5000)
    action = panel.cache_menu.actions()[0]
    assert action.text().startswith("acme/tiny") and "B" in action.text()     # "acme/tiny    0 B"
    action.trigger()
    qtbot.waitUntil(lambda: panel.state == "ready", timeout=10_000)
    assert panel.source() == "acme/tiny" and panel.info.path == snap


def test_a_stale_answer_does_not_overwrite_the_newer_choice(qtbot, page, tiny_llama, tiny_gpt2):
    panel = page.model_panel
    panel.load(str(tiny_llama))
    panel.load(str(tiny_gpt2))            # asked before the first answer arrived
    qtbot.waitUntil(lambda: panel.state == "ready", timeout=10_000)
    qtbot.wait(200)
    assert panel.values["architecture"].text() == "GPT2LMHeadModel"


def test_a_gguf_is_imported_once_by_a_job_then_read(qtbot, page, tmp_path, tiny_llama, runs_home, inline_jobs):
    from tests.helpers.gguf_tiny import write_tiny_gguf
    from lorastudio.core.journal import read_events
    from lorastudio.core.models.gguf_cache import cached_import
    path = tmp_path / "tiny-llama.F32.gguf"
    write_tiny_gguf(path, tiny_llama)
    load_model(qtbot, page, path)
    panel = page.model_panel
    assert panel.state == "ready", panel.error_label.text()
    assert panel.info.path == cached_import(path) and panel.values["architecture"].text() == "LlamaForCausalLM"
    (job,) = (runs_home / "models" / ".imports").iterdir()
    events = read_events(job / "events.jsonl")
    assert [e["name"] for e in events if e["type"] == "phase"][-1] == "done"
    assert events[-1]["status"] == "completed" and events[-1]["output"] == str(panel.info.path)


def test_a_broken_gguf_says_why(qtbot, page, tmp_path, tiny_llama, runs_home, inline_jobs):
    from tests.helpers.gguf_tiny import write_tiny_gguf
    good = tmp_path / "good.gguf"
    write_tiny_gguf(good, tiny_llama)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(good.read_bytes()[:5000])
    load_model(qtbot, page, cut)
    panel = page.model_panel
    assert panel.state == "failed" and "truncated" in panel.error_label.text()
    assert "Download the file again" in panel.error_label.text()
    assert not page.start_bar.start_button.isEnabled()
