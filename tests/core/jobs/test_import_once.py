"""One import per GGUF (issue 33, point 12): a second start of the same import while the first runs
follows that one instead of starting another worker, and a first SIGTERM stops an import within
seconds even where the conversion reports no progress. Real processes: the process is the point."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.gguf_tiny import write_tiny_gguf
from lorastudio.core.journal import read_events
from lorastudio.core.models.gguf_cache import IMPORTS_DIR, cached_import, models_dir
from lorastudio.core.plans.import_gguf import ImportGgufRequest, import_lock, start_import_gguf
from lorastudio.core.runtime.follower import follow
from lorastudio.core.runtime.launcher import new_job_dir, write_spec

pytestmark = pytest.mark.slow


@pytest.fixture
def tiny_gguf(tmp_path, tiny_llama) -> Path:
    path = tmp_path / "tiny-llama.F32.gguf"
    write_tiny_gguf(path, tiny_llama)
    return path


def test_a_second_start_follows_the_running_import(tiny_gguf, runs_home):
    first = start_import_gguf(ImportGgufRequest(tiny_gguf))
    second = start_import_gguf(ImportGgufRequest(tiny_gguf))         # while the first one runs
    assert second.job_dir == first.job_dir and second.pid == first.pid
    outcomes = [follow(second, None), follow(first, None)]
    assert [o.status for o in outcomes] == ["completed", "completed"]
    assert Path(outcomes[0].output) == cached_import(tiny_gguf)
    jobs = [d for d in (models_dir() / IMPORTS_DIR).iterdir() if d.is_dir()]
    assert len(jobs) == 1                                             # one worker, one job folder
    third = start_import_gguf(ImportGgufRequest(tiny_gguf))           # after it ended: a job of its own (a cache hit)
    assert third.job_dir != first.job_dir and follow(third, None).status == "completed"


SLOW_CONVERSION = """
import sys, time
import lorastudio.core.engine.gguf.import_gguf as engine
def no_progress(_gguf):          # a long stretch without a progress step (transformers' loader, a save)
    time.sleep(120)
engine.check_gguf = no_progress
from lorastudio.core.jobs.import_gguf import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_first_sigterm_stops_an_import_within_seconds(tiny_gguf, runs_home, tmp_path):
    import os
    job_dir = new_job_dir(models_dir() / IMPORTS_DIR, "slow")
    write_spec(job_dir, {"gguf": str(tiny_gguf)}, "import_gguf")
    process = subprocess.Popen([sys.executable, "-c", SLOW_CONVERSION, str(job_dir)],
                               env={**os.environ, "LORASTUDIO_HOME": str(runs_home)})
    try:
        deadline = time.monotonic() + 60
        while not any(e["type"] == "phase" and e["name"] == "checking" for e in read_events(job_dir / "events.jsonl")):
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.1)
        asked = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        assert time.monotonic() - asked < 8
    finally:
        if process.poll() is None:
            process.kill()
    events = read_events(job_dir / "events.jsonl")
    assert events[-1]["type"] == "end" and events[-1]["status"] == "stopped"
    assert cached_import(tiny_gguf) is None


def test_the_lock_is_per_cache_target(tiny_gguf, tmp_path, tiny_llama, runs_home):
    other = tmp_path / "other.gguf"
    write_tiny_gguf(other, tiny_llama)
    other.write_bytes(other.read_bytes() + b"\0" * 32)      # another file: another key, another target
    assert import_lock(tiny_gguf) != import_lock(other)
    assert import_lock(tiny_gguf).parent == models_dir() / IMPORTS_DIR
