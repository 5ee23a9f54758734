"""How a simulated GPU's sensors behave, independently of the power it draws.

Real sensors do not update on the perfect 100 ms grid the measurement method assumes. A `SensorProfile` names
one combination of the ways they differ; every field is one behaviour and they combine freely. Pick one by
name in a simulation spec (`"profile": "jitter-100ms"`) or with `serve --simulate-profile NAME`.

| profile             | counter period       | what differs from the ideal sensor                                      |
|---------------------|----------------------|-------------------------------------------------------------------------|
| ideal-100ms         | 100 ms               | nothing (the default): the grid the method assumes                      |
| ideal-10ms          | 10 ms                | a faster counter                                                        |
| ideal-20ms          | 20 ms                |                                                                         |
| ideal-50ms          | 50 ms                |                                                                         |
| ideal-200ms         | 200 ms               | a slower counter                                                        |
| drift-100ms         | 100 ms ± 0.3 %       | the period wanders sinusoidally over 10 minutes                         |
| jitter-100ms        | 100 ms               | each update instant off by up to ±10 % of the period                    |
| drops-100ms         | 100 ms               | 5 % of updates never published: the next one carries two updates       |
| latency-100ms       | 100 ms               | an update becomes readable 30 ms after the instant it covers            |
| part-time-100ms     | 100 ms               | only the last 25 % of each window is sensed (Yang et al., SC'24)        |
| lagging-power       | 100 ms               | instant power reads P(t - 50 ms)                                        |
| refresh-power-20ms  | 100 ms               | instant power refreshes every 20 ms; its timestamp says when            |
| average-power       | 100 ms               | power usage is a 1 s moving average; no instant power field             |
| no-counter          | none (NOT_SUPPORTED) | instant power only                                                      |
| no-counter-average  | none (NOT_SUPPORTED) | a 1 s moving average only                                               |
| rough-100ms         | 100 ms               | jitter 5 %, drops 1 %, latency 10 ms, part-time 25 %, power every 20 ms |

Part-time sensing: the sensor averages power over the observed part of each window and reports that average
times the window's length, both as the counter's increment and as the power over that window, so a burst
outside the observed part is missed. Jitter and drops are pure functions of (seed, update index): the
counter is a pure function of time, the same in every process that plays the same GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

PowerMode = Literal["instant", "average"]

_MASK = (1 << 64) - 1


@dataclass(frozen=True)
class SensorProfile:
    name: str
    counter: bool = True  # False: nvmlDeviceGetTotalEnergyConsumption answers NOT_SUPPORTED
    period_s: float = 0.1  # nominal counter update period
    drift: float = 0.0  # relative amplitude of a sinusoidal wander of the period...
    drift_cycle_s: float = 600.0  # ...over this cycle
    jitter: float = 0.0  # update instants off by up to this fraction of the period, either way
    drop: float = 0.0  # fraction of updates never published
    latency_s: float = 0.0  # an update covering energy up to u is readable from u + latency
    observed: float = 1.0  # fraction of each window the power sensor observes (its end)
    power_mode: PowerMode = "instant"  # "average": power usage is a 1 s moving average, no instant field
    power_lag_s: float = 0.0  # instant power reads P(t - lag)
    power_refresh_s: float | None = None  # instant power refreshes on its own grid of this period

    def __post_init__(self) -> None:
        if not (self.period_s > 0 and 0 <= self.jitter <= 0.1 and 0 <= self.drop < 1 and 0 < self.observed <= 1
                and 0 <= self.drift < 0.1 and self.latency_s >= 0 and self.power_lag_s >= 0):
            raise ValueError(f"sensor profile {self.name!r} is out of range")


def _profiles() -> dict[str, SensorProfile]:
    ideal = SensorProfile("ideal-100ms")
    out = [ideal, *(replace(ideal, name=f"ideal-{ms}ms", period_s=ms / 1000) for ms in (10, 20, 50, 200)),
           replace(ideal, name="drift-100ms", drift=0.003),
           replace(ideal, name="jitter-100ms", jitter=0.1),
           replace(ideal, name="drops-100ms", drop=0.05),
           replace(ideal, name="latency-100ms", latency_s=0.03),
           replace(ideal, name="part-time-100ms", observed=0.25),
           replace(ideal, name="lagging-power", power_lag_s=0.05),
           replace(ideal, name="refresh-power-20ms", power_refresh_s=0.02),
           replace(ideal, name="average-power", power_mode="average"),
           replace(ideal, name="no-counter", counter=False),
           replace(ideal, name="no-counter-average", counter=False, power_mode="average"),
           replace(ideal, name="rough-100ms", jitter=0.05, drop=0.01, latency_s=0.01, observed=0.25,
                   power_refresh_s=0.02)]
    return {p.name: p for p in out}


PROFILES: dict[str, SensorProfile] = _profiles()
DEFAULT_PROFILE = "ideal-100ms"


def profile(name: str) -> SensorProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown sensor profile {name!r}; known: {', '.join(PROFILES)}") from None


# --- deterministic randomness: splitmix64 of (seed, stream, index), in Python ints and in numpy ----------


def _mix(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def uniform(seed: int, stream: int, k: int) -> float:
    """A number in [0, 1) that depends on nothing but its arguments."""
    return (_mix(_mix((seed * 4 + stream) & _MASK) ^ (k & _MASK)) >> 11) / float(1 << 53)


def _mix_np(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def uniform_many(seed: int, stream: int, ks: np.ndarray) -> np.ndarray:
    """`uniform` at many indices, bit for bit."""
    key = np.uint64(_mix((seed * 4 + stream) & _MASK))
    with np.errstate(over="ignore"):
        return (_mix_np(key ^ ks.astype(np.int64).view(np.uint64)) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


@dataclass(frozen=True)
class UpdateGrid:
    """The instants u_k (k any integer) at which a counter updates: a nominal grid from `anchor`, wandering
    by `drift`, each instant jittered, some updates dropped; all pure functions of (seed, k)."""

    anchor: float
    profile: SensorProfile
    seed: int

    def _wander(self, s: np.ndarray | float) -> np.ndarray | float:
        p = self.profile
        return p.drift * p.drift_cycle_s / (2 * math.pi) * (1 - np.cos(2 * math.pi * np.asarray(s) / p.drift_cycle_s))

    def instants(self, ks: np.ndarray) -> np.ndarray:
        p = self.profile
        s = ks.astype(np.float64) * p.period_s
        u = self.anchor + s + (self._wander(s) if p.drift else 0.0)
        if p.jitter:
            u = u + p.jitter * p.period_s * (2 * uniform_many(self.seed, 0, ks) - 1)
        return u

    def instant(self, k: int) -> float:
        p = self.profile
        if not (p.drift or p.jitter):  # the common case, without numpy's per-call cost
            return self.anchor + k * p.period_s
        return float(self.instants(np.array([k]))[0])

    def last_index(self, t: float) -> int:
        """The largest k with u_k <= t."""
        p = self.profile
        k = math.floor((t - self.anchor) / p.period_s)
        if p.drift:  # the wander is smooth: two fixed-point steps land within an update or two
            for _ in range(2):
                k = math.floor((t - self.anchor - float(self._wander(k * p.period_s))) / p.period_s)
        while self.instant(k + 1) <= t:
            k += 1
        while self.instant(k) > t:
            k -= 1
        return k

    def dropped(self, k: int) -> bool:
        return self.profile.drop > 0 and uniform(self.seed, 1, k) < self.profile.drop
