"""The GGUF files llama.cpp serves, written with our exporter (export_gguf.write_model / write_adapter):
the base model as f16, and a run's adapter as an f16 GGUF LoRA. Each is written into a hidden
folder beside its target and renamed into place, so a stopped or killed job leaves no half file
where the cache looks (core/plans/serve.py names the targets). Heavy: torch and transformers load
the base only when it has to be written.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from lorastudio.core.atomic_files import partial_dir, tidy
from lorastudio.core.engine.gguf import export_gguf
from lorastudio.core.engine.gguf.export_gguf import OnTensor
from lorastudio.core.models.gguf_vocab import GgufVocab, read_vocab


def llama_cpp_vocab(tok_dir: Path, config: dict, template_folders: tuple[Path, ...] = (),
                    known_pre: str | None = None) -> GgufVocab:
    """The tokenizer as GGUF metadata (core/models/gguf_vocab.py names its split rule as llama.cpp
    does; `known_pre`: the name from the GGUF the model was imported from)."""
    return read_vocab(Path(tok_dir), int(config["vocab_size"]), template_folders, known_pre, config)


def _into_place(out: Path, write) -> Path:
    """Run `write(tmp_file)` in a hidden folder beside `out`, then rename the file into place."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tidy(out.parent)                    # a killed job's hidden leftovers
    tmp = partial_dir(out)
    try:
        written = tmp / out.name
        write(written)
        os.replace(written, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def write_base(model_dir: Path, out: Path, name: str, on_tensor: OnTensor | None = None,
               known_pre: str | None = None) -> Path:
    """The base model folder as one f16 GGUF (weights, tokenizer, chat template) at `out`."""
    import torch
    from transformers import AutoModelForCausalLM
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    vocab = llama_cpp_vocab(Path(model_dir), config, (Path(model_dir),), known_pre)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, device_map={"": "cpu"},
                                                 use_safetensors=True)
    state = model.state_dict()
    _into_place(out, lambda path: export_gguf.write_model(path, state, config, vocab, name, "f16", on_tensor))
    return out


def write_lora(adapter_dir: Path, model_dir: Path, out: Path, name: str, on_tensor: OnTensor | None = None) -> Path:
    """A PEFT adapter as an f16 GGUF LoRA for the base in `model_dir`, at `out`."""
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    _into_place(out, lambda path: export_gguf.write_adapter(path, Path(adapter_dir), config, name, "f16", on_tensor))
    prefix = out.name.rsplit("-", 2)[0]                 # "adapter", "step-000100": the folder it was made from
    for old in out.parent.glob(f"{prefix}-*-f16.gguf"):   # an earlier version of that folder (before a resume)
        if old != out and old.name.rsplit("-", 2)[0] == prefix:
            old.unlink(missing_ok=True)
    return out


def prepare(models: dict, progress, should_stop=lambda: False) -> None:
    """Write the files a plan (core/plans/serve.LlamaModels.to_spec()) names that are not cached yet:
    the base when it is to be exported, each run's adapter. `progress(name, fraction, message)` tells
    what is being written (name "base", "adapter", then "writing" per tensor; fraction 0 → 0.9);
    `should_stop()` is asked between tensors (Stopped-like exceptions come from `progress`)."""
    missing = [run for run in models["runs"] if not Path(run["gguf"]).is_file()]
    base_missing = bool(models["export_base"]) and not Path(models["base_gguf"]).is_file()
    steps, done = len(missing) + int(base_missing), 0

    def on_tensor(what: str, start: float) -> OnTensor:
        def tick(i: int, n: int, _name: str) -> None:
            if should_stop():
                progress("stopping", start, "Stopping")
            if i % max(1, n // 10) == 0:
                progress("writing", start + 0.9 / steps * i / n, f"Writing {what}: tensor {i + 1} of {n}")
        return tick
    if base_missing:
        progress("base", 0.0, f"Writing the base model {models['base_name']} as f16 GGUF (once; cached in "
                 f"{Path(models['base_gguf']).parent})")
        write_base(Path(models["model_dir"]), Path(models["base_gguf"]), models["base_name"],
                   on_tensor("the base model", 0.0), models.get("known_pre"))
        done += 1
    for run in missing:
        start = 0.9 * done / steps
        progress("adapter", start, f"Writing the adapter of {run['name']} as a GGUF LoRA")
        write_lora(Path(run["adapter"]), Path(models["model_dir"]), Path(run["gguf"]), run["name"],
                   on_tensor(f"the adapter of {run['name']}", start))
        done += 1
