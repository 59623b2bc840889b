"""Issue 33, point 7: a drop-down's highlighted item is drawn as a selection (not an empty white
box), a one-point loss axis reads 2.5966 (not 2.596585035324100), no empty band under the plots, a
log pane of more than three lines, a finished run's banner leaves the loss plot its room, and the
line under Start is grey while a model merely imports (red only for what the user must fix)."""
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QComboBox

from lorastudio.app.theme import ACCENT, apply_style_sheet
from lorastudio.app.widgets.series_plot import SeriesPlot, tick_label


def test_a_drop_downs_highlighted_item_is_drawn_in_the_accent(qtbot, qapp, qtlog):
    apply_style_sheet(qapp)
    try:
        combo = QComboBox()
        qtbot.addWidget(combo)
        combo.addItems(["Auto-detect", "Prompt / completion", "Chat messages"])
        combo.show()
        with qtlog.disabled():                  # the offscreen platform cannot raise or grab the keyboard
            combo.showPopup()
            view = combo.view()
            qtbot.waitUntil(view.isVisible, timeout=2000)
            index = view.model().index(1, 0)
            view.setCurrentIndex(index)
            image = view.viewport().grab().toImage()
            combo.hidePopup()
        y = view.visualRect(index).center().y()
        colours = {image.pixelColor(x, y).name() for x in range(2, image.width() - 2, 3)}
        accent = QColor(ACCENT).name()
        assert accent in colours, colours                       # the selection, not a white box
        assert len(colours) > 2                                  # with its text drawn on it
    finally:
        qapp.setStyleSheet("")


def test_tick_labels_have_sensible_digits(qtbot):
    assert tick_label(2.596585035324100, 1e-15) == "2.5966"
    assert tick_label(2.5, 0.5) == "2.5" and tick_label(3.0, 1.0) == "3" and tick_label(1200.0, 200.0) == "1200"
    assert tick_label(0.0001, 0.00002) == "0.0001" and tick_label(900.4, 0.2) == "900.4"
    plot = SeriesPlot("Loss", "loss")
    qtbot.addWidget(plot)
    plot.set_data("train", [1], [2.596585035324100])
    plot.build()
    axis = plot.getPlotItem().getAxis("left")
    labels = axis.tickStrings([2.596585035324100, 2.596585035324101], 1.0, 1e-15)
    assert labels == ["2.5966", "2.5966"]


def test_the_dashboard_leaves_no_band_and_a_readable_log(qtbot, page):
    board = page.dashboard
    assert board.preference_plot.isHidden() and board.plots_grid.rowStretch(2) == 0
    assert board.log_pane.minimumHeight() >= 5 * board.log_pane.fontMetrics().lineSpacing()


def test_waiting_is_grey_and_a_problem_is_red(qtbot, page):
    bar = page.start_bar
    bar.set_state(False, "Reading the model…", False)
    assert bar.reason_label.property("role") == "hint"
    bar.set_state(False, "Choose a dataset file.", False)
    assert bar.reason_label.property("role") == "reason"
