"""The skeleton every job process runs: `run_job(verb, job_dir, body)`.

    def body(job: Job) -> dict:      # the end event's extra fields, e.g. {"output": "/path"}
        job.progress("loading", 0.1, "Loading the base model")    # a phase event; raises Stopped
        ...                                                       # once a stop was asked for

It gives every job the same life: faulthandler (a segfault's native stack goes to worker.log),
SIGTERM/SIGINT → a graceful stop (`job.should_stop()` turns true; `job.progress` raises `Stopped`),
a second signal → stop at once; every exception → a `log` event with the traceback and one
`error` event (failures.classify); always an `end` event, whose status is completed, stopped or
failed; exit status 0 for completed or stopped, 1 for failed, 2 for a bad command line. Ranks > 0
of a multi-process job run `peer_main`: the same signals, nothing written into the job folder.
"""
from __future__ import annotations

import argparse
import contextlib
import faulthandler
import signal
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lorastudio.core.journal import OK_STATUSES, JournalWriter, NullJournal
from lorastudio.core.errors import print_error
from lorastudio.core.runs.locks import FolderBusy, acquire
from lorastudio.core.runtime.failures import classify
from lorastudio.core.runtime.launcher import JOB_FILE, JOURNAL_FILE, read_spec


class Stopped(Exception):
    """Raised by `Job.progress` once a stop was asked for; the job ends "stopped"."""


@dataclass
class Job:
    verb: str
    job_dir: Path
    journal: JournalWriter | NullJournal          # NullJournal: a rank > 0 of a multi-process job
    spec: dict[str, Any] = field(default_factory=dict)
    args: argparse.Namespace | None = None
    stop_requested: bool = False
    # Extra fields for the error event (e.g. the OOM overrides), and the OOM hint, set by the body.
    error_extra: Callable[[str], dict] | None = None
    oom_hint: Callable[[], str] | None = None
    on_end: Callable[[str], None] | None = None       # after `end` is written (the train job's status.json)

    def should_stop(self) -> bool:
        return self.stop_requested

    def emit(self, type_: str, **fields: Any) -> dict:
        return self.journal.emit(type_, **fields)

    def progress(self, name: str, fraction: float, message: str, **fields: Any) -> None:
        """A `phase` event (fraction 0→1); raises Stopped if a stop was asked for."""
        if self.stop_requested:
            raise Stopped()
        self.journal.emit("phase", name=name, fraction=round(float(fraction), 4), message=message, **fields)

    def log(self, message: str, level: str = "info") -> None:
        self.journal.emit("log", level=level, message=message)


class _Signals:
    """First SIGTERM/SIGINT asks for a graceful stop; the second stops at once."""

    def __init__(self, job: Job):
        self.job, self.previous = job, {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, _signum, _frame) -> None:
        if self.job.stop_requested:
            raise KeyboardInterrupt
        self.job.stop_requested = True

    def __exit__(self, *_exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def run_job(verb: str, job_dir: Path, body: Callable[[Job], dict | None], spec: dict | None = None,
            args: argparse.Namespace | None = None, lock: bool = False) -> int:
    """Run `body` as job `verb` in `job_dir` with the one life described above. `lock`: hold the
    folder's lock (core/runs/locks.py) for the job's whole life, taken before anything is written;
    a folder busy with another writer ends the job at once (exit 1), its journal untouched."""
    job_dir = Path(job_dir)
    held = None
    if lock:
        try:
            held = acquire(job_dir, f"the {verb} job")
        except FolderBusy as exc:
            print_error(exc.message, exc.hint)
            return 1
    try:
        return _run_job(verb, job_dir, body, spec, args)
    finally:
        if held is not None:
            held.release()


def _run_job(verb: str, job_dir: Path, body: Callable[[Job], dict | None], spec: dict | None,
             args: argparse.Namespace | None) -> int:
    if spec is None and (job_dir / JOB_FILE).is_file():
        spec = read_spec(job_dir)
    with contextlib.suppress(ValueError, OSError):       # stderr without a file descriptor (a test's capture)
        faulthandler.enable()
    job = Job(verb, job_dir, JournalWriter(job_dir / JOURNAL_FILE), spec or {}, args)
    status, end_fields = "failed", {}
    with _Signals(job):
        try:
            end_fields = dict(body(job) or {})
            status = end_fields.pop("status", None) or ("stopped" if job.stop_requested else "completed")
        except (Stopped, KeyboardInterrupt):
            status = "stopped"
            job.log("Stopped before finishing; nothing partial was left behind", level="warning")
        except BaseException as exc:        # noqa: BLE001 — every failure must reach the journal
            report_failure(job, exc)
    end_fields.setdefault("adapter", None)
    job.journal.emit("end", status=status, **end_fields)
    job.journal.close()
    if job.on_end:
        job.on_end(status)
    return 0 if status in OK_STATUSES else 1


def report_failure(job: Job, exc: BaseException) -> None:
    kind, message, hint = classify(exc, job.oom_hint)
    trace = traceback.format_exc()
    print(trace, file=sys.stderr, flush=True)           # worker.log keeps the traceback
    job.journal.emit("log", level="error", message=trace)
    extra = job.error_extra(kind) if job.error_extra else {}
    job.journal.emit("error", kind=kind, message=message, hint=hint, **extra)


def job_main(verb: str, body: Callable[[Job], dict | None], argv: list[str] | None = None,
             add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
             spec_file: str = JOB_FILE, lock: bool = False) -> int:
    """`python -m lorastudio.core.jobs.<verb> JOB_DIR [options]`: parse, check, then `run_job`."""
    args = _parser(verb, add_arguments).parse_args(argv)
    if not (args.job_dir / spec_file).is_file():
        print_error(f"{args.job_dir / spec_file} does not exist")
        return 2
    if spec_file == JOB_FILE:
        try:
            written_for = read_spec(args.job_dir).get("job")
        except Exception:                   # noqa: BLE001 — run_job reports an unreadable spec in words
            written_for = None
        if written_for not in (None, verb):
            print_error(f"{args.job_dir / spec_file} is the spec of a {written_for} job, not of {verb}",
                        f"start it with python -m lorastudio.core.jobs.{written_for}")
            return 2
    return run_job(verb, args.job_dir.resolve(), body, args=args, lock=lock)


def peer_main(verb: str, rank: int, body: Callable[[Job], str], argv: list[str] | None = None,
              add_arguments: Callable[[argparse.ArgumentParser], None] | None = None) -> int:
    """Rank `rank` > 0 of a multi-process job (started by launcher.start_ranks): the job's command
    line and this runtime's signals (the first SIGTERM or SIGINT asks for a graceful stop — rank 0
    sends one to every rank, so that all stop after the same step — a second stops at once), but no
    journal, no status and no lock: only rank 0 writes into the job folder. `body` returns how it
    ended, in words; that line and any failure's traceback go to the rank's own log
    (JOB_DIR/worker-rankN.log), for rank 0 to report. Exit status 0, or 1 on any failure."""
    args = _parser(verb, add_arguments).parse_args(argv)
    job = Job(verb, args.job_dir.resolve(), NullJournal(), args=args)
    with _Signals(job):
        try:
            print(f"rank {rank}: {body(job)}", flush=True)
            return 0
        except BaseException:       # noqa: BLE001 — rank 0 reports it; this log keeps the traceback
            traceback.print_exc()
            return 1


def _parser(verb: str, add_arguments: Callable[[argparse.ArgumentParser], None] | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m lorastudio.core.jobs.{verb}")
    parser.add_argument("job_dir", type=Path)
    if add_arguments:
        add_arguments(parser)
    return parser
