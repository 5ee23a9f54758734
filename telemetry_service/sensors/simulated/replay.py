"""Replays a GPU recorded by the probe (`trace.json.gz`, format `joulemeter-nvml-trace/1`).

The recording's first read maps to the replay's start. The counter steps at the instants it was seen to change
(the middle of the edge between the last read that saw the old value and the first that saw the new one),
holding its recorded values, and goes on by whole-recording increments each time the replay loops. Power
fields are served as recorded: the instant field with its recorded timestamp, moved to the replay's time.
"""

from __future__ import annotations

import gzip
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pynvml

FORMAT = "joulemeter-nvml-trace/1"
GZIP_MAGIC = b"\x1f\x8b"


def read_recording(path: Path) -> dict[str, Any]:
    raw = Path(path).read_bytes()
    spec = json.loads(gzip.decompress(raw) if raw[:2] == GZIP_MAGIC else raw)
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} recording")
    return spec


def _filled(values: list[float | None] | None) -> np.ndarray | None:
    """A recorded column with failed reads (null) holding the previous value; None where never read."""
    if values is None or all(v is None for v in values):
        return None
    first = next(v for v in values if v is not None)
    out, last = [], first
    for v in values:
        last = last if v is None else v
        out.append(float(last))
    return np.asarray(out)


@dataclass
class ReplayGpu:
    reads: dict[str, Any]
    start_at: float  # the replay instant of the recording's first read
    name: str = "Simulated GPU"
    recorded_uuid: str | None = None
    recorded_architecture: int | None = None
    failures: tuple[tuple[float, float], ...] = ()
    memory_total: int = 80 * 2**30
    power_limit_w: float = 700.0
    processes: tuple[Any, ...] = ()  # recordings hold no processes

    def __post_init__(self) -> None:
        self._t0 = np.asarray(self.reads["t0"], dtype=np.float64)
        t1 = np.asarray(self.reads["t1"], dtype=np.float64)
        self._mid = 0.5 * (self._t0 + t1)
        self._length = float(t1[-1] - self._t0[0])  # one pass of the recording
        self._counter = _filled(self.reads.get("counter_mj"))
        self._instant = _filled(self.reads.get("power_instant_mw"))
        self._instant_ts = _filled(self.reads.get("power_instant_ts_us"))
        self._usage = _filled(self.reads.get("power_usage_mw"))
        if self._counter is not None:
            self._steps_t, self._steps_v = self._counter_steps(t1)

    def _counter_steps(self, t1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert self._counter is not None
        changed = np.flatnonzero(np.diff(self._counter)) + 1
        at = 0.5 * (self._t0[changed - 1] + t1[changed])
        return np.concatenate([[self._t0[0]], at]), np.concatenate([[self._counter[0]], self._counter[changed]])

    def _recorded(self, t: float) -> tuple[float, int]:
        """The recording's instant that replays at t, and how many whole passes came before."""
        tau = t - self.start_at
        cycle = math.floor(tau / self._length)
        return float(self._t0[0] + tau - cycle * self._length), cycle

    def _last_read(self, rt: float) -> int:
        return max(0, int(np.searchsorted(self._mid, rt, side="right")) - 1)

    def check(self, t: float) -> None:
        if any(a <= t < b for a, b in self.failures):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)

    def architecture(self) -> int:
        if self.recorded_architecture is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return self.recorded_architecture

    def counter_mj(self, t: float) -> int:
        if self._counter is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        rt, cycle = self._recorded(t)
        i = max(0, int(np.searchsorted(self._steps_t, rt, side="right")) - 1)
        return max(0, int(self._steps_v[i] + cycle * (self._steps_v[-1] - self._steps_v[0])))

    def instant_power(self, t: float) -> tuple[float, float] | None:
        if self._instant is None:
            return None
        rt, cycle = self._recorded(t)
        i = self._last_read(rt)
        shift = self.start_at - float(self._t0[0]) + cycle * self._length
        produced = rt if self._instant_ts is None else self._instant_ts[i] / 1e6
        return float(self._instant[i]) / 1000.0, produced + shift

    def power_usage_mw(self, t: float) -> int:
        if self._usage is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return int(self._usage[self._last_read(self._recorded(t)[0])])

    def load_w(self, t: float) -> float:
        instant = self.instant_power(t)
        if instant is not None:
            return instant[0]
        return 0.0 if self._usage is None else self.power_usage_mw(t) / 1000.0

    def true_energy(self, t0: float, t1: float) -> float:
        """The best the recording tells: its counter, interpolated linearly between the instants it changed."""
        return self._cumulative(t1) - self._cumulative(t0)

    def _cumulative(self, t: float) -> float:
        if self._counter is None:
            raise ValueError("the recording has no energy counter")
        rt, cycle = self._recorded(t)
        pass_mj = self._steps_v[-1] - self._steps_v[0]
        return float(np.interp(rt, self._steps_t, self._steps_v) + cycle * pass_mj) / 1000.0


def replay_gpus(path: Path, start_at: float) -> list[ReplayGpu]:
    spec = read_recording(path)
    return [ReplayGpu(reads=g["reads"], start_at=start_at, name=str(g.get("name") or "Simulated GPU"),
                      recorded_uuid=g.get("uuid"), recorded_architecture=g.get("architecture"))
            for g in spec["gpus"]]
