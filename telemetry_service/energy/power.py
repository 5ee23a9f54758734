"""Power readings turned into cumulative energy: instant power integrated with jumps at phase boundaries, and
moving-average power unrolled back into energy."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from telemetry_service.energy.common import FloatArray, clean_readings


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
    t, p = clean_readings(t, p)
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
    # Both are sorted: place each boundary after the samples at or before it, no sort needed.
    at = np.searchsorted(t, b, side="right") + np.arange(b.size)
    is_sample = np.ones(t.size + b.size, dtype=bool)
    is_sample[at] = False
    knots, lefts, rights = (np.empty(t.size + b.size) for _ in range(3))
    knots[is_sample], knots[at] = t, b
    lefts[is_sample], lefts[at] = p, left
    rights[is_sample], rights[at] = p, right
    areas = 0.5 * (rights[:-1] + lefts[1:]) * np.diff(knots)
    cum = np.concatenate([[0.0], np.cumsum(areas)])
    return PowerCurve(knots, lefts, rights, cum)


@dataclass(frozen=True)
class AveragedPowerCurve:
    """Cumulative energy recovered from a power reading that is a moving average over a window w.

    Such a reading at t is (E(t) - E(t - w)) / w, so E(t) = E(t - w) + w p(t): unrolled back to the first
    reading, the energy at any instant is a sum of readings one window apart (before the first one, power is
    taken as that reading). The average of piecewise-constant power is piecewise linear, so interpolating the
    readings linearly loses little; the sums are tabulated on a grid that divides the window.
    """

    knots: FloatArray  # the grid
    cum: FloatArray  # energy at each grid instant, from the first reading's window start

    @property
    def empty(self) -> bool:
        return self.knots.size == 0

    def integral_to(self, q: ArrayLike) -> FloatArray:
        q = np.asarray(q, dtype=np.float64)
        if self.knots.size == 0:
            return np.full(q.shape, np.nan)
        return np.interp(q, self.knots, self.cum)


def _line_at(t: FloatArray, p: FloatArray, i0: NDArray[np.int64], i1: NDArray[np.int64], x: FloatArray) -> FloatArray:
    """The line through samples i0 and i1, at x (NaN where they are one sample)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = (p[i1] - p[i0]) / (t[i1] - t[i0])
    return np.where(i1 != i0, p[i0] + slope * (x - t[i0]), np.nan)


def kinked_readings(t: FloatArray, p: FloatArray, window: float, boundaries: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Moving-average readings with the kinks the workload put in them restored.

    Power that steps at a boundary b makes its moving average bend at b and at b + w and run straight between:
    interpolating readings across a bend cuts its corner (by up to a tenth of the step for readings 0.1 s apart).
    Each bend's value is where the straight runs on either side of it, extended, meet it (the mean of the two
    extensions; one where the other side has too few readings); it is added as a reading.
    """
    b = np.asarray(boundaries, dtype=np.float64)
    bends = np.unique(np.concatenate([b, b + window]))
    bends = bends[np.isfinite(bends) & (bends > t[0]) & (bends < t[-1])]
    if bends.size == 0 or t.size < 3:
        return t, p
    # Readings in the same straight run as each bend's left and right side: none of them past a neighbouring bend.
    left_end = np.searchsorted(t, bends, side="left") - 1
    right_start = np.searchsorted(t, bends, side="right")
    prev_bend = np.concatenate([[-np.inf], bends[:-1]])
    next_bend = np.concatenate([bends[1:], [np.inf]])
    left_ok = (left_end >= 1) & (t[np.maximum(left_end - 1, 0)] > prev_bend)
    right_ok = (right_start + 1 < t.size) & (t[np.minimum(right_start + 1, t.size - 1)] < next_bend)
    lo = np.maximum(left_end, 1)
    hi = np.minimum(right_start, t.size - 2)
    from_left = np.where(left_ok, _line_at(t, p, lo - 1, lo, bends), np.nan)
    from_right = np.where(right_ok, _line_at(t, p, hi, hi + 1, bends), np.nan)
    value = np.where(np.isnan(from_left), from_right, np.where(np.isnan(from_right), from_left,
                                                                0.5 * (from_left + from_right)))
    keep = np.isfinite(value)
    tt = np.concatenate([t, bends[keep]])
    pp = np.concatenate([p, value[keep]])
    order = np.argsort(tt, kind="stable")
    return tt[order], pp[order]


def averaged_power_curve(t: ArrayLike, p: ArrayLike, window: float, step: float = 0.01,
                         boundaries: ArrayLike = ()) -> AveragedPowerCurve:
    t, p = clean_readings(t, p)
    if t.size == 0:
        empty = np.empty(0)
        return AveragedPowerCurve(empty, empty)
    t, p = kinked_readings(t, p, window, boundaries)
    m = max(1, math.ceil(window / step))
    rows = math.ceil((t[-1] - t[0]) / window) + 1
    grid = t[0] + np.arange(rows * m) * (window / m)
    increments = (window * np.interp(grid, t, p)).reshape(rows, m)
    # Within the first window E climbs from the window before the first reading at that reading's power.
    first = (grid[:m] - t[0] + window) * p[0]
    cum = (np.cumsum(increments, axis=0) - increments[0] + first).reshape(-1)
    keep = grid <= t[-1]
    return AveragedPowerCurve(grid[keep], cum[keep])
