"""The one job runtime: the worker skeleton's life (end, stop, errors, exit status), the follower's
words for a job that died, and the launcher's in-process mode writing what a process would."""
import os
import signal
import subprocess
import sys

import pytest

from lorastudio.core.data.files import DataError
from lorastudio.core.journal import read_events
from lorastudio.core.runtime.follower import JobWatch, follow
from lorastudio.core.runtime.launcher import JobHandle, launch, new_job_dir, read_spec
from lorastudio.core.runtime.worker import run_job


def run(tmp_path, body, spec=None):
    code = run_job("generate", tmp_path, body, spec=spec or {"x": 1})
    return code, read_events(tmp_path / "events.jsonl")


def test_a_body_that_returns_ends_completed_with_its_fields(tmp_path):
    def body(job):
        assert job.spec == {"x": 1}
        job.progress("working", 0.5, "Half way")
        return {"output": "/somewhere"}
    code, events = run(tmp_path, body)
    assert code == 0 and [e["type"] for e in events] == ["phase", "end"]
    assert events[0]["fraction"] == 0.5 and events[-1]["status"] == "completed"
    assert events[-1]["output"] == "/somewhere"


def test_a_user_error_becomes_one_located_error_event_and_exit_1(tmp_path):
    def body(job):
        raise DataError("train.jsonl line 3: not JSON", "fix line 3")
    code, events = run(tmp_path, body)
    error = next(e for e in events if e["type"] == "error")
    assert code == 1 and events[-1] == {**events[-1], "type": "end", "status": "failed"}
    assert (error["kind"], error["message"], error["hint"]) == ("data", "train.jsonl line 3: not JSON", "fix line 3")
    assert any(e["type"] == "log" and "Traceback" in e["message"] for e in events)   # for worker.log readers


@pytest.mark.parametrize("exc, kind", [(OSError(28, "No space left on device"), "disk"),
                                       (RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"), "oom"),
                                       (FloatingPointError("loss is nan"), "diverged"),
                                       (KeyError("boom"), "exception")])
def test_failures_are_classified(tmp_path, exc, kind):
    def body(job):
        raise exc
    _code, events = run(tmp_path, body)
    assert next(e for e in events if e["type"] == "error")["kind"] == kind


def test_a_sigterm_asks_for_a_graceful_stop_and_a_second_stops_at_once(tmp_path):
    seen = []

    def body(job):
        os.kill(os.getpid(), signal.SIGTERM)
        seen.append(job.should_stop())
        os.kill(os.getpid(), signal.SIGTERM)        # the second: at once
        seen.append("not reached")
    previous = signal.getsignal(signal.SIGTERM)
    code, events = run(tmp_path, body)
    assert code == 0 and seen == [True] and events[-1]["status"] == "stopped"
    assert signal.getsignal(signal.SIGTERM) is previous        # handlers restored


def test_progress_after_a_stop_request_stops_the_job(tmp_path):
    def body(job):
        job.stop_requested = True
        job.progress("next", 0.9, "never written")
    code, events = run(tmp_path, body)
    assert code == 0 and events[-1]["status"] == "stopped"
    assert not any(e["type"] == "phase" for e in events)


def test_a_process_that_dies_without_end_is_put_into_words(tmp_path):
    job_dir = new_job_dir(tmp_path, "dying")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    handle = JobHandle("merge", job_dir, proc)
    watch = JobWatch(handle, crash_hint="Try again.")
    assert watch.poll() == [] and not watch.ended
    proc.kill()
    proc.wait()
    events = watch.poll()
    assert [e["type"] for e in events] == ["error", "end"] and watch.outcome.status == "failed"
    assert events[0]["message"] == "The merge worker exited unexpectedly (killed by signal 9 (SIGKILL))."
    assert events[0]["hint"] == f"Try again. See {job_dir / 'worker.log'} for what it printed last."
    assert watch.outcome.words().startswith("The merge worker exited unexpectedly")


def test_an_end_followed_by_more_events_is_an_earlier_segment(tmp_path):
    (tmp_path / "events.jsonl").write_text(
        '{"v": 1, "type": "end", "time": 1, "status": "stopped", "adapter": null}\n'
        '{"v": 1, "type": "phase", "time": 2, "name": "resuming"}\n')
    watch = JobWatch(JobHandle("train", tmp_path, None))
    assert len(watch.poll()) == 2 and not watch.ended


def test_inline_jobs_run_the_real_main_and_write_its_files(tmp_path, inline_jobs):
    handle = launch("import_gguf", tmp_path / "job", {"gguf": str(tmp_path / "missing.gguf")})
    assert read_spec(handle.job_dir) == {"job": "import_gguf", "gguf": str(tmp_path / "missing.gguf")}
    outcome = follow(handle)
    assert handle.returncode() == 1 and outcome.status == "failed"
    assert outcome.error["kind"] in ("gguf", "model") and "missing.gguf" in outcome.error["message"]
    assert "Traceback" in (handle.job_dir / "worker.log").read_text()       # what a process would have printed


def test_a_job_without_its_spec_is_refused_with_exit_2(tmp_path, inline_jobs):
    handle = launch("merge", tmp_path / "empty")
    assert handle.returncode() == 2 and "job.yaml does not exist" in (handle.job_dir / "worker.log").read_text()


def test_a_peer_rank_has_the_runtimes_signals_and_writes_nothing_into_the_folder(tmp_path, capfd):
    """Ranks > 0 of a multi-process job (worker.peer_main): the job's command line, a first SIGTERM
    asks for a graceful stop, a second stops at once; how it ended and any traceback go to its output."""
    from lorastudio.core.runtime.worker import peer_main
    seen = []

    def graceful(job):
        os.kill(os.getpid(), signal.SIGTERM)
        seen.append((job.should_stop(), job.args.resume_from, job.job_dir == tmp_path.resolve()))
        job.log("a rank's log goes nowhere")
        return "stopped at step 3"

    def at_once(job):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        seen.append("not reached")
    previous = signal.getsignal(signal.SIGTERM)
    args = lambda p: p.add_argument("--resume-from", default=None)      # noqa: E731
    assert peer_main("train", 1, graceful, [str(tmp_path), "--resume-from", "ck"], add_arguments=args) == 0
    assert seen == [(True, "ck", True)] and capfd.readouterr().out == "rank 1: stopped at step 3\n"
    assert peer_main("train", 2, at_once, [str(tmp_path)], add_arguments=args) == 1
    assert seen == [(True, "ck", True)] and "KeyboardInterrupt" in capfd.readouterr().err
    assert list(tmp_path.iterdir()) == [] and signal.getsignal(signal.SIGTERM) is previous


def test_faults_are_armed_only_when_asked(monkeypatch):
    """core/runtime/faults.arm: the one hook; without LORASTUDIO_FAULT the trainer is left as it was."""
    from types import SimpleNamespace

    from lorastudio.core.runtime import faults

    class Oom(RuntimeError):
        pass

    def trainer():
        return SimpleNamespace(step=0, should_stop=lambda: False)
    monkeypatch.delenv("LORASTUDIO_FAULT", raising=False)
    monkeypatch.delenv("LORASTUDIO_FAULT_RANK", raising=False)
    plain = trainer()
    asked = plain.should_stop
    faults.arm(plain, 0, Oom)
    assert plain.should_stop is asked                                   # production: untouched
    monkeypatch.setenv("LORASTUDIO_FAULT", "oom:2")
    armed = trainer()
    faults.arm(armed, 0, Oom)
    assert armed.should_stop() is False
    armed.step = 2
    with pytest.raises(Oom, match="simulated by LORASTUDIO_FAULT"):
        armed.should_stop()
    other = trainer()
    untouched = other.should_stop
    faults.arm(other, 1, Oom)                                           # the fault is rank 0's
    assert other.should_stop is untouched and faults.fault_for(1) is None
    monkeypatch.setenv("LORASTUDIO_FAULT_RANK", "1")
    monkeypatch.setenv("LORASTUDIO_FAULT", "start")
    with pytest.raises(RuntimeError, match="before joining the process group"):
        faults.arm(trainer(), 1, Oom)
    monkeypatch.setenv("LORASTUDIO_FAULT", "oom-forward:3:2")
    assert faults.fault_for(1) == faults.Fault("oom-forward", 3, 2) and faults.fault_for(0) is None


def test_a_run_s_heartbeat_keeps_status_json_fresh(tmp_path):
    import time

    from lorastudio.core.runs.folders import read_status
    from lorastudio.core.runs.heartbeat import heartbeat
    with heartbeat(tmp_path, every_s=0.05) as final:
        first = read_status(tmp_path)
        assert first["state"] == "running" and first["pid"] == os.getpid()
        time.sleep(0.3)
        assert read_status(tmp_path)["heartbeat"] > first["heartbeat"]
    final("completed")
    time.sleep(0.1)                                                     # the beat has stopped: no overwrite
    assert read_status(tmp_path)["state"] == "completed"
