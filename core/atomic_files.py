"""Atomic file and folder writes: a crash never leaves half a file where a whole one was.

A folder is written under a hidden name beside its target, `.NAME.PID.XXXX.partial`, and then put
in place. When the target already exists the two are swapped in one step (Linux renameat2 with
RENAME_EXCHANGE), so the path always holds a whole folder — the old one or the new one — whatever
instant a kill lands. Where the exchange is not available (another OS, a file system without it)
the old folder is first renamed to `.NAME.PID.old`; a kill between the two renames leaves that
`.old` folder and no target, and `tidy` (run by the next command that touches the folder, and by
every atomic write) renames it back.

Hidden leftovers name the process that made them; `tidy` removes those of dead processes.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from lorastudio.core.processes import pid_alive

PARTIAL_SUFFIX, OLD_SUFFIX = ".partial", ".old"
_PARTIAL = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.partial$")
_OLD = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.old$")
# Written by 0.2 and earlier: no pid in a partial's name (removed once old), `.NAME.old-PID`.
_LEGACY_PARTIAL = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.partial$")
_LEGACY_OLD = re.compile(r"^\.(?P<name>.+)\.old-(?P<pid>\d+)$")
LEGACY_PARTIAL_AGE_S = 6 * 3600
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2
_EXCHANGE = {"off": False}          # tests turn the exchange off to exercise the fallback


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def partial_name(target: Path) -> str:
    """The prefix of a hidden temporary beside `target`: `.NAME.PID.` (tempfile adds the rest)."""
    return f".{Path(target).name}.{os.getpid()}."


def partial_dir(target: Path) -> Path:
    """A fresh hidden folder beside `target` that `tidy` recognises as this process's."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=partial_name(target), suffix=PARTIAL_SUFFIX, dir=target.parent))


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; on success it takes `target`'s place in one step.

    If the body raises, the temporary folder is removed and `target` is untouched. An existing
    target is swapped out (never removed first), so the path is never empty."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tidy(target.parent)
    tmp = partial_dir(target)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        replace_folder(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE). False where unavailable."""
    if _EXCHANGE["off"] or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False                    # this file system cannot exchange: use the fallback
    raise OSError(err, os.strerror(err), str(b))


def replace_folder(new: Path, target: Path) -> None:
    """Put folder `new` where `target` is. An existing target is exchanged with `new` in one step
    and then deleted; without the exchange it is renamed to `.NAME.PID.old` first (which `tidy`
    renames back if a crash comes between the two renames)."""
    new, target = Path(new), Path(target)
    _fsync_tree(new)
    if target.exists() or target.is_symlink():
        if exchange(new, target):       # `new` now holds the old folder, under its hidden name
            _fsync_dir(target.parent)
            _remove(new)
            return
        old = target.with_name(f".{target.name}.{os.getpid()}{OLD_SUFFIX}")
        _remove(old)
        os.replace(target, old)
        _test_pause()                   # tests widen the window between the renames to kill in it
        os.replace(new, target)
        _fsync_dir(target.parent)
        _remove(old)
        return
    os.replace(new, target)
    _fsync_dir(target.parent)


@dataclass
class Leftover:
    path: Path
    bytes: int
    action: str          # "removed" or "restored"


def tidy(parent: Path) -> list[Leftover]:
    """Recover and remove the hidden leftovers of dead processes in `parent`: an `.old` folder whose
    target is missing goes back in place; other `.partial` and `.old` leftovers are deleted.
    Leftovers of live processes (a write in progress) are left alone."""
    parent = Path(parent)
    try:
        names = [entry.name for entry in os.scandir(parent) if entry.name.startswith(".")]
    except OSError:
        return []
    done: list[Leftover] = []
    for name in names:
        path = parent / name
        match = _OLD.match(name) or _LEGACY_OLD.match(name)
        if match and not pid_alive(int(match["pid"])):
            target = parent / match["name"]
            if not target.exists():
                with contextlib.suppress(OSError):
                    os.replace(path, target)
                    done.append(Leftover(target, 0, "restored"))
                    continue
            done.append(Leftover(path, _size(path), "removed"))
            _remove(path)
            continue
        match = _PARTIAL.match(name)
        legacy = _LEGACY_PARTIAL.match(name) if not match else None
        if (match and not pid_alive(int(match["pid"]))) or (legacy and _age(path) > LEGACY_PARTIAL_AGE_S):
            done.append(Leftover(path, _size(path), "removed"))
            _remove(path)
    return done


def folder_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, name)).st_size
    return total


def _size(path: Path) -> int:
    with contextlib.suppress(OSError):
        return folder_size(path) if path.is_dir() else path.stat().st_size
    return 0


def _age(path: Path) -> float:
    with contextlib.suppress(OSError):
        return time.time() - path.stat().st_mtime
    return 0.0


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _test_pause() -> None:
    seconds = os.environ.get("LORASTUDIO_TEST_SWAP_PAUSE")
    if seconds:
        time.sleep(float(seconds))


def _fsync_tree(folder: Path) -> None:
    """Flush the new folder's files before it takes the target's place (a write error such as a
    full disk on a network file system surfaces here, while the old folder is still in place)."""
    for root, _dirs, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
