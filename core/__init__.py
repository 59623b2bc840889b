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
    Cached: reading the metadata scans every installed package (the window asks twice at start-up)."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("lorastudio")
    except PackageNotFoundError:
        return "unknown"
