"""`lorastudio import-gguf FILE`: a local .gguf (llama.cpp, Ollama, LM Studio) becomes a model
folder in the cache, once (core/plans/import_gguf.py starts the job). `lorastudio train` calls
`ensure_imported` for a .gguf base.
"""
from __future__ import annotations

from pathlib import Path

from lorastudio.core.cli.output import fail, print_phase


def import_gguf_arguments(p) -> None:
    p.add_argument("gguf", type=Path, help="the .gguf file")


def import_gguf(args) -> int:
    return ensure_imported(args.gguf)


def ensure_imported(path: Path, quiet_if_cached: bool = False) -> int:
    """Import a .gguf into the model cache with a progress display; 0 when it is there.
    `quiet_if_cached` (train): say nothing for a model that is not a .gguf or is imported already."""
    from lorastudio.core.models.gguf_cache import GgufError, cached_import, is_gguf
    from lorastudio.core.plans.import_gguf import import_with_worker
    if not is_gguf(path) or (quiet_if_cached and not path.is_file()):     # preflight says why
        return 0 if quiet_if_cached else fail(f"{path} is not a .gguf file")
    folder = cached_import(path)
    if folder is None:
        print(f"Importing {path.name} into the model cache (once)")
        try:          # progress lines as they come; the error once, from the outcome
            folder = import_with_worker(path, lambda ev: print_phase(ev) if ev["type"] == "phase" else None)
        except GgufError as exc:
            return fail(exc.message, exc.hint)
    if not quiet_if_cached:
        print(f"Model folder: {folder}")
    return 0
