"""The hardware energy counter: increments across wraps and resets, distinct update points, and the
cumulative energy at any instant between two updates."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from telemetry_service.energy.common import FloatArray, sorted_by
from telemetry_service.energy.power import AveragedPowerCurve, PowerCurve


# Without a known power limit, no device is believed to draw more than this.
DEFAULT_MAX_POWER_W = 2000.0


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
    ceiling = 1.5 * (max_power_w or DEFAULT_MAX_POWER_W) * max(elapsed_s, 0.0) + 1.0
    if delta > ceiling:
        what = {"step": "jumped ahead", "wrap": "wrapped", "reset": "went backwards"}[how]
        return Increment(0.0, f"counter {what} by {abs(current - previous):.1f} J in {elapsed_s:.3f} s, more than the "
                              f"device can draw; no energy added across it")
    return Increment(max(delta, 0.0), "counter reset" if how == "reset" else None)


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
    u, e = sorted_by(u, e)
    keep = np.ones(u.size, dtype=bool)
    keep[1:] = e[1:] != e[:-1]
    u, e = u[keep], e[keep]
    keep = np.ones(u.size, dtype=bool)
    keep[1:] = np.diff(u) > 0
    return u[keep], e[keep]



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


def counter_energy_at(update_t: FloatArray, energy: FloatArray, queries: ArrayLike,
                      shape: PowerCurve | AveragedPowerCurve | None = None,
                      boundaries: ArrayLike = ()) -> FloatArray:
    """Cumulative counter energy at each query instant.

    Between two updates u_k < q < u_{k+1} the increment is split, in order of preference: by the energy the
    power curve puts on each side of q, where that curve agrees with the counter over the interval; by the
    counter's rate in the whole intervals on either side, where q is the interval's only boundary; linearly.
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
    frac = (q - u0) / (u1 - u0)
    b = np.asarray(boundaries, dtype=np.float64)
    if b.size:
        by_rate = neighbour_split(update_t, energy, k, q, b)
        frac = np.where(np.isfinite(by_rate), by_rate, frac)
    if shape is not None and not shape.empty:
        s_q, s0, s1 = shape.integral_to(q), shape.integral_to(u0), shape.integral_to(u1)
        span = s1 - s0
        with np.errstate(invalid="ignore", divide="ignore"):
            shaped = (s_q - s0) / span
            # Power samples that miss what the counter saw in the interval (a burst between two readings) say
            # nothing reliable about its shape inside it either.
            agrees = np.abs(span / (e1 - e0) - 1.0) <= SHAPE_AGREEMENT
        frac = np.where((span > 0) & np.isfinite(shaped) & agrees, shaped, frac)
    inside = e0 + np.clip(frac, 0.0, 1.0) * (e1 - e0)
    if shape is not None and not shape.empty:
        before = energy[0] - (shape.integral_to(update_t[0]) - shape.integral_to(q))
        after = energy[-1] + (shape.integral_to(q) - shape.integral_to(update_t[-1]))
    else:
        before = np.full(q.shape, np.nan)
        after = np.full(q.shape, np.nan)
    return np.where(q < update_t[0], before, np.where(q > update_t[-1], after, inside))
