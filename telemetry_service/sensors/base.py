"""What every sensor returns: device descriptions and timestamped readings with provenance."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

Kind = Literal["gpu", "cpu", "dram", "host"]
Source = Literal["nvml", "rapl", "psutil", "estimate", "simulated"]
# How a counter value's update instant was found: located as an edge, from the learned grid, or from read times.
CounterTiming = Literal["edge", "grid", "read"]


@dataclass(frozen=True)
class DeviceInfo:
    key: str  # unique on the node: gpu0, cpu0, dram0, host
    kind: Kind
    source: Source
    energy_counter: bool
    name: str
    index: int | None = None
    uuid: str | None = None
    # How often the hardware counter (or, without one, the power reading) changes: shorter phases are flagged.
    update_period_s: float | None = None
    # The power reading is a moving average over this window (nvmlDeviceGetPowerUsage on Ampere and newer), not
    # an instant value: it lags the workload by half the window and cannot place a change at a boundary.
    power_window_s: float | None = None
    # RAPL counters wrap at max_energy_range_uj; NVML's never wraps but resets on driver reload (None).
    counter_wrap_j: float | None = None
    # What the device draws doing nothing, where known (the CPU estimate's floor); RAPL's is found from its data.
    idle_power_w: float | None = None


@dataclass
class Reading:
    key: str
    t: float  # unix seconds at the read
    power_w: float | None = None
    counter_j: float | None = None  # raw cumulative counter as the hardware reports it, in joules
    counter_t: float | None = None  # the instant that counter value refers to (its update instant)
    counter_timing: CounterTiming | None = None
    counter_err_s: float | None = None  # standard uncertainty of counter_t
    util_pct: float | None = None
    mem_util_pct: float | None = None
    mem_used_bytes: int | None = None
    mem_total_bytes: int | None = None
    temp_c: float | None = None
    sm_clock_mhz: float | None = None
    power_limit_w: float | None = None
    cpu_busy_s: float | None = None  # host only: cumulative busy CPU seconds over all cores
    processes: dict[int, int] = field(default_factory=dict)  # pid -> GPU memory bytes
    # pid -> cumulative SM-seconds (SM % / 100 x seconds) on this GPU since the daemon began reading it: a
    # cumulative survives thinning and missed reads, as CPU seconds do. None where the GPU cannot tell.
    process_sm_s: dict[int, float] | None = None


class PartialReadError(RuntimeError):
    """Some devices of a sensor could not be read; `readings` holds those that could."""

    def __init__(self, readings: list[Reading], message: str) -> None:
        super().__init__(message)
        self.readings = readings


class Sensor(Protocol):
    """A family of devices read together. A sensor may set `every_s` to be read less often than every tick."""

    name: str

    def devices(self) -> list[DeviceInfo]: ...

    def read(self) -> list[Reading]: ...

    def close(self) -> None: ...
