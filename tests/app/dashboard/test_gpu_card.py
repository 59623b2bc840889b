"""The GPU card beside the VRAM gauge: utilisation, temperature and power from the worker's memory
events (NVML); hidden on a CPU run."""
import os

from tests.helpers.fake_nvml import FakeNvml

from lorastudio.core.devices import read_gpu_status
from lorastudio.core.journal import JournalWriter

GIB = 1024 ** 3


def test_a_cpu_run_has_no_gpu_card(qtbot, page, tmp_path):
    writer = JournalWriter(tmp_path / "run" / "events.jsonl")
    page.dashboard.reset(str(tmp_path / "run"))
    page.process.follow(tmp_path / "run")
    writer.emit("memory", rss=GIB, ram_used=6 * GIB, ram_total=16 * GIB)
    d = page.dashboard
    qtbot.waitUntil(lambda: d.memory_plot.point_count("ram") == 1, timeout=5000)
    assert not d.gpu.isVisible() and not d.state.has_gpu_figures
    writer.close()


def test_nvml_figures_show_beside_vram(qtbot, page, tmp_path):
    writer = JournalWriter(tmp_path / "run" / "events.jsonl")
    page.dashboard.reset(str(tmp_path / "run"))
    page.process.follow(tmp_path / "run")
    status = read_gpu_status(FakeNvml(util=87, temp=71, milliwatts=245_300, limit=300_000), "handle")
    writer.emit("memory", rss=GIB, ram_used=6 * GIB, ram_total=16 * GIB, cuda_allocated=4 * GIB,
                cuda_reserved=5 * GIB, cuda_peak=5 * GIB, device_name="NVIDIA RTX 4090", **status.event_fields())
    d = page.dashboard
    qtbot.waitUntil(lambda: d.gpu.isVisible(), timeout=5000)
    gpu = d.gpu
    assert (gpu.busy.text(), gpu.temperature.text(), gpu.power.text()) == ("87 %", "71 °C", "245 W")
    assert gpu.toolTip() == ("NVIDIA RTX 4090 (NVML): busy 87 % of the last sample, 71 °C, "
                             "drawing 245 W of 300 W allowed")
    assert (d.gauge.label, d.gauge.used, d.gauge.total) == ("VRAM", 6 * GIB, 24 * GIB)
    if os.environ.get("LORASTUDIO_SHOTS"):
        d.grab().save(os.path.join(os.environ["LORASTUDIO_SHOTS"], "gpu-card.png"))
    no_power = read_gpu_status(FakeNvml(util=12, milliwatts=None, limit=None), "handle")
    writer.emit("memory", rss=GIB, ram_used=6 * GIB, ram_total=16 * GIB, cuda_allocated=4 * GIB,
                cuda_reserved=5 * GIB, cuda_peak=5 * GIB, **no_power.event_fields())
    qtbot.waitUntil(lambda: gpu.busy.text() == "12 %", timeout=5000)
    assert (gpu.temperature.text(), gpu.power.text()) == ("71 °C", "")
    writer.close()
