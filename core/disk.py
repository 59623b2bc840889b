"""Disk space and write failures, in words. Torch-free.

Every write of a known size (a checkpoint, the adapter, an export, a merge) first asks
`check_room(where, need, what)`; every write is wrapped in `writing(what, where, need)`, which turns
a failure into a `DiskError` naming its cause (full disk, quota, read-only file system, no
permission, a file too large for the file system, an I/O error). A full disk is recognised
however it is reported: OSError 28, torch.save's RuntimeError ("unexpected pos", "file write
failed"), safetensors' SafetensorError ("No space left on device").
"""
from __future__ import annotations

import contextlib
import errno
import shutil
from pathlib import Path
from typing import Iterator

from lorastudio.core.errors import UserError
from lorastudio.core.formatting import format_bytes

# Text that means "the disk is full" in the errors of torch.save and safetensors (which carry no errno).
DISK_FULL_MARKS = ("No space left on device", "unexpected pos", "file write failed", "StorageFull",
                   "Disk quota exceeded")
MARGIN_BYTES = 256 * 1024          # file system overhead (inodes, directory blocks, the index)
MARGIN_FRACTION = 1.05
_CAUSES = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "your disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EFBIG: "a file is too large for this file system (FAT32 stops at 4 GB)",
    errno.EIO: "an input/output error (the disk or its connection failed)",
    errno.ENAMETOOLONG: "the path is too long",
    errno.ENOENT: "a folder disappeared while writing (was the disk removed?)",
}
_TEXT_CAUSES = (("Read-only file system", errno.EROFS), ("Permission denied", errno.EACCES),
                ("File too large", errno.EFBIG), ("Input/output error", errno.EIO))


class DiskError(UserError):
    """A write failed or would fail: the disk is full, read-only, not ours… Nothing half-written is left."""
    kind = "disk"


class FolderNotWritable(DiskError):
    """A folder LoRA Studio must write into (a run folder, the data directory) is read-only or not ours."""


NOT_WRITABLE_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)


def not_writable(exc: BaseException, folder: Path, what: str, hint: str = "") -> FolderNotWritable | None:
    """A FolderNotWritable naming `folder` (`what`: "the run folder", "the data directory"…) and
    what to do, when `exc` is a read-only file system or a refused permission; else None."""
    code = errno_of(exc)
    if code not in NOT_WRITABLE_ERRNOS:
        return None
    folder = Path(folder)
    if code == errno.EROFS:
        return FolderNotWritable(f"{what} {folder} is on a read-only file system: nothing can be written there",
                                 (hint + "; " if hint else "") + "or remount that disk read-write")
    return FolderNotWritable(f"{what} {folder} cannot be written to: permission denied",
                             (hint + "; " if hint else "") + f"or give yourself write permission on it "
                             f"(chmod u+w {folder})")


def existing_ancestor(path: Path) -> Path:
    path = Path(path).expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(existing_ancestor(path)).free


def room_needed(need: int) -> int:
    return int(need * MARGIN_FRACTION) + MARGIN_BYTES


def check_room(where: Path, need: int, what: str, hint: str = "", error: type[UserError] = DiskError) -> None:
    """Raise `error` before writing `need` bytes of `what` into `where` if the disk lacks the room."""
    free = free_bytes(where)
    if free < room_needed(need):
        raise error(f"not enough disk space for {what}: it needs about {format_bytes(room_needed(need))} "
                    f"in {where}, which has {format_bytes(free)} free",
                    f"free {format_bytes(room_needed(need) - free)} or more on that disk"
                    + (f"; {hint}" if hint else "") + "; nothing was written")


def errno_of(exc: BaseException) -> int | None:
    """The errno behind a write failure, from the exception or its text (torch and safetensors
    report only text); None when it is not a write failure we can name."""
    for link in _chain(exc):
        if isinstance(link, OSError) and link.errno in _CAUSES:
            return link.errno
    text = " ".join(str(link) for link in _chain(exc))
    if any(mark in text for mark in DISK_FULL_MARKS):
        return errno.EDQUOT if "quota" in text.lower() else errno.ENOSPC
    for mark, code in _TEXT_CAUSES:
        if mark in text:
            return code
    return None


def is_disk_full(exc: BaseException) -> bool:
    return errno_of(exc) in (errno.ENOSPC, errno.EDQUOT)


def describe_write_failure(exc: BaseException, what: str, where: Path, need: int | None = None) -> tuple[str, str] | None:
    """(message, hint) for a failed write of `what` into `where`, or None if `exc` is no write failure."""
    code = errno_of(exc)
    if code is None and isinstance(exc, OSError):
        return (f"could not write {what} to {where}: {exc.strerror or exc}",
                "check that the folder exists and can be written to")
    if code is None:
        return None
    where = Path(where)
    if code in (errno.ENOSPC, errno.EDQUOT):
        free = free_bytes(where)
        size = f"; it needs about {format_bytes(room_needed(need))}" if need else ""
        missing = (f"free {format_bytes(room_needed(need) - free)} or more on that disk" if need and free < room_needed(need)
                   else "free some space on that disk")
        return (f"could not write {what} to {where}: {_CAUSES[code]} ({format_bytes(free)} free{size})", missing)
    hints = {errno.EROFS: "choose a folder on a writable disk",
             errno.EACCES: "choose a folder you can write to, or fix its permissions",
             errno.EPERM: "choose a folder you can write to, or fix its permissions",
             errno.EFBIG: "choose a disk formatted with a modern file system (ext4, APFS, NTFS, exFAT)",
             errno.EIO: "check the disk (and its cable or network); then try again"}
    return f"could not write {what} to {where}: {_CAUSES[code]}", hints.get(code, "try again")


@contextlib.contextmanager
def writing(what: str, where: Path, need: int | None = None, hint: str = "",
            error: type[UserError] = DiskError) -> Iterator[None]:
    """Turn a failure of the writes inside into `error`, naming its cause, `what` and `where`.
    `hint` is added to the hint (e.g. "earlier checkpoints are intact")."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:        # noqa: BLE001 — classified below, re-raised if not a write failure
        words = describe_write_failure(exc, what, where, need)
        if words is None:
            raise
        message, base_hint = words
        raise error(message, base_hint + (f"; {hint}" if hint else "")) from exc


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__
