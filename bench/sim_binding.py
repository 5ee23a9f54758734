"""One simulated GPU binding for every tool in a benchmark: our daemon, Zeus and CodeCarbon read the same fake GPUs.

`BenchNvml` extends the daemon's `SimulatedNvml` with the NVML calls the peers make (architecture, power-limit
constraints, power fields with a scope, C2C mode, ...), keeping NVML's units (mW, mJ) and error classes.
`install` replaces the functions of the `pynvml` module by the instance's bound methods, so any library that
calls `pynvml.nvmlX(...)` reads the fake GPUs. NVML is reference counted (each nvmlInit needs its own
nvmlShutdown), so one tool shutting down does not blind the others.

`LiveTrace` is the power a workload draws as it runs: its boundaries are stamped by the thread running it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pynvml

from telemetry_service.sensors.simulated_nvml import SimulatedGpu, SimulatedNvml

# Environment variable naming a JSON spec of the fake GPUs: processes that a peer spawns (Zeus's power
# poller) read it on import and install the same binding, playing the same traces.
SPEC_ENV = "JOULEMETER_BENCH_SIM_SPEC"

_ARCH_WITH_COUNTER = getattr(pynvml, "NVML_DEVICE_ARCH_HOPPER", 9)
# GPUs without an energy counter are pre-Volta: that is what tells Zeus to poll power instead.
_ARCH_WITHOUT_COUNTER = getattr(pynvml, "NVML_DEVICE_ARCH_PASCAL", 4)
_ARCH_AVERAGING_WITHOUT_COUNTER = getattr(pynvml, "NVML_DEVICE_ARCH_AMPERE", 7)


class LiveTrace:
    """Power that follows a workload as it runs: a list of elements (phases and idle stretches), each a
    sequence of (seconds, watts) pieces, whose start instants are stamped by the thread that runs them.

    Power therefore changes exactly when the training thread reaches a boundary, however late it wakes,
    as a GPU's power does when the next kernels start. Start instants live in shared memory so that a
    process spawned by a peer (Zeus's power poller) sees the same power. Integrals are exact.
    """

    def __init__(self, elements: list[list[tuple[float, float]]], before_w: float, shm_name: str | None = None) -> None:
        from multiprocessing import shared_memory

        self.elements = elements
        self.before_w = before_w
        self._ends = [np.cumsum([d for d, _ in e]) for e in elements]
        self._cums = [np.concatenate([[0.0], np.cumsum([d * w for d, w in e])]) for e in elements]
        size = 8 * (len(elements) + 1)
        self.owner = shm_name is None
        self.shm = shared_memory.SharedMemory(create=self.owner, size=size, name=shm_name)
        # slot 0: how many elements have started; slots 1..: their start instants
        self._arr = np.ndarray((len(elements) + 1,), dtype=np.float64, buffer=self.shm.buf)
        if self.owner:
            self._arr[:] = 0.0
        self._lock = threading.Lock()
        self._cum_at_start: list[float] = [0.0]

    @property
    def started(self) -> int:
        return int(self._arr[0])

    def starts(self) -> np.ndarray:
        return self._arr[1:1 + self.started].copy()

    def mark(self, i: int) -> float:
        """Element i starts now (elements start in order); returns that instant."""
        with self._lock:
            if i != self.started:
                raise ValueError(f"element {i} cannot start after {self.started} started")
            t = time.time()
            self._arr[1 + i] = t
            self._arr[0] = i + 1
            return t

    def _element_energy(self, i: int, offset: float) -> float:
        ends, cum, pieces = self._ends[i], self._cums[i], self.elements[i]
        if offset >= ends[-1]:  # ran longer than planned: the last level holds
            return float(cum[-1] + (offset - ends[-1]) * pieces[-1][1])
        j = int(np.searchsorted(ends, offset, side="right"))
        start = 0.0 if j == 0 else float(ends[j - 1])
        return float(cum[j] + (offset - start) * pieces[j][1])

    def _element_power(self, i: int, offset: float) -> float:
        j = min(int(np.searchsorted(self._ends[i], offset, side="right")), len(self.elements[i]) - 1)
        return self.elements[i][j][1]

    def power(self, t: float) -> float:
        with self._lock:
            n = self.started
            i = int(np.searchsorted(self._arr[1:1 + n], t, side="right")) - 1
            return self.before_w if i < 0 else self._element_power(i, t - float(self._arr[1 + i]))

    def cumulative(self, t: float) -> float:
        """Energy from the start of element 0 to t (negative before it)."""
        with self._lock:
            n = self.started
            if n == 0:
                raise RuntimeError("no element has started yet")
            starts = self._arr[1:1 + n]
            while len(self._cum_at_start) < n:
                k = len(self._cum_at_start)
                self._cum_at_start.append(self._cum_at_start[-1]
                                          + self._element_energy(k - 1, float(starts[k] - starts[k - 1])))
            i = int(np.searchsorted(starts, t, side="right")) - 1
            if i < 0:
                return float((t - starts[0]) * self.before_w)
            return self._cum_at_start[i] + self._element_energy(i, t - float(starts[i]))

    def energy(self, t0: float, t1: float) -> float:
        return self.cumulative(t1) - self.cumulative(t0)

    def close(self) -> None:
        """Releases the shared memory; the trace keeps answering from a private copy."""
        with self._lock:
            self._arr = self._arr.copy()
        self.shm.close()
        if self.owner:
            self.shm.unlink()


class _C2cInfo:
    isC2cEnabled = 0


class BenchNvml(SimulatedNvml):
    """`SimulatedNvml` plus the calls Zeus and CodeCarbon make, with NVML's reference-counted init."""

    def __init__(self, gpus: list[SimulatedGpu], **kwargs: Any) -> None:
        super().__init__(gpus, **kwargs)
        self._refs = 0
        self._lock = threading.Lock()

    def nvmlInit(self) -> None:
        with self._lock:
            self._refs += 1
            self.initialised = True

    def nvmlInitWithFlags(self, flags: int) -> None:
        self.nvmlInit()

    def nvmlShutdown(self) -> None:
        with self._lock:
            if self._refs == 0:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
            self._refs -= 1
            self.initialised = self._refs > 0

    def nvmlDeviceGetArchitecture(self, handle: Any) -> int:
        # A counter-less GPU whose power usage is a 1 s average does not exist (averaging came with Ampere,
        # counters with Volta); to play that case anyway it reports Ampere, so readers treat its power as averaged.
        gpu = self._gpu(handle)
        if gpu.counter:
            return _ARCH_WITH_COUNTER
        return _ARCH_AVERAGING_WITHOUT_COUNTER if gpu.power_mode == "average" else _ARCH_WITHOUT_COUNTER

    def nvmlDeviceGetC2cModeInfoV(self, handle: Any) -> _C2cInfo:
        self._gpu(handle)
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetFieldValues(self, handle: Any, field_ids: list[Any]) -> Any:
        """Fields as ints or (field, scope) pairs, as the real binding takes them. Only instant power is
        reported, by the GPUs whose sensor gives it; every other field answers NOT_SUPPORTED."""
        gpu = self._gpu(handle)
        t = self.now()
        values = (pynvml.c_nvmlFieldValue_t * len(field_ids))()
        for i, fid in enumerate(field_ids):
            field, scope = (fid if isinstance(fid, tuple) else (fid, 0))
            values[i].fieldId = field
            values[i].scopeId = scope
            values[i].timestamp = int(t * 1e6)
            values[i].valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
            values[i].nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
            gpu_scope = scope == 0
            if field == pynvml.NVML_FI_DEV_POWER_INSTANT and gpu_scope and gpu.power_mode == "instant":
                values[i].value.uiVal = int(gpu.trace.power(t) * 1000.0)
                values[i].nvmlReturn = pynvml.NVML_SUCCESS
        return values

    def nvmlDeviceGetTemperatureV(self, handle: Any, sensor: int, version: Any = None) -> int:
        return self.nvmlDeviceGetTemperature(handle, sensor)

    def nvmlDeviceGetPowerManagementLimit(self, handle: Any) -> int:
        return self.nvmlDeviceGetEnforcedPowerLimit(handle)

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: Any) -> int:
        return self.nvmlDeviceGetEnforcedPowerLimit(handle)

    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle: Any) -> tuple[int, int]:
        return (100_000, self.nvmlDeviceGetEnforcedPowerLimit(handle))

    def nvmlDeviceGetPersistenceMode(self, handle: Any) -> int:
        self._gpu(handle)
        return pynvml.NVML_FEATURE_ENABLED

    def nvmlDeviceGetComputeMode(self, handle: Any) -> int:
        self._gpu(handle)
        return pynvml.NVML_COMPUTEMODE_DEFAULT

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: Any) -> list[Any]:
        self._gpu(handle)
        return []


def install(nvml: BenchNvml) -> dict[str, Any]:
    """Points every `pynvml.nvml*` function the instance implements at it; returns the originals."""
    originals: dict[str, Any] = {}
    for name in dir(nvml):
        if name.startswith("nvml") and callable(getattr(nvml, name)):
            originals[name] = getattr(pynvml, name, None)
            setattr(pynvml, name, getattr(nvml, name))
    return originals


# --- a spec that crosses process boundaries ------------------------------------------------------------


def publish(trace: LiveTrace, gpus: list[SimulatedGpu], path: Path) -> None:
    """Writes the GPUs and their trace where spawned processes will find them (see `install_from_env`)."""
    path.write_text(json.dumps({
        "trace": {"elements": trace.elements, "before_w": trace.before_w, "shm": trace.shm.name},
        "gpus": [{"name": g.name, "counter": g.counter, "counter_period_s": g.counter_period_s,
                  "counter_phase_s": g.counter_phase_s, "power_mode": g.power_mode,
                  "driver_loaded_at": g.driver_loaded_at} for g in gpus],
    }))
    os.environ[SPEC_ENV] = str(path)


def install_from_env() -> BenchNvml | None:
    """In a process spawned by a peer: installs the binding the parent published, if any."""
    path = os.environ.get(SPEC_ENV)
    if not path or not Path(path).exists():
        return None
    spec = json.loads(Path(path).read_text())
    t = spec["trace"]
    trace = LiveTrace([[tuple(p) for p in e] for e in t["elements"]], t["before_w"], shm_name=t["shm"])
    nvml = BenchNvml([SimulatedGpu(trace=trace, **g) for g in spec["gpus"]])  # type: ignore[arg-type]
    install(nvml)
    return nvml
