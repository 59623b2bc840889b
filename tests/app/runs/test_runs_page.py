"""The Runs page: every status listed, sortable, curves overlaid, details with error and hint;
clone, delete (confirmed; a running run refused) and the one-click out-of-memory resume."""
import pytest
import yaml
from PySide6.QtCore import Qt
from tests.helpers.runs_fixtures import answer_next_dialog, config, fake_worker, make_all, make_run, oom_error

from lorastudio.app.runs.runs_columns import COLUMNS


@pytest.fixture
def live_worker():
    proc = fake_worker()
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def runs(runs_home, live_worker):
    return make_all(runs_home / "runs", live_pid=live_worker.pid)


def show_runs(qtbot, window, count):
    window.show_page(window.runs_page)
    qtbot.waitUntil(lambda: window.runs_page.model.rowCount() == count, timeout=10_000)
    return window.runs_page


def test_lists_runs_of_every_status_sortable_with_overlaid_curves(qtbot, window, runs):
    page = show_runs(qtbot, window, len(runs))
    status = {r.name: r.status for r in page.model.runs}
    assert status == {"smollm2-alpaca-r16": "completed", "smollm2-alpaca-r32": "completed",
                      "qwen-chat-lr3e-4": "stopped", "big-batch": "failed", "overnight-run": "crashed",
                      "llama-live": "running"}
    texts = {page.proxy.index(r, 0).data(): [page.proxy.index(r, c).data() for c in range(len(COLUMNS))]
             for r in range(page.proxy.rowCount())}
    assert texts["qwen-chat-lr3e-4"][1:8] == ["stopped", "SmolLM2-135M", "alpaca-mini.jsonl", "16", "4bit",
                                             "120 / 200", "1.4333"]
    assert texts["big-batch"][1] == "failed (out of memory)" and texts["llama-live"][-1].endswith("KiB")
    page.table.sortByColumn(6, Qt.AscendingOrder)          # steps, by progress
    order = [page.proxy.index(r, 0).data() for r in range(page.proxy.rowCount())]
    assert order[0] == "big-batch" and order[-2:] in (["smollm2-alpaca-r32", "smollm2-alpaca-r16"],
                                                      ["smollm2-alpaca-r16", "smollm2-alpaca-r32"])
    page.select(runs["completed"], runs["stopped"])
    assert sorted(page.overlay.curve_names()) == ["qwen-chat-lr3e-4", "smollm2-alpaca-r16"]
    assert page.details.title.text() == "2 runs selected"
    page.select(runs["running"])
    assert not page.buttons["resume"].isEnabled() and not page.buttons["delete"].isEnabled()
    page.select(runs["crashed"])
    assert page.buttons["resume"].isEnabled()
    assert "stopped without finishing" in page.details.error.text() and "step 50" in page.details.hint.text()


def test_a_failed_run_shows_its_error_and_hint(qtbot, window, runs_home):
    cfg = config("oom-run", batch_size=16, memory_mode="none")
    run_dir = make_run(runs_home / "runs", "oom-run", "failed", 10, error=oom_error(cfg), cfg=cfg, checkpoints=(5,))
    page = show_runs(qtbot, window, 1)
    page.select(run_dir)
    d = page.details
    assert d.error.text() == "CUDA out of memory. Tried to allocate 2.00 GiB"
    # The fixture's model folder does not exist: the advisor's rule of thumb.
    assert d.hint.text() == ("What to do: Out of GPU memory. Try batch_size 16 → 8 with grad_accum 2 → 4 (same "
                             "effective batch); memory_mode none → checkpoint — a rule of thumb: the model's files "
                             "could not be read to estimate with")
    assert d.suggested.isVisibleTo(d)
    assert "step 5 with batch_size → 8, grad_accum → 4, memory_mode → checkpoint" in d.suggested_note.text()


def test_delete_asks_and_refuses_a_running_run(qtbot, window, runs):
    page = show_runs(qtbot, window, len(runs))
    seen = []
    page.select(runs["running"])
    answer_next_dialog("OK", seen)
    page.delete()
    assert "still training" in seen[-1] and runs["running"].is_dir()
    page.select(runs["stopped"])
    answer_next_dialog("No", seen)
    page.delete()
    assert seen[-1].startswith("Delete qwen-chat-lr3e-4 and everything in it") and runs["stopped"].is_dir()
    answer_next_dialog("Yes", seen)
    page.delete()
    qtbot.waitUntil(lambda: page.model.rowCount() == len(runs) - 1, timeout=10_000)
    assert not runs["stopped"].exists()


def test_clone_config_fills_the_train_form(qtbot, window, runs_home, tiny_llama, text_jsonl):
    cfg = config("to-clone", batch_size=3, grad_accum=5, seq_len=128)
    cfg.model, cfg.data.path = str(tiny_llama), str(text_jsonl)
    run_dir = make_run(runs_home / "runs", "to-clone", "completed", 20, cfg=cfg)
    page = show_runs(qtbot, window, 1)
    page.select(run_dir)
    page.buttons["clone"].click()
    train = window.train_page
    assert window.pages.currentWidget() is train
    qtbot.waitUntil(lambda: train.model_panel.state == "ready", timeout=10_000)
    values = train.values()
    assert values["name"] == "to-clone" and values["model"] == str(tiny_llama)
    assert (values["training"]["batch_size"], values["training"]["grad_accum"], values["training"]["seq_len"]) == (3, 5, 128)
    assert values["lora"]["r"] == 16 and values["quantization"] == "4bit"


def test_out_of_memory_resumes_with_suggested_settings_in_one_click(qtbot, window, runs_home, make_config,
                                                                    inline_jobs):
    """The training jobs run in this process (`inline_jobs`): the resumed one has finished when
    the click returns, and the Train page follows its journal as it would a live one's."""
    from lorastudio.core.config import RunConfig
    from lorastudio.core.runs.folders import prepare_run
    from lorastudio.core.plans.train import TrainRequest, start_train
    run_dir = runs_home / "runs" / "oom"
    prepare_run(RunConfig.load(make_config(training__max_steps=6, training__save_every=2,
                                            training__oom_retry=False)), run_dir)   # the manual path
    worker = start_train(TrainRequest(run_dir, env={"LORASTUDIO_FAULT": "oom:3"}))
    assert worker.returncode() == 1
    page = show_runs(qtbot, window, 1)
    qtbot.waitUntil(lambda: page.model.runs[0].status == "failed", timeout=10_000)
    page.select(run_dir)
    assert page.details.suggested.isVisibleTo(page.details)
    finished = []
    window.train_page.process.finished.connect(lambda status, _a: finished.append(status))
    page.details.suggested.click()
    assert window.pages.currentWidget() is window.train_page and window.train_page.running
    qtbot.waitUntil(lambda: bool(finished), timeout=240_000)
    assert finished == ["completed"]
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())["training"]
    assert (saved["batch_size"], saved["grad_accum"]) == (2, 2)
    assert (run_dir / "config.previous.yaml").is_file()
    state = window.train_page.dashboard.state
    assert state.loss.x == [1, 2, 3, 4, 5, 6] and state.status == "completed"


def test_merge_and_export_open_the_train_pages_dialogs_with_the_run_chosen(qtbot, window, runs_home):
    from pathlib import Path
    from lorastudio.app.dialogs.export_dialog import ExportDialog
    from lorastudio.app.dialogs.merge_dialog import MergeDialog
    make_run(runs_home / "runs", "other-run", "completed", 20, checkpoints=(20,))
    run_dir = make_run(runs_home / "runs", "to-merge", "stopped", 40, checkpoints=(20, 40))
    page = show_runs(qtbot, window, 2)
    page.select(run_dir)
    assert page.buttons["merge"].isEnabled() and page.buttons["export"].isEnabled()
    page.buttons["merge"].click()
    (merge,) = window.findChildren(MergeDialog)             # the dialog the Train page's banner opens
    assert merge.isVisible() and merge.picker.run_dir == run_dir and merge.picker.run_combo.currentText() == "to-merge"
    combo = merge.picker.checkpoint_combo
    assert [combo.itemText(i) for i in range(combo.count())] == ["Checkpoint at step 40", "Checkpoint at step 20"]
    assert merge.out_edit.text() == str(Path.home() / "to-merge-merged") and merge.merge_button.isEnabled()
    assert not merge.running and not (run_dir / "merges").exists()        # nothing starts before "Merge"
    merge.close()
    page.buttons["export"].click()
    (export,) = window.findChildren(ExportDialog)
    assert export.isVisible() and export.picker.run_dir == run_dir
    assert export.out_edit.text() == str(Path.home() / "to-merge-adapter")
    export.close()
