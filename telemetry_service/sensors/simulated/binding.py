"""A pynvml-compatible binding over simulated GPUs: pynvml's function names, units (mW, mJ, µs timestamps) and
error classes, for the calls our NVML sensor makes and those Zeus and CodeCarbon make.

NVML is reference counted (each nvmlInit needs its own nvmlShutdown), so one tool shutting down does not
blind the others that share the binding.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import pynvml

from telemetry_service.sensors.simulated.gpu import GpuProcess

# The driver samples each process's utilisation on its own schedule and keeps a short history of the samples.
PROCESS_SAMPLE_US = 200_000
PROCESS_HISTORY_US = 10_000_000


class GpuModel(Protocol):
    """What the binding needs of a simulated GPU (`SimulatedGpu`, `ReplayGpu`)."""

    name: str
    memory_total: int
    power_limit_w: float
    processes: tuple[GpuProcess, ...]

    def check(self, t: float) -> None: ...

    def architecture(self) -> int: ...

    def counter_mj(self, t: float) -> int: ...

    def instant_power(self, t: float) -> tuple[float, float] | None: ...

    def power_usage_mw(self, t: float) -> int: ...

    def load_w(self, t: float) -> float: ...


class _Handle:
    def __init__(self, index: int) -> None:
        self.index = index


class _Util:
    def __init__(self, gpu: int, memory: int) -> None:
        self.gpu = gpu
        self.memory = memory


class _ProcessInfo:
    """Like c_nvmlProcessInfo_t."""

    def __init__(self, pid: int, used: int) -> None:
        self.pid = pid
        self.usedGpuMemory = used
        self.gpuInstanceId = self.computeInstanceId = 0xFFFFFFFF


class _Memory:
    def __init__(self, total: int, used: int) -> None:
        self.total = total
        self.used = used
        self.free = total - used


class SimulatedNvml:
    """Quacks like the `pynvml` module for simulated GPUs."""

    def __init__(self, gpus: list[Any], now: Callable[[], float] = time.time) -> None:
        self.gpus: list[GpuModel] = gpus
        self.now = now
        self._refs = 0
        self._lock = threading.Lock()

    @property
    def initialised(self) -> bool:
        return self._refs > 0

    def _gpu(self, handle: _Handle) -> GpuModel:
        if not self.initialised:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        gpu = self.gpus[handle.index]
        gpu.check(self.now())
        return gpu

    def nvmlInit(self) -> None:
        with self._lock:
            self._refs += 1

    def nvmlInitWithFlags(self, flags: int) -> None:
        self.nvmlInit()

    def nvmlShutdown(self) -> None:
        with self._lock:
            if self._refs == 0:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
            self._refs -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return "simulated"

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        if not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return _Handle(index)

    def nvmlDeviceGetName(self, handle: _Handle) -> str:
        return self._gpu(handle).name

    def nvmlDeviceGetUUID(self, handle: _Handle) -> str:
        self._gpu(handle)
        return f"GPU-51a1a7ed-0000-4000-8000-{handle.index:012d}"

    def nvmlDeviceGetArchitecture(self, handle: _Handle) -> int:
        return self._gpu(handle).architecture()

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: _Handle) -> int:
        return self._gpu(handle).counter_mj(self.now())

    def nvmlDeviceGetPowerUsage(self, handle: _Handle) -> int:
        return self._gpu(handle).power_usage_mw(self.now())

    def nvmlDeviceGetFieldValues(self, handle: _Handle, field_ids: list[Any]) -> Any:
        """Fields as ints or (field, scope) pairs, as the real binding takes them. Only instant power (GPU scope)
        is reported, by the GPUs whose sensor gives it, stamped when the sensor produced it; every other field
        answers NOT_SUPPORTED."""
        gpu = self._gpu(handle)
        t = self.now()
        instant = gpu.instant_power(t)
        values = (pynvml.c_nvmlFieldValue_t * len(field_ids))()
        for i, fid in enumerate(field_ids):
            field_id, scope = fid if isinstance(fid, tuple) else (fid, 0)
            values[i].fieldId = field_id
            values[i].scopeId = scope
            values[i].timestamp = int(t * 1e6)
            values[i].valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
            values[i].nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
            if field_id == pynvml.NVML_FI_DEV_POWER_INSTANT and scope == 0 and instant is not None:
                values[i].value.uiVal = int(instant[0] * 1000.0)
                values[i].timestamp = int(instant[1] * 1e6)
                values[i].nvmlReturn = pynvml.NVML_SUCCESS
        return values

    @staticmethod
    def _busy(gpu: GpuModel, t: float) -> float:
        """The fraction of time the SMs are busy, following the power drawn."""
        return min(1.0, gpu.load_w(t) / gpu.power_limit_w)

    def nvmlDeviceGetUtilizationRates(self, handle: _Handle) -> _Util:
        share = self._busy(self._gpu(handle), self.now())
        return _Util(gpu=int(100 * share), memory=int(60 * share))

    def nvmlDeviceGetProcessUtilization(self, handle: _Handle, timeStamp: int) -> list[Any]:
        """The samples taken after `timeStamp` (µs) still in the driver's history, one per running process per
        sampling instant, each process getting its share of the SMs' busy time; NotFound when there are none."""
        gpu = self._gpu(handle)
        now_us = int(self.now() * 1e6)
        first = max(timeStamp, now_us - PROCESS_HISTORY_US) // PROCESS_SAMPLE_US + 1
        out = []
        for k in range(first, now_us // PROCESS_SAMPLE_US + 1):
            at = k * PROCESS_SAMPLE_US / 1e6
            busy = self._busy(gpu, at)
            for p in gpu.processes:
                if p.active(at):
                    s = pynvml.c_nvmlProcessUtilizationSample_t()
                    s.pid, s.timeStamp = p.pid, k * PROCESS_SAMPLE_US
                    s.smUtil, s.memUtil = round(100 * p.sm_share * busy), round(60 * p.sm_share * busy)
                    out.append(s)
        if not out:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return out

    def nvmlDeviceGetMemoryInfo(self, handle: _Handle) -> _Memory:
        gpu = self._gpu(handle)
        return _Memory(total=gpu.memory_total, used=gpu.memory_total // 4)

    def nvmlDeviceGetTemperature(self, handle: _Handle, sensor: int) -> int:
        return int(35 + self._gpu(handle).load_w(self.now()) / 20)

    def nvmlDeviceGetTemperatureV(self, handle: _Handle, sensor: int, version: Any = None) -> int:
        return self.nvmlDeviceGetTemperature(handle, sensor)

    def nvmlDeviceGetClockInfo(self, handle: _Handle, clock: int) -> int:
        self._gpu(handle)
        return 1980

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: _Handle) -> int:
        return int(self._gpu(handle).power_limit_w * 1000)

    def nvmlDeviceGetPowerManagementLimit(self, handle: _Handle) -> int:
        return self.nvmlDeviceGetEnforcedPowerLimit(handle)

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: _Handle) -> int:
        return self.nvmlDeviceGetEnforcedPowerLimit(handle)

    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle: _Handle) -> tuple[int, int]:
        return (100_000, self.nvmlDeviceGetEnforcedPowerLimit(handle))

    def nvmlDeviceGetPersistenceMode(self, handle: _Handle) -> int:
        self._gpu(handle)
        return pynvml.NVML_FEATURE_ENABLED

    def nvmlDeviceGetComputeMode(self, handle: _Handle) -> int:
        self._gpu(handle)
        return pynvml.NVML_COMPUTEMODE_DEFAULT

    def nvmlDeviceGetC2cModeInfoV(self, handle: _Handle) -> Any:
        self._gpu(handle)
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: _Handle) -> list[Any]:
        gpu = self._gpu(handle)
        t = self.now()
        return [_ProcessInfo(p.pid, p.memory_bytes) for p in gpu.processes if p.active(t)]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: _Handle) -> list[Any]:
        self._gpu(handle)
        return []
