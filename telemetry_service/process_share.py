"""A run's share of a node's CPU energy, Kepler-style: the CPU seconds its processes used over the node's busy CPU
seconds, applied to the CPU devices' *active* energy (energy above their idle draw).

Both CPU-second series are cumulative, sampled about once a second; each is interpolated linearly at the
boundaries. The share over several intervals is a ratio of sums (the run's seconds over the node's), not a mean
of ratios: active CPU power follows busy CPU time (exactly so for the utilisation estimate, roughly for RAPL),
so the ratio of sums times the active energy equals the sum, interval by interval, of share times active energy.

Idle policy "excluded": the idle draw is the node's cost of being switched on, paid whether or not this run
exists; billing it by cores held would make a run that only sleeps pay for a quiet machine, and the idle
draw is left in the node figure for whoever owns the node. Pure functions: loading is in run_share.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]
IDLE_POLICY = "excluded"
# Idle power seen in the data (RAPL has no idle figure of its own): a low percentile of 1 s mean power, so one
# quiet second of noise does not set it.
IDLE_PERCENTILE = 5.0
IDLE_STEP_S = 1.0


@dataclass(frozen=True)
class Cumulative:
    """A cumulative series (CPU seconds): sample instants, in order, and the value at each."""

    t: FloatArray
    v: FloatArray

    @staticmethod
    def of(t: ArrayLike, v: ArrayLike) -> Cumulative:
        t_a = np.asarray(t, dtype=np.float64)
        v_a = np.asarray(v, dtype=np.float64)
        order = np.argsort(t_a, kind="stable")
        return Cumulative(t_a[order], v_a[order])

    @property
    def empty(self) -> bool:
        return self.t.size == 0


@dataclass(frozen=True)
class Increment:
    """Growth of a cumulative series over a set of intervals: interpolated, and the least and most the samples
    allow (each boundary may lie anywhere between the samples around it)."""

    value: float
    low: float
    high: float


def _before(c: Cumulative, x: FloatArray) -> FloatArray:
    """Value at the last sample at or before each x (the first sample where there is none)."""
    return c.v[np.clip(np.searchsorted(c.t, x, "right") - 1, 0, c.t.size - 1)]


def _after(c: Cumulative, x: FloatArray) -> FloatArray:
    """Value at the first sample at or after each x (the last sample where there is none)."""
    return c.v[np.clip(np.searchsorted(c.t, x, "left"), 0, c.t.size - 1)]


def increment(c: Cumulative, starts: ArrayLike, ends: ArrayLike) -> Increment:
    """Summed over the intervals [starts[i], ends[i]]; nothing is known (so nothing counted) outside the samples."""
    s = np.asarray(starts, dtype=np.float64)
    e = np.asarray(ends, dtype=np.float64)
    if c.empty or s.size == 0:
        return Increment(0.0, 0.0, 0.0)
    value = np.interp(e, c.t, c.v) - np.interp(s, c.t, c.v)
    low = np.maximum(_before(c, e) - _after(c, s), 0.0)
    high = _after(c, e) - _before(c, s)
    return Increment(float(value.sum()), float(low.sum()), float(high.sum()))


def total_increment(series: list[Cumulative], starts: ArrayLike, ends: ArrayLike) -> Increment:
    """Several processes' series (each interpolated on its own instants), summed."""
    parts = [increment(c, starts, ends) for c in series]
    return Increment(sum(p.value for p in parts), sum(p.low for p in parts), sum(p.high for p in parts))


@dataclass(frozen=True)
class Share:
    """Fraction of the node's busy CPU time that was the run's, in [0, 1], with the range sampling allows."""

    value: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return 0.5 * (self.high - self.low)


def _ratio(num: float, den: float) -> float:
    if den <= 0.0:
        return 0.0 if num <= 0.0 else 1.0
    return float(min(1.0, max(0.0, num / den)))


def cpu_share(run: Increment, node: Increment) -> Share | None:
    """The run's share of busy CPU time; None when the node has no busy time on record there."""
    if node.high <= 0.0 and node.value <= 0.0:
        return None
    value = _ratio(run.value, node.value)
    low = min(value, _ratio(run.low, node.high))
    high = max(value, _ratio(run.high, node.low))
    return Share(value, low, high)


def active_energy(energy_j: float, idle_w: float, duration_s: float) -> float:
    """Energy above the idle draw over `duration_s`; never negative (idle is itself an estimate)."""
    return max(0.0, energy_j - idle_w * duration_s)


def observed_idle_w(t: ArrayLike, cumulative_j: ArrayLike) -> float | None:
    """A device's idle power as seen in its own cumulative energy: a low percentile of its 1 s mean power."""
    t_a = np.asarray(t, dtype=np.float64)
    e_a = np.asarray(cumulative_j, dtype=np.float64)
    if t_a.size < 2 or t_a[-1] - t_a[0] < 2 * IDLE_STEP_S:
        return None
    grid = np.arange(t_a[0], t_a[-1], IDLE_STEP_S)
    power = np.diff(np.interp(grid, t_a, e_a)) / IDLE_STEP_S
    return float(max(0.0, np.percentile(power, IDLE_PERCENTILE)))


def trapezoid_cumulative(t: ArrayLike, power_w: ArrayLike) -> FloatArray:
    """Cumulative energy of a power series (for devices without a counter)."""
    t_a = np.asarray(t, dtype=np.float64)
    p_a = np.asarray(power_w, dtype=np.float64)
    if t_a.size == 0:
        return np.empty(0)
    return np.concatenate([[0.0], np.cumsum(0.5 * (p_a[1:] + p_a[:-1]) * np.diff(t_a))])
