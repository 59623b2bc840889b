"""What to compare an estimate with: the GPUs NVML finds, or a consumer card by name ("what if I
had a 12 GiB card?"), or a size typed by hand ("24GiB", "16 GB", "11.5"). Torch-free."""
from __future__ import annotations

import re
from dataclasses import dataclass

from lorastudio.core.errors import UserError

GIB = 1 << 30


@dataclass(frozen=True)
class Target:
    name: str           # "RTX 4090 (24 GiB)" or "cuda:0 — NVIDIA H100 80GB HBM3"
    bytes: int
    detected: bool = False


# Usable memory of common consumer cards (what the driver reports as total is a little under the
# marketing figure; these are the nominal sizes, the model's slack covers the difference).
CARDS = (
    Target("8 GiB card (RTX 4060, 3070)", 8 * GIB),
    Target("12 GiB card (RTX 3060, 4070)", 12 * GIB),
    Target("16 GiB card (RTX 4060 Ti 16G, 4080)", 16 * GIB),
    Target("24 GiB card (RTX 3090, 4090)", 24 * GIB),
)
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(gib|gb|g|mib|mb|m)?\s*$", re.IGNORECASE)


class GpuMemoryError(UserError):
    kind = "config"


def parse_memory(text: str) -> int:
    """ "24GiB", "24 GB", "24G", "24" (GiB), "12288MiB" → bytes. GB is read as GiB, as people mean it."""
    match = _SIZE.match(str(text))
    if not match:
        raise GpuMemoryError(f"--gpu-memory {text!r} is not a memory size",
                             "write it like 24GiB, 16GB, 12288MiB or just 24 (GiB)")
    value, unit = float(match.group(1)), (match.group(2) or "gib").lower()
    size = int(value * (GIB if unit.startswith("g") else 1 << 20))
    if size < 256 << 20:
        raise GpuMemoryError(f"--gpu-memory {text!r} is too small for a GPU", "give the card's memory, e.g. 24GiB")
    return size


def detected_targets(device: str = "auto") -> list[Target]:
    """The CUDA GPUs NVML sees (no torch); for device cuda:N that one first."""
    from lorastudio.core.devices import list_gpus
    gpus = [Target(f"cuda:{g.index} — {g.name}", g.total, True) for g in list_gpus()]
    if device.startswith("cuda:"):
        wanted = [t for t in gpus if t.name.startswith(device + " ")]
        gpus = wanted + [t for t in gpus if t not in wanted]
    return gpus
