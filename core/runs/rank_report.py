"""A LoRA adapter's rank report in words and numbers, torch-free: the CLI, the window and the
resize job's model card read the dict that core/engine/rank.py makes.

A report: {adapter, r, lora_alpha, use_rslora, use_dora, bytes_per_value, naming, other_tensors,
modules: [{name, type, layer, rank, scale, shape: [d_out, d_in], singular_values (descending),
energy (cumulative σ² / total, one per rank), norm, effective_rank_90, effective_rank_99}]}.
The effective rank at a threshold is the smallest k whose first k singular values hold that share
of the update's energy (its squared Frobenius norm).
"""
from __future__ import annotations

import math
import re
from statistics import mean

from lorastudio.core.formatting import format_bytes
from lorastudio.core.runs.checkpoints import ADAPTER_FILES

CONFIG_FILE, WEIGHTS_FILE = ADAPTER_FILES
PEFT_PREFIX = "base_model.model."
SUFFIXES = {".lora_A.weight": "A", ".lora_B.weight": "B"}
SUGGEST_ENERGY, SUGGEST_SHARE = 0.99, 0.95     # "rank k holds 99 % of the update in 95 % of modules"
_LAYER = re.compile(r"\.(\d+)\.")
# Module types in the order a transformer block uses them (others follow by name).
TYPE_ORDER = ("q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "c_attn", "c_proj", "gate_proj", "up_proj",
              "gate_up_proj", "c_fc", "down_proj", "fc1", "fc2", "lm_head")


def split_key(key: str) -> tuple[str, str | None]:
    """(module name, "A" | "B" | None) of an adapter file key."""
    name = key[len(PEFT_PREFIX):] if key.startswith(PEFT_PREFIX) else key
    for suffix, half in SUFFIXES.items():
        if name.endswith(suffix):
            return name[: -len(suffix)], half
    return name, None


def layer_and_type(name: str) -> tuple[int | None, str]:
    """(layer index or None, module type): `model.layers.3.mlp.up_proj` → (3, "up_proj")."""
    found = _LAYER.search(f".{name}.")
    return (int(found.group(1)) if found else None), name.rsplit(".", 1)[-1]


def module_order(name: str) -> tuple:
    """Sort key: by layer, then by the module's place in a block."""
    layer, kind = layer_and_type(name)
    place = TYPE_ORDER.index(kind) if kind in TYPE_ORDER else len(TYPE_ORDER)
    return (layer is None, layer or 0, place, name)


def energy_rank(energy: list[float], threshold: float) -> int:
    """The smallest k with energy[k-1] ≥ threshold (cumulative shares, ascending); 0 for no values."""
    for k, share in enumerate(energy, start=1):
        if share >= threshold - 1e-12:
            return k
    return len(energy)


def tail_error(values: list[float], k: int) -> float:
    """The relative Frobenius error of the best rank-k approximation: √(Σ_{i>k} σ_i²) / √(Σ σ_i²)."""
    total = sum(s * s for s in values)
    return math.sqrt(sum(s * s for s in values[k:]) / total) if total > 0 else 0.0


def choose_rank(values: list[float], r: int, rank: int | None = None, energy: float | None = None) -> int:
    """A module's new rank: `rank` (never above r), or the smallest holding `energy` of it (at least 1)."""
    if rank is not None:
        return max(1, min(int(rank), r))
    total = sum(s * s for s in values)
    acc = 0.0
    shares = []
    for s in values:
        acc += s * s
        shares.append(acc / total if total > 0 else 1.0)
    return max(1, min(energy_rank(shares, float(energy if energy is not None else 1.0)), r))


def new_ranks(report: dict, rank: int | None = None, energy: float | None = None) -> dict[str, int]:
    return {m["name"]: choose_rank(m["singular_values"], m["rank"], rank, energy) for m in report["modules"]}


def adapter_bytes(report: dict, ranks: dict[str, int] | None = None) -> int:
    """The LoRA weights' size: r·(d_in + d_out) values a module (at `ranks`, else as trained)."""
    ranks = ranks or {}
    return sum(ranks.get(m["name"], m["rank"]) * sum(m["shape"]) for m in report["modules"]) \
        * int(report.get("bytes_per_value", 4))


def _group(report: dict, key: str) -> dict:
    groups: dict = {}
    for m in report["modules"]:
        groups.setdefault(m[key], []).append(m)
    return groups


def summary(report: dict) -> dict:
    """{by_type: {type: row}, by_layer: {layer: row}}; a row: modules, rank (largest), the mean and
    the largest effective rank at 90 % and 99 %."""
    def row(ms: list[dict]) -> dict:
        return {"modules": len(ms), "rank": max(m["rank"] for m in ms),
                **{f"mean_{t}": round(mean(m[f"effective_rank_{t}"] for m in ms), 2) for t in (90, 99)},
                **{f"max_{t}": max(m[f"effective_rank_{t}"] for m in ms) for t in (90, 99)}}
    by_layer = _group(report, "layer")
    return {"by_type": {k: row(v) for k, v in _group(report, "type").items()},
            "by_layer": {k: row(v) for k, v in sorted(by_layer.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))}}


def suggested_rank(report: dict, level: int = 99) -> tuple[int, float]:
    """(k, share): the smallest power of two (or r) that holds `level` % of the update in at least
    95 % of modules, and the share of modules it does hold it in."""
    modules = report["modules"]
    r = max(m["rank"] for m in modules)
    candidates = sorted({2 ** i for i in range(int(math.log2(r)) + 1)} | {r})
    for k in candidates:
        share = sum(m[f"effective_rank_{level}"] <= k for m in modules) / len(modules)
        if share >= SUGGEST_SHARE:
            return k, share
    return r, 1.0


def suggestion(report: dict, run_label: str = "RUN") -> str:
    """The plain-language advice under the numbers."""
    modules = report["modules"]
    r = max(m["rank"] for m in modules)
    k, share = suggested_rank(report)
    full = sum(m["effective_rank_99"] >= m["rank"] for m in modules) / len(modules)
    check = f"lorastudio resize {run_label} OUT --rank {{k}}, then compare both with lorastudio eval"
    if k < r:
        return (f"Rank {k} holds 99 % of the update in {share * 100:.0f} % of modules (of {len(modules)}): "
                f"rank {k} instead of {r} would very likely do. To check: {check.format(k=k)}.")
    if full >= 0.5:
        return (f"The update uses its whole rank: {full * 100:.0f} % of modules need all {r} ranks for 99 % of it. "
                f"A higher rank (e.g. {2 * r}) may learn more; a lower one would lose part of what was learned.")
    half = max(1, r // 2)
    kept = sorted(m["energy"][min(half, len(m["energy"])) - 1] for m in modules)
    return (f"Rank {r} fits: 99 % of the update needs {min(m['effective_rank_99'] for m in modules)} to {r} ranks "
            f"across modules, so no smaller rank holds it in {SUGGEST_SHARE * 100:.0f} % of them. Rank {half} "
            f"would keep a median {kept[len(kept) // 2] * 100:.0f} % of each update (the least: "
            f"{kept[0] * 100:.0f} %); whether that is enough only an eval says: {check.format(k=half)}.")


def heat_grid(report: dict, key: str = "effective_rank_99") -> tuple[list, list[str], list[list[float | None]]]:
    """(layers, module types, grid[layer][type]): the mean of `key` per layer × module type."""
    layers = sorted({m["layer"] for m in report["modules"]}, key=lambda v: (v is None, v or 0))
    types = list(dict.fromkeys(m["type"] for m in report["modules"]))
    cells: dict = {}
    for m in report["modules"]:
        cells.setdefault((m["layer"], m["type"]), []).append(m[key])
    grid = [[mean(cells[(layer, t)]) if (layer, t) in cells else None for t in types] for layer in layers]
    return layers, types, grid


def format_report(report: dict, run_label: str = "RUN") -> str:
    """The `lorastudio rank` text: what was read, the tables per module type and per layer, the advice."""
    modules = report["modules"]
    scale = sorted({round(m["scale"], 4) for m in modules})
    lines = [f"Adapter: {report['adapter']}",
             f"  {len(modules)} modules, r={report['r']}, alpha={report['lora_alpha']:g}"
             f"{' (rsLoRA: scale alpha/√r)' if report['use_rslora'] else ''}, scale {', '.join(map(str, scale))}; "
             f"{format_bytes(adapter_bytes(report))} of LoRA weights",
             "Effective rank: the smallest rank holding 90 % / 99 % of each update's energy (Σσ²)."]
    if report.get("use_dora"):
        lines.append("  note: a DoRA adapter; this is the spectrum of its low-rank part s·B·A only")
    table = summary(report)
    for title, rows in (("module type", table["by_type"]), ("layer", table["by_layer"])):
        lines.append(f"  {'by ' + title:<18}{'modules':>8}{'mean 90%':>10}{'mean 99%':>10}{'max 99%':>9}")
        for key, row in rows.items():
            label = "–" if key is None else str(key)
            lines.append(f"  {label:<18}{row['modules']:>8}{row['mean_90']:>10.1f}{row['mean_99']:>10.1f}"
                         f"{row['max_99']:>9}")
    lines.append(suggestion(report, run_label))
    return "\n".join(lines)


def resize_card(result: dict, config: dict, title: str = "") -> str:
    """The resized adapter's README.md: how it was made and each module's relative error."""
    rows = result["modules"]
    errors = [row["error"] for row in rows]
    how = result["mode"]
    table = "\n".join(f"| `{row['name']}` | {row['rank']} | {row['new_rank']} | {row['error']:.4f} |" for row in rows)
    base = config.get("base_model_name_or_path") or "the base model"
    return f"""---
library_name: peft
base_model: {base}
tags: [lora, lorastudio, resized]
---

# {title or 'Resized LoRA adapter'}

Every update of `{result['source']}` replaced by its best rank-k approximation (truncated SVD of
ΔW = s·B·A, split evenly back into B and A), {how}. The ranks are r={result['r']}
{'with per-module ranks in rank_pattern / alpha_pattern' if any(row['new_rank'] != result['r'] for row in rows)
    else 'for every module'}; each module's alpha equals its rank.

Relative error ‖ΔW − ΔW_k‖_F / ‖ΔW‖_F: mean {mean(errors):.4f}, largest {max(errors):.4f}.

| Module | Rank | New rank | Relative error |
| --- | ---: | ---: | ---: |
{table}

Load it with `peft.PeftModel.from_pretrained(base, "path/to/this/folder")`.
"""
