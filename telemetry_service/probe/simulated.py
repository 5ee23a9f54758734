"""The one place the probe reaches into the simulator, so its import can be repointed in one line."""

from __future__ import annotations

from telemetry_service.sensors.simulated import PROFILES, SimulatedGpu, SimulatedNvml, StepTrace, load_gpus

__all__ = ["PROFILES", "SimulatedGpu", "SimulatedNvml", "StepTrace", "load_gpus", "simulated_binding"]


def simulated_binding(count: int) -> SimulatedNvml:
    """`count` simulated GPUs playing the simulator's default pattern, each named as simulated."""
    gpus = load_gpus(count, None)
    for gpu in gpus:
        if "simulated" not in gpu.name.lower():
            gpu.name = f"Simulated {gpu.name}"
    return SimulatedNvml(gpus)
