"""CUDA devices and memory through NVML and psutil. Torch-free, so the window can use it.

NVML sees what the driver sees (every process's use of the card), which is the figure a user
compares with the card's total; torch's allocator figures come from the worker itself.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import psutil


@dataclass
class GpuInfo:
    index: int
    name: str
    total: int      # bytes
    used: int       # bytes, all processes


def _nvml():
    try:
        import pynvml
        pynvml.nvmlInit()
        return pynvml
    except Exception:       # no library, no driver, no GPU: all mean "no CUDA devices"
        return None


def list_gpus() -> list[GpuInfo]:
    nvml = _nvml()
    if nvml is None:
        return []
    gpus = []
    try:
        for i in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            name = nvml.nvmlDeviceGetName(handle)
            mem = nvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(GpuInfo(i, name.decode() if isinstance(name, bytes) else name, int(mem.total), int(mem.used)))
    except Exception:
        return gpus
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()
    return gpus


def host_memory() -> dict:
    vm = psutil.virtual_memory()
    return {"rss": psutil.Process().memory_info().rss, "ram_used": int(vm.total - vm.available),
            "ram_total": int(vm.total)}




def gpu_memory_by_uuid(uuid: str) -> tuple[int, int] | None:
    """(used, total) bytes from NVML for the device with this UUID (robust to CUDA_VISIBLE_DEVICES)."""
    nvml = _nvml()
    if nvml is None:
        return None
    try:
        handle = nvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
        mem = nvml.nvmlDeviceGetMemoryInfo(handle)
        return int(mem.used), int(mem.total)
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()
