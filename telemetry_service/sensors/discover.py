"""Which sensors this node gets: NVML if a driver answers, RAPL if readable (else the labelled estimate), the host,
and simulated GPUs only when asked for."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from telemetry_service.sensors.base import Sensor
from telemetry_service.sensors.cpu_estimate import CpuEstimateSensor
from telemetry_service.sensors.host import HostSensor
from telemetry_service.sensors.nvml import NvmlSensor
from telemetry_service.sensors.rapl import RaplSensor
from telemetry_service.sensors.simulated import SimulatedNvml, load_gpus


@dataclass
class SensorSet:
    sensors: list[Sensor]
    gpu_sensor: NvmlSensor | None  # the one whose GPUs CUDA indices refer to
    status: dict[str, str] = field(default_factory=dict)

    def close(self) -> None:
        for sensor in self.sensors:
            sensor.close()


def discover(cpu_tdp_w: float, rapl_root: Path, simulate_gpus: int = 0, simulate_trace: Path | None = None,
             simulate_profile: str | None = None, cpu_idle_fraction: float = 0.3) -> SensorSet:
    sensors: list[Sensor] = []
    status: dict[str, str] = {}
    nvml = NvmlSensor()
    gpu_sensor: NvmlSensor | None = None
    if nvml.available:
        sensors.append(nvml)
        gpu_sensor = nvml if nvml.gpus else None
        status["nvml"] = f"ok: {len(nvml.gpus)} GPU(s), driver {nvml.driver_version}" + \
            "".join(f"; unreadable {u}" for u in nvml.unreadable)
    else:
        status["nvml"] = f"no NVIDIA GPUs: {nvml.error}"
    if simulate_gpus or simulate_trace is not None:
        sim = NvmlSensor(SimulatedNvml(load_gpus(simulate_gpus, simulate_trace, simulate_profile)), source="simulated", key_prefix="simgpu")
        sensors.append(sim)
        gpu_sensor = gpu_sensor or sim
        status["simulated"] = f"{len(sim.gpus)} simulated GPU(s): their figures are not measurements" + \
            "".join(f"; unreadable {u}" for u in sim.unreadable)
    rapl = RaplSensor(rapl_root)
    if rapl.available:
        sensors.append(rapl)
        status["cpu"] = "rapl: " + ", ".join(d.key for d in rapl.devices())
    else:
        estimate = CpuEstimateSensor(cpu_tdp_w, cpu_idle_fraction * cpu_tdp_w)
        sensors.append(estimate)
        status["cpu"] = f"estimate: RAPL unreadable under {rapl_root}; CPU power = {estimate.formula}"
    sensors.append(HostSensor())
    return SensorSet(sensors=sensors, gpu_sensor=gpu_sensor, status=status)
