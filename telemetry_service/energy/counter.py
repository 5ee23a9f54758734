"""The hardware energy counter: increments across wraps and resets, distinct update points, and the
cumulative energy at any instant between two updates."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from telemetry_service.energy.common import FloatArray
from telemetry_service.energy.power import AveragedPowerCurve, PowerCurve
from telemetry_service.energy.uncertainty import Doubt


# Without a known power limit, no device is believed to draw more than this.
DEFAULT_MAX_POWER_W = 2000.0
# The longest a counter's update may lag the reads: no counter updates less often than once a second.
STEP_SLACK_S = 1.0


@dataclass(frozen=True)
class Increment:
    joules: float
    note: str | None = None  # why a step was not taken at face value


def counter_increment(previous: float, current: float, wrap: float | None, elapsed_s: float | None = None,
                      max_power_w: float | None = None) -> Increment:
    """Energy between two raw counter reads `elapsed_s` apart.

    A counter that goes backwards either wrapped (RAPL: `wrap` is max_energy_range) or was reset (NVML on a
    driver reload: it restarts from zero, so the energy since the reset is the new value). A reset is believed
    only where the new value fits in the elapsed time at the device's power limit; any step the device could
    not have drawn (a counter from another boot, a value from another device) adds nothing and says so.
    """
    delta = current - previous
    how = "step"
    if delta < 0:
        delta, how = (delta + wrap, "wrap") if wrap is not None and wrap > 0 else (current, "reset")
    if elapsed_s is None:
        return Increment(max(delta, 0.0), "counter reset" if how == "reset" else None)
    # A step covers the time since the update before the previous read, not just between the two reads: reads
    # bunched by a late sampler, or an update that carries a dropped one, see up to a second more.
    ceiling = 1.5 * (max_power_w or DEFAULT_MAX_POWER_W) * (max(elapsed_s, 0.0) + STEP_SLACK_S)
    if delta > ceiling:
        what = {"step": "jumped ahead", "wrap": "wrapped", "reset": "went backwards"}[how]
        return Increment(0.0, f"counter {what} by {abs(current - previous):.1f} J in {elapsed_s:.3f} s, more than the "
                              f"device can draw; no energy added across it")
    return Increment(max(delta, 0.0), "counter reset" if how == "reset" else None)


@dataclass(frozen=True)
class CounterPoints:
    """The distinct update points of a counter: instant, cumulative energy, the instant's standard uncertainty
    (NaN where unknown) and how it was found (0 edge, 1 grid, 2 read; NaN where unknown)."""

    u: FloatArray
    e: FloatArray
    err: FloatArray
    timing: FloatArray

    @property
    def size(self) -> int:
        return int(self.u.size)

    def resolution(self) -> float | None:
        """The typical spacing of the points: what the stored counter resolves, whatever its own period."""
        return float(np.median(np.diff(self.u))) if self.u.size >= 3 else None


def distinct_points(update_t: ArrayLike, energy: ArrayLike, err: ArrayLike | None = None,
                    timing: ArrayLike | None = None) -> CounterPoints:
    """The distinct points of a counter read many times per update.

    A value read twice belongs to the first instant it was stamped with; instants must increase.
    """
    u = np.asarray(update_t, dtype=np.float64)
    e = np.asarray(energy, dtype=np.float64)
    er = np.full(u.shape, np.nan) if err is None or np.size(err) != u.size else np.asarray(err, dtype=np.float64)
    tm = np.full(u.shape, np.nan) if timing is None or np.size(timing) != u.size else np.asarray(timing, np.float64)
    ok = np.isfinite(u) & np.isfinite(e)
    u, e, er, tm = u[ok], e[ok], er[ok], tm[ok]
    if u.size > 1 and not bool(np.all(u[1:] >= u[:-1])):
        order = np.argsort(u, kind="stable")
        u, e, er, tm = u[order], e[order], er[order], tm[order]
    keep = np.ones(u.size, dtype=bool)
    keep[1:] = e[1:] != e[:-1]
    u, e, er, tm = u[keep], e[keep], er[keep], tm[keep]
    keep = np.ones(u.size, dtype=bool)
    keep[1:] = np.diff(u) > 0
    return CounterPoints(u[keep], e[keep], er[keep], tm[keep])


def counter_points(update_t: ArrayLike, energy: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """(update instant, cumulative energy) of the distinct points of a counter."""
    pts = distinct_points(update_t, energy)
    return pts.u, pts.e


# How far the power curve's energy over an update interval may stray from the counter's increment and still shape it.
SHAPE_AGREEMENT = 0.25


def neighbour_split(update_t: FloatArray, energy: FloatArray, k: NDArray[np.int64], q: FloatArray,
                    boundaries: FloatArray) -> FloatArray:
    """The share of update interval k's energy spent before q, from the counter's own rate in the whole
    intervals next to it; NaN where that cannot be said.

    A boundary is where the workload changes, so on each side of q the power is most likely what the counter
    measured just before (the interval ending at u_k) and just after (the one starting at u_{k+1}), if those
    intervals hold no boundary themselves. Counter increments integrate everything, so bursts that fall between
    two power readings cannot mislead this split. Only an interval that holds q as its one boundary is split so.
    """
    b = np.unique(boundaries[np.isfinite(boundaries)])
    inside = np.searchsorted(b, update_t[1:], side="left") - np.searchsorted(b, update_t[:-1], side="right")
    whole = inside == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.diff(energy) / np.diff(update_t)
    n = rate.size
    left_ok = (k >= 1) & whole[np.maximum(k - 1, 0)]
    right_ok = (k + 1 < n) & whole[np.minimum(k + 1, n - 1)]
    r_left = np.where(left_ok, rate[np.maximum(k - 1, 0)], np.nan)
    r_right = np.where(right_ok, rate[np.minimum(k + 1, n - 1)], np.nan)
    u0, u1 = update_t[k], update_t[k + 1]
    before = r_left * (q - u0)
    after = r_right * (u1 - q)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = before / (before + after)
    return np.where((inside[k] == 1) & (before + after > 0), frac, np.nan)


@dataclass(frozen=True)
class CounterEstimate:
    """Cumulative counter energy at each query, what can be wrong in it, the worst timing state of the two
    updates around it (0 edge, 1 grid, 2 read, NaN unknown), and the part of it extrapolated past the updates."""

    at: FloatArray
    doubt: Doubt
    timing: FloatArray
    extrapolated: FloatArray


def _split(pts: CounterPoints, k: NDArray[np.int64], q: FloatArray, shape: PowerCurve | AveragedPowerCurve | None,
           boundaries: FloatArray) -> tuple[FloatArray, FloatArray]:
    """The share of interval k's increment spent before each q, and that share's standard uncertainty.

    In order of preference: by the energy the power curve puts on each side of q, where that curve agrees with
    the counter over the interval (what it disagrees by is the doubt); by the counter's rate in the whole
    intervals on either side, where q is the interval's only boundary (doubt: none beyond timing); linearly
    (doubt: how differently the neighbouring intervals drew, or, across a hole, anything between all and none).
    """
    u, e = pts.u, pts.e
    u0, u1, de = u[k], u[k + 1], e[k + 1] - e[k]
    frac = (q - u0) / (u1 - u0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.diff(e) / np.diff(u)
    n = rate.size
    r_prev = np.where(k >= 1, rate[np.maximum(k - 1, 0)], np.nan)
    r_next = np.where(k + 1 < n, rate[np.minimum(k + 1, n - 1)], np.nan)
    width = u1 - u0
    typical = pts.resolution() or float(np.median(width))
    spread = np.where(np.isfinite(r_prev - r_next), np.abs(r_prev - r_next) * width, de)
    spread = np.where(width > 3.0 * typical, de, np.minimum(spread, de))  # a hole: anything could have happened
    doubt = spread * np.minimum(frac, 1.0 - frac) / np.sqrt(3.0)
    if boundaries.size:
        by_rate = neighbour_split(u, e, k, q, boundaries)
        use = np.isfinite(by_rate) & (width <= 3.0 * typical)
        frac = np.where(use, by_rate, frac)
        doubt = np.where(use, 0.0, doubt)
    # Energy unrolled from a moving average is smeared over the readings' spacing exactly where a boundary puts a
    # kink in the average: it can place a window's energy, never split one at a boundary.
    if isinstance(shape, PowerCurve) and not shape.empty:
        s_q, s0, s1 = shape.integral_to(q), shape.integral_to(u0), shape.integral_to(u1)
        span = s1 - s0
        with np.errstate(invalid="ignore", divide="ignore"):
            shaped = (s_q - s0) / span
            # Power samples that miss what the counter saw in the interval (a burst between two readings) say
            # nothing reliable about its shape inside it either.
            mismatch = np.abs(span / de - 1.0)
        use = (span > 0) & np.isfinite(shaped) & (mismatch <= SHAPE_AGREEMENT)
        frac = np.where(use, shaped, frac)
        doubt = np.where(use, de * mismatch * np.minimum(frac, 1.0 - frac), doubt)
    return np.clip(frac, 0.0, 1.0), np.abs(doubt)


def _local_power(pts: CounterPoints, shape: PowerCurve | AveragedPowerCurve | None) -> FloatArray:
    """Power at each update instant: from the power curve where there is one, else the counter's mean rate
    over the intervals on either side."""
    u, e = pts.u, pts.e
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.diff(e) / np.diff(u)
    p = np.concatenate([[rate[0]], 0.5 * (rate[:-1] + rate[1:]), [rate[-1]]]) if rate.size else np.zeros(u.size)
    if shape is not None and not shape.empty:
        eps = 1e-3
        from_shape = (shape.integral_to(u + eps) - shape.integral_to(u - eps)) / (2 * eps)
        p = np.where(np.isfinite(from_shape), from_shape, p)
    return np.abs(p)


def counter_estimate(pts: CounterPoints, queries: ArrayLike, shape: PowerCurve | AveragedPowerCurve | None = None,
                     boundaries: ArrayLike = ()) -> CounterEstimate:
    """Cumulative counter energy at each query instant, with how far to trust it.

    Between two updates u_k < q < u_{k+1} the increment is split as `_split` says. E(q) moves when an update's
    instant is wrong: by the power at u_k times (1 - f) per second of error in u_k, and by the power at u_{k+1}
    times f for u_{k+1} (f the share before q); these coefficients and each stamp's uncertainty (an unknown one
    is taken as uniform over the counter's resolution) are kept in the `Doubt`, so that figures sharing a stamp
    are not over-stated. Queries beyond the
    first or last update extend with the power curve if there is one (reported as extrapolated), else hold.
    """
    q = np.asarray(queries, dtype=np.float64)
    nan = np.full(q.shape, np.nan)
    if pts.size < 2:
        at = np.where(q == pts.u[0], pts.e[0], np.nan) if pts.size else nan
        return CounterEstimate(at, Doubt(np.zeros(q.shape, dtype=np.int64), np.zeros(q.shape)), nan.copy(),
                               np.zeros(q.shape))
    u, e = pts.u, pts.e
    k = np.clip(np.searchsorted(u, q, side="right") - 1, 0, u.size - 2)
    frac, model = _split(pts, k, q, shape, np.asarray(boundaries, dtype=np.float64))
    inside = e[k] + frac * (e[k + 1] - e[k])
    stamp_err = np.where(np.isfinite(pts.err), pts.err, (pts.resolution() or 0.0) / np.sqrt(12.0))
    power = _local_power(pts, shape)
    beyond = (q < u[0]) | (q > u[-1])
    # Past the updates E(q) rests on the first or last one alone (it moves with that instant at the power there).
    c0 = np.where(beyond, 0.0, -power[k] * (1.0 - frac))
    c1 = np.where(beyond, 0.0, -power[k + 1] * frac)
    c0 = np.where(q < u[0], -power[0], c0)
    c1 = np.where(q > u[-1], -power[-1], c1)
    segment = np.where(q < u[0], -1, np.where(q > u[-1], u.size, k))
    timing = np.fmax(pts.timing[k], pts.timing[k + 1])
    extrapolated = np.zeros(q.shape)
    if shape is not None and not shape.empty:
        before = shape.integral_to(q) - shape.integral_to(u[0])
        after = shape.integral_to(q) - shape.integral_to(u[-1])
        extrapolated = np.where(q < u[0], before, np.where(q > u[-1], after, 0.0))
        at = np.where(q < u[0], e[0] + before, np.where(q > u[-1], e[-1] + after, inside))
        model = np.where(beyond, np.abs(extrapolated), model)  # a guess from power alone: as uncertain as it is large
    else:  # nothing says what was drawn past the updates: the energy holds there
        at = np.where(q < u[0], e[0], np.where(q > u[-1], e[-1], inside))
        model = np.where(beyond, 0.0, model)
    return CounterEstimate(at, Doubt(segment, model, k, c0, c1, stamp_err), timing, extrapolated)


def counter_energy_at(update_t: FloatArray, energy: FloatArray, queries: ArrayLike,
                      shape: PowerCurve | AveragedPowerCurve | None = None,
                      boundaries: ArrayLike = ()) -> FloatArray:
    """Cumulative counter energy at each query instant (see `counter_estimate`)."""
    return counter_estimate(distinct_points(update_t, energy), queries, shape, boundaries).at
