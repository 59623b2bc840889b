"""launcher.run_tool: a helper program (llama.cpp's converter, an image check) run to its end, its
output in a log; ended when the job stops, or at a timeout with TOOL_TIMED_OUT."""
import sys
import time

from lorastudio.core.runtime.launcher import TOOL_TIMED_OUT, run_tool


def test_a_tool_runs_to_its_end_with_its_output_and_status_in_the_log(tmp_path):
    log = tmp_path / "tool.log"
    code = run_tool([sys.executable, "-c", "import sys; print('converted'); sys.exit(3)"], None, log)
    assert code == 3 and "converted" in log.read_text()


def test_a_tool_past_its_timeout_is_killed_and_said_to_have_timed_out(tmp_path):
    began = time.monotonic()
    code = run_tool([sys.executable, "-c", "import time; time.sleep(30)"], None, tmp_path / "tool.log", timeout_s=0.5)
    assert code == TOOL_TIMED_OUT and time.monotonic() - began < 10


def test_a_stopped_job_ends_its_tool(tmp_path):
    began = time.monotonic()
    code = run_tool([sys.executable, "-c", "import time; time.sleep(30)"], None, tmp_path / "tool.log",
                    should_stop=lambda: time.monotonic() - began > 0.3)
    assert code != 0 and code != TOOL_TIMED_OUT and time.monotonic() - began < 10
