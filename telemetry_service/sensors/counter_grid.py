"""The pure part of locating a counter's updates: edges, the grid they fit, and the stamp a read gets.

No clock and no device here: `counter_clock.CounterClock` polls, these functions decide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from telemetry_service.sensors.base import CounterTiming

# How far an edge may stray from its grid point (in periods) before the grid is called wrong.
MAX_RESIDUAL_PERIODS = 0.3
# A grid whose prediction windows would cover this share of a period cannot place anything: stamps fall back.
MAX_WINDOW_PERIODS = 0.4


@dataclass(frozen=True)
class Grid:
    anchor: float  # an update instant (the latest one located), unix seconds
    period: float  # seconds between updates
    period_err: float  # standard error of `period`, seconds
    anchor_err: float = 0.0  # standard error of `anchor`, seconds
    jitter: float = 0.0  # standard deviation of real update instants around the grid, seconds

    def point_err(self, n_ahead: float) -> float:
        """Standard uncertainty of the update instant n periods from the anchor."""
        return math.sqrt(self.jitter ** 2 + self.anchor_err ** 2 + (n_ahead * self.period_err) ** 2)


@dataclass(frozen=True)
class Edge:
    """An update lies in (lo, hi]: the last read that still saw the old value began at lo, the first new one ended at hi."""

    lo: float
    hi: float
    value: float = math.nan  # the counter's value after the update

    @property
    def t(self) -> float:
        return 0.5 * (self.lo + self.hi)

    @property
    def err(self) -> float:
        return 0.5 * (self.hi - self.lo)


@dataclass(frozen=True)
class Stamp:
    t: float
    timing: CounterTiming
    err: float  # standard uncertainty of t, seconds


def grid_point_at_or_before(grid: Grid, t: float) -> float:
    return grid.anchor + math.floor((t - grid.anchor) / grid.period) * grid.period


def estimate_period(edges: list[Edge], changes: int | None = None, span: float | None = None) -> float | None:
    """The update period from the spacing of located edges, robust to dropped (or unseen) updates.

    Gaps between neighbouring edges are whole multiples of the period, give or take jitter. The shortest ones
    (up to 1.5 times the shortest gap) are single periods; their total over their count is the estimate. Where
    the counter was seen to change more often than that period allows (`changes` over `span`, counted across
    stalls too), every gap was a multiple: the period is divided down until the count fits.
    """
    t = np.array([e.t for e in edges], dtype=np.float64)
    if t.size < 2:
        return None
    gaps = np.diff(t)
    gaps = gaps[gaps > 0]
    if gaps.size == 0:
        return None
    single = gaps[gaps <= 1.5 * gaps.min()]
    period = float(np.median(single))
    multiples = np.maximum(np.round(gaps / period), 1.0)
    fits = np.abs(gaps / multiples - period) <= 0.25 * period
    period = float(gaps[fits].sum() / multiples[fits].sum())
    if changes is not None and span is not None and span > 0:
        divisor = 1
        while changes > 1.3 * span / (period / divisor) and divisor < 8:
            divisor += 1
        period /= divisor
    return period


def index_edges(edges: list[Edge], period: float) -> list[tuple[int, Edge]]:
    """Numbers the edges by update, from the first: gaps of several periods (dropped updates) are counted."""
    out = [(0, edges[0])] if edges else []
    for prev, edge in zip(edges, edges[1:]):
        out.append((out[-1][0] + max(1, round((edge.t - prev.t) / period)), edge))
    return out


def fit_grid(observations: list[tuple[int, Edge]]) -> Grid | None:
    """The grid t = a + P k that best fits located edges (update index k, instant), by weighted least squares.

    An edge is known to lie within its bracket, so its variance is err^2 / 3 (uniform), plus the jitter of the
    updates themselves, estimated from the residuals beyond what the brackets explain.
    """
    if len({k for k, _ in observations}) < 2:
        return None
    k = np.array([o[0] for o in observations], dtype=np.float64)
    t = np.array([o[1].t for o in observations], dtype=np.float64)
    bracket_var = np.maximum(np.array([o[1].err for o in observations]), 1e-6) ** 2 / 3.0
    jitter_var = 0.0
    for _ in range(2):  # weights depend on the jitter, which depends on the fit: two passes settle it
        w = 1.0 / (bracket_var + jitter_var)
        k_mean = float(np.sum(w * k) / np.sum(w))
        t_mean = float(np.sum(w * t) / np.sum(w))
        skk = float(np.sum(w * (k - k_mean) ** 2))
        period = float(np.sum(w * (k - k_mean) * (t - t_mean)) / skk)
        resid = t - (t_mean + period * (k - k_mean))
        dof = max(k.size - 2, 1)
        jitter_var = max(0.0, float(np.sum(resid ** 2)) / dof - float(np.mean(bracket_var)))
    if period <= 0:
        return None
    k_last = float(k.max())
    var_period = 1.0 / skk
    var_anchor = 1.0 / float(np.sum(w)) + (k_last - k_mean) ** 2 * var_period
    return Grid(anchor=t_mean + period * (k_last - k_mean), period=period, period_err=math.sqrt(var_period),
                anchor_err=math.sqrt(var_anchor), jitter=math.sqrt(jitter_var))


def grid_disagrees(grid: Grid, observations: list[tuple[int, Edge]]) -> str | None:
    """Why the located edges reject this grid, or None when they agree with it."""
    worst = max(abs(e.t - (grid.anchor + (k - observations[-1][0]) * grid.period)) for k, e in observations)
    if worst > MAX_RESIDUAL_PERIODS * grid.period:
        return f"an edge lies {worst * 1e3:.1f} ms from its grid point (period {grid.period * 1e3:.2f} ms)"
    if 3.0 * grid.jitter > MAX_WINDOW_PERIODS * grid.period:
        return f"update instants jitter by {grid.jitter * 1e3:.1f} ms, too much for a {grid.period * 1e3:.2f} ms grid"
    return None


@dataclass(frozen=True)
class LastStamp:
    value: float
    stamp: Stamp
    read_start: float
    rate: float | None = None  # counter units per second over the last change, to weigh an ambiguous read


def stamp_read(grid: Grid | None, t_start: float, t_end: float, value: float, last: LastStamp | None,
               period: float | None) -> Stamp:
    """The instant a counter value read during [t_start, t_end] refers to, how it was found, and how well.

    A value seen before keeps its stamp (an update that was dropped or is late changes nothing). With a grid,
    a new value belongs to the last update before the read; a read stretched across an update (a busy machine)
    is resolved by the previous value and the counter's rate. Without a grid, the update lies somewhere in the
    last period, or since the previous read if that is shorter: its midpoint is the unbiased guess.
    """
    if last is not None and value == last.value:
        return last.stamp
    if grid is None:
        since = None if last is None else t_end - last.read_start
        window = min(w for w in (period, since, 1.0) if w is not None)
        return Stamp(t_end - 0.5 * window, "read", window / math.sqrt(12.0))
    g0 = grid_point_at_or_before(grid, t_start)
    g1 = grid_point_at_or_before(grid, t_end)
    t = g1
    if g1 - g0 >= 0.5 * grid.period:
        if last is None:
            t = g0
        elif last.rate is not None and last.stamp.t < g0 - 0.5 * grid.period:
            # Either update could be the one read: take the one that keeps the counter's rate steadiest.
            gained = value - last.value
            rate = last.rate
            t = min((g0, g1), key=lambda g: abs(gained - rate * (g - last.stamp.t)))
        elif last.stamp.t < g0 - 0.5 * grid.period:
            t = g0
    return Stamp(t, "grid", grid.point_err((t - grid.anchor) / grid.period))
