"""A real small file system for disk-full tests: a tmpfs of a chosen size mounted on a folder.

Needs root (containers and CI runners usually are); elsewhere the tests that use it are skipped
with the reason. Every write into it fails for real once it is full: OSError 28 from Python,
torch.save's RuntimeError, safetensors' SafetensorError."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest


@contextlib.contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of `size` ("512k", "2m") on `folder` for the block's duration."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("a small tmpfs needs root (mount -t tmpfs)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path, leave: int = 0) -> None:
    """Fill the disk of `folder` until only `leave` bytes are free (give or take a page)."""
    free = shutil.disk_usage(folder).free - leave
    if free > 0:
        with open(Path(folder) / "filler.bin", "ab") as fh:
            with contextlib.suppress(OSError):
                fh.write(b"\0" * free)


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """Make `folder` (with what it holds) a real read-only file system for the block's duration: a
    bind mount of it onto itself, remounted read-only. Every write fails with OSError 30 (EROFS),
    for root too. Needs root (mount --bind); elsewhere the tests that use it are skipped."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("a read-only bind mount needs root (mount --bind, remount ro)")
    done = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {done.stderr.strip()}")
    try:
        done = subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot remount read-only here: {done.stderr.strip()}")
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
