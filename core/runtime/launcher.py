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

from lorastudio.core.atomic_files import atomic_write_text
from lorastudio.core.runtime.jobs import job_kind

JOB_FILE, JOURNAL_FILE, LOG_FILE = "job.yaml", "events.jsonl", "worker.log"
JOBS_PACKAGE = "lorastudio.core.jobs"
_INLINE = {"on": False}


def job_module(verb: str) -> str:
    return f"{JOBS_PACKAGE}.{job_kind(verb).verb}"


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


def write_spec(job_dir: Path, spec: dict[str, Any], verb: str | None = None) -> Path:
    """JOB_DIR/job.yaml, atomically; `job: VERB` first (the worker refuses a spec for another job)."""
    import yaml         # here, not at the top: the window imports the runtime before its first paint
    path = Path(job_dir) / JOB_FILE
    spec = {"job": verb, **spec} if verb else dict(spec)
    atomic_write_text(path, yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    return path


def read_spec(job_dir: Path) -> dict[str, Any]:
    import yaml
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
    job_kind(verb)                      # an unknown verb is refused before anything is written
    if lock is not None:
        env = {**(env or {}), "LORASTUDIO_LOCK_FD": str(lock.fd)}
    job_dir.mkdir(parents=True, exist_ok=True)
    if spec is not None:
        write_spec(job_dir, spec, verb)
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


def rank_log(rank: int) -> str:
    """Where rank `rank` of a multi-process job writes its output: rank 0 is the job's own log."""
    return LOG_FILE if rank == 0 else f"worker-rank{rank}.log"


def free_port() -> int:
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In a rank's child process, before exec: SIGKILL when rank 0 goes (Linux), so no rank outlives
    it (not even one waiting in a collective, where a SIGTERM handler would never run)."""
    with contextlib.suppress(Exception):
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)     # PR_SET_PDEATHSIG


class RankGroup:
    """Ranks 1..N-1 of a job whose rank 0 is this process (torchrun's environment: RANK,
    LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT). Rank 0 started them, so it sees each one's
    exit status: `failure()` puts a dead rank into words; `stop()` / `close()` end them all."""

    def __init__(self, world: int, port: int, processes: dict[int, Any], job_dir: Path):
        self.world, self.port, self.processes, self.job_dir = world, port, processes, Path(job_dir)
        self.saved_env: dict[str, str | None] = {}

    def env(self, rank: int) -> dict[str, str]:
        return {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(self.world),
                "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(self.port)}

    def failure(self, wait_s: float = 3.0) -> str | None:
        """'rank R exited …' for the first rank that ended (waiting up to `wait_s` for one to), else None."""
        import time
        deadline = time.monotonic() + wait_s
        while True:
            for rank, process in sorted(self.processes.items()):
                code = process.poll()
                if code is not None and code != 0:
                    log = self.job_dir / rank_log(rank)
                    how = f"killed by signal {-code} ({signal.Signals(-code).name})" if code < 0 \
                        else f"exit code {code}: {_last_line(log)}"
                    return f"rank {rank} of {self.world} exited ({how}); see {log}"
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)

    def restore_environment(self) -> None:
        for key, value in self.saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def stop(self) -> None:
        """SIGTERM to every rank still running (each stops gracefully)."""
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)

    def close(self, wait_s: float = 30.0) -> None:
        """Wait for the ranks to exit (they finish the same step as rank 0); SIGKILL what remains."""
        import time
        deadline = time.monotonic() + wait_s
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                process.wait()
        self.restore_environment()


def _last_line(log: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
        if lines:
            return lines[-1].strip()[:300]
    return "it printed nothing"


def start_ranks(verb: str, job_dir: Path, world: int, args: tuple | list = (),
                env: dict[str, str] | None = None) -> RankGroup:
    """Called by rank 0 of a job (in its own process): start ranks 1..world-1 as
    `python -m lorastudio.core.jobs.<verb> JOB_DIR [args]` with torchrun's environment, each with its
    output in JOB_DIR/worker-rankN.log; set rank 0's own environment. The ranks die with rank 0."""
    if not job_kind(verb).ranks:
        raise ValueError(f"{verb} is not a job that runs as several processes")
    job_dir, port = Path(job_dir), free_port()
    group = RankGroup(world, port, {}, job_dir)
    group.saved_env = {key: os.environ.get(key) for key in group.env(0)}     # back on close (inline runs)
    os.environ.update(group.env(0))
    for rank in range(1, world):
        with open(job_dir / rank_log(rank), "ab") as log:
            group.processes[rank] = subprocess.Popen(
                job_command(verb, job_dir, args), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {}), **group.env(rank)})
    return group


TOOL_TIMED_OUT = 124             # run_tool's status for a program ended at its timeout (as timeout(1) says)


def run_tool(argv: list[str], env: dict[str, str] | None, log: Path, should_stop: Any = None,
             poll_s: float = 0.2, grace_s: float = 5.0, timeout_s: float | None = None) -> int:
    """Run a helper program a job needs (not a job: llama.cpp's converter) to its end, its output
    appended to `log`. `should_stop()` true → SIGTERM, SIGKILL after `grace_s`. Its exit status;
    TOOL_TIMED_OUT when it ran past `timeout_s` and was killed."""
    import time
    with open(log, "ab") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   env={**(env if env is not None else os.environ), "PYTHONUNBUFFERED": "1"})
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        while process.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                process.kill()
                process.wait()
                return TOOL_TIMED_OUT
            if should_stop is not None and should_stop():
                process.terminate()
                try:
                    process.wait(timeout=grace_s)
                except subprocess.TimeoutExpired:
                    process.kill()
                break
            time.sleep(poll_s if deadline is None else max(0.0, min(poll_s, deadline - time.monotonic())))
        return process.wait()
    finally:
        if process.poll() is None:          # an exception in this process (a second Ctrl+C): no orphan
            process.kill()
            process.wait()


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
