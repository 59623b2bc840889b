"""Quantization and device: 4-bit NF4 / 8-bit / none, compute dtype, and the CUDA devices.

The device list comes from NVML (`lorastudio.core.devices`), never from torch in this process;
NVML initialisation can take a moment on a loaded machine, so it runs on the thread pool, and
only once the window is on screen (`probe`, called by the main window after its first paint).
Without CUDA we say so and default to CPU without quantization; with CUDA, 4-bit NF4.
"""
from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QFormLayout, QGroupBox, QLabel, QWidget

from lorastudio.app.thread_pool import run_in_background
from lorastudio.core.config import RunConfig, field_help
from lorastudio.core.devices import GpuInfo, default_quantization, host_memory, list_gpus
from lorastudio.core.formatting import format_bytes

QUANT_CHOICES = (("4bit", "4-bit NF4 (QLoRA)"), ("8bit", "8-bit"), ("none", "None (16-bit base)"))
DTYPE_CHOICES = (("auto", "Auto"), ("bf16", "bf16"), ("fp16", "fp16"), ("fp32", "fp32"))
NO_CUDA = "No CUDA GPU found — training on CPU without quantization."


def probe_devices() -> tuple[list[GpuInfo], dict]:
    return list_gpus(), host_memory()


class HardwarePanel(QGroupBox):
    changed = Signal()
    probed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Quantization and device", parent)
        self.gpus: list[GpuInfo] | None = None      # None until the probe answers
        self._user_touched = False
        self._wanted_device: str | None = None      # a restored choice, applied once the probe answers
        self.quant_combo = _combo(QUANT_CHOICES, field_help(RunConfig, "quantization"))
        self.dtype_combo = _combo(DTYPE_CHOICES, field_help(RunConfig, "compute_dtype"))
        self.device_combo = QComboBox()
        self.device_combo.setToolTip(field_help(RunConfig, "device"))
        self.device_combo.addItem("Looking for GPUs…", "auto")
        self.notice = QLabel(wordWrap=True)
        self.notice.setProperty("role", "notice")
        self.notice.hide()
        form = QFormLayout(self)
        form.addRow("Quantization", self.quant_combo)
        form.addRow("Compute dtype", self.dtype_combo)
        form.addRow("Device", self.device_combo)
        form.addRow(self.notice)
        for combo in (self.quant_combo, self.dtype_combo, self.device_combo):
            combo.activated.connect(self._touched)
            combo.currentIndexChanged.connect(lambda _i: self.changed.emit())
        self._probing = False           # the main window starts the probe after its first paint

    def probe(self) -> None:
        """Look for GPUs (NVML) and the RAM on the thread pool, once."""
        if not self._probing:
            self._probing = True
            run_in_background(probe_devices, on_done=self.set_devices,
                              on_failed=lambda _e: self.set_devices(([], {})))

    def _touched(self, _index: int) -> None:
        self._user_touched = True
        if self.gpus is not None:
            self._wanted_device = self.device_combo.currentData()

    def set_devices(self, probe: tuple[list[GpuInfo], dict]) -> None:
        gpus, host = probe
        self.gpus = gpus
        wanted = self._wanted_device
        self.device_combo.blockSignals(True)
        self.device_combo.clear()
        if gpus:
            for g in gpus:
                self.device_combo.addItem(f"cuda:{g.index} — {g.name} ({format_bytes(g.total)})", f"cuda:{g.index}")
        self.device_combo.addItem("CPU" + (f" ({format_bytes(host['ram_total'])} RAM)" if host else ""), "cpu")
        if wanted is not None:
            _select(self.device_combo, wanted)
        self.device_combo.blockSignals(False)
        self.notice.setText("" if gpus else NO_CUDA)
        self.notice.setVisible(not gpus)
        if not self._user_touched:
            _select(self.quant_combo, default_quantization(bool(gpus)))        # the CLI's rule too
        self.probed.emit()
        self.changed.emit()

    def values(self) -> dict:
        return {"quantization": self.quant_combo.currentData(), "compute_dtype": self.dtype_combo.currentData(),
                "device": self.device_combo.currentData() or "auto"}

    def set_values(self, v: dict) -> None:
        """Restore saved choices; the device only if that device still exists."""
        _select(self.quant_combo, v.get("quantization"))
        _select(self.dtype_combo, v.get("compute_dtype"))
        self._wanted_device = v.get("device")
        if self.gpus is not None:
            _select(self.device_combo, self._wanted_device)
        self._user_touched = True


def _combo(choices, tooltip: str) -> QComboBox:
    combo = QComboBox()
    for data, text in choices:
        combo.addItem(text, data)
    combo.setToolTip(tooltip)
    return combo


def _select(combo: QComboBox, data) -> None:
    index = combo.findData(data)
    if index >= 0:
        combo.setCurrentIndex(index)
