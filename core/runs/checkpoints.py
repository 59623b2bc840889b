"""A run's adapters on disk, without torch: the final adapter and the checkpoints, how they are
named and when they are complete. The window, the CLI, export and the trainer all use this."""
from __future__ import annotations

from pathlib import Path

from lorastudio.core.runs.folders import ADAPTER_DIR, CHECKPOINTS_DIR

STATE_FILE = "state.json"           # a checkpoint's last file: a folder that has it is complete
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR / checkpoint_name(step)


def complete_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, folder) of the complete checkpoints under `root` (RUN/checkpoints), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(path.name[5:]), path) for path in root.glob("step-*")
             if path.name[5:].isdigit() and (path / STATE_FILE).is_file()]
    return sorted(found)


def list_checkpoint_steps(run_dir: Path) -> list[int]:
    """Steps of the run's complete checkpoints, oldest first."""
    return [step for step, _path in complete_checkpoints(Path(run_dir) / CHECKPOINTS_DIR)]


def adapter_complete(folder: Path) -> bool:
    """A PEFT adapter folder with both of its files (the final adapter, or a checkpoint's)."""
    return all((Path(folder) / name).is_file() for name in ADAPTER_FILES)


def has_final_adapter(run_dir: Path) -> bool:
    return adapter_complete(Path(run_dir) / ADAPTER_DIR)


def adapter_steps(run_dir: Path) -> list[int | None]:
    """What can be loaded from a run, newest first: None for the final adapter, then checkpoint steps."""
    return ([None] if has_final_adapter(run_dir) else []) + list(reversed(list_checkpoint_steps(run_dir)))


# ---- what a checkpoint was trained on (issue 27: resuming what changed) ------------------------
DATA_KEY = "data"                   # state.json's {path: sha256} of the data files
_FINGERPRINTS: dict[tuple, str] = {}


def file_sha256(path: Path) -> str:
    """The file's SHA-256, cached in this process by (path, size, mtime): each checkpoint of a run
    costs one stat, the first one reading the file."""
    import hashlib
    import os
    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _FINGERPRINTS:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _FINGERPRINTS[key] = digest.hexdigest()
    return _FINGERPRINTS[key]


def data_fingerprint(data_section) -> dict[str, str]:
    """{data file: sha256} for the config's data.path and validation_path that are plain files (a
    folder or an hf: name is left out); stored in each checkpoint's state.json, compared on resume."""
    found = {}
    for name in (data_section.path, getattr(data_section, "validation_path", "")):
        if name and Path(name).is_file():
            try:
                found[str(Path(name).resolve())] = file_sha256(Path(name).resolve())
            except OSError:
                continue
    return found
