"""Simulated GPUs for machines without one (`serve --simulate-gpus N`, every figure labelled `simulated`), and
for tests and benchmarks that need to know the exact answer.

- `traces`: the power a GPU draws (`StepTrace`, `LiveTrace`), with exact integrals;
- `profiles`: how its sensors behave (`SensorProfile`, `PROFILES`): update period, drift, jitter, drops,
  latency, part-time sensing, lagging or slowly refreshed instant power, averaged power, no counter;
- `gpu`: `SimulatedGpu`, a trace read through a profile, with the ground truth beside it;
- `replay`: `ReplayGpu`, a GPU recorded by the probe, played back;
- `binding`: `SimulatedNvml`, the pynvml-compatible binding the NVML sensor reads them through;
- `spec`: `load_gpus`, GPUs from a JSON spec, a recording or a count.

Nothing outside this package reads a profile or the truth, except tests and benchmarks.
"""

from telemetry_service.sensors.simulated.binding import SimulatedNvml
from telemetry_service.sensors.simulated.gpu import GpuProcess, SimulatedGpu
from telemetry_service.sensors.simulated.profiles import DEFAULT_PROFILE, PROFILES, SensorProfile
from telemetry_service.sensors.simulated.replay import ReplayGpu
from telemetry_service.sensors.simulated.spec import load_gpus
from telemetry_service.sensors.simulated.traces import TRAINING_PATTERN, LiveTrace, StepTrace

__all__ = ["DEFAULT_PROFILE", "PROFILES", "TRAINING_PATTERN", "GpuProcess", "LiveTrace", "ReplayGpu", "SensorProfile",
           "SimulatedGpu", "SimulatedNvml", "StepTrace", "load_gpus"]
