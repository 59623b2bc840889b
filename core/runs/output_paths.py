"""The one output-path rule: where a command that writes may write. Torch-free.

Every writer's check calls `check_output` (merge, export, export-gguf, resize, the TensorBoard export,
serve's GGUF cache; the dialogs through the same plans). An output is never written into or over

  a model folder     config.json beside weights (*.safetensors, *.bin, *.gguf…)
  a run folder       config.yaml beside events.jsonl or status.json
  an adapter folder  adapter_config.json (a run's adapter/, a checkpoint, an export)
  the data directory, one of its own folders (runs/, models/, …), or anywhere in it but under models/

nor into or over a folder that contains one of them. `--overwrite` replaces only what this program
wrote: a folder holding the marker file `.lorastudio-output` (every folder writer leaves it), or a
single file; the check returns the words saying what it replaces. A writer's own places inside a run
(RUN/tensorboard/, RUN/gguf-cache/) pass `inside=` the run folder.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from lorastudio.core.errors import UserError

MARKER = ".lorastudio-output"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt")
SCAN_DEPTH, SCAN_LIMIT = 3, 20_000          # how far a folder is searched for something it must not replace


class OutputPathError(UserError):
    kind = "output"


def folder_kind(folder: Path) -> str | None:
    """What a protected folder is ('a model folder', 'a run folder', 'an adapter folder'), or None."""
    try:
        names = set(os.listdir(folder))
    except OSError:
        return None
    if "config.yaml" in names and ({"events.jsonl", "status.json"} & names):
        return "a run folder"
    if "adapter_config.json" in names:
        return "an adapter folder"
    if "config.json" in names and any(name.endswith(WEIGHT_SUFFIXES) for name in names):
        return "a model folder"
    return None


def data_folders() -> tuple[Path, list[Path]]:
    from lorastudio.core.runs.home import data_home
    home = data_home().resolve()
    try:
        own = [home / name for name in os.listdir(home) if (home / name).is_dir()]
    except OSError:
        own = []
    return home, own


def contained_kind(folder: Path) -> tuple[str, Path] | None:
    """The first protected folder below `folder` (a bounded walk), or None."""
    seen = 0
    base_depth = len(folder.parts)
    for root, dirs, _files in os.walk(folder):
        here = Path(root)
        if len(here.parts) - base_depth >= SCAN_DEPTH:
            dirs[:] = []
        for name in dirs:
            seen += 1
            if seen > SCAN_LIMIT:
                return None
            kind = folder_kind(here / name)
            if kind and not (here / name / MARKER).is_file():
                return kind, here / name
    return None


def marked(folder: Path) -> dict | None:
    """The marker's record when `folder` was written by this program, else None."""
    try:
        text = (Path(folder) / MARKER).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    return record if isinstance(record, dict) else {}


def mark_output(folder: Path, what: str, source: Path | str | None = None) -> None:
    """Leave the marker in a folder a writer is filling (before it is swapped into place)."""
    record = {"written_by": "lorastudio", "what": what, "source": str(source) if source else None}
    (Path(folder) / MARKER).write_text(json.dumps(record) + "\n", encoding="utf-8")


def check_output(out: Path, what: str, overwrite: bool = False, error: type[UserError] = OutputPathError,
                 inside: Path | None = None, file: bool = False) -> str | None:
    """Refuse (`error`, with words and a way forward) an output path the rule forbids; None when it is
    free, or the words saying what `--overwrite` replaces. `file`: the output is one file, not a folder.
    `inside`: a folder the writer owns a place in (a run's tensorboard/, gguf-cache/)."""
    out = Path(out).expanduser().resolve()
    elsewhere = f"choose a new folder outside it for {what}"
    inside = Path(inside).resolve() if inside is not None else None
    for folder in ([] if file else [out]) + list(out.parents):
        kind = folder_kind(folder)
        if kind is None or (folder == out and marked(folder) is not None):
            continue
        if folder == inside and folder != out and kind == "a run folder":
            break                           # the writer's own place in this run (RUN/tensorboard/…)
        where = "is" if folder == out else f"is inside {folder}, which is"
        raise error(f"{out} {where} {kind}; LoRA Studio never writes {what} there",
                    f"{elsewhere}; {kind[2:] if kind.startswith('a ') else kind[3:]}s are only read")
    home, own = data_folders()
    if inside is None:                      # a writer's own place in the data directory passes `inside`
        if out == home or out in home.parents:
            raise error(f"{out} {'is' if out == home else 'contains'} LoRA Studio's data directory ({home})",
                        elsewhere)
        for folder in own:
            if out == folder:
                raise error(f"{out} is {folder.name}/, one of LoRA Studio's own folders in {home}", elsewhere)
        if home in out.parents and not (home / "models" in out.parents and ".imports" not in out.parts):
            raise error(f"{out} is inside LoRA Studio's data directory ({home}), whose folders hold only what "
                        "LoRA Studio keeps there (runs, imports, caches)",
                        f"{elsewhere} (a model to train on later may go in {home / 'models'})")
    if file:
        if out.is_dir():
            raise error(f"{out} is a folder", "give a file name")
        if out.exists():
            if not overwrite:
                raise error(f"{out} already exists", "choose another name, or pass --overwrite")
            return f"replacing the file {out}"
        return None
    if out.is_file() or out.is_symlink():
        raise error(f"{out} is a file", "choose a folder")
    if not out.is_dir():
        return None
    found = contained_kind(out)
    if found:
        kind, where = found
        raise error(f"{out} contains {kind} ({where}); LoRA Studio never writes {what} over it", elsewhere)
    if inside is not None:
        return None                         # the writer's own place: it rewrites its own files there
    try:
        empty = not any(out.iterdir())
    except OSError as exc:
        raise error(f"{out} cannot be read ({exc.strerror or exc})", elsewhere) from None
    if empty:
        return None
    if not overwrite:
        raise error(f"{out} is not empty", "choose an empty or new folder, or pass --overwrite")
    record = marked(out)
    if record is None:
        raise error(f"{out} is not empty and was not written by LoRA Studio (no {MARKER} in it); "
                    "--overwrite replaces only a folder LoRA Studio wrote",
                    "choose an empty or new folder, or move that folder's files away yourself")
    previous = f" ({record['what']})" if record.get("what") else ""
    return f"replacing {out}{previous}, written by LoRA Studio"


def check_run_folder(run_dir: Path) -> None:
    """A new run's folder (`--run-dir`, the window's choice) by the same rule: never a model or adapter
    folder, nor inside one or inside another run, nor a folder holding one, nor the data directory or
    one of its own folders (a new run goes *into* DATA/runs, never over it)."""
    run_dir = Path(run_dir).expanduser().resolve()
    elsewhere = "choose a new, empty folder for the run (or leave --run-dir out)"
    for folder in [run_dir, *run_dir.parents]:
        kind = folder_kind(folder)
        if kind is None or (folder == run_dir and kind == "a run folder"):
            continue                        # a run folder at the path itself: refused by its journal
        where = "is" if folder == run_dir else f"is inside {folder}, which is"
        raise OutputPathError(f"{run_dir} {where} {kind}; a run is never written there", elsewhere)
    if run_dir.is_dir():
        found = contained_kind(run_dir)
        if found:
            raise OutputPathError(f"{run_dir} contains {found[0]} ({found[1]}); a run is never written over it",
                                  elsewhere)
    home, own = data_folders()
    if run_dir == home or run_dir in home.parents or run_dir in own:
        raise OutputPathError(f"{run_dir} is LoRA Studio's data directory or one of its own folders", elsewhere)
