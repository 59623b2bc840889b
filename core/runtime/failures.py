"""Any exception in a job → (kind, message, hint): the one place failures are put into words.

Torch-free: exceptions from torch, safetensors or the OS are recognised by name and text, so the
window and the CLI can use this too.
"""
from __future__ import annotations

import errno
from typing import Callable

from lorastudio.core.config import ConfigError
from lorastudio.core.disk import (DISK_FULL_MARKS, describe_write_failure, errno_of,  # noqa: F401 (one place)
                                  is_disk_full)
from lorastudio.core.errors import UserError

# Kinds that mean the input is at fault (the user fixes a file, a model or a setting), not the program.
INPUT_KINDS = ("data", "model", "config")
WRITE_ONLY_ERRNOS = (errno.EROFS, errno.EFBIG)


def is_out_of_memory(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or "CUDA out of memory" in str(exc)


def classify(exc: BaseException, oom_hint: Callable[[], str] | None = None) -> tuple[str, str, str]:
    """(kind, message, hint) in words a user can act on. `oom_hint` gives settings to try."""
    name = type(exc).__name__
    if isinstance(exc, ConfigError):
        return "config", str(exc), "fix the value in config.yaml and start again"
    if isinstance(exc, UserError):
        return exc.kind, exc.message, exc.hint
    if is_out_of_memory(exc):
        return "oom", str(exc).splitlines()[0], oom_hint() if oom_hint else "use smaller settings"
    if isinstance(exc, FloatingPointError):
        return "diverged", str(exc), "lower training.lr (e.g. halve it) or add warmup_steps"
    if is_disk_full(exc):       # a write no `disk.writing` named: the cause without the library's noise
        return ("disk", f"the disk is full ({name} while writing: {str(exc).strip().splitlines()[0][:200]})",
                "free some space on the disk that holds the run and the output; earlier checkpoints are intact")
    if errno_of(exc) in WRITE_ONLY_ERRNOS:      # only a write fails so: read-only disk, file too large
        message, hint = describe_write_failure(exc, "a file", getattr(exc, "filename", None) or "the disk")
        return "disk", message, hint
    return "exception", f"{name}: {exc}", "see worker.log for the full traceback"
