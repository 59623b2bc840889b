"""Issue 33, point 1: the window fits a 1366×768 screen on every page and in every state, remembers
its size and never grows by itself (the Runs header's buttons wrap; the Train form never gets wider
than its scroll area; a finished run's banner keeps the plots their room)."""
import pytest
from tests.helpers.runs_fixtures import fake_worker, make_all

SCREEN_W, SCREEN_H = 1366, 768
# A 1366×768 laptop keeps ~60 px for a panel and the title bar: the window's own minimum must leave them.
MAX_W, MAX_H = SCREEN_W, SCREEN_H - 60


@pytest.fixture
def runs(runs_home):
    worker = fake_worker()
    yield make_all(runs_home / "runs", live_pid=worker.pid)
    worker.kill()
    worker.wait()


def assert_fits(qtbot, window, where: str) -> None:
    qtbot.wait(50)
    hint = window.minimumSizeHint().expandedTo(window.minimumSize())
    assert hint.width() <= MAX_W and hint.height() <= MAX_H, f"{where}: minimum {hint.width()}×{hint.height()}"
    assert window.width() <= SCREEN_W and window.height() <= SCREEN_H, f"{where}: grew to {window.size()}"
    board = window.train_page.dashboard
    if board.isVisible():                                   # ETA, the gauge and "Log scale" never cut
        for widget in (board.time_label, board.gauge, board.loss_plot.log_box):
            right = widget.mapTo(board, widget.rect().topRight()).x()
            assert right <= board.width() and widget.width() >= widget.minimumSizeHint().width(), \
                f"{where}: {type(widget).__name__} is cut"
        assert board.time_label.width() >= board.time_label.sizeHint().width()
    form = window.train_page.scroll
    inner = form.widget()
    assert inner.minimumSizeHint().width() <= form.viewport().width() + 1, f"{where}: the form is wider than its scroll area"


def test_every_page_and_state_fits_1366x768(qtbot, window, runs):
    window.resize(SCREEN_W, SCREEN_H)
    assert_fits(qtbot, window, "Train")
    page = window.runs_page
    window.show_page(page)
    qtbot.waitUntil(lambda: page.model.rowCount() == len(runs), timeout=10_000)
    for key in ("failed", "stopped", "running", "crashed"):
        page.select(runs[key])
        assert_fits(qtbot, window, f"Runs with the {key} run selected")
    page.select(runs["completed"], runs["stopped"])
    assert_fits(qtbot, window, "Runs with two runs selected")
    assert page.buttons["delete"].isVisible() and page.buttons["delete"].geometry().right() <= page.width()
    window.show_page(window.playground_page)
    assert_fits(qtbot, window, "Playground")
    for key in ("failed", "completed", "stopped"):         # the dashboard while a finished run shows
        window.show_live_view(runs[key])
        qtbot.waitUntil(lambda: window.train_page.dashboard.state.finished, timeout=10_000)
        assert_fits(qtbot, window, f"the dashboard of the {key} run")
    banner = window.train_page.dashboard.banner
    assert banner.evaluate_button.isVisible() and window.train_page.dashboard.loss_plot.height() >= 150
    window.show_page(window.runs_page)
    window.show_page(window.train_page)
    assert window.size().width() == SCREEN_W and window.size().height() == SCREEN_H   # never grew


def test_a_long_path_wraps_in_the_form(qtbot, window):
    window.resize(SCREEN_W, SCREEN_H)
    page = window.train_page
    long = "/home/someone/" + "a-very-long-folder-name/" * 8 + "model.gguf"
    page.model_panel.status_label.setText(f"Importing: 2 % · Reading the header of {long}")
    page.dataset_panel.inspection.status_label.setText(f"Choose a model to see the tokens it will train on: {long}")
    assert_fits(qtbot, window, "long paths in the form")


def test_the_size_is_remembered_and_the_first_one_fits_the_screen(qtbot, settings, runs_home):
    from lorastudio.app.main_window import MainWindow
    first = MainWindow(settings=settings, runs_root=runs_home / "runs")
    qtbot.addWidget(first)
    free = first.screen().availableGeometry()
    least = first.minimumSizeHint()
    assert first.width() <= max(free.width(), least.width()) and first.height() <= max(free.height(), least.height())
    first.resize(760, 560)               # the offscreen screen is 800×600
    first.save_settings()
    again = MainWindow(settings=settings, runs_root=runs_home / "runs")
    qtbot.addWidget(again)
    assert (again.width(), again.height()) == (760, 560)
