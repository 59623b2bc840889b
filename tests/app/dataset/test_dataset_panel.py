"""The Dataset panel shows what the model will be trained on: preview, format, the inspector's
stats and example N with its trained tokens, errors inline with Start disabled. Real files, real
tiny models, the real inspector job — inline (the `inline_jobs` fixture: the job's own code in
this process) where the answer matters, in child processes where the processes do."""
import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import load_data, load_model

from lorastudio.app.dataset.data_inspection import DataInspection, InspectRequest, result_of
from lorastudio.app.dataset.dataset_panel import DatasetPanel
from lorastudio.app.dataset.inspection_text import stat_rows
from lorastudio.core.runtime.follower import Outcome

INSPECT_MS = 90_000


def write_chat(path, n=12):
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": f"what is {i} plus {i}?"},
                {"role": "assistant", "content": f"the answer is {2 * i}. " * (1 + i % 4)}]}) + "\n")
    return path


def write_pairs(path, n=8, bad_at=None):
    lines = [json.dumps({"prompt": f"what is {i}?", "completion": f"it is {i}"}) for i in range(n)]
    if bad_at:
        lines.insert(bad_at - 1, '{"prompt": "oops", "completion": ')
    path.write_text("\n".join(lines) + "\n")
    return path


def inspected(qtbot, panel):
    """Wait for the inspector's answer (a report or an error) to the latest question."""
    qtbot.waitUntil(lambda: panel.inspector.current is not None, timeout=5_000)
    qtbot.waitUntil(lambda: not panel.inspector.busy, timeout=INSPECT_MS)


def run_inspector(req: InspectRequest) -> dict:
    """The engine's own report for the request (what the job journals)."""
    from lorastudio.core.config import DataSection
    from lorastudio.core.engine.inspect_data import inspect_data
    spec = req.spec()
    return inspect_data(DataSection(**spec["data"]), spec["model"], spec["seq_len"], spec["example"])


@pytest.fixture
def panel(qtbot):
    widget = DatasetPanel()
    qtbot.addWidget(widget)
    widget.resize(520, 900)
    widget.show()
    return widget


@pytest.mark.parametrize("name, content, header, reason", [
    ("d.jsonl", '{"text": "a cat"}\n{"text": "a dog"}\n', ["text"], "Raw text</b> — a 'text' field"),
    ("d.csv", "question,answer\nwhat?,that\nwho?,them\n", ["question", "answer"],
     "Prompt / completion</b> — fields 'question' and 'answer'"),
    ("chat.jsonl", None, ["messages"], "Chat messages</b> — a 'messages' list in all of the first 12 rows"),
])
def test_preview_and_detected_format_with_reason(qtbot, panel, tmp_path, name, content, header, reason):
    path = tmp_path / name
    write_chat(path) if content is None else path.write_text(content)
    panel.load(str(path))
    qtbot.waitUntil(lambda: panel.preview is not None, timeout=10_000)
    m = panel.model
    assert [m.horizontalHeaderItem(i).text() for i in range(m.columnCount())] == header
    assert m.rowCount() == len(panel.preview.rows) > 0 and panel.table.isVisible()
    assert reason in panel.format_label.text() and name in panel.format_label.text()
    assert panel.problem() is None and not panel.error_label.isVisible()
    assert panel.inspector.current is None            # no model yet: nothing to tokenize with
    assert "Choose a model" in panel.inspection.status_label.text()


def test_stats_histogram_and_trained_tokens_match_the_inspector(qtbot, page, tiny_chat_llama, tmp_path, inline_jobs):
    panel = page.dataset_panel
    page.training_panel.widgets["training.seq_len"].setValue(64)
    load_model(qtbot, page, tiny_chat_llama)
    load_data(qtbot, page, write_chat(tmp_path / "chat.jsonl"))
    qtbot.waitUntil(lambda: panel.inspector.busy, timeout=5_000)
    assert not panel.inspection.busy_bar.isHidden()        # the busy indicator shows
    inspected(qtbot, panel)
    report = panel.inspection.report
    expected = run_inspector(panel.inspect_request())
    assert report == expected and report["seq_len"] == 64 and report["chat_template"] == "model"
    view = panel.inspection
    assert [view.stats[k].text() for k in view.stats] == [v for _k, v in stat_rows(expected)]
    assert sum(view.histogram.counts) == expected["usable_examples"] == 12
    assert view.histogram.seq_line.value() == 64
    trained = "".join(t["text"] for t in expected["example"]["tokens"] if t["trained"])
    assert view.token_view.trained_text() == trained.replace("\n", "")
    assert "the answer is 0." in trained and "what is" not in trained and "terse" not in trained
    assert page.start_bar.start_button.isEnabled()

    view.example_spin.setValue(3)                          # Example N: another example is rendered
    inspected(qtbot, panel)
    example = panel.inspection.report["example"]
    assert example["index"] == 3 and example["where"] == "line 3"
    assert view.token_view.trained_text() == "".join(
        t["text"] for t in example["tokens"] if t["trained"]).replace("\n", "")
    assert "the answer is 4." in view.token_view.trained_text()
    assert "line 3" in view.example_caption.text()


def test_a_malformed_line_is_located_inline_then_skipping_it_reenables_start(qtbot, page, tiny_chat_llama, tmp_path, inline_jobs):
    panel, bar = page.dataset_panel, page.start_bar
    load_model(qtbot, page, tiny_chat_llama)
    load_data(qtbot, page, write_pairs(tmp_path / "d.jsonl", bad_at=2))
    text = panel.error_label.text()
    assert panel.error_label.isVisible()
    assert text.startswith("d.jsonl, line 2: not valid JSON") and "Traceback" not in text
    assert "Fix or delete that line" in text                # the hint, on its own line
    assert not bar.start_button.isEnabled()
    assert bar.reason_label.text().startswith("Dataset: d.jsonl, line 2: not valid JSON")

    panel.options.combos["on_bad_rows"].setCurrentIndex(panel.options.combos["on_bad_rows"].findData("skip"))
    inspected(qtbot, panel)
    assert not panel.error_label.isVisible()
    assert panel.inspection.bad_rows_label.text().startswith("1 bad row skipped: line 2 (not valid JSON")
    assert panel.inspection.report["examples"] == 8
    assert bar.start_button.isEnabled(), bar.reason_label.text()
    assert page.check.config.data.on_bad_rows == "skip"


def test_a_bad_row_past_the_preview_comes_back_from_the_inspector(qtbot, page, tiny_chat_llama, tmp_path, inline_jobs):
    panel, bar = page.dataset_panel, page.start_bar
    load_model(qtbot, page, tiny_chat_llama)
    load_data(qtbot, page, write_pairs(tmp_path / "long.jsonl", n=30, bad_at=27))
    assert panel.error() is None                           # the first 20 rows are fine
    inspected(qtbot, panel)
    assert panel.error_label.text().startswith("long.jsonl, line 27: not valid JSON")
    assert bar.reason_label.text().startswith("Dataset: long.jsonl, line 27")
    assert not bar.start_button.isEnabled()


def test_a_column_mapping_makes_an_unknown_csv_usable(qtbot, page, tiny_chat_llama, tmp_path, inline_jobs):
    panel, bar = page.dataset_panel, page.start_bar
    data = tmp_path / "qa.csv"
    data.write_text("q,reply,source\n" + "".join(f"what is {i}?,it is {i},web\n" for i in range(6)))
    load_model(qtbot, page, tiny_chat_llama)
    load_data(qtbot, page, data)
    assert "qa.csv, line 2: unknown format (fields: q, reply, source)" in panel.error_label.text()
    assert "data." not in panel.error_label.text()          # the window's words, not config keys
    assert panel.mapping.isVisible() and not bar.start_button.isEnabled()
    assert panel.inspector.current is None                 # nothing to inspect until it is mapped

    fmt = panel.options.combos["format"]
    fmt.setCurrentIndex(fmt.findData("prompt_completion"))
    assert set(panel.mapping.combos) == {"prompt", "completion"}
    panel.mapping.combos["completion"].setCurrentText("reply")
    assert panel.columns() == {"prompt": "q", "completion": "reply"}    # "q" guessed for the prompt
    inspected(qtbot, panel)
    assert panel.error() is None and panel.inspection.report["usable_examples"] == 6
    assert "columns mapped: prompt ← q, completion ← reply" in panel.format_label.text()
    assert bar.start_button.isEnabled(), bar.reason_label.text()
    data_cfg = page.check.config.data
    assert (data_cfg.format, data_cfg.columns) == ("prompt_completion", {"prompt": "q", "completion": "reply"})


def test_the_forms_config_carries_the_data_options(qtbot, page, tiny_llama, text_jsonl, tmp_path):
    valid = tmp_path / "valid.jsonl"
    valid.write_text('{"text": "held out"}\n')
    load_model(qtbot, page, tiny_llama)
    load_data(qtbot, page, text_jsonl)
    o = page.dataset_panel.options
    for name, value in (("format", "text"), ("train_on", "all"), ("too_long", "drop"), ("on_bad_rows", "skip")):
        o.combos[name].setCurrentIndex(o.combos[name].findData(value))
    o.validation_combo.setCurrentIndex(1)
    o.validation_edit.setText(str(valid))
    o.validation_edit.editingFinished.emit()
    d = page.check.config.data
    assert (d.path, d.format, d.train_on, d.too_long, d.on_bad_rows) == (str(text_jsonl), "text", "all", "drop", "skip")
    assert d.validation_path == str(valid) and d.columns == {}
    state = page.form_state()["data"]                      # and it survives a restart of the window
    page.dataset_panel.options.set_values({})
    page.dataset_panel.set_values(state)
    assert page.dataset_panel.values() == {k: state[k] for k in page.dataset_panel.values()}


@pytest.mark.slow
def test_the_inspector_runs_in_a_child_process_and_a_newer_question_kills_the_older(qtbot, tiny_llama, text_jsonl,
                                                                                   runs_home):
    inspection = DataInspection(debounce_ms=10)
    reports = []
    inspection.report.connect(reports.append)
    first = InspectRequest(str(text_jsonl), str(tiny_llama), seq_len=64, example=1)
    inspection.request(first)
    qtbot.waitUntil(lambda: inspection.handle is not None, timeout=5_000)      # its child is running
    older = inspection.handle
    assert older.pid != os.getpid() and older.returncode() is None
    assert older.job_dir.parent == runs_home / "inspections" and older.job_dir.is_dir()
    inspection.request(first.with_example(2))
    inspection.request(first.with_example(3))                               # debounced: 2 is never asked
    assert inspection.handle is None                                        # the older job is gone ...
    qtbot.waitUntil(lambda: older.returncode() is not None, timeout=5_000)
    assert older.returncode() == -signal.SIGKILL and not older.job_dir.exists()   # ... killed, its folder removed
    qtbot.waitUntil(lambda: inspection.handle is not None, timeout=5_000)
    newer = inspection.handle
    qtbot.waitUntil(lambda: not inspection.busy, timeout=INSPECT_MS)
    qtbot.wait(200)
    assert [r["example"]["index"] for r in reports] == [3]
    assert not newer.job_dir.exists()                                       # answered, then cleaned up
    qtbot.waitUntil(lambda: newer.returncode() is not None, timeout=10_000)
    assert newer.returncode() == 0

    inspection.request(first.with_example(4))                               # a panel closed mid-question:
    qtbot.waitUntil(lambda: inspection.handle is not None, timeout=5_000)
    last = inspection.handle
    inspection.deleteLater()
    qtbot.waitUntil(lambda: last.returncode() is not None, timeout=5_000)  # its child goes with it
    assert last.returncode() == -signal.SIGKILL and not last.job_dir.exists()


def test_a_refused_model_is_said_in_the_jobs_words(qtbot, tmp_path, text_jsonl, inline_jobs, runs_home):
    inspection = DataInspection(debounce_ms=10)
    failures = []
    inspection.failed.connect(lambda message, hint: failures.append((message, hint)))
    inspection.request(InspectRequest(str(text_jsonl), str(tmp_path / "no-model"), seq_len=64))
    qtbot.waitUntil(lambda: bool(failures), timeout=10_000)
    (message, hint), = failures
    assert "no-model" in message and hint and not message.startswith("The inspector failed")
    assert not inspection.busy and inspection.handle is None
    assert list((runs_home / "inspections").iterdir()) == []              # its folder is removed


def test_the_jobs_outcome_becomes_a_report_or_words(tmp_path):
    log = tmp_path / "worker.log"
    assert result_of(Outcome("completed", {}), {"examples": 1}, log).report == {"examples": 1}
    refused = result_of(Outcome("failed", {}, {"kind": "data", "message": "d.jsonl, line 2: bad", "hint": "fix it"}),
                        None, log)
    assert refused.error == ("d.jsonl, line 2: bad", "fix it") and not refused.unexpected
    broken = result_of(Outcome("failed", {}, {"kind": "exception", "message": "RuntimeError: boom",
                                              "hint": "see worker.log"}), None, log)
    assert broken.error == ("The inspector failed: RuntimeError: boom", f"the full message is in {log}")
    assert broken.unexpected                               # its folder is kept, for worker.log
    crashed = result_of(Outcome("failed", {}, {"kind": "crashed", "message": "The inspector exited unexpectedly "
                                               "(killed by signal 9 (SIGKILL)).", "hint": f"See {log}."}), None, log)
    assert crashed.error[1] == f"See {log}." and crashed.unexpected


def test_the_window_still_imports_no_heavy_library():
    code = ("import sys; import lorastudio.app.main_window, lorastudio.app.dataset.dataset_panel; "
            "heavy = {'torch', 'transformers', 'peft', 'bitsandbytes', 'datasets', 'lorastudio.core.engine.batches', "
            "'lorastudio.core.data.chat_masks', 'lorastudio.core.jobs.inspect_data'} & set(sys.modules); print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_data_errors_speak_the_panels_words():
    from lorastudio.app.dataset.inspection_text import error_text
    text = error_text("d.jsonl, line 2: unknown format", "map your columns with data.columns, or set data.format; "
                      "data.on_bad_rows: skip leaves such rows out")
    assert "Map columns" in text and "Format" in text and "Bad rows: skip" in text and "data." not in text


def test_a_refused_file_scrolls_its_error_into_view_on_a_small_screen(qtbot, window, page, tmp_path, tiny_chat_llama):
    """The tour at 1366×768 (issue 33): a CSV with the wrong columns was refused below the visible part
    of the form; the error is scrolled into view (here a shorter window puts it below the fold)."""
    window.resize(1366, 600)
    load_model(qtbot, page, tiny_chat_llama)
    panel = page.dataset_panel
    qtbot.wait(50)
    page.scroll.verticalScrollBar().setValue(0)
    data = tmp_path / "tickets.csv"
    data.write_text("ticket,reply\nMy router is down,We will look\n")
    load_data(qtbot, page, data)
    assert "tickets.csv, line 2: unknown format (fields: reply, ticket)" in panel.error_label.text()
    viewport = page.scroll.viewport()

    def in_view() -> bool:
        top = panel.error_label.mapTo(viewport, panel.error_label.rect().topLeft()).y()
        return 0 <= top and top + panel.error_label.height() <= viewport.height()
    qtbot.waitUntil(in_view, timeout=3000)
