"""Puts the simulated NVML binding behind the `pynvml` module, so that our daemon, Zeus and CodeCarbon read
the same fake GPUs, in this process and in the processes a peer spawns.

`install` replaces the functions of the `pynvml` module by the instance's bound methods, so any library that
calls `pynvml.nvmlX(...)` reads the fake GPUs. `publish` writes the GPUs and their `LiveTrace` where a spawned
process (Zeus's power poller) finds them; `install_from_env` installs the same binding there.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pynvml

from telemetry_service.sensors.simulated import LiveTrace, SensorProfile, SimulatedGpu, SimulatedNvml

# Environment variable naming a JSON spec of the fake GPUs: processes that a peer spawns (Zeus's power
# poller) read it on import and install the same binding, playing the same traces.
SPEC_ENV = "JOULEMETER_BENCH_SIM_SPEC"


def install(nvml: SimulatedNvml) -> dict[str, Any]:
    """Points every `pynvml.nvml*` function the instance implements at it; returns the originals."""
    originals: dict[str, Any] = {}
    for name in dir(nvml):
        if name.startswith("nvml") and callable(getattr(nvml, name)):
            originals[name] = getattr(pynvml, name, None)
            setattr(pynvml, name, getattr(nvml, name))
    return originals


def publish(trace: LiveTrace, gpus: list[SimulatedGpu], path: Path) -> None:
    """Writes the GPUs and their trace where spawned processes will find them (see `install_from_env`)."""
    path.write_text(json.dumps({
        "trace": {"elements": trace.elements, "before_w": trace.before_w, "shm": trace.shm.name},
        # Seed and grid anchor travel too: the spawned process sees the same updates, jitter and drops.
        "gpus": [{"name": g.name, "index": g.index, "profile": dataclasses.asdict(g.profile),
                  "grid_anchor": g.grid_anchor, "seed": g.seed, "driver_loaded_at": g.driver_loaded_at,
                  "sensing_from": g.sensing_from} for g in gpus],
    }))
    os.environ[SPEC_ENV] = str(path)


def install_from_env() -> SimulatedNvml | None:
    """In a process spawned by a peer: installs the binding the parent published, if any."""
    path = os.environ.get(SPEC_ENV)
    if not path or not Path(path).exists():
        return None
    spec = json.loads(Path(path).read_text())
    t = spec["trace"]
    trace = LiveTrace([[tuple(p) for p in e] for e in t["elements"]], t["before_w"], shm_name=t["shm"])
    gpus = [SimulatedGpu(trace=trace, **{**g, "profile": SensorProfile(**g["profile"])}) for g in spec["gpus"]]
    nvml = SimulatedNvml(gpus)
    install(nvml)
    return nvml
