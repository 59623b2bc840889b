"""The Playground takes an image with the prompt (a file, or pasted from the clipboard) for a
vision-language run: base and adapter answer side by side through the real worker (inline), the
message carries the image's path, and the llama.cpp engine refuses it in the status line."""
from __future__ import annotations

import json

import pytest
from PySide6.QtCore import QMimeData
from PySide6.QtGui import QColor, QImage
from PySide6.QtWidgets import QApplication

from lorastudio.app.playground.playground_page import LLAMA_NO_IMAGES, PlaygroundPage
from lorastudio.core.runtime.inbox import INBOX_FILE
from tests.helpers.tiny_vlms import make_vlm, write_colour_data, write_image


@pytest.fixture(scope="module")
def vlm_runs(tmp_path_factory):
    from tests.helpers.tiny_models import train_tiny_run
    root = tmp_path_factory.mktemp("pg-vlm")
    model = make_vlm(root / "tiny-qwen2-vl", "qwen2_vl")
    data = write_colour_data(root / "data", 8)
    held = write_colour_data(root / "held", 4, "sharegpt")      # the held-out prompts show images too
    train_tiny_run(root / "runs" / "2026-01-01_1200_colours", model, data, quantization="none",
                   training__max_steps=3, training__save_every=0, training__seq_len=128, training__lr=1e-2,
                   data__validation_split=0.0, data__validation_path=str(held))
    return root / "runs"


@pytest.fixture(autouse=True)
def token_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LORASTUDIO_CACHE", str(tmp_path / "cache"))


def page_for(qtbot, runs):
    page = PlaygroundPage(runs, worker_idle_s=0)
    qtbot.addWidget(page)
    page.resize(1100, 700)
    page.show()
    page.prompt_edit.setPlainText("What colour is this?")
    page.settings.max_new_tokens.setValue(4)
    page.engine_combo.setCurrentIndex(page.engine_combo.findData("transformers"))
    qtbot.waitUntil(lambda: page.image_input.reads_images, timeout=5_000)
    return page


def attach(qtbot, page, path):
    page.image_input.set_path(str(path))
    qtbot.waitUntil(lambda: page.image_input.thumb.pixmap() is not None and not page.image_input.thumb.pixmap().isNull()
                    or bool(page.image_input.problem), timeout=5_000)


def test_an_image_goes_with_the_prompt_and_both_sides_answer(qtbot, vlm_runs, tmp_path, inline_jobs, monkeypatch):
    page = page_for(qtbot, vlm_runs)
    image = write_image(tmp_path / "leaf.png", "green", size=(60, 44))
    attach(qtbot, page, image)
    assert page.image_input.images() == [str(image)] and page.image_input.name.text() == "leaf.png"
    assert "transformers engine answers" in page.status.text()
    sent = []
    from lorastudio.app.playground import generation_worker
    real = generation_worker.request_generation
    monkeypatch.setattr(generation_worker, "request_generation",
                        lambda *a, **k: (sent.append(k.get("images")), real(*a, **k))[1])
    events = []
    page.worker.event.connect(events.append)
    with qtbot.waitSignal(page.generation_finished, timeout=120_000) as done:
        page.generate()
    assert done.args == ["completed"], page.status.text()
    assert sent == [[str(image)]]                                # the worker's message carries the path
    answers = {e["side"]: e["text"] for e in events if e["type"] == "answer"}
    assert set(answers) == {"base", "adapter"}
    assert page.base_pane.answer() == answers["base"] and page.adapter_pane.answer() == answers["adapter"]
    assert page.status.text() == "Done."


def test_the_inbox_message_names_the_image(tmp_path):
    from lorastudio.core.plans.generate import request_generation
    request_generation(tmp_path, 7, tmp_path / "run", [{"role": "user", "content": "hi"}], images=[tmp_path / "a.png"])
    message = json.loads((tmp_path / INBOX_FILE).read_text().splitlines()[0])
    assert message["images"] == [str(tmp_path / "a.png")]
    request_generation(tmp_path, 8, tmp_path / "run", [{"role": "user", "content": "hi"}])
    assert "images" not in json.loads((tmp_path / INBOX_FILE).read_text().splitlines()[1])


def test_llama_cpp_refuses_an_image_in_the_status_line(qtbot, vlm_runs, tmp_path):
    page = page_for(qtbot, vlm_runs)
    attach(qtbot, page, write_image(tmp_path / "sky.png", "blue"))
    page.engine_combo.setCurrentIndex(page.engine_combo.findData("llama.cpp"))
    page.generate()
    assert page.status.text() == LLAMA_NO_IMAGES and not page.worker.alive and not page.worker.busy
    assert page.generate_button.isEnabled()
    page.image_input.remove_button.click()                       # without the image it would be asked
    assert page.image_input.images() == [] and page.image_input.name.text() == "No image"


def test_a_pasted_image_is_saved_off_the_gui_thread_and_attached(qtbot, vlm_runs, tmp_path):
    page = page_for(qtbot, vlm_runs)
    image = QImage(120, 80, QImage.Format_RGB32)
    image.fill(QColor(220, 30, 30))
    QApplication.clipboard().setImage(image)
    page.image_input.paste_button.click()
    qtbot.waitUntil(lambda: bool(page.image_input.images()), timeout=5_000)
    saved = page.image_input.images()[0]
    assert saved.startswith(str(vlm_runs.parent / "playground" / "images")) and saved.endswith(".png")
    assert QImage(saved).size() == image.size()
    qtbot.waitUntil(lambda: page.image_input.thumb.pixmap() is not None and not page.image_input.thumb.pixmap().isNull())

    page.image_input.set_path(None)                             # Ctrl+V into the prompt box does the same
    mime = QMimeData()
    mime.setImageData(image)
    assert page.prompt_edit.canInsertFromMimeData(mime)
    page.prompt_edit.insertFromMimeData(mime)
    qtbot.waitUntil(lambda: bool(page.image_input.images()), timeout=5_000)
    assert page.prompt_edit.toPlainText() == "What colour is this?"     # the text stays as it was

    QApplication.clipboard().setText("just words")
    page.image_input.paste_button.click()
    assert page.status.text().startswith("The clipboard holds no image")


def test_an_unreadable_image_is_named_and_not_sent(qtbot, vlm_runs, tmp_path):
    page = page_for(qtbot, vlm_runs)
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    attach(qtbot, page, bad)
    assert page.image_input.images() == []
    assert "notes.png" in page.status.text() and "cannot be read as an image" in page.status.text()
    assert "choose a PNG, JPEG or WebP file" in page.status.text()


def test_a_held_out_prompt_brings_its_image_and_is_answered(qtbot, vlm_runs, inline_jobs):
    page = page_for(qtbot, vlm_runs)
    assert page.prompt_list.count() == 4
    assert page.prompts[0]["images"] == [str(vlm_runs.parent / "held" / "images" / "000-red.png")]
    page.use_prompt(page.prompt_list.item(0))
    assert page.image_input.images() == page.prompts[0]["images"] and page.reference.text() == "Expected: It is red."
    qtbot.waitUntil(lambda: not page.image_input.thumb.pixmap().isNull(), timeout=5_000)
    with qtbot.waitSignal(page.generation_finished, timeout=120_000) as done:
        page.generate()
    assert done.args == ["completed"], page.status.text()


def test_a_text_only_run_shows_no_image_box(qtbot, tmp_path, tiny_chat_llama):
    from tests.helpers.tiny_models import train_tiny_run
    data = tmp_path / "text.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                                     {"role": "assistant", "content": "yo"}]}) + "\n"
                            for _ in range(8)))
    train_tiny_run(tmp_path / "runs" / "2026-01-01_1200_text", tiny_chat_llama, data, quantization="none",
                   training__max_steps=2, training__save_every=0, data__validation_split=0.0)
    page = PlaygroundPage(tmp_path / "runs")
    qtbot.addWidget(page)
    page.show()
    from lorastudio.app.thread_pool import wait_for_background
    wait_for_background(5_000)
    qtbot.wait(50)
    assert page.image_input.isHidden() and not page.image_input.reads_images
    mime = QMimeData()
    mime.setImageData(QImage(10, 10, QImage.Format_RGB32))
    page.prompt_edit.insertFromMimeData(mime)
    assert page.status.text() == "This run's model reads text only: it cannot be shown an image."
    assert page.image_input.images() == []
