"""A stand-in for the pynvml module: the functions core.devices reads, with fixed answers."""
from types import SimpleNamespace

GIB = 1024 ** 3


class NotSupported(Exception):
    pass


class FakeNvml:
    """The pynvml functions the status reads, answering with fixed values (None: not supported)."""
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, util=87, temp=71, milliwatts=245_300, limit=300_000, fail_init=False):
        self.util, self.temp, self.milliwatts, self.limit, self.fail_init = util, temp, milliwatts, limit, fail_init
        self.shut_down = False
        self.uuids = []

    def nvmlInit(self):
        if self.fail_init:
            raise NotSupported("NVML Shared Library Not Found")

    def nvmlShutdown(self):
        self.shut_down = True

    def nvmlDeviceGetHandleByUUID(self, uuid):
        self.uuids.append(uuid)
        return "handle"

    def nvmlDeviceGetMemoryInfo(self, _handle):
        return SimpleNamespace(used=6 * GIB, total=24 * GIB, free=18 * GIB)

    def _value(self, value):
        if value is None:
            raise NotSupported("Not Supported")
        return value

    def nvmlDeviceGetUtilizationRates(self, _handle):
        return SimpleNamespace(gpu=self._value(self.util), memory=40)

    def nvmlDeviceGetTemperature(self, _handle, sensor):
        assert sensor == self.NVML_TEMPERATURE_GPU
        return self._value(self.temp)

    def nvmlDeviceGetPowerUsage(self, _handle):
        return self._value(self.milliwatts)

    def nvmlDeviceGetEnforcedPowerLimit(self, _handle):
        return self._value(self.limit)
