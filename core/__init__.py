"""LoRA Studio's core. Folders by role (DESIGN.md has the map):

    runs/ models/ data/ runtime/ cli/ and the top modules   torch-free: the window and the CLI use them
    engine/                                                  heavy (torch, transformers, peft): jobs only
    jobs/                                                    one file per job process

import-linter contracts in pyproject.toml check these lines.
"""
from __future__ import annotations

import functools


@functools.cache
def package_version() -> str:
    """The installed distribution's version (package metadata): --version, About, model cards.
    Cached: reading the metadata scans every installed package (the window asks twice at start-up).
    The distribution's METADATA file is read directly when it is on sys.path: importlib.metadata
    (and the email parser it imports) is 70–110 ms of the window's start-up."""
    import glob
    import os
    import sys
    for folder in sys.path:
        for meta in glob.glob(os.path.join(folder or ".", "lorastudio-*.dist-info", "METADATA")):
            with open(meta, encoding="utf-8") as fh:
                for line in fh:
                    if line.startswith("Version:"):
                        return line.split(":", 1)[1].strip()
                    if not line.strip():
                        break
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("lorastudio")
    except PackageNotFoundError:
        return "unknown"
