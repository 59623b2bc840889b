"""Finding a run's checkpoints without torch (the window, the CLI and export use this)."""
from __future__ import annotations

from pathlib import Path

CHECKPOINTS_DIR, STATE_FILE = "checkpoints", "state.json"


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR / f"step-{step:06d}"


def list_checkpoint_steps(run_dir: Path) -> list[int]:
    """Steps of the complete checkpoints (those with state.json, written last), oldest first."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    steps = []
    for path in root.glob("step-*"):
        if (path / STATE_FILE).is_file() and path.name[5:].isdigit():
            steps.append(int(path.name[5:]))
    return sorted(steps)
