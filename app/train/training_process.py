"""The Train page's view of one training job: a `JobProcess` (the one wrapper for every job
process) plus what is particular to training — typed signals for the dashboard, the run folder,
and runs the window did not start (found running, re-attached to after a restart).

Launching goes through core (`core.plans.train.start_train`), following through core's
`JobWatch` inside JobProcess, and a worker that dies without `end` is put into words by core
(`core.runtime.follower.crash_events`); this class only adds the hint that such a run can be
resumed, and judges a re-attached worker (no process handle) by its pid and heartbeat.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal

from lorastudio.app.job_process import POLL_MS, JobProcess
from lorastudio.core.config import RunConfig
from lorastudio.core.plans.train import TrainRequest, start_train
from lorastudio.core.runs import folders as runs
from lorastudio.core.runtime.follower import Outcome
from lorastudio.core.runtime.launcher import JobHandle

# Training runs at normal priority: at nice 5 on a busy machine it got 15-30 % of a core (issue 33).
# "Background priority" (the Start bar's option) starts it at BACKGROUND_NICENESS instead: it then
# yields the CPU to everything else that wants it, and runs at full speed when alone.
WORKER_NICENESS = 0
BACKGROUND_NICENESS = 10
CRASH_HINT = "Resume it from the Runs page (it continues from the last checkpoint)."


class TrainingProcess(QObject):
    started = Signal(str)               # run folder
    event = Signal(object)              # every journal event (a dict, as JobProcess.event), in order
    step = Signal(object)
    evaluated = Signal(object)
    memory = Signal(object)
    log_line = Signal(str)              # a line of worker.log (stderr: warnings, tracebacks)
    error = Signal(object)              # kind, message, hint, traceback?
    finished = Signal(str, object)      # status, adapter path or None

    def __init__(self, parent: QObject | None = None, poll_ms: int = POLL_MS):
        super().__init__(parent)
        self.job = JobProcess(self, poll_ms=poll_ms, tail_log=True)
        self.job.started.connect(self.started)
        self.job.event.connect(self._dispatch)
        self.job.log_line.connect(self.log_line)
        self.job.finished.connect(self._finished)

    @property
    def handle(self) -> JobHandle | None:
        return self.job.handle

    @property
    def run_dir(self) -> Path | None:
        return self.job.handle.job_dir if self.job.handle is not None else None

    # ---- control ------------------------------------------------------------------------------
    def start(self, config: RunConfig, runs_root: Path | None = None, background: bool = False) -> Path:
        """Write the run folder, launch the training job and follow it (at normal priority, or at
        background priority when asked). Returns the run folder."""
        run_dir = runs.prepare_run(config, runs.new_run_dir(config, runs_root or runs.default_runs_dir()))
        niceness = BACKGROUND_NICENESS if background else WORKER_NICENESS
        self.follow(run_dir, start_train(TrainRequest(run_dir, niceness=niceness)))
        return run_dir

    def follow(self, run_dir: Path, handle: JobHandle | None = None) -> None:
        """Follow a run folder's journal from its first line: a job we started (`handle`: a new run
        or a resume) or one found running (no handle: judged by status.json's pid and heartbeat).
        An `end` followed by more events is an earlier segment of a resumed run, not the end."""
        run_dir = Path(run_dir)
        if handle is not None and not isinstance(handle, JobHandle):     # a bare process object
            handle = JobHandle("train", run_dir, handle)
        if handle is None:
            self.job.attach(JobHandle("train", run_dir, None), alive=lambda: self._attached_alive(run_dir),
                            crash_hint=CRASH_HINT)
        else:
            self.job.attach(handle, crash_hint=CRASH_HINT)

    def stop(self) -> bool:
        """Ask the worker to stop gracefully (it saves a checkpoint and the adapter first)."""
        if not self.is_running():
            return False
        if self.handle.process is not None:
            return self.handle.stop()
        return runs.stop_worker(self.handle.job_dir)

    def is_running(self) -> bool:
        handle = self.job.handle
        if handle is None or self.job.outcome is not None:
            return False
        if handle.process is not None:
            return handle.returncode() is None
        return runs.pid_alive(runs.read_status(handle.job_dir).get("pid"))

    def detach(self) -> None:
        """Stop following (the worker, in its own session, carries on)."""
        self.job.detach()

    def following(self) -> bool:
        return self.job.running

    # ---- following ----------------------------------------------------------------------------
    @staticmethod
    def _attached_alive(run_dir: Path) -> bool:
        """A worker we did not start. No pid recorded yet, or a resume that is starting one: nothing
        to judge by, keep reading; otherwise its pid must run and its heartbeat be fresh."""
        status = runs.read_status(run_dir)
        if not status.get("pid") or status.get("state") == "resuming":
            return True
        return runs.worker_alive(run_dir, status)

    def _dispatch(self, ev: dict) -> None:
        self.event.emit(ev)
        kind = ev["type"]
        if kind == "step":
            self.step.emit(ev)
        elif kind == "eval":
            self.evaluated.emit(ev)
        elif kind == "memory":
            self.memory.emit(ev)
        elif kind == "error":
            self.error.emit(ev)

    def _finished(self, outcome: Outcome) -> None:
        self.finished.emit(outcome.status, outcome.end.get("adapter"))
