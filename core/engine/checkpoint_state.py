"""Resumable checkpoints: the adapter plus optimizer, scheduler, RNG and data position.

checkpoints/step-000100/
  adapter_config.json, adapter_model.safetensors   (PEFT format: also usable as an adapter)
  trainer_state.safetensors + trainer_state.json
                       optimizer, scheduler, grad scaler, RNG states: tensors in safetensors, the
                       structure around them in JSON — nothing in a checkpoint runs code when read
                       (0.x checkpoints' trainer_state.pt: read with torch.load(weights_only=True);
                       a pickle that needs more is refused unless the user opts in for that file)
  state.json           step, micro-batch position, loss — readable without torch
Each is written into a hidden temporary folder and swapped into place (core/atomic_files), so a
crash or a full disk never replaces a good checkpoint with a broken one; the free space is checked
against the checkpoint's size before writing.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from lorastudio.core.atomic_files import atomic_dir
from lorastudio.core.disk import check_room, writing
from lorastudio.core.errors import UserError
from lorastudio.core.runs.checkpoints import STATE_FILE, checkpoint_name, complete_checkpoints

TRAINER_STATE_FILE = "trainer_state.pt"              # 0.x: a pickle, read only as weights
TRAINER_TENSORS_FILE = "trainer_state.safetensors"
TRAINER_LAYOUT_FILE = "trainer_state.json"
ALLOW_PICKLE_ENV = "LORASTUDIO_ALLOW_PICKLE"          # os.pathsep-separated files the user trusts


class UnsafeCheckpoint(UserError):
    kind = "checkpoint"


def flatten_state(value, tensors: dict, path: str = "s"):
    """A nested state (dicts, lists, tuples, numbers, strings, tensors, numpy arrays) as JSON with
    each tensor replaced by a key into `tensors` — so it is written without pickle."""
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().to("cpu").contiguous().clone()
        return {"__tensor__": path}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: flatten_state(v, tensors, f"{path}.{k}") for k, v in value.items()}
        return {"__dict__": [[flatten_state(k, tensors, f"{path}.k{i}"), flatten_state(v, tensors, f"{path}.{i}")]
                             for i, (k, v) in enumerate(value.items())]}
    if isinstance(value, tuple):
        return {"__tuple__": [flatten_state(v, tensors, f"{path}.{i}") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [flatten_state(v, tensors, f"{path}.{i}") for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot save {type(value).__name__} at {path} in a checkpoint's state")


def unflatten_state(value, tensors: dict):
    if isinstance(value, list):
        return [unflatten_state(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__ndarray__" in value:
        return np.asarray(value["__ndarray__"], dtype=value["dtype"])
    if "__tuple__" in value:
        return tuple(unflatten_state(v, tensors) for v in value["__tuple__"])
    if "__dict__" in value:
        return {unflatten_state(k, tensors): unflatten_state(v, tensors) for k, v in value["__dict__"]}
    return {k: unflatten_state(v, tensors) for k, v in value.items()}


def write_trainer_state(folder: Path, state: dict) -> None:
    from safetensors.torch import save_file

    tensors: dict = {}
    layout = flatten_state(state, tensors)
    save_file(tensors, str(Path(folder) / TRAINER_TENSORS_FILE))
    (Path(folder) / TRAINER_LAYOUT_FILE).write_text(json.dumps(layout))


def pickle_allowed(path: Path) -> bool:

    allowed = [p for p in os.environ.get(ALLOW_PICKLE_ENV, "").split(os.pathsep) if p]
    return any(Path(p).resolve() == Path(path).resolve() for p in allowed)


def read_trainer_state(folder: Path) -> dict:
    """The state `write_trainer_state` wrote; a 0.x `trainer_state.pt` read as weights only (numpy's
    RNG arrays allowed); a pickle that needs anything else is refused unless the user opted in."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if (folder / TRAINER_TENSORS_FILE).is_file():
        tensors = load_file(str(folder / TRAINER_TENSORS_FILE))
        return unflatten_state(json.loads((folder / TRAINER_LAYOUT_FILE).read_text()), tensors)
    old = folder / TRAINER_STATE_FILE
    if not old.is_file():
        raise UnsafeCheckpoint(f"checkpoint {folder} has no trainer state ({TRAINER_TENSORS_FILE})",
                               "resume from another checkpoint, or train again")
    if pickle_allowed(old):
        return torch.load(old, map_location="cpu", weights_only=False)
    reconstruct = np._core.multiarray._reconstruct
    safe = [(reconstruct, "numpy.core.multiarray._reconstruct"), (reconstruct, "numpy._core.multiarray._reconstruct"),
            np.ndarray, np.dtype, type(np.dtype("uint32"))]
    try:
        with torch.serialization.safe_globals(safe):
            return torch.load(old, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 — UnpicklingError and whatever a hostile pickle raises
        text = str(exc)
        globals_named = [line.strip() for line in text.splitlines() if "unsupported global" in line.lower()]
        if not globals_named:
            raise UnsafeCheckpoint(f"{old} cannot be read as a checkpoint's state (not a PyTorch file of tensors: "
                                   f"{text.splitlines()[0][:120] if text else type(exc).__name__})",
                                   "resume from another checkpoint (--checkpoint STEP), or train again") from None
        raise UnsafeCheckpoint(
            f"{old} holds more than tensors and numbers (a pickle that would run code when loaded: "
            f"{globals_named[0][:160]}); it was not loaded",
            f"resume from it only if you trust who made this run folder: set "
            f"{ALLOW_PICKLE_ENV}={old} for that one file, or train again") from None


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
        write_trainer_state(tmp, {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                  "scaler": scaler.state_dict() if scaler is not None else None,
                                  "rng": rng_state()})
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
    state = read_trainer_state(path)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return json.loads((path / STATE_FILE).read_text())
