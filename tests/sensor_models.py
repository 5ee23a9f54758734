"""Plays simulated GPUs, each through one sensor profile, into the daemon's NVML sensor as the sampler reads it
(its counter clocks running in real time), and measures phases of known energy with the energy math.

The method never sees the profile: only these helpers do, to know the truth.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from telemetry_service.energy import DeviceSeries, phase_energies
from telemetry_service.sensors.nvml import NvmlSensor
from telemetry_service.sensors.simulated import PROFILES, SimulatedGpu, SimulatedNvml, StepTrace
from telemetry_service.store.blocks import TIMING_CODES

# Phases of 1 s alternating between two power levels, as a workload that changes at each boundary.
LEVELS_W = (120.0, 420.0)
PHASE_S = 1.0


@dataclass(frozen=True)
class PhaseResult:
    profile: str
    measured_j: float
    true_j: float
    sensor_j: float  # what a perfect reader of this sensor could know (differs under part-time sensing)
    uncertainty_j: float
    timing_quality: float | None

    @property
    def error(self) -> float:
        return self.measured_j / self.true_j - 1.0

    @property
    def sensor_error(self) -> float:
        return self.measured_j / self.sensor_j - 1.0


def _gpus(profiles: list[str], anchor: float) -> list[SimulatedGpu]:
    steps = tuple((PHASE_S, w) for w in LEVELS_W)
    return [SimulatedGpu(trace=StepTrace(steps=steps, anchor=anchor), profile=PROFILES[name], index=i,
                         name=f"Simulated GPU ({name})") for i, name in enumerate(profiles)]


def _series(rows: list[tuple[float, float | None, float | None, float | None, float | None, str | None]]) -> DeviceSeries:
    t, p, ct, cj, err, timing = zip(*rows)
    power = np.array([np.nan if x is None else x for x in p])
    has_c = np.array([x is not None for x in cj])
    code = np.array([TIMING_CODES.get(x, np.nan) if x else np.nan for x in timing])
    return DeviceSeries(np.array(t)[np.isfinite(power)], power[np.isfinite(power)],
                        np.array(ct, dtype=float)[has_c], np.array(cj, dtype=float)[has_c],
                        np.array([np.nan if x is None else x for x in err], dtype=float)[has_c], code[has_c])


def run_models(profiles: list[str], phases: int = 4, interval: float = 0.1) -> list[PhaseResult]:
    """Samples every profile's GPU at `interval` over `phases` 1 s phases (after the clocks had a second and a
    half to learn their counters), then measures each phase."""
    start = time.time() + 2.0
    anchor = np.floor(start) + 1.0
    gpus = _gpus(profiles, anchor)
    sensor = NvmlSensor(binding=SimulatedNvml(gpus), source="simulated")
    rows: dict[str, list] = {g.info.key: [] for g in sensor.gpus}
    end = anchor + phases * PHASE_S + 0.5
    try:
        next_at = time.time()
        while time.time() < end:
            for r in sensor.read():
                rows[r.key].append((r.t, r.power_w, r.counter_t, r.counter_j, r.counter_err_s, r.counter_timing))
            next_at += interval
            time.sleep(max(0.0, next_at - time.time()))
    finally:
        sensor.close()
    starts = anchor + np.arange(phases) * PHASE_S
    ends = starts + PHASE_S
    out = []
    for gpu, dev, name in zip(gpus, sensor.gpus, profiles):
        series = _series(rows[dev.info.key])
        pe = phase_energies(series, phases, np.arange(phases), [f"p{i}" for i in range(phases)], starts, ends,
                            float(starts[0]), float(ends[-1]), None, power_window_s=dev.info.power_window_s)
        quality = pe.located / np.maximum(pe.timed, 1)
        for j in range(phases):
            out.append(PhaseResult(name, float(pe.energy_j[j]), gpu.true_energy(starts[j], ends[j]),
                                   gpu.sensor_energy(starts[j], ends[j]), float(pe.stderr_j[j]),
                                   float(quality[j]) if pe.timed[j] else None))
    return out
