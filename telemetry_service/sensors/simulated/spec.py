"""Simulated GPUs from a JSON spec (`serve --simulate-trace FILE`), a probe recording, or a count.

    {"profile": "jitter-100ms",                       # the default sensor profile of every GPU
     "gpus": [{"trace": {"steps": [[s, W], ...], "anchor": unix_s},
               "profile": "part-time-100ms",          # this GPU's, overriding the default
               "counter": true, "counter_period_s": 0.1, "power": "instant" | "average",  # profile overrides
               "counter_phase_s": unix_s, "seed": int, "driver_loaded_at": unix_s, "sensing_from": unix_s,
               "resets": [unix_s, ...], "failures": [[from, to], ...], "name": str,
               "processes": [{"pid": int, "sm_share": 0.7, "from": unix_s, "to": unix_s, "memory_bytes": int}]},
              {"replay": {"file": "trace.json.gz", "gpu": 0, "start_at": unix_s}}]}

A file that is itself a recording (`joulemeter-nvml-trace/1`) replays every GPU it holds.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from telemetry_service.sensors.simulated.gpu import GpuProcess, SimulatedGpu
from telemetry_service.sensors.simulated.profiles import DEFAULT_PROFILE, SensorProfile, profile
from telemetry_service.sensors.simulated.replay import FORMAT, GZIP_MAGIC, ReplayGpu, read_recording, replay_gpus
from telemetry_service.sensors.simulated.traces import TRAINING_PATTERN, StepTrace

# Spec keys that override one field of the GPU's profile.
_PROFILE_KEYS = {"counter": ("counter", bool), "counter_period_s": ("period_s", float), "power": ("power_mode", str)}


def _profile_from_spec(spec: dict[str, Any], default: str) -> SensorProfile:
    base = profile(str(spec.get("profile", default)))
    changes = {name: cast(spec[key]) for key, (name, cast) in _PROFILE_KEYS.items() if key in spec}
    return replace(base, **changes) if changes else base


# Spec keys passed on to the GPU as given, where present: (key, field, type).
_GPU_KEYS = (("driver_loaded_at", "driver_loaded_at", float), ("counter_phase_s", "grid_anchor", float),
             ("seed", "seed", int), ("sensing_from", "sensing_from", float))


def _gpu_from_spec(spec: dict[str, Any], index: int, default_profile: str, base: Path) -> SimulatedGpu | ReplayGpu:
    if "replay" in spec:
        return _replay_from_spec(spec["replay"], base)
    trace_spec = spec.get("trace", {})
    steps = tuple((float(d), float(w)) for d, w in trace_spec.get("steps", TRAINING_PATTERN))
    return SimulatedGpu(
        trace=StepTrace(steps=steps, anchor=float(trace_spec.get("anchor", 0.0))),
        profile=_profile_from_spec(spec, default_profile),
        index=index,
        name=str(spec.get("name", "Simulated GPU")),
        resets=tuple(float(t) for t in spec.get("resets", ())),
        failures=tuple((float(a), float(b)) for a, b in spec.get("failures", ())),
        processes=tuple(_process_from_spec(p) for p in spec.get("processes", ())),
        # Without these, they are fixed per boot and GPU index: the counter runs on across daemon restarts.
        **{name: cast(spec[key]) for key, name, cast in _GPU_KEYS if spec.get(key) is not None},
    )


def _process_from_spec(spec: dict[str, Any]) -> GpuProcess:
    return GpuProcess(pid=int(spec["pid"]), sm_share=float(spec["sm_share"]),
                      start=float(spec.get("from", float("-inf"))), end=float(spec.get("to", float("inf"))),
                      memory_bytes=int(spec.get("memory_bytes", 2**30)))


def _replay_from_spec(spec: dict[str, Any], base: Path) -> ReplayGpu:
    recording = read_recording(base / spec["file"])
    g = recording["gpus"][int(spec.get("gpu", 0))]
    return ReplayGpu(reads=g["reads"], start_at=float(spec.get("start_at", time.time())),
                     name=str(g.get("name") or "Simulated GPU"), recorded_uuid=g.get("uuid"),
                     recorded_architecture=g.get("architecture"))


def load_gpus(count: int, trace_file: Path | None,
              profile_name: str | None = None) -> list[SimulatedGpu | ReplayGpu]:
    """GPUs from a spec or recording file, or `count` GPUs playing a training-like pattern, each shifted so
    they do not move in lockstep. `profile_name` is the sensor profile of GPUs whose spec names none."""
    if trace_file is not None:
        raw = Path(trace_file).read_bytes()
        spec = {} if raw[:2] == GZIP_MAGIC else json.loads(raw)
        if not spec or spec.get("format") == FORMAT:
            return list(replay_gpus(Path(trace_file), start_at=time.time()))
        # The command line's profile wins over the file's default; a GPU that names its own keeps it.
        default = profile_name or str(spec.get("profile", DEFAULT_PROFILE))
        base = Path(trace_file).parent
        return [_gpu_from_spec(g, i, default, base) for i, g in enumerate(spec["gpus"])]
    return [_gpu_from_spec({"trace": {"steps": TRAINING_PATTERN, "anchor": 0.013 * i}}, i,
                           profile_name or DEFAULT_PROFILE, Path.cwd()) for i in range(count)]
