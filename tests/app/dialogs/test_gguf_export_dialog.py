"""The Export for Ollama / llama.cpp dialog on a real tiny run: sizes per type, the export run
inline (`inline_jobs`), the fidelity result; refusals shown in words, nothing written."""
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from tests.helpers.tiny_models import train_tiny_run
from tests.helpers.training import CHAT, jsonl

from lorastudio.app.dialogs.export_gguf_dialog import GgufExportDialog


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_chat_llama):
    root = tmp_path_factory.mktemp("runs")
    data = jsonl(root / "chat.jsonl", [CHAT] * 16)
    return train_tiny_run(root / "2026-11-24_0600_tiny-chat", tiny_chat_llama, data, quantization="none",
                          training__lr=2e-2)


def type_items(dialog):
    return [dialog.type_combo.itemText(i) for i in range(dialog.type_combo.count())]


def test_dialog_lists_sizes_exports_and_shows_fidelity(qtbot, run_dir, tmp_path, inline_jobs):
    dialog = GgufExportDialog(run_dir, run_dir.parent)
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitUntil(lambda: dialog.choices is not None, timeout=30_000)
    items = type_items(dialog)
    assert [dialog.type_combo.itemData(i) for i in range(len(items))] == ["f32", "f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q5_0",
                                                                          "q4_k_m", "q4_0"]
    assert all(" — about " in item for item in items) and dialog.type_combo.currentData() == "q8_0"
    assert dialog.out_edit.text().endswith(f"{run_dir.name}-q8_0.gguf")
    dialog.adapter_only.setChecked(True)
    assert [dialog.type_combo.itemData(i) for i in range(dialog.type_combo.count())] == ["f16", "bf16", "f32"]
    assert dialog.out_edit.text().endswith(f"{run_dir.name}-lora-f16.gguf")
    dialog.adapter_only.setChecked(False)
    out = tmp_path / "tiny-q8_0.gguf"
    dialog.out_edit.setText(str(out))
    qtbot.mouseClick(dialog.export_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: dialog.status is not None, timeout=180_000)
    assert dialog.status == "completed", dialog.result_label.text()
    text = dialog.result_label.text()
    assert f"Wrote {out}" in text and "Checked in llama.cpp on 4 prompts" in text, text
    assert "Within what rounding to q8_0 explains" in text and "the same on 4 of 4" in text
    assert "ollama create tiny-q8_0 -f" in text
    assert out.is_file() and (tmp_path / "tiny-q8_0.Modelfile").is_file() and dialog.progress.value() == 100
    assert not dialog.open_button.isHidden() and dialog.export_button.isEnabled()
    dialog.grab().save("/tmp/gguf_export_dialog.png")


def test_an_existing_file_is_asked_about_and_kept(qtbot, run_dir, tmp_path, monkeypatch):
    out = tmp_path / "taken.gguf"
    out.write_bytes(b"mine")
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a[2]) or QMessageBox.No)
    dialog = GgufExportDialog(run_dir, run_dir.parent)
    qtbot.addWidget(dialog)
    dialog.out_edit.setText(str(out))
    dialog.start_export()
    qtbot.waitUntil(lambda: bool(asked) and "Nothing was written" in dialog.result_label.text(), timeout=30_000)
    assert "already exists" in asked[0] and out.read_bytes() == b"mine" and not dialog.running


def test_an_unsupported_model_is_explained_and_export_disabled(qtbot, tmp_path, tiny_gpt2):
    data = jsonl(tmp_path / "d.jsonl", [{"text": "the cat sat on the mat"}] * 16)
    run = train_tiny_run(tmp_path / "runs" / "gpt2-run", tiny_gpt2, data, quantization="none",
                         lora__targets=["c_attn"], training__max_steps=2)
    dialog = GgufExportDialog(run, run.parent)
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: dialog.choices is not None, timeout=30_000)
    assert "does not support 'gpt2' models" in dialog.note.text() and not dialog.export_button.isEnabled()


def test_the_train_banner_offers_the_gguf_export_after_a_run(qtbot, run_dir):
    from lorastudio.app.dashboard.run_state import RunState
    from lorastudio.app.dashboard.status_banner import StatusBanner
    from lorastudio.core.journal import read_events
    banner = StatusBanner()
    qtbot.addWidget(banner)
    banner.show()
    assert not banner.gguf_button.isVisible()
    state = RunState()
    state.run_dir = str(run_dir)
    for ev in read_events(run_dir / "events.jsonl"):
        state.apply(ev)
    banner.update_from(state)
    assert banner.gguf_button.isVisible() and banner.gguf_button.text() == "Export for Ollama / llama.cpp…"


def test_the_runs_page_opens_the_dialog_with_the_run_chosen(qtbot, window, runs_home):
    from tests.helpers.runs_fixtures import make_run
    run = make_run(runs_home / "runs", "to-gguf", "completed", 20, checkpoints=(20,))
    window.show_page(window.runs_page)
    page = window.runs_page
    qtbot.waitUntil(lambda: page.model.rowCount() == 1, timeout=10_000)
    page.select(run)
    assert page.buttons["gguf"].isEnabled()
    page.buttons["gguf"].click()
    (dialog,) = window.findChildren(GgufExportDialog)
    assert dialog.isVisible() and dialog.picker.run_dir == run
    qtbot.waitUntil(lambda: dialog.choices is not None, timeout=10_000)
    assert "cannot be exported" in dialog.note.text() and not dialog.export_button.isEnabled()  # a stand-in run
    assert not (run / "gguf-exports").exists()
    dialog.close()
