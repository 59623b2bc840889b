"""Export a run's adapter: PEFT files + tokenizer + a model card, as a folder or one zip. Torch-free.

Used by `lorastudio export RUN OUT [--checkpoint STEP] [--zip] [--overwrite]` (core/cli/merge.py)
and the Export dialog. The run folder is only read; the output is written beside its target and
renamed into place, so a failed export never leaves half a folder (or half a zip) where a user
looks for one.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lorastudio.core.runs.checkpoints import ADAPTER_FILES, adapter_complete, checkpoint_dir, list_checkpoint_steps
from lorastudio.core.config import ConfigError, RunConfig
from lorastudio.core.journal import last_of, read_events
from lorastudio.core.atomic_files import atomic_dir, partial_dir, partial_name, tidy
from lorastudio.core.disk import check_room, writing
from lorastudio.core.runs.folders import ADAPTER_DIR, CHECKPOINTS_DIR, CONFIG_FILE, JOURNAL_FILE, default_runs_dir
from lorastudio.core.runs.locks import FolderBusy, acquire, output_lock_path
from lorastudio.core.runs.output_paths import check_output, mark_output
from lorastudio.core.errors import UserError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json", "added_tokens.json")


class ExportError(UserError):
    """An export or merge cannot go ahead; nothing was written."""
    kind = "export"


class GgufExportError(ExportError):
    """A GGUF export cannot go ahead (its checks) or could not be written (the job)."""
    kind = "export_gguf"


@dataclass
class RunSummary:
    """What a model card needs, read from the run's config and journal."""
    config: RunConfig
    steps: int
    train_loss: float | None
    eval_loss: float | None
    examples: int | None
    data_format: str | None
    status: str | None


def read_run(run_dir: Path) -> RunSummary:
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise ExportError(f"{run_dir} is not a run folder (no {CONFIG_FILE})",
                          f"choose a run folder; runs live in {default_runs_dir()}")
    try:
        config = RunConfig.load(run_dir / CONFIG_FILE)
    except ConfigError as exc:
        raise ExportError(f"{run_dir / CONFIG_FILE}: {exc}", "the run's config was edited by hand") from None
    events = read_events(run_dir / JOURNAL_FILE)
    step, ev, data, end = (last_of(events, t) for t in ("step", "eval", "data", "end"))
    return RunSummary(config, step["step"] if step else 0, step["loss"] if step else None,
                      ev["loss"] if ev else None, data["examples"] if data else None,
                      data["format"] if data else None, end["status"] if end else None)


def adapter_source(run_dir: Path, checkpoint: int | None) -> Path:
    """The folder holding the adapter to export: the final one, or a checkpoint's."""
    run_dir = Path(run_dir)
    if checkpoint is None:
        src = run_dir / ADAPTER_DIR
        if not adapter_complete(src):
            steps = list_checkpoint_steps(run_dir)
            hint = (f"use --checkpoint {steps[-1]} (saved steps: {', '.join(map(str, steps))})" if steps
                    else "the run saved no adapter and no checkpoint; train (or resume) it first")
            raise ExportError(f"{run_dir} has no final adapter", hint)
        return src
    src = checkpoint_dir(run_dir, checkpoint)
    if not adapter_complete(src):
        steps = list_checkpoint_steps(run_dir)
        raise ExportError(f"{run_dir} has no checkpoint at step {checkpoint}",
                          f"saved steps: {', '.join(map(str, steps)) or 'none'}")
    return src


HUB_ID_KEYS = ("general.source.huggingface.repository", "general.source.repo_url", "general.repo_url")


def gguf_hub_id(gguf: Path) -> str | None:
    """The Hugging Face repository a .gguf says it was converted from (its general.source.* metadata), or None."""
    try:
        from gguf import GGUFReader
        reader = GGUFReader(str(gguf))
        for key in HUB_ID_KEYS:
            field = reader.get_field(key)
            if field is None:
                continue
            value = str(field.contents()).strip().rstrip("/")
            if value.startswith("https://huggingface.co/"):
                value = value[len("https://huggingface.co/"):]
            if value.count("/") == 1 and " " not in value:
                return value
    except Exception:       # noqa: BLE001 — an unreadable header only means "not known"
        return None
    return None


def base_reference(model: str) -> tuple[str, str, str]:
    """(the card's base_model, what to load the base from, a note) for the config's `model`. A .gguf
    base was imported into a model folder (core/models/gguf_cache.py): transformers loads that
    folder, not the .gguf path."""
    from lorastudio.core.models.gguf_cache import cached_import, is_gguf
    if not is_gguf(model):
        return model, model, ""
    folder, hub_id = cached_import(model), gguf_hub_id(Path(model))
    load_from = str(folder) if folder else model
    note = (f"\nThe base was trained from `{Path(model).name}`, imported (dequantized) by LoRA Studio into the "
            f"model folder `{load_from}`{f' (converted from `{hub_id}`)' if hub_id else ''}. Load the base from "
            f"that folder: `from_pretrained` on the .gguf path itself fails. Elsewhere, transformers dequantizes "
            f"the same file with `AutoModelForCausalLM.from_pretrained(\"{Path(model).parent}\", "
            f"gguf_file=\"{Path(model).name}\")`.\n")
    return hub_id or load_from, load_from, note


def model_card(summary: RunSummary, adapter_name: str, checkpoint: int | None) -> str:
    c = summary.config
    base_model, load_from, base_note = base_reference(c.model)
    targets = c.lora.targets if isinstance(c.lora.targets, str) else ", ".join(c.lora.targets)
    fmt = lambda v: f"{v:.4f}" if isinstance(v, (int, float)) else "—"   # noqa: E731
    data_name = Path(c.data.path).name
    size = f"{summary.examples:,} training examples" if summary.examples is not None else "size unknown"
    step_note = f"checkpoint at step {checkpoint}" if checkpoint is not None else f"final adapter, {summary.steps} steps"
    return f"""---
library_name: peft
base_model: {base_model}
tags: [lora, lorastudio{', qlora' if c.quantization != 'none' else ''}]
---

# {adapter_name}

A LoRA adapter trained with LoRA Studio ({step_note}).

| | |
| --- | --- |
| Base model | `{c.model}` |
| Rank (r) / alpha | {c.lora.r} / {c.lora.alpha:g}{' (rsLoRA)' if c.lora.use_rslora else ''}{' (DoRA)' if c.lora.use_dora else ''} |
| Dropout | {c.lora.dropout:g} |
| Target modules | {targets} |
| Quantization during training | {c.quantization} |
| Dataset | `{data_name}` ({summary.data_format or 'format unknown'}, {size}) |
| Steps | {summary.steps} (batch {c.training.batch_size} × accumulation {c.training.grad_accum}, sequence {c.training.seq_len}) |
| Learning rate | {c.training.lr:g}, {c.training.schedule}, warm-up {c.training.warmup_steps} steps |
| Final train loss | {fmt(summary.train_loss)} |
| Final eval loss | {fmt(summary.eval_loss)} |

## Load it

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import PeftModel

base = AutoModelForCausalLM.from_pretrained("{load_from}")
model = PeftModel.from_pretrained(base, "path/to/this/folder")
tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")
```
{base_note}
To ship one model instead, merge it: `lorastudio merge RUN OUT`.
"""


def ensure_free_target(out: Path, overwrite: bool) -> None:
    out = Path(out)
    if out.exists() and not overwrite:
        if out.is_file() or any(out.iterdir()):
            raise ExportError(f"{out} is not empty", "choose an empty or new folder, or pass --overwrite")


def write_export(tmp: Path, run_dir: Path, src: Path, summary: RunSummary, checkpoint: int | None) -> None:
    for name in ADAPTER_FILES:
        shutil.copy2(src / name, tmp / name)
    tok_source = src if (src / "tokenizer_config.json").is_file() else Path(summary.config.model)
    for name in TOKENIZER_FILES:
        if (tok_source / name).is_file():
            shutil.copy2(tok_source / name, tmp / name)
    (tmp / "README.md").write_text(model_card(summary, Path(run_dir).name, checkpoint), encoding="utf-8")


def export_size(src: Path, summary: RunSummary) -> int:
    """Bytes an export writes: the adapter's files, the tokenizer's and the model card."""
    tok_source = src if (src / "tokenizer_config.json").is_file() else Path(summary.config.model)
    files = [src / name for name in ADAPTER_FILES] + [tok_source / name for name in TOKENIZER_FILES]
    return sum(path.stat().st_size for path in files if path.is_file()) + 16 * 1024


def export_adapter(run_dir: Path, out: Path, checkpoint: int | None = None, as_zip: bool = False,
                   overwrite: bool = False, say: Callable[[str], None] | None = None) -> Path:
    """Export the run's adapter to `out`. Raises ExportError for every refusal and every failed
    write (full disk, read-only, no permission…), naming the cause; `out` is whole or untouched.
    `say` is told what an --overwrite replaces before anything is written."""
    run_dir, out = Path(run_dir).resolve(), Path(out).resolve()
    tidy(run_dir)                                   # an adapter swap cut short by a crash is put back
    tidy(run_dir / CHECKPOINTS_DIR)
    summary = read_run(run_dir)
    src = adapter_source(run_dir, checkpoint)
    if out == run_dir or run_dir in out.parents:
        raise ExportError(f"{out} is inside the run folder", "export somewhere outside the run folder")
    if as_zip:
        out = out if out.suffix == ".zip" else out.with_suffix(".zip")
    replaces = check_output(out, "an exported adapter", overwrite, error=ExportError, file=as_zip)  # runs/output_paths
    if replaces and say is not None:
        say(replaces)
    try:
        lock = acquire(out, "exporting an adapter", output_lock_path(out), label="the output's folder",
                       hint="choose an output path on a writable disk that you own")
    except FolderBusy as exc:
        raise ExportError(exc.message, exc.hint) from None
    try:
        tidy(out.parent)
        need = export_size(src, summary)
        check_room(out.parent, need, "the exported adapter", error=ExportError)
        with writing("the exported adapter", out.parent, need, error=ExportError):
            if as_zip:
                if out.exists() and not overwrite:
                    raise ExportError(f"{out} already exists", "choose another name, or pass --overwrite")
                return _write_zip(run_dir, out, src, summary, checkpoint)
            ensure_free_target(out, overwrite)
            if out.is_file():
                out.unlink()
            check_output(out, "an exported adapter", overwrite, error=ExportError)     # again, under the lock
            with atomic_dir(out) as tmp:
                write_export(tmp, run_dir, src, summary, checkpoint)
                mark_output(tmp, "an exported adapter", src)
        return out
    finally:
        lock.release()


def _write_zip(run_dir: Path, out: Path, src: Path, summary: RunSummary, checkpoint: int | None) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = partial_dir(out)
    fd, tmp_zip = tempfile.mkstemp(prefix=partial_name(out), suffix=".partial", dir=out.parent)
    os.close(fd)
    try:
        write_export(staging, run_dir, src, summary, checkpoint)
        with zipfile.ZipFile(tmp_zip, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(staging.iterdir()):
                zf.write(path, arcname=f"{out.stem}/{path.name}")
        os.replace(tmp_zip, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if os.path.exists(tmp_zip):
            os.unlink(tmp_zip)
    return out

