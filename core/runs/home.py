"""The data directory: LORASTUDIO_HOME, else the platform's user data folder. Torch-free; imports
nothing of ours, so every module of core/runs may ask it (core/runs/folders re-exports it)."""
from __future__ import annotations

import os
from pathlib import Path


def data_home() -> Path:
    if os.environ.get("LORASTUDIO_HOME"):
        return Path(os.environ["LORASTUDIO_HOME"])
    from platformdirs import user_data_dir
    return Path(user_data_dir("lorastudio", appauthor=False))
