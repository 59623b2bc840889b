"""GGUF conversion (heavy: gguf-py and transformers): checks that say plainly why a file cannot
be imported, then dequantize and save into the model cache. Used by core/jobs/import_gguf.py and the
training worker; the torch-free half (cache lookup, starting the worker) is core/gguf_import.py.
"""
from __future__ import annotations

import datetime as _dt
import json
import time
from pathlib import Path
from typing import Callable

from lorastudio.core.atomic_files import atomic_dir
from lorastudio.core.models.gguf_cache import (FLOAT_TYPES, FP32_MAX_PARAMS, RECORD_FILE, GgufError, Progress,
                                         cache_folder, cache_key, cached_import)


# ---- checks (gguf-py: numpy, no torch) -------------------------------------------------------
def supported_architectures() -> set[str]:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES
    names = set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"}
    try:
        from transformers.integrations.gguf import GGUF_ARCHS
        names |= set(GGUF_ARCHS)
    except ImportError:
        pass
    return names | {"qwen2moe", "qwen3moe", "gpt-oss", "minimax-m2"}     # llama.cpp's spellings


def supported_types() -> set[str]:
    from gguf import quants
    traits = getattr(quants, "_type_traits", {})
    return set(FLOAT_TYPES) | {q.name for q in traits}


def check_gguf(gguf: Path) -> dict:
    """Read the header and tensor table; raise GgufError for anything a conversion would trip on.
    Returns {"architecture", "name", "tensors", "types": {type: count}, "parameters"}."""
    from gguf import GGUFReader, GGMLQuantizationType
    gguf = Path(gguf)
    if not gguf.is_file():
        raise GgufError(f"{gguf} does not exist", "check the path, or pick the file again")
    with open(gguf, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise GgufError(f"{gguf.name} is not a GGUF file (it does not start with 'GGUF')",
                            "choose a .gguf model file from llama.cpp, Ollama or LM Studio")
    try:
        reader = GGUFReader(str(gguf))
    except Exception as exc:            # noqa: BLE001 — gguf-py raises many kinds on a bad file
        raise GgufError(f"{gguf.name} is truncated or corrupt: its header cannot be read "
                        f"({type(exc).__name__}: {exc})", "download the file again") from None
    size = gguf.stat().st_size
    for tensor in reader.tensors:
        if tensor.data_offset + int(tensor.n_bytes) > size or tensor.data.nbytes != int(tensor.n_bytes):
            raise GgufError(f"{gguf.name} is truncated: tensor {tensor.name} runs past the end of the file "
                            f"({size:,} bytes)", "the download is incomplete; download the file again")
    arch = _field(reader, "general.architecture") or "(none)"
    if arch not in supported_architectures():
        raise GgufError(f"{gguf.name} is a '{arch}' model, an architecture transformers cannot read from GGUF",
                        "supported: " + ", ".join(sorted(supported_architectures())) +
                        "; or download the model's safetensors version")
    if _field(reader, "tokenizer.ggml.model") is None:
        raise GgufError(f"{gguf.name} holds no tokenizer (no tokenizer.ggml.* metadata)",
                        "use a GGUF converted with its tokenizer, e.g. by llama.cpp's convert_hf_to_gguf.py")
    types: dict[str, int] = {}
    allowed = supported_types()
    for tensor in reader.tensors:
        kind = GGMLQuantizationType(tensor.tensor_type).name
        types[kind] = types.get(kind, 0) + 1
        if kind not in allowed:
            raise GgufError(f"{gguf.name} stores tensor {tensor.name} as {kind}, a quantization type that "
                            "cannot be dequantized here",
                            "choose a file quantized as F16, BF16, Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_0 or similar")
    return {"architecture": arch, "name": _field(reader, "general.name") or gguf.stem,
            "tensors": len(reader.tensors), "types": types,
            "parameters": sum(int(t.n_elements) for t in reader.tensors)}


def _field(reader, key: str):
    field = reader.get_field(key)
    if field is None:
        return None
    value = field.contents()
    return value if not isinstance(value, bytes) else value.decode("utf-8", "replace")


# ---- conversion (transformers; in a worker) --------------------------------------------------
def convert(gguf: str | Path, progress: Progress | None = None) -> Path:
    """Import `gguf` into the model cache (a cache hit returns at once); returns the folder."""
    say = progress or (lambda *_: None)
    gguf = Path(gguf).expanduser().resolve()
    folder = cached_import(gguf)
    if folder is not None:
        say("cached", 1.0, f"Already imported: {folder}")
        return folder
    say("checking", 0.02, f"Reading the header of {gguf.name}")
    summary = check_gguf(gguf)
    started = time.time()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    say("tokenizer", 0.08, "Building the tokenizer from the GGUF metadata")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=str(gguf))
    dtype = torch.float32 if summary["parameters"] <= FP32_MAX_PARAMS else torch.bfloat16
    say("dequantizing", 0.15, f"Dequantizing {summary['tensors']} tensors ({_types_text(summary['types'])})")
    with _tensor_progress(lambda i, n: say("dequantizing", 0.15 + 0.6 * i / n,
                                           f"Dequantizing tensor {i} of {n}")):
        try:
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=str(gguf), dtype=dtype)
        except (ValueError, NotImplementedError, KeyError) as exc:
            raise GgufError(f"transformers could not convert {gguf.name}: {exc}",
                            "try a different quantization of the model, or its safetensors version") from None
    _as_plain_model(model, gguf.name)
    target = cache_folder(gguf)
    say("saving", 0.8, f"Saving safetensors ({str(dtype).replace('torch.', '')}) to {target}")
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if not (tmp / "generation_config.json").is_file():
            model.generation_config.save_pretrained(tmp)
        record = {"source": str(gguf), "size": gguf.stat().st_size, "key": cache_key(gguf),
                  "imported": _dt.datetime.now().isoformat(timespec="seconds"),
                  "seconds": round(time.time() - started, 1), "dtype": str(dtype).replace("torch.", ""),
                  **summary}
        (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    say("done", 1.0, f"Imported {summary['name']} into {target}")
    return target


def _as_plain_model(model, name: str) -> None:
    """transformers marks a GGUF-loaded model as quantized (and refuses to save it) even when every
    weight was dequantized to a float tensor, as the llama-family loader does. Check that, then
    drop the mark so save_pretrained writes ordinary safetensors."""
    odd = sorted({type(m).__name__ for m in model.modules() if "gguf" in type(m).__name__.lower()})
    if odd or any(not p.is_floating_point() for p in model.parameters()):
        raise GgufError(f"transformers kept {name} quantized ({', '.join(odd) or 'integer weights'}) instead "
                        "of dequantizing it, so it cannot be saved as an ordinary model",
                        "use the model's safetensors version, or an F16/Q8_0 GGUF of a llama-family model")
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _types_text(types: dict[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(types.items(), key=lambda kv: -kv[1]))


class _tensor_progress:
    """Count the tensors transformers' GGUF loader walks through (it wraps them in tqdm)."""

    def __init__(self, report: Callable[[int, int], None]):
        self.report, self.module, self.original = report, None, None

    def __enter__(self):
        try:
            import transformers.modeling_gguf_pytorch_utils as module
        except ImportError:
            return self
        self.module, self.original = module, getattr(module, "tqdm", None)
        report = self.report

        def counting(iterable, *args, **kwargs):
            items = list(iterable)
            every = max(1, len(items) // 20)
            for i, item in enumerate(items):
                if i % every == 0:
                    report(i + 1, len(items))
                yield item
        if self.original is not None:
            module.tqdm = counting
        return self

    def __exit__(self, *exc):
        if self.module is not None and self.original is not None:
            self.module.tqdm = self.original
        return False


