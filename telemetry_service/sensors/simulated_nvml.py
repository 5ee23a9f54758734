"""A simulated NVML: the functions, units (mW, mJ) and error classes of `pynvml`, playing known power traces.

It exists for demos on machines without a GPU (`--simulate-gpus N`, every figure labelled `simulated`) and for
tests and benchmarks that need an exact answer. It models the sensor physics the energy math must cope with:
the energy counter holds its last update on a grid of its own (period ~100 ms, a phase unrelated to any
reader), it can reset (driver reload), and power can be an instant reading or a 1 s moving average.
"""

from __future__ import annotations

import bisect
import functools
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pynvml

PowerMode = Literal["instant", "average"]


@dataclass(frozen=True)
class StepTrace:
    """Power as a cyclic sequence of constant steps starting at `anchor`; its integral is exact."""

    steps: tuple[tuple[float, float], ...]  # (duration_s, watts)
    anchor: float = 0.0

    def __post_init__(self) -> None:
        if not self.steps or any(d <= 0 or w < 0 or not math.isfinite(d + w) for d, w in self.steps):
            raise ValueError("a trace needs steps of positive duration and non-negative finite power")

    @functools.cached_property
    def period(self) -> float:
        return sum(d for d, _ in self.steps)

    @functools.cached_property
    def cycle_energy(self) -> float:
        return sum(d * w for d, w in self.steps)

    @functools.cached_property
    def _starts(self) -> list[float]:
        out, acc = [], 0.0
        for d, _ in self.steps:
            out.append(acc)
            acc += d
        return out

    def power(self, t: float) -> float:
        offset = (t - self.anchor) % self.period
        i = bisect.bisect_right(self._starts, offset) - 1
        return self.steps[i][1]

    def cumulative(self, t: float) -> float:
        """Energy in joules from `anchor` to `t` (negative before it)."""
        period = self.period
        cycles = math.floor((t - self.anchor) / period)
        offset = (t - self.anchor) - cycles * period
        acc = 0.0
        for start, (d, w) in zip(self._starts, self.steps):
            if offset <= start:
                break
            acc += min(d, offset - start) * w
        return cycles * self.cycle_energy + acc

    def energy(self, t0: float, t1: float) -> float:
        return self.cumulative(t1) - self.cumulative(t0)


# A training step as a GPU sees it: a data-loading dip, forward, backward, an optimizer blip.
TRAINING_PATTERN = ((0.03, 90.0), (0.04, 320.0), (0.07, 410.0), (0.01, 240.0))


@dataclass
class SimulatedGpu:
    trace: StepTrace
    name: str = "Simulated GPU"
    counter: bool = True
    counter_period_s: float = 0.1
    counter_phase_s: float | None = None  # grid phase; random when None, as on real hardware
    power_mode: PowerMode = "instant"
    resets: tuple[float, ...] = ()  # counter restarts from zero at these instants (driver reload)
    failures: tuple[tuple[float, float], ...] = ()  # the GPU is unreadable over these intervals
    driver_loaded_at: float = field(default_factory=lambda: time.time() - 3600.0)
    memory_total: int = 80 * 2**30
    power_limit_w: float = 700.0

    def __post_init__(self) -> None:
        if self.counter_phase_s is None:
            self.counter_phase_s = random.uniform(0.0, self.counter_period_s)

    def check(self, t: float) -> None:
        if any(a <= t < b for a, b in self.failures):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)

    def counter_mj(self, t: float) -> int:
        assert self.counter_phase_s is not None
        update = self.counter_phase_s + math.floor((t - self.counter_phase_s) / self.counter_period_s) * self.counter_period_s
        origin = max([self.driver_loaded_at] + [r for r in self.resets if r <= update])
        return int(self.trace.energy(origin, update) * 1000.0)

    def power_mw(self, t: float) -> int:
        if self.power_mode == "average":
            return int(self.trace.energy(t - 1.0, t) * 1000.0)
        return int(self.trace.power(t) * 1000.0)


def _gpu_from_spec(spec: dict[str, Any], index: int) -> SimulatedGpu:
    trace_spec = spec.get("trace", {})
    steps = tuple((float(d), float(w)) for d, w in trace_spec.get("steps", TRAINING_PATTERN))
    trace = StepTrace(steps=steps, anchor=float(trace_spec.get("anchor", 0.0)))
    return SimulatedGpu(
        trace=trace,
        name=str(spec.get("name", "Simulated GPU")),
        counter=bool(spec.get("counter", True)),
        counter_period_s=float(spec.get("counter_period_s", 0.1)),
        counter_phase_s=spec.get("counter_phase_s"),
        power_mode=spec.get("power", "instant"),
        resets=tuple(float(t) for t in spec.get("resets", ())),
        failures=tuple((float(a), float(b)) for a, b in spec.get("failures", ())),
        # Fixed in the file, the counter runs on across daemon restarts as a real driver's does.
        **({"driver_loaded_at": float(spec["driver_loaded_at"])} if "driver_loaded_at" in spec else {}),
    )


def load_gpus(count: int, trace_file: Path | None) -> list[SimulatedGpu]:
    """GPUs from a JSON file ({"gpus": [{"trace": {"steps": [[s, W], ...]}, "counter": true, ...}]}), or
    `count` GPUs playing a training-like pattern, each shifted so they do not move in lockstep."""
    if trace_file is not None:
        spec = json.loads(Path(trace_file).read_text())
        return [_gpu_from_spec(g, i) for i, g in enumerate(spec["gpus"])]
    return [_gpu_from_spec({"trace": {"steps": TRAINING_PATTERN, "anchor": 0.013 * i}}, i) for i in range(count)]


class _Handle:
    def __init__(self, index: int) -> None:
        self.index = index


class _Util:
    def __init__(self, gpu: int, memory: int) -> None:
        self.gpu = gpu
        self.memory = memory


class _Memory:
    def __init__(self, total: int, used: int) -> None:
        self.total = total
        self.used = used
        self.free = total - used


class SimulatedNvml:
    """Quacks like the `pynvml` module for the calls the NVML sensor makes."""

    def __init__(self, gpus: list[SimulatedGpu], now: Any = time.time) -> None:
        self.gpus = gpus
        self.now = now
        self.initialised = False

    def _gpu(self, handle: _Handle) -> SimulatedGpu:
        if not self.initialised:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        gpu = self.gpus[handle.index]
        gpu.check(self.now())
        return gpu

    def nvmlInit(self) -> None:
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.initialised = False

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
        self._gpu(handle)
        return int(pynvml.NVML_DEVICE_ARCH_HOPPER)  # power usage then reads as a 1 s average where asked to

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: _Handle) -> int:
        gpu = self._gpu(handle)
        if not gpu.counter:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return gpu.counter_mj(self.now())

    def nvmlDeviceGetPowerUsage(self, handle: _Handle) -> int:
        return self._gpu(handle).power_mw(self.now())

    def nvmlDeviceGetFieldValues(self, handle: _Handle, field_ids: list[int]) -> Any:
        gpu = self._gpu(handle)
        values = (pynvml.c_nvmlFieldValue_t * len(field_ids))()
        t = self.now()
        for i, fid in enumerate(field_ids):
            values[i].fieldId = fid
            values[i].timestamp = int(t * 1e6)
            if fid == pynvml.NVML_FI_DEV_POWER_INSTANT and gpu.power_mode == "instant":
                values[i].valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
                values[i].value.uiVal = int(gpu.trace.power(t) * 1000.0)
                values[i].nvmlReturn = pynvml.NVML_SUCCESS
            else:
                values[i].nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
        return values

    def nvmlDeviceGetUtilizationRates(self, handle: _Handle) -> _Util:
        gpu = self._gpu(handle)
        share = min(1.0, gpu.trace.power(self.now()) / gpu.power_limit_w)
        return _Util(gpu=int(100 * share), memory=int(60 * share))

    def nvmlDeviceGetMemoryInfo(self, handle: _Handle) -> _Memory:
        gpu = self._gpu(handle)
        return _Memory(total=gpu.memory_total, used=gpu.memory_total // 4)

    def nvmlDeviceGetTemperature(self, handle: _Handle, sensor: int) -> int:
        gpu = self._gpu(handle)
        return int(35 + gpu.trace.power(self.now()) / 20)

    def nvmlDeviceGetClockInfo(self, handle: _Handle, clock: int) -> int:
        self._gpu(handle)
        return 1980

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: _Handle) -> int:
        return int(self._gpu(handle).power_limit_w * 1000)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: _Handle) -> list[Any]:
        self._gpu(handle)
        return []
