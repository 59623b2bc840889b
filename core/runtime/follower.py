"""Following a job: its journal until `end`, or its process's death put into words.

`JobWatch` is the non-blocking part (one poll, new events): the window polls it from a QTimer, the
CLI from `follow`'s loop. A process that exits without writing `end` (killed, out of memory in the
kernel, a segfault) gets one synthesized `error` (kind "crashed") and `end` (failed), worded here
and nowhere else. An `end` followed by more events is an earlier segment (a resumed run): the
watch goes on.
"""
from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lorastudio.core.journal import OK_STATUSES, JournalFollower, make_event
from lorastudio.core.runtime.jobs import JOBS
from lorastudio.core.runtime.launcher import LOG_FILE, JobHandle

POLL_S = 0.2
EXIT_GRACE_S = 60.0        # after `end`, how long a job may take to exit
PID_CHECK_S = 2.0           # how often to judge a re-attached job (no process handle) by its pid


@dataclass
class Outcome:
    """How a job ended: its status, its `end` event and the last `error` it reported."""
    status: str
    end: dict
    error: dict | None = None

    @property
    def ok(self) -> bool:
        return self.status in OK_STATUSES

    @property
    def output(self) -> str | None:
        return self.end.get("output") or self.end.get("adapter")

    def words(self) -> str:
        """One line for a message box or a terminal."""
        if self.error is not None:
            hint = f" ({self.error['hint']})" if self.error.get("hint") else ""
            return f"{self.error['message']}{hint}"
        return {"completed": "Finished.", "stopped": "Stopped."}.get(self.status, f"Ended: {self.status}.")


def how_it_exited(code: int | None) -> str:
    if code is None:
        return "its process is gone"
    if code < 0:
        try:
            return f"killed by signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def crash_events(verb: str, job_dir: Path, code: int | None, hint: str = "") -> list[dict]:
    """The error and end a job that died without `end` gets, in the one wording."""
    name = JOBS[verb].worker if verb in JOBS else "worker"
    return [make_event("error", kind="crashed", message=f"The {name} exited unexpectedly ({how_it_exited(code)}).",
                       hint=(hint + " " if hint else "") + f"See {Path(job_dir) / LOG_FILE} for what it printed last."),
            make_event("end", status="failed", adapter=None)]


class JobWatch:
    """Reads a job's new events on each `poll`; `outcome` is set once the job has ended.

    `alive` (for a job we did not start: a re-attached training run) says whether it still runs;
    without a process and without `alive` the watch waits for `end` alone."""

    def __init__(self, handle: JobHandle, alive: Callable[[], bool] | None = None, crash_hint: str = ""):
        self.handle = handle
        self.alive = alive
        self.crash_hint = crash_hint
        self.outcome: Outcome | None = None
        self._journal = JournalFollower(handle.journal)
        self._error: dict | None = None
        self._last_alive_check = 0.0

    @property
    def ended(self) -> bool:
        """The job's `end` has been read and nothing after it is left unread."""
        return self.outcome is not None and not self.backlog

    @property
    def backlog(self) -> bool:
        """The last capped poll left journal lines unread (poll again soon)."""
        return not self._journal.at_end

    def poll(self, max_bytes: int | None = None) -> list[dict]:
        """The new events, in order. `max_bytes` caps how much of the journal one poll reads (a
        re-attached long run arrives over a few polls, see `backlog`); a process found gone without
        `end` is put into words only once everything it wrote has been read."""
        events = self._read(max_bytes)
        if self.outcome is None and not self.backlog and self._process_gone():
            events += self._read(max_bytes)     # what it wrote just before exiting
            if self.outcome is None and not self.backlog:
                synthetic = crash_events(self.handle.verb, self.handle.job_dir, self.handle.returncode(),
                                         self.crash_hint)
                if self._error is not None:     # it said what went wrong: keep its words
                    synthetic = synthetic[1:]
                for ev in synthetic:
                    self._note(ev)
                events += synthetic
        return events

    def _read(self, max_bytes: int | None = None) -> list[dict]:
        events = self._journal.poll(max_bytes)
        for ev in events:
            self._note(ev)
        return events

    def _note(self, ev: dict) -> None:
        if ev["type"] != "end" and self.outcome is not None:     # a resumed run's next segment
            self.outcome, self._error = None, None
        if ev["type"] == "error":
            self._error = ev
        elif ev["type"] == "end":
            self.outcome = Outcome(ev["status"], ev, self._error)

    def _process_gone(self) -> bool:
        if self.handle.process is not None:
            return self.handle.returncode() is not None
        if self.alive is None:
            return False
        now = time.monotonic()
        if now - self._last_alive_check < PID_CHECK_S:
            return False
        self._last_alive_check = now
        return not self.alive()


def follow(handle: JobHandle, on_event: Callable[[dict], None] | None = None, poll_s: float = POLL_S,
           skip_until: Callable[[list[dict]], int] | None = None, on_interrupt: Callable[[], None] | None = None
           ) -> Outcome:
    """Block until the job ends; each new event goes to `on_event`. Ctrl+C stops the job gracefully
    (`on_interrupt` says so); a second Ctrl+C raises KeyboardInterrupt (the caller detaches).
    `skip_until(events)`: index of the first already-written event to show (a resumed run)."""
    watch = JobWatch(handle)
    first = watch.poll()
    start = skip_until(first) if skip_until else 0
    interrupted = {"once": False}

    def on_sigint(_sig, _frame):
        if interrupted["once"]:
            raise KeyboardInterrupt
        interrupted["once"] = True
        if on_interrupt:
            on_interrupt()
        handle.stop()

    def on_sigterm(_sig, _frame):           # the CLI terminated (SIGTERM, SIGHUP): its job goes with it
        if interrupted.get("term"):
            handle.stop()                   # a second signal stops the worker at once
            raise SystemExit(128 + _sig)
        interrupted["term"] = True
        if on_interrupt:
            on_interrupt()
        handle.stop()

    previous = signal.signal(signal.SIGINT, on_sigint)
    previous_term = {sig: signal.signal(sig, on_sigterm) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        events = first[start:]
        while True:
            for ev in events:
                if on_event:
                    on_event(ev)
            if watch.outcome is not None:       # `end` is written: the process is about to exit
                if handle.process is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        handle.process.wait(timeout=EXIT_GRACE_S)
                return watch.outcome
            time.sleep(poll_s)
            events = watch.poll()
    finally:
        signal.signal(signal.SIGINT, previous)
        for sig, handler in previous_term.items():
            signal.signal(sig, handler)
