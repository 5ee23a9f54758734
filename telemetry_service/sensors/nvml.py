"""NVIDIA GPUs through NVML (the `nvidia-ml-py` binding, imported as `pynvml`).

The binding is a parameter so that a simulated GPU, which implements the same functions, units and errors,
goes through exactly this code; its readings are then labelled `simulated`, never `nvml`.
"""

from __future__ import annotations

import logging
import time
from types import ModuleType
from typing import Any

import pynvml

from telemetry_service.sensors.base import DeviceInfo, PartialReadError, Reading, Source
from telemetry_service.sensors.counter_clock import CounterClock

log = logging.getLogger(__name__)

# nvmlDeviceGetPowerUsage is a 1 s moving average on Ampere-and-newer (except A100); instant power is better.
POWER_AVERAGE_S = 1.0
# The power limit and the process list change rarely, and listing processes is one of NVML's slower calls.
SLOW_FIELDS_EVERY_S = 1.0


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class _Gpu:
    def __init__(self, nvml: Any, index: int, source: Source, track_counter: bool, key_prefix: str) -> None:
        self.nvml = nvml
        self.index = index
        self.handle = nvml.nvmlDeviceGetHandleByIndex(index)
        self.name = _text(nvml.nvmlDeviceGetName(self.handle))
        self.uuid = _text(nvml.nvmlDeviceGetUUID(self.handle))
        self.has_counter = self._probe(lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        self.has_instant = self._instant_power_w() is not None
        self.clock: CounterClock | None = None
        if self.has_counter and track_counter:
            self.clock = CounterClock(self._counter_mj, name=f"{key_prefix}{index}")
        self._slow_read_at = 0.0
        self._instant_failing = False
        self._power_limit_w: float | None = None
        self._processes: dict[int, int] = {}
        # Per-process SM use: the driver's newest sample seen (µs), when it was read, and each pid's SM-seconds.
        self._sm_seen_us = int(time.time() * 1e6)
        self._sm_read_at: float | None = None
        self._sm_s: dict[int, float] = {}
        self._sm_supported = True
        self._process_sm_s: dict[int, float] | None = None
        self.info = DeviceInfo(
            key=f"{key_prefix}{index}", kind="gpu", source=source, energy_counter=self.has_counter, name=self.name,
            index=index, uuid=self.uuid,
            # The counter's period is learned from the device as it runs (see CounterClock), never assumed.
            update_period_s=None if self.has_counter or self.has_instant else POWER_AVERAGE_S,
            power_window_s=None if self.has_instant else self._usage_window(),
        )

    def _probe(self, fn: Any) -> bool:
        try:
            fn()
            return True
        except pynvml.NVMLError_NotSupported:
            return False

    def _usage_window(self) -> float | None:
        """nvmlDeviceGetPowerUsage averages over 1 s on Ampere and newer, except on the A100; older GPUs (and a
        driver that cannot say) are taken at their word as instant."""
        try:
            arch = self.nvml.nvmlDeviceGetArchitecture(self.handle)
        except (pynvml.NVMLError, AttributeError):
            return None
        if arch >= pynvml.NVML_DEVICE_ARCH_AMPERE and "A100" not in self.name:
            return POWER_AVERAGE_S
        return None

    def _counter_mj(self) -> float:
        return float(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))

    def _instant_power_w(self) -> float | None:
        try:
            values = self.nvml.nvmlDeviceGetFieldValues(self.handle, [pynvml.NVML_FI_DEV_POWER_INSTANT])
        except pynvml.NVMLError_NotSupported:
            return None
        field = values[0]
        if field.nvmlReturn != pynvml.NVML_SUCCESS:
            return None
        return field.value.uiVal / 1000.0

    def _optional(self, fn: Any) -> Any:
        """Auxiliary metrics are optional: a GPU that does not support one simply has none."""
        try:
            return fn()
        except pynvml.NVMLError_NotSupported:
            return None

    def read(self) -> Reading:
        nvml, h = self.nvml, self.handle
        reading = Reading(key=self.info.key, t=time.time())
        if self.has_counter:
            if self.clock is not None:
                self.clock.wait_clear_of_update()
            t0 = time.time()
            mj = self._counter_mj()
            t1 = time.time()
            reading.counter_j = mj / 1000.0
            if self.clock is not None:
                stamp = self.clock.stamp(t0, t1, mj)
                reading.counter_t, reading.counter_timing, reading.counter_err_s = stamp.t, stamp.timing, stamp.err
            else:
                reading.counter_t, reading.counter_timing = 0.5 * (t0 + t1), "read"
        # Power gets its own instant: on a busy host the two calls can be milliseconds apart.
        t0 = time.time()
        if self.has_instant:
            # A device whose power is stored as instant must never get a moving average in its place: a failed
            # read leaves a hole (the counter still has the energy), and the change is logged.
            power = self._instant_power_w()
            if (power is None) != self._instant_failing:
                self._instant_failing = power is None
                log.warning("%s: instant power %s", self.info.key,
                            "unreadable; power left out until it returns" if power is None else "readable again")
        else:
            power = nvml.nvmlDeviceGetPowerUsage(h) / 1000.0
        reading.t = 0.5 * (t0 + time.time())
        reading.power_w = power
        util = self._optional(lambda: nvml.nvmlDeviceGetUtilizationRates(h))
        if util is not None:
            reading.util_pct, reading.mem_util_pct = float(util.gpu), float(util.memory)
        mem = self._optional(lambda: nvml.nvmlDeviceGetMemoryInfo(h))
        if mem is not None:
            reading.mem_used_bytes, reading.mem_total_bytes = int(mem.used), int(mem.total)
        temp = self._optional(lambda: nvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU))
        reading.temp_c = None if temp is None else float(temp)
        clock = self._optional(lambda: nvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM))
        reading.sm_clock_mhz = None if clock is None else float(clock)
        if reading.t - self._slow_read_at >= SLOW_FIELDS_EVERY_S:
            limit = self._optional(lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(h))
            self._power_limit_w = None if limit is None else limit / 1000.0
            procs = self._optional(lambda: nvml.nvmlDeviceGetComputeRunningProcesses(h)) or []
            self._processes = {int(p.pid): int(p.usedGpuMemory or 0) for p in procs}
            self._process_sm_s = self._read_process_sm(reading.t)
            self._slow_read_at = reading.t
        reading.power_limit_w = self._power_limit_w
        reading.processes = self._processes
        reading.process_sm_s = self._process_sm_s
        return reading

    def _read_process_sm(self, now: float) -> dict[int, float] | None:
        """Cumulative SM-seconds of each process on the GPU, from nvmlDeviceGetProcessUtilization's samples since
        the last read: the time since then is split evenly over the driver's sampling instants, so a process seen
        in half of them at 60 % gets 0.3 of it. None on a GPU that cannot tell."""
        if not self._sm_supported:
            return None
        try:
            samples = self.nvml.nvmlDeviceGetProcessUtilization(self.handle, self._sm_seen_us)
        except pynvml.NVMLError_NotSupported:
            self._sm_supported = False
            return None
        except pynvml.NVMLError_NotFound:
            samples = []  # nothing ran on the SMs since the last read
        elapsed = 0.0 if self._sm_read_at is None else now - self._sm_read_at  # the first read is a baseline
        self._sm_read_at = now
        instants = {int(s.timeStamp) for s in samples}
        for s in samples:
            self._sm_s[int(s.pid)] = self._sm_s.get(int(s.pid), 0.0) + s.smUtil / 100.0 * elapsed / len(instants)
        if instants:
            self._sm_seen_us = max(instants)
        # Processes holding the GPU without running on it yet get their zero, so their first seconds count.
        present = self._processes.keys() | {int(s.pid) for s in samples}
        # A process gone from the GPU is dropped: its last figure is stored, and a daemon lives for months.
        self._sm_s = {pid: self._sm_s.get(pid, 0.0) for pid in present}
        return dict(self._sm_s)


class NvmlSensor:
    """All GPUs NVML can see. `available` is False (with `error` saying why) on a machine without a driver."""

    name = "nvml"

    def __init__(self, binding: ModuleType | Any = pynvml, source: Source = "nvml", track_counter: bool = True,
                 key_prefix: str = "gpu") -> None:
        self.nvml = binding
        self.source: Source = source
        self.gpus: list[_Gpu] = []
        self.error: str | None = None
        self.unreadable: list[str] = []
        self.driver_version: str | None = None
        try:
            self.nvml.nvmlInit()
        except pynvml.NVMLError as exc:
            self.error = f"NVML unavailable: {exc}"
            return
        self.driver_version = _text(self._driver())
        for i in range(self.nvml.nvmlDeviceGetCount()):
            try:
                self.gpus.append(_Gpu(self.nvml, i, source, track_counter, key_prefix))
            except pynvml.NVMLError as exc:  # one lost GPU must not keep the others unmeasured
                self.unreadable.append(f"GPU {i}: {exc}")
                log.warning("GPU %d cannot be read and is left out: %s", i, exc)
        for gpu in self.gpus:
            if gpu.clock is not None:
                gpu.clock.start()

    def _driver(self) -> str:
        try:
            return self.nvml.nvmlSystemGetDriverVersion()
        except pynvml.NVMLError:
            return "unknown"

    @property
    def available(self) -> bool:
        return self.error is None

    def devices(self) -> list[DeviceInfo]:
        return [g.info for g in self.gpus]

    def read(self) -> list[Reading]:
        readings = []
        failures = []
        for gpu in self.gpus:
            try:
                readings.append(gpu.read())
            except pynvml.NVMLError as exc:
                failures.append(f"{gpu.info.key}: {exc}")
        if failures:
            # The readable GPUs are still recorded; the caller logs the rest.
            raise PartialReadError(readings, "; ".join(failures))
        return readings

    def close(self) -> None:
        for gpu in self.gpus:
            if gpu.clock is not None:
                gpu.clock.stop()
        if self.available:
            try:
                self.nvml.nvmlShutdown()
            except pynvml.NVMLError:
                log.debug("nvmlShutdown failed", exc_info=True)

