"""Polling I/O: every GPU's energy counter and power fields at a fixed interval, with each NVML call timed.

The binding is a parameter (the `pynvml` module, or the simulator), as for the daemon's sensor.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import pynvml

from telemetry_service.probe.trace_file import CallCost, GpuReads, GpuTrace, LoadSpan, Trace

# The power reads may take at most this share of the poll interval: they must not thin the counter's sampling.
POWER_BUDGET = 0.25
WARMUP_CALLS = 20
# Calls the daemon makes besides the polled ones, timed once the polling is over.
OTHER_CALLS = ("nvmlDeviceGetUtilizationRates", "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetTemperature",
               "nvmlDeviceGetClockInfo", "nvmlDeviceGetEnforcedPowerLimit", "nvmlDeviceGetComputeRunningProcesses")
OTHER_CALL_REPEATS = 100


class ProbeError(RuntimeError):
    """The probe cannot run: no driver, or no GPU to read."""


class LoadRun(Protocol):
    def go(self) -> None: ...
    def finish(self) -> list[LoadSpan]: ...


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class CallTimer:
    """Microseconds spent in each NVML function, by name."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = defaultdict(list)

    def call(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.samples[name].append((time.perf_counter() - start) * 1e6)

    def summary(self) -> dict[str, CallCost]:
        return {name: CallCost(median=float(np.median(v)), p99=float(np.percentile(v, 99)), n=len(v))
                for name, v in sorted(self.samples.items()) if v}


def _supported(fn: Callable[[], Any]) -> bool:
    try:
        fn()
        return True
    except pynvml.NVMLError_NotSupported:
        return False


class _GpuPoller:
    def __init__(self, nvml: Any, index: int, timer: CallTimer) -> None:
        self.nvml, self.index, self.timer = nvml, index, timer
        self.handle = nvml.nvmlDeviceGetHandleByIndex(index)
        self.name = _text(nvml.nvmlDeviceGetName(self.handle))
        self.uuid = _text(nvml.nvmlDeviceGetUUID(self.handle))
        try:
            self.architecture: int | None = int(nvml.nvmlDeviceGetArchitecture(self.handle))
        except (pynvml.NVMLError, AttributeError):
            self.architecture = None
        self.has_counter = _supported(lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        self.has_instant = self._instant() is not None
        self.has_usage = _supported(lambda: nvml.nvmlDeviceGetPowerUsage(self.handle))
        self.rows: dict[str, list[float]] = defaultdict(list)

    def _instant(self) -> tuple[float, float] | None:
        """(mW, timestamp µs) of the instant power field, or None where the GPU does not have it."""
        try:
            values = self.timer.call("nvmlDeviceGetFieldValues", self.nvml.nvmlDeviceGetFieldValues, self.handle,
                                     [pynvml.NVML_FI_DEV_POWER_INSTANT])
        except pynvml.NVMLError_NotSupported:
            return None
        value = values[0]
        if value.nvmlReturn != pynvml.NVML_SUCCESS:
            return None
        return float(value.value.uiVal), float(value.timestamp)

    def _read(self, name: str) -> float:
        """One scalar NVML read; a transient failure leaves a gap (NaN) rather than ending the probe."""
        try:
            return float(self.timer.call(name, getattr(self.nvml, name), self.handle))
        except pynvml.NVMLError:
            return math.nan

    def _read_power(self) -> None:
        if self.has_instant:
            try:
                mw, ts = self._instant() or (math.nan, math.nan)
            except pynvml.NVMLError:
                mw, ts = math.nan, math.nan
            self.rows["power_instant_mw"].append(mw)
            self.rows["power_instant_ts_us"].append(ts)
        if self.has_usage:
            self.rows["power_usage_mw"].append(self._read("nvmlDeviceGetPowerUsage"))

    def _skip_power(self) -> None:
        for name, wanted in (("power_instant_mw", self.has_instant), ("power_instant_ts_us", self.has_instant),
                             ("power_usage_mw", self.has_usage)):
            if wanted:
                self.rows[name].append(math.nan)

    def poll(self, with_power: bool) -> None:
        # The counter is read first and alone between t0 and t1: its update instants are what the probe locates.
        t0 = time.time()
        if self.has_counter:
            self.rows["counter_mj"].append(self._read("nvmlDeviceGetTotalEnergyConsumption"))
        else:
            self._read_power()
        t1 = time.time()
        if self.has_counter and with_power:
            self._read_power()
        elif self.has_counter:
            self._skip_power()
        self.rows["t0"].append(t0)
        self.rows["t1"].append(t1)

    def power_cost_us(self) -> float:
        """Median cost of one poll's power reads, from a short warm-up."""
        for _ in range(WARMUP_CALLS):
            self._read_power()
        self.rows.clear()
        costs = self.timer.summary()
        return sum(costs[n].median for n in ("nvmlDeviceGetFieldValues", "nvmlDeviceGetPowerUsage") if n in costs)

    def time_other_calls(self) -> None:
        args: dict[str, tuple[Any, ...]] = {"nvmlDeviceGetTemperature": (pynvml.NVML_TEMPERATURE_GPU,),
                                            "nvmlDeviceGetClockInfo": (pynvml.NVML_CLOCK_SM,)}
        for name in OTHER_CALLS:
            fn = getattr(self.nvml, name, None)
            for _ in range(OTHER_CALL_REPEATS if fn is not None else 0):
                try:
                    self.timer.call(name, fn, self.handle, *args.get(name, ()))
                except pynvml.NVMLError:
                    break  # unsupported here: its cost is not this GPU's to report

    def trace(self) -> GpuTrace:
        def series(name: str, wanted: bool) -> np.ndarray | None:
            return np.array(self.rows[name], dtype=float) if wanted else None
        reads = GpuReads(t0=np.array(self.rows["t0"]), t1=np.array(self.rows["t1"]),
                         counter_mj=series("counter_mj", self.has_counter),
                         power_instant_mw=series("power_instant_mw", self.has_instant),
                         power_instant_ts_us=series("power_instant_ts_us", self.has_instant),
                         power_usage_mw=series("power_usage_mw", self.has_usage))
        return GpuTrace(index=self.index, name=self.name, uuid=self.uuid, architecture=self.architecture, reads=reads)


def _poll_loop(pollers: list[_GpuPoller], seconds: float, poll_s: float, power_every: int) -> tuple[float, float]:
    started = next_at = time.time()
    i = 0
    while time.time() < started + seconds:
        for poller in pollers:
            poller.poll(with_power=i % power_every == 0)
        i += 1
        next_at += poll_s
        delay = next_at - time.time()
        if delay > 0:
            time.sleep(delay)
        else:
            next_at = time.time()  # running late: poll now, but never in a burst to catch up
    return started, time.time()


def record(nvml: Any, seconds: float, poll_s: float, host: str, load: LoadRun | None = None) -> Trace:
    """Polls every GPU for `seconds`; with `load`, its schedule runs meanwhile, else the trace says idle."""
    try:
        nvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise ProbeError(f"NVML unavailable: {exc}") from exc
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        timer = CallTimer()
        pollers = [_GpuPoller(nvml, i, timer) for i in range(nvml.nvmlDeviceGetCount())]
        if not pollers:
            raise ProbeError("NVML sees no GPU")
        power_cost_s = sum(p.power_cost_us() for p in pollers) * 1e-6
        power_every = max(1, math.ceil(power_cost_s / (POWER_BUDGET * poll_s)))
        if load is not None:
            load.go()
        started, ended = _poll_loop(pollers, seconds, poll_s, power_every)
        spans = load.finish() if load is not None else [LoadSpan(start=started, end=ended, kind="idle")]
        for poller in pollers:
            poller.time_other_calls()
        return Trace(host=host, driver=driver, started_at=started, gpus=[p.trace() for p in pollers], load=spans,
                     call_cost_us=timer.summary())
    finally:
        nvml.nvmlShutdown()
