"""A simulated GPU: a power trace read through a sensor profile, with the ground truth beside it.

The counter follows the time since the driver loaded (by default the machine's boot), on an update grid whose
phase and seed are fixed per (driver load, GPU index): a daemon restarted on the same machine reads the same
counter, continued, as it would on real hardware.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import psutil
import pynvml

from telemetry_service.sensors.simulated.profiles import (
    DEFAULT_PROFILE, PROFILES, SensorProfile, UpdateGrid, uniform,
)
from telemetry_service.sensors.simulated.traces import Trace, cumulative_many

# Part-time sums are kept per chunk of windows so that a read costs at most one chunk's work.
_CHUNK = 4096
_ARCH_WITH_COUNTER = pynvml.NVML_DEVICE_ARCH_HOPPER
# GPUs without an energy counter are pre-Volta: that is what tells readers such as Zeus to poll power.
_ARCH_WITHOUT_COUNTER = pynvml.NVML_DEVICE_ARCH_PASCAL
# No real GPU averages power without a counter (averaging came with Ampere, counters with Volta); to play that
# case anyway it reports Ampere, so readers that go by the architecture treat its power as averaged.
_ARCH_AVERAGING_WITHOUT_COUNTER = pynvml.NVML_DEVICE_ARCH_AMPERE


def boot_time() -> float:
    return float(psutil.boot_time())


@dataclass(frozen=True)
class GpuProcess:
    """A process on a simulated GPU: its share of the SMs' busy time while it runs, from `start` to `end`."""

    pid: int
    sm_share: float
    start: float = float("-inf")
    end: float = float("inf")
    memory_bytes: int = 2**30

    def active(self, t: float) -> bool:
        return self.start <= t < self.end


@dataclass
class SimulatedGpu:
    trace: Trace
    profile: SensorProfile = PROFILES[DEFAULT_PROFILE]
    index: int = 0
    name: str = "Simulated GPU"
    driver_loaded_at: float = field(default_factory=boot_time)
    grid_anchor: float | None = None  # one update instant; by default fixed per (driver load, index)
    seed: int | None = None  # of jitter and drops; by default fixed per (driver load, index)
    sensing_from: float | None = None  # part-time sensing applies to windows after this (default: driver load)
    resets: tuple[float, ...] = ()  # the counter restarts from zero at these instants (driver reload)
    failures: tuple[tuple[float, float], ...] = ()  # the GPU is unreadable over these intervals
    memory_total: int = 80 * 2**30
    power_limit_w: float = 700.0
    processes: tuple[GpuProcess, ...] = ()  # none: the GPU lists no processes, as before processes were simulated

    def __post_init__(self) -> None:
        if self.seed is None:
            self.seed = int(self.driver_loaded_at * 1e6) * 1024 + self.index
        if self.grid_anchor is None:
            self.grid_anchor = self.driver_loaded_at + uniform(self.seed, 2, 0) * self.profile.period_s
        self.grid = UpdateGrid(self.grid_anchor, self.profile, self.seed)
        refresh = self.profile.power_refresh_s
        self._power_grid = None if refresh is None else \
            UpdateGrid(self.grid_anchor, SensorProfile("power refresh", period_s=refresh), self.seed)
        self._base = self._first_update_from(self.driver_loaded_at if self.sensing_from is None else self.sensing_from)
        self._chunks: list[float] = []  # sensed cumulative energy at the start of each chunk of windows
        self._lock = threading.Lock()

    # --- what NVML would answer ---------------------------------------------------------------------------

    def check(self, t: float) -> None:
        if any(a <= t < b for a, b in self.failures):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)

    def architecture(self) -> int:
        if self.profile.counter:
            return _ARCH_WITH_COUNTER
        return _ARCH_AVERAGING_WITHOUT_COUNTER if self.profile.power_mode == "average" else _ARCH_WITHOUT_COUNTER

    def counter_mj(self, t: float) -> int:
        if not self.profile.counter:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        u = self.grid.instant(self._published(t))
        origin = max([self.driver_loaded_at] + [r for r in self.resets if r <= u])
        return max(0, int((self._sensed(u) - self._sensed(origin)) * 1000.0))

    def instant_power(self, t: float) -> tuple[float, float] | None:
        """(watts, the instant the sensor produced them) as the instant-power field reads at t; None without one."""
        p = self.profile
        if p.power_mode == "average":
            return None
        if p.observed < 1.0:  # the power over the last published window, as the sensor saw it
            k = self._published(t)
            u0, u1 = self.grid.instant(k - 1), self.grid.instant(k)
            return (self._sensed(u1) - self._sensed(u0)) / (u1 - u0), u1
        at = t if self._power_grid is None else self._power_grid.instant(self._power_grid.last_index(t))
        return self.trace.power(at - p.power_lag_s), at

    def power_usage_mw(self, t: float) -> int:
        instant = self.instant_power(t)
        if instant is None:
            return int(self.sensor_energy(t - 1.0, t) * 1000.0)
        return int(instant[0] * 1000.0)

    def load_w(self, t: float) -> float:
        """The power drawn now, which utilisation and temperature follow."""
        return self.trace.power(t)

    # --- ground truth, for tests and benchmarks only -------------------------------------------------------

    def true_energy(self, t0: float, t1: float) -> float:
        return self.trace.energy(t0, t1)

    def sensor_energy(self, t0: float, t1: float) -> float:
        """What a perfect reader of this sensor could at best know: each window's sensed energy spread evenly
        over it. It is the truth unless sensing is part-time."""
        return self._sensed(t1) - self._sensed(t0)

    # --- the sensor's model --------------------------------------------------------------------------------

    def _first_update_from(self, t: float) -> int:
        """The first update at or after t: windows after it are sensed part-time."""
        k = self.grid.last_index(t)
        return k if self.grid.instant(k) == t else k + 1

    def _published(self, t: float) -> int:
        """The latest update readable at t."""
        k = self.grid.last_index(t - self.profile.latency_s)
        while self.grid.dropped(k):
            k -= 1
        return k

    def _sensed(self, x: float) -> float:
        """Sensed cumulative energy (J) at x, in the trace's frame."""
        if self.profile.observed == 1.0:
            return self.trace.cumulative(x)
        j = self.grid.last_index(x)
        if j < self._base:
            return self.trace.cumulative(x)
        uj = self.grid.instant(j)
        if x == uj:
            return self._sensed_at_update(j)
        w = self.grid.instant(j + 1) - uj
        return self._sensed_at_update(j) + (x - uj) * float(self._windows(j + 1, j + 1)[0]) / w

    def _sensed_at_update(self, k: int) -> float:
        m = (k - self._base) // _CHUNK
        with self._lock:
            if not self._chunks:
                self._chunks.append(self.trace.cumulative(self.grid.instant(self._base)))
            while len(self._chunks) <= m:
                lo = self._base + (len(self._chunks) - 1) * _CHUNK + 1
                self._chunks.append(self._chunks[-1] + float(self._windows(lo, lo + _CHUNK - 1).sum()))
            start = self._chunks[m]
        lo = self._base + m * _CHUNK + 1
        return start + (float(self._windows(lo, k).sum()) if k >= lo else 0.0)

    def _windows(self, lo: int, hi: int) -> np.ndarray:
        """Sensed energy of windows lo..hi (window k ends at update k): the observed part's energy, scaled up."""
        u = self.grid.instants(np.arange(lo - 1, hi + 1))
        seen_from = u[1:] - self.profile.observed * np.diff(u)
        seen = cumulative_many(self.trace, u[1:]) - cumulative_many(self.trace, seen_from)
        return seen / self.profile.observed
