"""The Serve panel on two real tiny runs: Start serves them (a real serve job, llama.cpp), the panel
shows the URL, the models and the traffic, its copied curl line and openai snippet answer as shown,
Stop frees the port; a network address without a key is refused before anything starts. The Runs
page opens it for the selected runs."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication

from tests.helpers.runs_fixtures import make_run
from tests.helpers.tiny_models import add_chat_template, make_tiny_model, train_tiny_run
from tests.helpers.training import jsonl

from lorastudio.app.dialogs.serve_dialog import ServeDialog
from lorastudio.core.runtime.launcher import free_port

SHOTS = "/tmp"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-dialog")
    model = add_chat_template(make_tiny_model(root / "tiny-chat-llama"))
    out = []
    for name, answer in (("support-bot", "on the mat"), ("sql-helper", "looked at the door")):
        data = jsonl(root / f"{name}.jsonl", [{"messages": [{"role": "user", "content": "the cat sat"},
                                                            {"role": "assistant", "content": answer}]}] * 16)
        out.append(train_tiny_run(root / "runs" / name, model, data, name=name, quantization="none",
                                  training__lr=1e-2, training__max_steps=60, training__save_every=100,
                                  lora__targets=["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"]))
    return out


@pytest.mark.slow
def test_start_shows_url_models_examples_that_work_traffic_and_stop_frees_the_port(qtbot, runs, runs_home):
    dialog = ServeDialog(runs, runs[0].parent)
    qtbot.addWidget(dialog)
    dialog.show()
    port = free_port()
    dialog.port_spin.setValue(port)
    dialog.key_edit.setText("panel-key")
    dialog.grab().save(f"{SHOTS}/serve_dialog_idle.png")
    qtbot.mouseClick(dialog.start_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: dialog.serving is not None or dialog.status is not None, timeout=180_000)
    assert dialog.serving is not None, dialog.result_label.text()
    url = f"http://127.0.0.1:{port}/v1"
    assert dialog.url_edit.text() == url and dialog.start_button.text() == "Stop"
    table = dialog.models_table
    assert [table.item(r, 0).text() for r in range(table.rowCount())] == ["tiny-chat-llama", "support-bot", "sql-helper"]
    assert table.item(0, 1).text() == "the base model alone"
    assert table.item(2, 1).text() == "base + the adapter of sql-helper"
    assert dialog.example_combo.currentText() == "support-bot"
    dialog.example_combo.setCurrentText("sql-helper")
    assert "sql-helper" in dialog.example_edit.toPlainText() and "panel-key" in dialog.example_edit.toPlainText()
    dialog.copy_python.click()
    snippet = QGuiApplication.clipboard().text()
    assert snippet.startswith("from openai import OpenAI") and '"sql-helper"' in snippet
    out = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip(), out.stderr
    if shutil.which("curl"):
        dialog.copy_curl.click()
        line = QGuiApplication.clipboard().text()
        assert line.startswith(f"curl -s {url}/chat/completions")
        out = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=60)
        assert json.loads(out.stdout)["model"] and json.loads(out.stdout)["choices"]
    qtbot.waitUntil(lambda: dialog.models_table.item(2, 2).text() == ("2" if shutil.which("curl") else "1"),
                    timeout=15_000)
    assert "requests served" in dialog.traffic_label.text() and "tokens" in dialog.traffic_label.text()
    dialog.grab().save(f"{SHOTS}/serve_dialog_serving.png")
    qtbot.mouseClick(dialog.start_button, Qt.LeftButton)          # Stop
    qtbot.waitUntil(lambda: dialog.status is not None, timeout=60_000)
    assert dialog.status == "stopped" and "the port is free again" in dialog.result_label.text()
    assert dialog.start_button.text() == "Start serving" and dialog.settings.isEnabled()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
    dialog.grab().save(f"{SHOTS}/serve_dialog_stopped.png")


def test_the_network_without_a_key_cannot_start_and_refusals_are_in_words(qtbot, runs, runs_home):
    dialog = ServeDialog(runs, runs[0].parent)
    qtbot.addWidget(dialog)
    dialog.host_combo.setCurrentIndex(1)                        # 0.0.0.0
    assert dialog.host == "0.0.0.0" and not dialog.start_button.isEnabled()
    assert "needs an API key" in dialog.start_button.toolTip()
    dialog.key_edit.setText("k")
    assert dialog.start_button.isEnabled()
    dialog.host_combo.setEditText("127.0.0.1")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        dialog.port_spin.setValue(taken.getsockname()[1])
        dialog.start()
        qtbot.waitUntil(lambda: "is in use" in dialog.result_label.text(), timeout=30_000)
    assert "What to do: choose another with --port" in dialog.result_label.text() and not dialog.running
    assert not (runs_home / "serve").exists()


def test_the_runs_page_serves_the_selected_finished_runs(qtbot, window, runs_home):
    done = [make_run(runs_home / "runs", name, "completed", 20) for name in ("alpha", "beta")]
    failed = make_run(runs_home / "runs", "gamma", "failed", 0)
    page = window.runs_page
    window.show_page(page)
    qtbot.waitUntil(lambda: page.model.rowCount() == 3, timeout=10_000)
    page.select(*done)
    assert page.buttons["serve"].isEnabled()
    page.select(done[0], failed)
    assert not page.buttons["serve"].isEnabled()
    page.select(*done)
    window.resize(1366, 768)
    window.grab().save(f"{SHOTS}/runs_page_serve_1366.png")
    page.buttons["serve"].click()
    (dialog,) = window.findChildren(ServeDialog)
    assert dialog.isVisible() and not dialog.isModal() and sorted(dialog.runs) == done
    assert any("Serves 2 runs (" in label.text() for label in dialog.findChildren(type(dialog.result_label)))
    dialog.close()
