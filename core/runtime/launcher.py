"""Starting job processes: the only place in core that creates one.

A job is a folder (the run folder for training, a fresh one for everything else) holding
`job.yaml` (the spec, written atomically before the process starts), `events.jsonl` (its journal)
and `worker.log` (its stderr and stdout). `launch` starts `python -m lorastudio.core.jobs.<verb>
JOB_DIR [args]` and returns a `JobHandle`.

In the tests (`inline_jobs()`), `launch` runs the job's `main` in this process instead and returns
a handle whose process has already exited: the same code, the same files, without the 6-7 s of
importing torch, transformers and peft in a fresh interpreter.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import faulthandler
import importlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from lorastudio.core.atomic_files import atomic_write_text

JOB_FILE, JOURNAL_FILE, LOG_FILE = "job.yaml", "events.jsonl", "worker.log"
JOBS_PACKAGE = "lorastudio.core.jobs"
VERBS = ("train", "merge", "generate", "import_gguf", "evaluate", "inspect_data", "rank", "resize", "export_gguf")
_INLINE = {"on": False}


def job_module(verb: str) -> str:
    if verb not in VERBS:
        raise ValueError(f"unknown job {verb!r}; one of {', '.join(VERBS)}")
    return f"{JOBS_PACKAGE}.{verb}"


def job_command(verb: str, job_dir: Path, args: tuple[str, ...] | list[str] = ()) -> list[str]:
    return [sys.executable, "-m", job_module(verb), str(job_dir), *map(str, args)]


def new_job_dir(parent: Path, label: str = "") -> Path:
    """A fresh, unique folder under `parent`: <date>_<time>[_label], made now (race-free)."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    stem = _dt.datetime.now().strftime("%Y-%m-%d_%H%M%S") + (f"_{label}" if label else "")
    candidate, n = parent / stem, 2
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            candidate, n = parent / f"{stem}-{n}", n + 1


def write_spec(job_dir: Path, spec: dict[str, Any]) -> Path:
    path = Path(job_dir) / JOB_FILE
    atomic_write_text(path, yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    return path


def read_spec(job_dir: Path) -> dict[str, Any]:
    data = yaml.safe_load((Path(job_dir) / JOB_FILE).read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


class FinishedProcess:
    """What an inline job leaves behind: a process that has already exited with `returncode`."""

    def __init__(self, returncode: int):
        self.returncode, self.pid = returncode, os.getpid()

    def poll(self) -> int:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        return self.returncode

    def send_signal(self, _sig: int) -> None:
        pass


@dataclass
class JobHandle:
    """A started job: where its files are and its process (a Popen, or a FinishedProcess inline)."""
    verb: str
    job_dir: Path
    process: Any = field(repr=False, default=None)

    @property
    def journal(self) -> Path:
        return self.job_dir / JOURNAL_FILE

    @property
    def log(self) -> Path:
        return self.job_dir / LOG_FILE

    @property
    def pid(self) -> int | None:
        return getattr(self.process, "pid", None)

    def returncode(self) -> int | None:
        """None while the process runs, else its exit status (negative: killed by that signal)."""
        return self.process.poll() if self.process is not None else None

    def stop(self) -> bool:
        """Ask the job to stop gracefully (SIGTERM). False when it is not running."""
        if self.process is None or self.process.poll() is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        return True

    def kill(self, wait_s: float = 5.0) -> None:
        """SIGKILL, then wait (up to `wait_s`) until it is gone: until then it may still write into
        its folder (and would recreate one removed under it)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=wait_s)


def launch(verb: str, job_dir: Path, spec: dict[str, Any] | None = None, args: tuple | list = (), *,
           detach: bool = False, env: dict[str, str] | None = None, niceness: int = 0,
           lock: Any = None) -> JobHandle:
    """Write `spec` to JOB_DIR/job.yaml (unless None: the training job reads config.yaml) and start
    the job. `detach`: in its own session, so it outlives the window or the CLI that started it.
    `lock` (a core.runs.locks.FolderLock held by the caller) is handed to the job process, which
    holds it for its life (its descriptor stays open in the child; LORASTUDIO_LOCK_FD names it)."""
    job_dir = Path(job_dir)
    if lock is not None:
        env = {**(env or {}), "LORASTUDIO_LOCK_FD": str(lock.fd)}
    job_dir.mkdir(parents=True, exist_ok=True)
    if spec is not None:
        write_spec(job_dir, spec)
    if _INLINE["on"]:
        return JobHandle(verb, job_dir, FinishedProcess(run_inline(verb, job_dir, args, env)))
    with open(job_dir / LOG_FILE, "ab") as log:
        process = subprocess.Popen(job_command(verb, job_dir, args), stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=detach,
                                   pass_fds=(lock.fd,) if lock is not None else (),
                                   env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    if niceness:        # the window stays responsive on a 2-core laptop; threads started later inherit it
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, process.pid, niceness)
    return JobHandle(verb, job_dir, process)


def run_inline(verb: str, job_dir: Path, args: tuple | list = (), env: dict[str, str] | None = None) -> int:
    """Run a job's `main` in this process (tests): returns its exit status. What it prints goes to
    its worker.log, as a job process's would."""
    module = importlib.import_module(job_module(verb))
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    fault_handler_was_on = faulthandler.is_enabled()
    try:
        with open(Path(job_dir) / LOG_FILE, "a", encoding="utf-8") as log, \
                contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            return int(module.main([str(job_dir), *map(str, args)]) or 0)
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        if fault_handler_was_on:            # the job pointed it at its log, which is closed now
            faulthandler.enable(sys.__stderr__)
        else:
            faulthandler.disable()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def inline_jobs() -> Iterator[None]:
    """Within this block, `launch` runs jobs in-process (the tests' fast lane)."""
    before, _INLINE["on"] = _INLINE["on"], True
    try:
        yield
    finally:
        _INLINE["on"] = before
