"""Issue 33, point 2: long jobs run in the background. Their dialogs are not modal, a dialog can be
hidden while its job runs, and the status bar's jobs area shows each job's progress (moving with
every `phase` event's fraction, as the job reports it), Cancel and the result. One window per data
directory: a second start raises the first and exits."""
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication
from tests.helpers.runs_fixtures import make_run

from lorastudio.app.single_instance import SingleInstance
from lorastudio.core.runtime.follower import Outcome


@pytest.fixture
def done_run(runs_home):
    return make_run(runs_home / "runs", "finished-run", "completed", 20, checkpoints=(20,))


def phase(fraction=None, name="loss", message="Held-out loss: batch 3 of 40"):
    return {"v": 1, "type": "phase", "time": 0.0, "name": name, "message": message,
            **({"fraction": fraction} if fraction is not None else {})}


def open_from_runs(qtbot, window, run, opener):
    page = window.runs_page
    window.show_page(page)
    qtbot.waitUntil(lambda: page.model.rowCount() == 1, timeout=10_000)
    page.select(run)
    dialog = getattr(page, opener)()
    qtbot.waitUntil(dialog.isVisible, timeout=2000)
    return page, dialog


def test_a_job_dialog_is_not_modal_hides_and_its_job_shows_in_the_status_bar(qtbot, window, done_run, monkeypatch):
    page, dialog = open_from_runs(qtbot, window, done_run, "open_evaluate")
    assert not dialog.isModal() and dialog.windowModality() == Qt.NonModal
    assert QApplication.activeModalWidget() is None          # Runs, Playground, Merge… stay usable
    area = window.jobs_area
    assert not area.isVisible() and not dialog.hide_button.isVisible()

    dialog.process.started.emit(str(done_run / "evals" / "x"))      # as JobProcess.attach does
    assert area.isVisible() and len(area.entries) == 1
    entry = area.entries[0]
    assert entry.label.text() == "Evaluate" and dialog.hide_button.isVisible()
    qtbot.mouseClick(dialog.hide_button, Qt.LeftButton)
    assert not dialog.isVisible()                                   # hidden; the job goes on

    for fraction, shown in ((0.1, 10), (0.35, 35), (None, 35), (0.62, 62)):      # per-batch events move it
        dialog.process.event.emit(phase(fraction))
        assert entry.progress.value() == shown and dialog.progress.value() == shown
    assert "batch 3 of 40" in entry.toolTip()

    window.show_page(window.playground_page)                        # the window is usable meanwhile
    assert window.pages.currentWidget() is window.playground_page

    stopped = []
    monkeypatch.setattr(dialog.process, "stop", lambda: stopped.append(True) or True)
    monkeypatch.setattr(type(dialog), "running", property(lambda self: True))
    qtbot.mouseClick(entry.cancel_button, Qt.LeftButton)
    assert stopped and "cancelling" in entry.label.text()

    monkeypatch.setattr(dialog, "raise_", lambda: None)            # the offscreen platform warns on raise()
    qtbot.mouseClick(entry.show_button, Qt.LeftButton)
    assert dialog.isVisible()
    monkeypatch.setattr(type(dialog), "running", property(lambda self: False))
    dialog.process.finished.emit(Outcome("stopped", {"status": "stopped"}))
    assert entry.label.text() == "Evaluate: cancelled" and not entry.cancel_button.isVisible()
    assert entry.dismiss_button.isVisible() and not dialog.hide_button.isVisible()
    qtbot.mouseClick(entry.dismiss_button, Qt.LeftButton)
    assert area.entries == [] and not area.isVisible()


def test_a_failed_job_shows_its_error_and_a_closed_dialog_leaves_the_area(qtbot, window, done_run):
    _page, dialog = open_from_runs(qtbot, window, done_run, "open_merge")
    dialog.process.started.emit("x")
    entry = window.jobs_area.entries[0]
    dialog.process.finished.emit(Outcome("failed", {"status": "failed"},
                                         {"kind": "oom", "message": "Out of memory while merging", "hint": ""}))
    assert entry.label.text().endswith(": failed") and entry.toolTip() == "Out of memory while merging"
    dialog.close()                                  # WA_DeleteOnClose: the result stays, Show goes
    qtbot.waitUntil(lambda: not entry.show_button.isVisible(), timeout=2000)
    assert window.jobs_area.entries == [entry]


def test_the_train_pages_result_buttons_open_dialogs_that_are_not_modal(qtbot, window, done_run):
    window.show_live_view(done_run)
    banner = window.train_page.dashboard.banner
    qtbot.waitUntil(banner.evaluate_button.isVisible, timeout=10_000)
    banner.open_gguf_export()
    assert QApplication.activeModalWidget() is None


def test_a_second_start_raises_the_first_and_gives_way(qtbot, tmp_path):
    raised = []
    first = SingleInstance(tmp_path / "data", on_raise=lambda: raised.append(True))
    assert first.claim()
    second = SingleInstance(tmp_path / "data")
    assert not second.claim()                           # a second start on the same data folder exits
    qtbot.waitUntil(lambda: bool(raised), timeout=3000)
    other = SingleInstance(tmp_path / "other-data")     # another data folder is another instance
    assert other.claim()
    for instance in (first, other):
        instance.server.close()


def test_closing_the_window_asks_about_jobs_still_running(qtbot, window, done_run, monkeypatch):
    """A hidden job still running: closing asks; 'keep open' keeps the window and the job, 'close'
    cancels the job first."""
    from PySide6.QtGui import QCloseEvent
    page, dialog = open_from_runs(qtbot, window, done_run, "open_evaluate")
    dialog.process.started.emit(str(done_run / "evals" / "x"))
    entry = window.jobs_area.entries[0]
    cancelled, asked = [], []
    monkeypatch.setattr(entry, "cancel", lambda: cancelled.append(True))
    monkeypatch.setattr(window, "ask_cancel_jobs", lambda titles: asked.append(titles) or False)
    window._asked_to_quit = True                      # as Ctrl+Q does: the user closes
    event = QCloseEvent()
    window.closeEvent(event)
    assert asked == [["Evaluate"]] and not event.isAccepted() and not cancelled
    monkeypatch.setattr(window, "ask_cancel_jobs", lambda titles: True)
    event = QCloseEvent()
    window.closeEvent(event)
    assert cancelled == [True]
