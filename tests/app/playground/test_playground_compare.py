"""The Playground with llama.cpp: the engine choice, up to two more runs compared, four answers side by
side (the worker inline); the window at 1366×768."""
from __future__ import annotations

import pytest

from tests.helpers.tiny_models import train_tiny_run
from tests.helpers.training import jsonl

ANSWERS = {"mat": "on the mat", "door": "looked at the door", "json": '{"answer": "yes"}'}


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory, tiny_chat_llama):
    root = tmp_path_factory.mktemp("pg-compare")
    for n, (name, answer) in enumerate(ANSWERS.items()):
        rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": answer}]}
                for q in ("the cat sat", "a small model learns", "the quick brown fox") * 6]
        train_tiny_run(root / "home" / "runs" / f"2026-01-0{n + 1}_1200_{name}", tiny_chat_llama,
                       jsonl(root / f"{name}.jsonl", rows), name=name, quantization="none", training__lr=1e-2,
                       training__max_steps=60, training__save_every=100,
                       lora__targets=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    return root / "home" / "runs"


@pytest.mark.slow
def test_three_adapters_answer_beside_the_base_with_llama_cpp(qtbot, runs_root, inline_jobs):
    from lorastudio.app.playground.playground_page import PlaygroundPage
    page = PlaygroundPage(runs_root, worker_idle_s=0)
    qtbot.addWidget(page)
    assert page.engine() == "auto"
    assert [page.engine_combo.itemData(i) for i in range(page.engine_combo.count())] == ["auto", "llama.cpp",
                                                                                        "transformers"]
    page.select_run(runs_root / "2026-01-01_1200_mat")
    assert not any(p.isVisibleTo(page) for p in page.compare_panes)
    page.compare_combos[0].setCurrentIndex(page.compare_combos[0].findText("2026-01-02_1200_door"))
    page.compare_combos[1].setCurrentIndex(page.compare_combos[1].findText("2026-01-03_1200_json"))
    assert [p.name for p in page.compared_runs()] == ["2026-01-02_1200_door", "2026-01-03_1200_json"]
    assert all(p.isVisibleTo(page) for p in page.compare_panes)
    assert page.compare_panes[1].subtitle.text() == "2026-01-03_1200_json"
    page.engine_combo.setCurrentIndex(page.engine_combo.findData("llama.cpp"))
    page.prompt_edit.setPlainText("the cat sat")
    page.settings.max_new_tokens.setValue(12)
    events = []
    page.worker.event.connect(events.append)
    with qtbot.waitSignal(page.generation_finished, timeout=120_000) as done:
        page.generate()
    assert done.args == ["completed"], page.status.text()
    assert page.adapter_pane.answer() == ANSWERS["mat"]
    assert [p.answer() for p in page.compare_panes] == [ANSWERS["door"], ANSWERS["json"]]
    assert page.base_pane.answer() and page.base_pane.answer() not in ANSWERS.values()
    assert "Generating with llama.cpp" in [e.get("message") for e in events if e["type"] == "phase"]
    assert all("tokens ·" in p.status.text() for p in (page.base_pane, page.adapter_pane, *page.compare_panes))
    assert (runs_root.parent / "gguf-cache").is_dir()           # the base's GGUF, beside DATA/playground


def test_the_playground_at_1366_by_768(qtbot, settings, runs_root, monkeypatch):
    from lorastudio.app.main_window import MainWindow
    monkeypatch.setenv("LORASTUDIO_HOME", str(runs_root.parent))
    win = MainWindow(settings=settings, runs_root=runs_root)
    qtbot.addWidget(win)
    win.resize(1366, 768)
    win.show()
    page = win.playground_page
    win.show_page(page)
    others = [run.name for run in sorted(runs_root.iterdir()) if run.is_dir() and run != page.run_dir()]
    for combo, name in zip(page.compare_combos, others):
        combo.setCurrentIndex(combo.findText(name))
    for pane in (page.base_pane, page.adapter_pane, *page.compare_panes):
        pane.append(ANSWERS.get(pane.subtitle.text().rsplit("_", 1)[-1], "(the base model's answer)"))
        pane.finish(12, 0.2)
    qtbot.wait(50)
    assert all(p.isVisible() for p in page.compare_panes)
    win.grab().save("/tmp/playground_compare_1366.png")
    page.shutdown()
