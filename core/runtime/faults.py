"""Test hooks, kept out of the production paths' way: each does nothing unless its environment
variable is set (the tests set it for a job process they start).

LORASTUDIO_TEST_PAUSE=PHASE:SECONDS makes a job wait when it enters PHASE (until cancelled), so a
test can kill or cancel it at a known point.
"""
from __future__ import annotations

import os
import time
from typing import Callable


def pause_at(phase: str, cancelled: Callable[[], bool]) -> None:
    spec = os.environ.get("LORASTUDIO_TEST_PAUSE", "")
    if spec and spec.partition(":")[0] == phase:
        until = time.time() + float(spec.partition(":")[2] or 30)
        while time.time() < until and not cancelled():
            time.sleep(0.05)
