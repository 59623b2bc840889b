"""What rank a trained LoRA update really used, and a smaller adapter that keeps it. Heavy (torch).

Each adapted module's update is ΔW = s·B·A (B: d_out × r, A: r × d_in; s = α/r, or α/√r with
rsLoRA). Its singular values come without forming the d_out × d_in matrix: B = Q_B·R_B and
Aᵀ = Q_A·R_A (thin QR), so ΔW = Q_B·(s·R_B·R_Aᵀ)·Q_Aᵀ and the SVD of the r × r core C = U_c·Σ·V_cᵀ
gives ΔW = (Q_B·U_c)·Σ·(Q_A·V_c)ᵀ: O((d_out + d_in)·r²) work in float64.

Names: an adapter file's keys look like `base_model.model.<module>.lora_A.weight`; a module is
named by `<module>` (PEFT's `base_model.model.` prefix and the `.lora_A.weight` / `.lora_B.weight`
suffix taken off), e.g. `model.layers.0.self_attn.q_proj` — the name PEFT matches `rank_pattern`
against. The torch-free side (summaries, suggestion, sizes, model card) is core/runs/rank_report.py.
"""
from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Callable

import torch

from lorastudio.core.errors import UserError
from lorastudio.core.runs.export import TOKENIZER_FILES
from lorastudio.core.runs.rank_report import (CONFIG_FILE, WEIGHTS_FILE, choose_rank, energy_rank,
                                              layer_and_type, module_order, resize_card, split_key, tail_error)

Progress = Callable[[str, float, str], None]
THRESHOLDS = (0.90, 0.99)


class RankError(UserError):
    kind = "adapter"


def read_adapter(folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(adapter_config.json, tensors) of a PEFT adapter folder, or a RankError naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    folder = Path(folder)
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RankError(f"{folder / CONFIG_FILE}: cannot be read ({exc})",
                        "choose a PEFT adapter folder (adapter_config.json + adapter_model.safetensors)") from None
    if not isinstance(config, dict) or str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise RankError(f"{folder / CONFIG_FILE}: not a LoRA adapter (peft_type {config.get('peft_type')!r})",
                        "rank analysis reads LoRA adapters only")
    try:
        tensors = load_file(str(folder / WEIGHTS_FILE))
    except (OSError, SafetensorError) as exc:
        raise RankError(f"{folder / WEIGHTS_FILE}: cannot be read ({exc})",
                        "the adapter file is missing or damaged; export the adapter again") from None
    return config, tensors


def pattern_value(patterns: dict, name: str, default):
    """PEFT's rule for rank_pattern / alpha_pattern: the first key that matches the end of the name."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", name):
            return value
    return default


def module_scale(config: dict, name: str, r: int) -> float:
    alpha = float(pattern_value(config.get("alpha_pattern"), name, config.get("lora_alpha", 8)))
    return alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r


def lora_pairs(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], list[str]]:
    """{module name: (A, B)} in file order, and the keys that are not a LoRA pair (kept as they are)."""
    halves: dict[str, dict[str, torch.Tensor]] = {}
    other = []
    for key, tensor in tensors.items():
        name, half = split_key(key)
        if half is None or tensor.dim() != 2:
            other.append(key)
        else:
            halves.setdefault(name, {})[half] = tensor
    pairs = {n: (h["A"], h["B"]) for n, h in halves.items() if set(h) == {"A", "B"}}
    other += [k for k in tensors if split_key(k)[0] in halves and split_key(k)[0] not in pairs]
    return pairs, other


def update_svd(A: torch.Tensor, B: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(U: d_out × r, σ: r descending, Vh: r × d_in) with s·B·A = U·diag(σ)·Vh, in float64,
    from QR of B and Aᵀ and the SVD of the r × r core (ΔW is never formed)."""
    A, B = A.detach().double(), B.detach().double()
    q_b, r_b = torch.linalg.qr(B)               # B: d_out × r
    q_a, r_a = torch.linalg.qr(A.T)             # Aᵀ: d_in × r
    u_c, sigma, vh_c = torch.linalg.svd(scale * (r_b @ r_a.T))
    return q_b @ u_c, sigma, vh_c @ q_a.T


def module_entry(name: str, A: torch.Tensor, B: torch.Tensor, scale: float, sigma: torch.Tensor) -> dict:
    values = [float(s) for s in sigma]
    total = sum(s * s for s in values)
    energy, acc = [], 0.0
    for s in values:
        acc += s * s
        energy.append(acc / total if total > 0 else 1.0)
    layer, kind = layer_and_type(name)
    entry = {"name": name, "type": kind, "layer": layer, "rank": int(A.shape[0]), "scale": scale,
             "shape": [int(B.shape[0]), int(A.shape[1])], "singular_values": values, "energy": energy,
             "norm": math.sqrt(total)}
    for t in THRESHOLDS:
        entry[f"effective_rank_{round(t * 100)}"] = energy_rank(energy, t)
    return entry


def analyze_adapter(folder: Path, progress: Progress = lambda name, fraction, message: None) -> dict:
    """The rank report of a PEFT LoRA adapter folder (a plain dict; core/runs/rank_report.py reads it)."""
    folder = Path(folder)
    progress("reading", 0.05, f"Reading {folder / WEIGHTS_FILE}")
    config, tensors = read_adapter(folder)
    pairs, other = lora_pairs(tensors)
    if not pairs:
        raise RankError(f"{folder / WEIGHTS_FILE}: no LoRA weights (lora_A / lora_B pairs) found",
                        "choose a LoRA adapter trained with LoRA Studio or PEFT")
    modules = []
    for i, name in enumerate(sorted(pairs, key=module_order)):
        A, B = pairs[name]
        if i % 16 == 0:
            progress("analyzing", 0.1 + 0.85 * i / len(pairs), f"Singular values of module {i + 1} of {len(pairs)}")
        scale = module_scale(config, name, int(A.shape[0]))
        _u, sigma, _vh = update_svd(A, B, scale)
        modules.append(module_entry(name, A, B, scale, sigma))
    return {"adapter": str(folder), "r": config.get("r"), "lora_alpha": config.get("lora_alpha"),
            "use_rslora": bool(config.get("use_rslora")), "use_dora": bool(config.get("use_dora")),
            "naming": "adapter file keys without the 'base_model.model.' prefix and the "
                      "'.lora_A.weight' / '.lora_B.weight' suffix",
            "bytes_per_value": tensors[next(iter(tensors))].element_size(),
            "modules": modules, "other_tensors": other}


def split_update(u: torch.Tensor, sigma: torch.Tensor, vh: torch.Tensor, k: int, scale: float):
    """(B', A') with scale·B'·A' = U_k·Σ_k·V_kᵀ, the update split evenly: B' = U_k·√(Σ_k/scale)."""
    root = torch.sqrt(sigma[:k] / scale)
    return u[:, :k] * root, root[:, None] * vh[:k]


def new_scale(config: dict, k: int) -> float:
    """The scale PEFT will apply to a module resized to rank k (its alpha is set to k)."""
    return k / math.sqrt(k) if config.get("use_rslora") else 1.0


def resize_adapter(src: Path, tmp: Path, rank: int | None = None, energy: float | None = None,
                   progress: Progress = lambda name, fraction, message: None, title: str = "") -> dict:
    """Write into `tmp` (an empty folder) the adapter whose every update is the best rank-k
    approximation of src's: k = `rank` (at most the module's r), or per module the smallest rank
    holding `energy` of the update. Returns {source, mode, r, old_r, modules: [{name, rank,
    new_rank, error}]}; the error is the relative Frobenius norm of what was cut."""
    from safetensors.torch import save_file
    src, tmp = Path(src), Path(tmp)
    config, tensors = read_adapter(src)
    if config.get("use_dora"):
        raise RankError(f"{src / CONFIG_FILE}: a DoRA adapter (use_dora) cannot be resized",
                        "its update also scales the weight's columns; truncating B·A alone would change it")
    pairs, other = lora_pairs(tensors)
    unsupported = [key for key in other if ".lora_" in key]
    if unsupported:
        raise RankError(f"{src / WEIGHTS_FILE}: {len(unsupported)} LoRA weights are not plain linear pairs "
                        f"(e.g. {unsupported[0]})", "embedding and convolution LoRA cannot be resized yet; "
                        "train without them or resize by hand")
    out: dict[str, torch.Tensor] = {}
    rows = []
    prefix_of = {split_key(key)[0]: key[: -len(".lora_A.weight")] for key in tensors if key.endswith(".lora_A.weight")}
    for i, name in enumerate(sorted(pairs, key=module_order)):
        A, B = pairs[name]
        if i % 16 == 0:
            progress("resizing", 0.1 + 0.8 * i / len(pairs), f"Truncating module {i + 1} of {len(pairs)}")
        r = int(A.shape[0])
        u, sigma, vh = update_svd(A, B, module_scale(config, name, r))
        k = choose_rank([float(s) for s in sigma], r, rank, energy)
        b_new, a_new = split_update(u, sigma, vh, k, new_scale(config, k))
        out[f"{prefix_of[name]}.lora_A.weight"] = a_new.to(A.dtype).contiguous()
        out[f"{prefix_of[name]}.lora_B.weight"] = b_new.to(B.dtype).contiguous()
        rows.append({"name": name, "rank": r, "new_rank": k, "error": tail_error([float(s) for s in sigma], k)})
    for key in other:
        out[key] = tensors[key].contiguous()
    progress("saving", 0.92, "Saving the resized adapter")
    new_config = dict(config)
    counts: dict[int, int] = {}
    for row in rows:
        counts[row["new_rank"]] = counts.get(row["new_rank"], 0) + 1
    r_new = max(counts, key=lambda k: (counts[k], k))
    new_config.update(r=r_new, lora_alpha=r_new,
                      rank_pattern={row["name"]: row["new_rank"] for row in rows if row["new_rank"] != r_new},
                      alpha_pattern={row["name"]: row["new_rank"] for row in rows if row["new_rank"] != r_new})
    save_file(out, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
    (tmp / CONFIG_FILE).write_text(json.dumps(new_config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, tmp / name)
    mode = (f"rank {rank} for every module" if rank is not None
            else f"per module the smallest rank holding {energy * 100:g} % of its update")
    result = {"source": str(src), "mode": mode, "r": r_new, "old_r": config.get("r"), "modules": rows,
              "use_rslora": bool(config.get("use_rslora"))}
    (tmp / "README.md").write_text(resize_card(result, config, title), encoding="utf-8")
    return result
