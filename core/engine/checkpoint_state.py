"""Resumable checkpoints: the adapter plus optimizer, scheduler, RNG and data position.

checkpoints/step-000100/
  adapter_config.json, adapter_model.safetensors   (PEFT format: also usable as an adapter)
  trainer_state.pt     optimizer, scheduler, grad scaler, RNG states
  state.json           step, micro-batch position, loss — readable without torch
Each is written into a hidden temporary folder and swapped into place (core/atomic_files), so a
crash or a full disk never replaces a good checkpoint with a broken one; the free space is checked
against the checkpoint's size before writing.
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from lorastudio.core.atomic_files import atomic_dir
from lorastudio.core.disk import check_room, writing
from lorastudio.core.runs.checkpoints import STATE_FILE, checkpoint_name, complete_checkpoints

TRAINER_STATE_FILE = "trainer_state.pt"


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def adapter_bytes(model) -> int:
    """What save_pretrained writes for the adapter: its trainable tensors (PEFT saves only those)."""
    return tensor_bytes(p for p in model.parameters() if p.requires_grad) + 64 * 1024


def checkpoint_bytes(model, optimizer) -> int:
    """A checkpoint's size before it is written: the adapter plus the optimizer's state tensors."""
    state = tensor_bytes(t for per_param in optimizer.state.values() for t in per_param.values())
    if not optimizer.state:         # before the first step: AdamW keeps two tensors per parameter
        state = 2 * tensor_bytes(p for p in model.parameters() if p.requires_grad)
    return adapter_bytes(model) + state


def save_checkpoint(root: Path, step: int, model, optimizer, scheduler, scaler, position: dict) -> Path:
    """Write checkpoint `step` under `root`; first check the disk has room for it (DiskError).
    A write that fails anyway becomes a DiskError naming the cause; earlier checkpoints stay."""
    target = Path(root) / checkpoint_name(step)
    what, need = f"checkpoint {target.name}", checkpoint_bytes(model, optimizer)
    intact = "earlier checkpoints are intact; resume once there is room"
    check_room(Path(root), need, what, intact)
    with writing(what, Path(root), need, intact), atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None, "rng": rng_state()},
                   tmp / TRAINER_STATE_FILE)
        (tmp / STATE_FILE).write_text(json.dumps({"step": step, **position}, indent=2))
    return target


def prune_checkpoints(root: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` checkpoints (0 keeps all); returns what was deleted."""
    found = [path for _step, path in complete_checkpoints(root)]
    doomed = found[:-keep] if keep and len(found) > keep else []
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


def load_checkpoint(path: Path, model, optimizer, scheduler, scaler) -> dict:
    """Restore everything saved by `save_checkpoint`; returns its state.json."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(path)
    weights = load_file(str(path / "adapter_model.safetensors"), device=str(next(model.parameters()).device))
    result = set_peft_model_state_dict(model, weights)
    missing = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if missing:
        raise RuntimeError(f"checkpoint {path} does not match this model's adapter ({missing[:3]})")
    state = torch.load(path / TRAINER_STATE_FILE, map_location="cpu", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return json.loads((path / STATE_FILE).read_text())
