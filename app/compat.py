"""Work-arounds for bugs in the libraries under the window, each guarded to where it applies.

PySide6 6.12.0 returns `None` from every void method without taking a reference to it
(`w.setText("a")` leaves None's count one lower). On Python ≥ 3.12 None is immortal and nothing
happens; on 3.11 the count reaches zero after some tens of thousands of calls — a few minutes of
a live dashboard, since pyqtgraph's painting makes such calls — and the interpreter aborts with
"none_dealloc: deallocating None". Until the binding is fixed we give None a billion spare
references (what 3.12 does by making it immortal); nothing ever frees None, so this is safe.
"""
from __future__ import annotations

import ctypes
import sys

SPARE_REFERENCES = 1_000_000_000


def _affected() -> bool:
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return False
    try:
        import PySide6
    except ImportError:
        return False
    return PySide6.__version__.startswith("6.12.")


def pin_none() -> bool:
    """Make None effectively immortal where the binding leaks its references. True if applied."""
    if not _affected() or sys.getrefcount(None) > SPARE_REFERENCES // 2:
        return False
    # ob_refcnt is the first field of every CPython object (a Py_ssize_t).
    ctypes.c_ssize_t.from_address(id(None)).value += SPARE_REFERENCES
    return True
