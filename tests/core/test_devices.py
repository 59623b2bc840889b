"""NVML figures beside memory: utilisation, temperature and power, each optional; no NVML, no GPU."""
import pytest

from tests.helpers.fake_nvml import FakeNvml

from lorastudio.core.devices import GpuStatus, gpu_status_by_uuid, list_gpus, read_gpu_status

GIB = 1024 ** 3


def test_status_reads_every_figure():
    status = read_gpu_status(FakeNvml(), "handle")
    assert status == GpuStatus(6 * GIB, 24 * GIB, 87, 71, 245.3, 300.0)
    assert status.event_fields() == {"device_used": 6 * GIB, "device_total": 24 * GIB, "gpu_util": 87,
                                     "gpu_temp": 71, "gpu_power": 245.3, "gpu_power_limit": 300.0}


def test_a_figure_the_card_does_not_report_is_left_out():
    status = read_gpu_status(FakeNvml(milliwatts=None, limit=None, temp=None), "handle")
    assert (status.utilization, status.temperature, status.power) == (87, None, None)
    assert set(status.event_fields()) == {"device_used", "device_total", "gpu_util"}


def test_by_uuid_adds_the_gpu_prefix_and_shuts_nvml_down():
    nvml = FakeNvml()
    assert gpu_status_by_uuid("1234-abcd", nvml).utilization == 87
    assert nvml.uuids == ["GPU-1234-abcd"] and nvml.shut_down


def test_no_nvml_means_no_status():
    assert gpu_status_by_uuid("GPU-1", FakeNvml(fail_init=True)) is None


def test_this_machine_without_a_gpu_lists_none_and_does_not_crash():
    gpus = list_gpus()
    assert isinstance(gpus, list)
    if not gpus:
        assert gpu_status_by_uuid("GPU-00000000-0000-0000-0000-000000000000") is None


@pytest.mark.gpu
def test_a_real_gpu_reports_its_figures():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    uuid = str(torch.cuda.get_device_properties(0).uuid)
    status = gpu_status_by_uuid(uuid)
    assert status is not None and status.total > 0
    assert status.utilization is not None and 0 <= status.utilization <= 100
    assert status.temperature is not None and 10 < status.temperature < 110
    print(status)
