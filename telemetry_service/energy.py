"""Energy math: pure functions over stored samples and phase boundaries.

Two ways to know a device's cumulative energy E(t) at any instant:

* counter: the hardware counter's values, each stamped with the update instant it belongs to, interpolated
  between updates. Inside one update interval the increment is shaped by instant power where we have it, so a
  boundary that falls inside the interval gets the share of energy that was really spent before it.
* integrated: power samples integrated with the trapezoid rule. The workload changes at phase boundaries
  (the client marks them after synchronising the device), so power is not interpolated across a boundary:
  each side holds its nearest sample within its own segment. A segment without samples falls back to the
  plain trapezoid across it.

Energy over [a, b] is E(b) - E(a). Every answer says which method produced it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

Method = Literal["counter", "integrated", "estimated", "attributed"]
# Weakest first wins when a figure combines several devices.
_METHOD_RANK: dict[str, int] = {"counter": 0, "integrated": 1, "attributed": 2, "estimated": 3}

FloatArray = NDArray[np.float64]


def combine_methods(methods: list[str]) -> str | None:
    """The method of a sum: the least direct of its parts."""
    return max(methods, key=lambda m: _METHOD_RANK[m]) if methods else None


# --- counters --------------------------------------------------------------------------------------------


def counter_increment(previous: float, current: float, wrap: float | None) -> float:
    """Energy between two raw counter reads.

    A counter that goes backwards either wrapped (RAPL: `wrap` is max_energy_range) or was reset (NVML on a
    driver reload: it restarts from zero, so the energy since the reset is the new value). Never negative.
    """
    delta = current - previous
    if delta >= 0:
        return delta
    if wrap is not None and wrap > 0:
        return delta + wrap
    return max(current, 0.0)


def unwrap_counter(raw: ArrayLike, wrap: float | None = None, start: float = 0.0) -> FloatArray:
    """Monotonic cumulative energy from raw counter reads, starting at `start`."""
    values = np.asarray(raw, dtype=np.float64)
    out = np.empty_like(values)
    acc = start
    for i, v in enumerate(values):
        if i:
            acc += counter_increment(values[i - 1], v, wrap)
        out[i] = acc
    return out


def counter_points(update_t: ArrayLike, energy: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """The distinct (update instant, cumulative energy) points of a counter read many times per update.

    A value read twice belongs to the first instant it was stamped with; instants must increase.
    """
    u = np.asarray(update_t, dtype=np.float64)
    e = np.asarray(energy, dtype=np.float64)
    ok = np.isfinite(u) & np.isfinite(e)
    u, e = u[ok], e[ok]
    if u.size == 0:
        return u, e
    order = np.argsort(u, kind="stable")
    u, e = u[order], e[order]
    keep = np.ones(u.size, dtype=bool)
    keep[1:] = e[1:] != e[:-1]
    u, e = u[keep], e[keep]
    keep = np.ones(u.size, dtype=bool)
    keep[1:] = np.diff(u) > 0
    return u[keep], e[keep]


# --- power, integrated with jumps at phase boundaries ------------------------------------------------------


@dataclass(frozen=True)
class PowerCurve:
    """Piecewise-linear power with jumps allowed at boundaries; `cum` is its integral at each knot."""

    knots: FloatArray
    left: FloatArray  # power just before each knot
    right: FloatArray  # power just after each knot
    cum: FloatArray

    @property
    def empty(self) -> bool:
        return self.knots.size == 0

    def integral_to(self, q: ArrayLike) -> FloatArray:
        """Integral of power from the first knot to each q; flat (held) power outside the knots."""
        q = np.asarray(q, dtype=np.float64)
        k = self.knots
        if k.size == 0:
            return np.full(q.shape, np.nan)
        if k.size == 1:
            return (q - k[0]) * self.right[0]
        i = np.clip(np.searchsorted(k, q, side="right") - 1, 0, k.size - 2)
        t0, t1 = k[i], k[i + 1]
        width = t1 - t0
        with np.errstate(invalid="ignore", divide="ignore"):
            slope = np.where(width > 0, (self.left[i + 1] - self.right[i]) / np.where(width > 0, width, 1.0), 0.0)
        dt = q - t0
        inside = self.cum[i] + dt * self.right[i] + 0.5 * slope * dt * dt
        before = self.cum[0] + (q - k[0]) * self.right[0]
        after = self.cum[-1] + (q - k[-1]) * self.left[-1]
        return np.where(q < k[0], before, np.where(q > k[-1], after, inside))


def power_curve(t: ArrayLike, p: ArrayLike, boundaries: ArrayLike = ()) -> PowerCurve:
    """Power through the samples (t, p), broken at the boundaries.

    At a boundary, each side holds the nearest sample of its own segment (the stretch between neighbouring
    boundaries); a side whose segment has no sample takes the linear interpolation instead.
    """
    t = np.asarray(t, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    ok = np.isfinite(t) & np.isfinite(p)
    t, p = t[ok], p[ok]
    order = np.argsort(t, kind="stable")
    t, p = t[order], p[order]
    if t.size == 0:
        empty = np.empty(0)
        return PowerCurve(empty, empty, empty, empty)
    b = np.unique(np.asarray(boundaries, dtype=np.float64))
    b = b[np.isfinite(b) & (b > t[0]) & (b < t[-1])]
    seg = np.searchsorted(b, t, side="right")  # samples at a boundary open the next segment
    interp = np.interp(b, t, p)
    j = np.arange(b.size)
    before = np.searchsorted(t, b, side="left") - 1
    after = np.searchsorted(t, b, side="left")
    left = np.where(seg[before] == j, p[before], interp)
    right = np.where(seg[np.minimum(after, t.size - 1)] == j + 1, p[np.minimum(after, t.size - 1)], interp)
    knots = np.concatenate([t, b])
    lefts = np.concatenate([p, left])
    rights = np.concatenate([p, right])
    order = np.argsort(knots, kind="stable")
    knots, lefts, rights = knots[order], lefts[order], rights[order]
    areas = 0.5 * (rights[:-1] + lefts[1:]) * np.diff(knots)
    cum = np.concatenate([[0.0], np.cumsum(areas)])
    return PowerCurve(knots, lefts, rights, cum)


def integrate_power(t: ArrayLike, p: ArrayLike, boundaries: ArrayLike, queries: ArrayLike) -> FloatArray:
    """Cumulative energy (J, from the first sample) at each query instant, from power samples alone."""
    return power_curve(t, p, boundaries).integral_to(queries)


def counter_energy_at(update_t: FloatArray, energy: FloatArray, queries: ArrayLike,
                      shape: PowerCurve | None = None) -> FloatArray:
    """Cumulative counter energy at each query instant.

    Between two updates u_k < q < u_{k+1} the increment is split in proportion to the energy the power curve
    puts on each side of q (linear in time without one, or where that curve says nothing was spent).
    Queries beyond the first or last update extend with the power curve if there is one, else are NaN.
    """
    q = np.asarray(queries, dtype=np.float64)
    if update_t.size == 0:
        return np.full(q.shape, np.nan)
    if update_t.size == 1:
        return np.where(q == update_t[0], energy[0], np.nan)
    k = np.clip(np.searchsorted(update_t, q, side="right") - 1, 0, update_t.size - 2)
    u0, u1 = update_t[k], update_t[k + 1]
    e0, e1 = energy[k], energy[k + 1]
    linear = (q - u0) / (u1 - u0)
    frac = linear
    if shape is not None and not shape.empty:
        s_q, s0, s1 = shape.integral_to(q), shape.integral_to(u0), shape.integral_to(u1)
        span = s1 - s0
        with np.errstate(invalid="ignore", divide="ignore"):
            shaped = (s_q - s0) / span
        frac = np.where((span > 0) & np.isfinite(shaped), shaped, linear)
    inside = e0 + np.clip(frac, 0.0, 1.0) * (e1 - e0)
    if shape is not None and not shape.empty:
        before = energy[0] - (shape.integral_to(update_t[0]) - shape.integral_to(q))
        after = energy[-1] + (shape.integral_to(q) - shape.integral_to(update_t[-1]))
    else:
        before = np.full(q.shape, np.nan)
        after = np.full(q.shape, np.nan)
    return np.where(q < update_t[0], before, np.where(q > update_t[-1], after, inside))


# --- one device over many intervals ------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceSeries:
    """One device's stored samples: its power readings and its counter points (each may be empty)."""

    power_t: FloatArray
    power_w: FloatArray
    counter_t: FloatArray  # the update instant each counter value belongs to
    counter_j: FloatArray  # unwrapped cumulative energy

    @staticmethod
    def of(power: ArrayLike = (), counter: ArrayLike = ()) -> DeviceSeries:
        """From (t, W) and (update instant, J) pairs."""
        p = np.asarray(power, dtype=np.float64).reshape(-1, 2)
        c = np.asarray(counter, dtype=np.float64).reshape(-1, 2)
        return DeviceSeries(p[:, 0], p[:, 1], c[:, 0], c[:, 1])


@dataclass(frozen=True)
class DeviceEnergy:
    """Cumulative energy at each requested instant, how it was found, and the span the data speaks for."""

    at: FloatArray
    method: Method | None
    covered: tuple[float, float] | None


def device_energy_at(series: DeviceSeries, queries: ArrayLike, boundaries: ArrayLike,
                     estimated: bool = False) -> DeviceEnergy:
    """Cumulative energy of one device at each query instant (differences give interval energies)."""
    q = np.asarray(queries, dtype=np.float64)
    shape = power_curve(series.power_t, series.power_w, boundaries) if series.power_t.size else None
    u, e = counter_points(series.counter_t, series.counter_j)
    if u.size >= 2:
        return DeviceEnergy(counter_energy_at(u, e, q, shape), "counter", (float(u[0]), float(u[-1])))
    if shape is not None and not shape.empty:
        covered = (float(shape.knots[0]), float(shape.knots[-1]))
        return DeviceEnergy(shape.integral_to(q), "estimated" if estimated else "integrated", covered)
    return DeviceEnergy(np.full(q.shape, np.nan), None, None)


# --- flags ---------------------------------------------------------------------------------------------------


def find_gaps(t: ArrayLike, max_gap: float) -> list[tuple[float, float]]:
    """Stretches longer than `max_gap` without a sample (the daemon was down, or a sensor failed)."""
    t = np.sort(np.asarray(t, dtype=np.float64))
    if t.size < 2:
        return []
    d = np.diff(t)
    idx = np.nonzero(d > max_gap)[0]
    return [(float(t[i]), float(t[i + 1])) for i in idx]


def overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether two closed time intervals share more than an instant."""
    return min(a[1], b[1]) > max(a[0], b[0])


def is_short(duration_s: float, update_period_s: float | None) -> bool:
    """A phase shorter than the sensor's update period cannot be measured directly, only statistically."""
    return update_period_s is not None and duration_s < update_period_s


def safe_ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 and math.isfinite(num) else None
