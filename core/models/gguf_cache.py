"""GGUF import: a local `.gguf` becomes a safetensors model folder in the app's model cache.

    data_home()/models/<stem>-<key>/   config.json  model.safetensors  tokenizer.json
                                       tokenizer_config.json  chat_template.jinja
                                       generation_config.json  gguf_import.json

Converted once: the folder name carries a key made from the file's size and its first 1 MiB
(hashing a whole 8 GB file would take longer than the check is worth), and `gguf_import.json`
records the source; a second import of the same file is a cache hit. The conversion itself
(dequantize with transformers, save with save_pretrained, core/engine/gguf/import_gguf.py) runs in a
job, `python -m lorastudio.core.jobs.import_gguf JOB_DIR` (core/plans/import_gguf.py), or in-process in a
training job; it writes into a temporary folder renamed into place (atomic_files.atomic_dir).

This module is torch-free at import time: the window and the CLI use `cached_import`,
`is_gguf` and `models_dir`; only `check_gguf` (gguf-py, numpy) and `convert` (transformers)
import more, inside the functions.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

from lorastudio.core.errors import ModelError
from lorastudio.core.runs.folders import data_home, slugify

MODELS_DIR, IMPORTS_DIR, RECORD_FILE = "models", ".imports", "gguf_import.json"
KEY_BYTES = 1 << 20
FLOAT_TYPES = ("F32", "F16", "BF16", "F64")
# Models up to this size are saved in float32 (exactly what dequantization gives); larger ones in
# bfloat16, whose rounding (2^-9 relative) is far below any 4-8-bit quantization's step.
FP32_MAX_PARAMS = 2_000_000_000

Progress = Callable[[str, float, str], None]       # (phase name, fraction 0→1, message)


class GgufError(ModelError):
    """A GGUF file that cannot be imported, said plainly (message) with what to do (hint)."""
    kind = "gguf"


def is_gguf(source: str | Path) -> bool:
    return str(source).lower().endswith(".gguf")


def models_dir() -> Path:
    return data_home() / MODELS_DIR


def cache_key(gguf: Path) -> str:
    size = gguf.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(gguf, "rb") as fh:
        digest.update(fh.read(KEY_BYTES))
    return digest.hexdigest()[:10]


def cache_folder(gguf: str | Path) -> Path:
    """Where the import of this file lives (whether or not it exists yet)."""
    gguf = Path(gguf).expanduser().resolve()
    return models_dir() / f"{slugify(gguf.stem)}-{cache_key(gguf)}"


def cached_import(gguf: str | Path) -> Path | None:
    """The imported model folder for this .gguf, or None when it has not been imported."""
    try:
        folder = cache_folder(gguf)
    except OSError:
        return None
    complete = (folder / "config.json").is_file() and (folder / RECORD_FILE).is_file()
    return folder if complete else None


def resolve_gguf(source: str | Path) -> Path:
    """The cached folder of an imported .gguf; ModelError (what to do) when there is none."""
    gguf = Path(source).expanduser()
    if not gguf.is_file():
        raise ModelError(f"GGUF file {gguf} does not exist", "check the path, or pick the file again")
    folder = cached_import(gguf)
    if folder is None:
        raise ModelError(f"{gguf.name} has not been imported yet",
                         f"import it once: lorastudio import-gguf {gguf} (the window and `lorastudio "
                         "train` do it for you)")
    return folder


