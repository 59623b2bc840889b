"""A run named on the command line: a path, a run folder's name, or a unique prefix of one. Torch-free.

The one resolver every command that takes RUN goes through (core/cli/runs.py calls it after the
command line is parsed), so `lorastudio eval 2026-12-05_0144` finds the run wherever the runs
live, and an ambiguous or unknown name says which runs there are and where they were looked for.
"""
from __future__ import annotations

from pathlib import Path

from lorastudio.core.errors import UserError
from lorastudio.core.runs.folders import default_runs_dir
from lorastudio.core.runs.listing import run_folders

SHOWN_CANDIDATES = 8


class RunNotFound(UserError):
    """RUN names no folder and no run (or several runs) in the runs folder."""
    kind = "run"


def resolve_run(given: str | Path, runs_root: Path | None = None) -> Path:
    """An existing folder as it is (a run, or an adapter folder where a command takes one); else the
    run in `runs_root` (default: the data directory's runs/) whose folder name is `given` or starts with it."""
    path = Path(given).expanduser()
    if path.is_dir():
        return path.resolve()
    root = Path(runs_root) if runs_root is not None else default_runs_dir()
    name = str(given)
    folders = sorted(run_folders(root), key=lambda d: d.name) if name and "/" not in name else []
    exact = [d for d in folders if d.name == name]
    matches = exact or [d for d in folders if d.name.startswith(name)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        shown = ", ".join(d.name for d in matches[:SHOWN_CANDIDATES])
        more = f" and {len(matches) - SHOWN_CANDIDATES} more" if len(matches) > SHOWN_CANDIDATES else ""
        raise RunNotFound(f"'{name}' matches {len(matches)} runs in {root}: {shown}{more}",
                          "give more of the name (or the folder's path)")
    if path.exists():
        raise RunNotFound(f"{given} is a file, not a run folder", f"give a run folder; runs live in {root}")
    raise RunNotFound(f"{given} is not a run folder: there is no such folder, and no run in {root} is named "
                      f"'{name}' or starts with it",
                      f"list the runs with `lorastudio runs` (runs live in {root}), or give the run folder's path")
