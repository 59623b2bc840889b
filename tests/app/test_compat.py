"""The None-refcount work-around: applied where PySide6 leaks, and it keeps a leaking loop alive."""
import sys

from PySide6.QtWidgets import QLabel

from lorastudio.app.compat import SPARE_REFERENCES, _affected, pin_none


def test_a_hundred_thousand_void_calls_do_not_exhaust_none(qtbot):
    pin_none()
    label = QLabel()
    qtbot.addWidget(label)
    before = sys.getrefcount(None)
    for _ in range(100_000):          # each call lost one reference to None on the affected stack
        label.setText("x")
    if _affected():
        assert sys.getrefcount(None) > SPARE_REFERENCES / 2
        assert before - sys.getrefcount(None) >= 99_000        # the leak is real: the guard is needed
    assert not pin_none() or not _affected()                   # applying twice does nothing
