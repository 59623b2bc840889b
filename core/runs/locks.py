"""One folder, one writer: an exclusive lock (fcntl.flock) on `FOLDER/.lock`. Torch-free.

The process that starts a job takes the lock before it writes anything (train: before
config.yaml; resume: before the journal's "resuming" mark; merge and export: on their output)
and hands it to the job process, which holds it for its whole life: the open lock file is passed
down (`launch(..., lock=)` keeps its descriptor open in the child and names it in
LORASTUDIO_LOCK_FD), so there is no moment at which a second writer could slip in.

The kernel drops a flock when the last process holding it dies, however it dies: a lock file
left by a dead process is not a lock (its pid is only a note for the refusal's words). A second
writer gets `FolderBusy`, naming the holder's pid and what it is doing.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from lorastudio.core.errors import UserError
from lorastudio.core.processes import pid_alive

LOCK_FILE = ".lock"
LOCK_FD_ENV = "LORASTUDIO_LOCK_FD"
_HELD: dict[str, "FolderLock"] = {}        # this process's locks, by lock file path


class FolderBusy(UserError):
    """Another process is writing into this folder."""
    kind = "busy"


class FolderLock:
    """A held lock. `release()` (or leaving a `with`) lets it go once every taker released it."""

    def __init__(self, path: Path, fd: int, what: str, remove: bool = False):
        self.path, self.fd, self.what, self.count, self.remove = path, fd, what, 1, remove

    def release(self, handed_over: bool = False) -> None:
        self.count -= 1
        if self.count <= 0 and _HELD.get(str(self.path)) is self:
            del _HELD[str(self.path)]
            if self.remove and not handed_over:     # an output's lock file goes with its last holder
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
            with contextlib.suppress(OSError):
                os.close(self.fd)

    def __enter__(self) -> "FolderLock":
        return self

    def __exit__(self, *_exc) -> None:
        self.release()


def lock_path(folder: Path) -> Path:
    return Path(folder) / LOCK_FILE


def output_lock_path(out: Path) -> Path:
    """The lock of an output that is replaced as a whole (a merge's or an export's OUT): a hidden
    file beside it, since OUT itself is swapped."""
    out = Path(out)
    return out.with_name(f".{out.name}.lock")


def acquire(folder: Path, what: str, path: Path | None = None, label: str = "the folder",
            hint: str = "choose a folder on a writable disk that you own") -> FolderLock:
    """Take the lock of `folder` (or the lock file `path`) for `what` ("training", "merging into
    it"…) or raise FolderBusy naming who holds it; FolderNotWritable (core/disk.py) naming the folder,
    as `label` ("the run folder"), when it is read-only or not ours. Reentrant within one process."""
    explicit = path is not None
    path = Path(path) if path is not None else lock_path(folder)
    held = _HELD.get(str(path))
    if held is not None:
        held.count += 1
        return held
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = _inherited(path)
        while fd is None:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                for _ in range(20):     # the holder took the lock a moment ago and is writing its pid
                    if holder:
                        break
                    time.sleep(0.05)
                    holder = _read_holder(fd)
                os.close(fd)
                raise FolderBusy(f"{folder} is in use by another LoRA Studio process{holder}",
                                 "wait until it ends, or stop it first (a second writer would mix its "
                                 "files with the first one's); nothing was written") from None
            if not _still_there(fd, path):      # its last holder removed it after we opened it: again
                os.close(fd)
                fd = None
    except OSError as exc:          # a read-only disk or someone else's folder: not a bare [Errno 30] (issue 27)
        from lorastudio.core.disk import existing_ancestor, not_writable
        refused = not_writable(exc, existing_ancestor(path.parent), label, hint)
        if refused is None:
            raise
        raise refused from None
    _write_holder(fd, what)
    lock = FolderLock(path, fd, what, remove=explicit)
    _HELD[str(path)] = lock
    return lock


def holder(folder: Path, path: Path | None = None) -> dict | None:
    """Who holds the folder's lock ({"pid", "what"}), or None when it is free."""
    path = Path(path) if path is not None else lock_path(folder)
    if str(path) in _HELD:
        return {"pid": os.getpid(), "what": _HELD[str(path)].what}
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        pid, _, what = _read(fd).partition(" ")
        return {"pid": int(pid) if pid.isdigit() else None, "what": what}
    finally:
        os.close(fd)
    return None


def child_env(lock: FolderLock | None) -> dict[str, str]:
    """The environment entry that tells a job process which inherited descriptor is its lock."""
    return {LOCK_FD_ENV: str(lock.fd)} if lock is not None else {}


def _inherited(path: Path) -> int | None:
    """The lock descriptor this process was started with, if it is the lock of `path`."""
    text = os.environ.get(LOCK_FD_ENV, "")
    if not text.isdigit():
        return None
    fd = int(text)
    try:
        same = os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return None
    if not same:
        return None
    os.environ.pop(LOCK_FD_ENV, None)
    os.set_inheritable(fd, False)
    try:                                # still ours (the starter may have died: then take it anew)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _still_there(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return False


def _read(fd: int) -> str:
    with contextlib.suppress(OSError):
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    return ""


def _read_holder(fd: int) -> str:
    pid, _, what = _read(fd).partition(" ")
    if not pid.isdigit():
        return ""
    alive = "" if pid_alive(int(pid)) else ", which has just ended"
    return f" (pid {pid}{', ' + what if what else ''}{alive})"


def _write_holder(fd: int, what: str) -> None:
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {what}\n".encode(), 0)


def release_all(lock: FolderLock, handed_over: bool = True) -> None:
    """Let go of every hold this process has on `lock` (after handing it to a job process that
    still runs: then an output's lock file stays for that process to remove)."""
    lock.count = 1
    lock.release(handed_over=handed_over)


def discard_stale(path: Path) -> bool:
    """Remove an output's lock file that nobody holds (its holder was killed); True if removed."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if not _still_there(fd, Path(path)):
            return False
        os.unlink(path)          # unlinked while held: a taker that opened it meanwhile sees it gone
        return True
    except (BlockingIOError, OSError):
        return False
    finally:
        os.close(fd)
