"""CUDA devices and memory through NVML and psutil. Torch-free, so the window can use it.

NVML sees what the driver sees (every process's use of the card), which is the figure a user
compares with the card's total; torch's allocator figures come from the worker itself. Beside
memory, NVML gives the card's utilisation, temperature and power draw (`GpuStatus`): the worker
puts them into its `memory` events and the dashboard shows them beside the VRAM gauge. Each
figure is optional — a card or driver that does not report one leaves it None.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class GpuInfo:
    index: int
    name: str
    total: int      # bytes
    used: int       # bytes, all processes


@dataclass
class GpuStatus:
    used: int                           # bytes, all processes
    total: int                          # bytes
    utilization: int | None = None      # percent of the last sample period the GPU was busy
    temperature: int | None = None      # °C, the GPU die
    power: float | None = None          # watts drawn now
    power_limit: float | None = None    # watts, the enforced limit

    def event_fields(self) -> dict:
        """The `memory` event's fields for this status (figures the card did not give are left out)."""
        fields = {"device_used": self.used, "device_total": self.total, "gpu_util": self.utilization,
                  "gpu_temp": self.temperature, "gpu_power": self.power, "gpu_power_limit": self.power_limit}
        return {k: v for k, v in fields.items() if v is not None}


def _nvml(nvml=None):
    try:
        if nvml is None:
            import pynvml as nvml
        nvml.nvmlInit()
        return nvml
    except Exception:       # no library, no driver, no GPU: all mean "no CUDA devices"
        return None


def _ask(query: Callable[[], Any]) -> Any:
    try:
        return query()
    except Exception:       # NVMLError_NotSupported and friends: this card does not say
        return None


def read_gpu_status(nvml, handle) -> GpuStatus:
    """Memory, utilisation, temperature and power of one device, from an initialised NVML module
    (pynvml, or any object with its functions)."""
    mem = nvml.nvmlDeviceGetMemoryInfo(handle)
    rates = _ask(lambda: nvml.nvmlDeviceGetUtilizationRates(handle))
    milliwatts = _ask(lambda: nvml.nvmlDeviceGetPowerUsage(handle))
    limit = _ask(lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle))
    temperature = _ask(lambda: nvml.nvmlDeviceGetTemperature(handle, getattr(nvml, "NVML_TEMPERATURE_GPU", 0)))
    return GpuStatus(int(mem.used), int(mem.total),
                     int(rates.gpu) if rates is not None else None,
                     int(temperature) if temperature is not None else None,
                     round(milliwatts / 1000, 1) if milliwatts is not None else None,
                     round(limit / 1000, 1) if limit is not None else None)


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


# ---- defaults that depend on the machine (one rule for the CLI, the plans and the window) -------
CPU_FLAGS_FILE = "/proc/cpuinfo"
FAST_CPU_BF16 = ("avx512_bf16", "amx_bf16")     # bf16 matmuls in hardware; without them torch emulates (slow)
FAST_CPU_FP16 = ("avx512_fp16", "amx_fp16")


def cpu_flags(path: str = CPU_FLAGS_FILE) -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo); empty where they cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def on_gpu(device: str) -> bool:
    """Whether a job asked to run on `device` (auto, cpu, cuda, cuda:N) runs on a CUDA GPU."""
    return device.startswith("cuda") or (device == "auto" and bool(list_gpus()))


def default_quantization(gpu: bool) -> str:
    """How the frozen base is stored when a config does not say: 4-bit NF4 on a CUDA GPU; none on a
    CPU, where bitsandbytes' 4-bit is slower than full precision (the window's Hardware panel does the same)."""
    return "4bit" if gpu else "none"


def default_merge_dtype(device: str, flags: set[str] | None = None) -> str:
    """The merged model's dtype when none is given: bf16 on a GPU; on a CPU bf16 only with hardware
    bf16 (else it is emulated and the merge's fidelity pass crawls), fp16 where that is fast, else fp32."""
    if on_gpu(device):
        return "bf16"
    flags = cpu_flags() if flags is None else flags
    if any(f in flags for f in FAST_CPU_BF16):
        return "bf16"
    if any(f in flags for f in FAST_CPU_FP16):
        return "fp16"
    return "fp32"


def host_memory() -> dict:
    import psutil       # here, not at the top: the window imports this module before its first paint
    vm = psutil.virtual_memory()
    return {"rss": psutil.Process().memory_info().rss, "ram_used": int(vm.total - vm.available),
            "ram_total": int(vm.total)}




def gpu_status_by_uuid(uuid: str, nvml=None) -> GpuStatus | None:
    """The status of the device with this UUID (robust to CUDA_VISIBLE_DEVICES); None without NVML.
    `nvml`: the NVML module to use (pynvml by default)."""
    nvml = _nvml(nvml)
    if nvml is None:
        return None
    try:
        handle = nvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
        return read_gpu_status(nvml, handle)
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()

