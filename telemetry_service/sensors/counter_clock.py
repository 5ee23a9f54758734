"""Locates the update instants of a cumulative energy counter that holds its value between updates.

NVML's energy counter changes on a grid of its own (about every 100 ms) whose phase has nothing to do with
when we read it. Stamping a value with its read time shifts it by up to one update period. This tracker polls
the counter briefly and quickly around the instants where it expects an update, learns the grid (anchor and
period) from the edges it sees, and stamps every later read with the grid point the value belongs to.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from telemetry_service.sensors.base import CounterTiming

# Edges kept for the fit: the first few for the baseline, the rest the most recent.
MAX_EDGES = 64
KEEP_FIRST_EDGES = 8


@dataclass(frozen=True)
class Grid:
    anchor: float  # an update instant (the latest one located), unix seconds
    period: float  # seconds between updates
    period_err: float  # standard error of `period`, seconds
    anchor_err: float = 0.0  # standard error of `anchor`, seconds


@dataclass(frozen=True)
class Edge:
    """An update lies in (lo, hi]: the last read that still saw the old value began at lo, the first new one ended at hi."""

    lo: float
    hi: float

    @property
    def t(self) -> float:
        return 0.5 * (self.lo + self.hi)

    @property
    def err(self) -> float:
        return 0.5 * (self.hi - self.lo)


def grid_point_at_or_before(grid: Grid, t: float) -> float:
    return grid.anchor + math.floor((t - grid.anchor) / grid.period) * grid.period


@dataclass
class Watch:
    edges: list[Edge]
    first_read: float  # when the reference read began
    blurred: bool = False  # a change was seen only across a stall


@dataclass(frozen=True)
class LastStamp:
    value: float
    stamp: float
    read_start: float
    rate: float | None = None  # counter units per second over the last change, to weigh an ambiguous read


def stamp_read(grid: Grid | None, t_start: float, t_end: float, value: float, last: LastStamp | None,
               nominal_period: float) -> tuple[float, CounterTiming]:
    """The instant a counter value read during [t_start, t_end] refers to, and how it was found.

    With a grid, the value belongs to the last update before the read. A busy machine can stretch the read
    across an update (the thread waits for the interpreter lock after the call returns); then the previous
    read decides: the same value keeps its stamp, a new value after we already hold the earlier update's
    belongs to the later one. Without a grid, the update lies somewhere in the last min(period, time since the
    previous read): its midpoint is the unbiased guess.
    """
    if grid is None:
        window = nominal_period if last is None else min(nominal_period, t_end - last.read_start)
        return t_end - 0.5 * window, "read"
    g0 = grid_point_at_or_before(grid, t_start)
    g1 = grid_point_at_or_before(grid, t_end)
    if g1 - g0 < 0.5 * grid.period:
        return g1, "grid"
    if last is not None and value == last.value:
        return last.stamp, "grid"
    if last is not None and last.rate is not None and last.stamp < g0 - 0.5 * grid.period:
        # Either update could be the one read: take the one that keeps the counter's rate steadiest.
        gained = value - last.value
        return min((g0, g1), key=lambda g: abs(gained - last.rate * (g - last.stamp))), "grid"  # type: ignore[operator]
    if last is not None and last.stamp >= g0 - 0.5 * grid.period:
        return g1, "grid"
    return g0, "grid"


def fit_grid(observations: list[tuple[int, Edge]]) -> Grid | None:
    """The grid t = a + P k that best fits located edges (update index k, instant), by weighted least squares.

    An edge is known to lie within its bracket, so its variance is err^2 / 3 (uniform); blurred edges seen on a
    busy machine count, but little. Many edges over a long baseline make both the period and the phase precise.
    """
    if len({k for k, _ in observations}) < 2:
        return None
    k = np.array([o[0] for o in observations], dtype=np.float64)
    t = np.array([o[1].t for o in observations], dtype=np.float64)
    w = 3.0 / np.maximum(np.array([o[1].err for o in observations]), 1e-6) ** 2
    k_mean = float(np.sum(w * k) / np.sum(w))
    t_mean = float(np.sum(w * t) / np.sum(w))
    skk = float(np.sum(w * (k - k_mean) ** 2))
    period = float(np.sum(w * (k - k_mean) * (t - t_mean)) / skk)
    if period <= 0:
        return None
    k_last = float(k.max())
    var_period = 1.0 / skk
    var_anchor = 1.0 / float(np.sum(w)) + (k_last - k_mean) ** 2 * var_period
    return Grid(anchor=t_mean + period * (k_last - k_mean), period=period, period_err=math.sqrt(var_period),
                anchor_err=math.sqrt(var_anchor))


def index_edges(edges: list[Edge], nominal_period: float) -> list[tuple[int, Edge]]:
    """Numbers the edges of one burst by update, from the first: a skipped (blurred) update leaves a gap."""
    return [(round((e.t - edges[0].t) / nominal_period), e) for e in edges]


class CounterClock:
    """Tracks one counter's update grid from a background thread; `stamp` is called by the sampler."""

    def __init__(self, read: Callable[[], float], nominal_period: float = 0.1, poll: float = 0.001,
                 max_refine_every: float = 20.0, now: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._read = read
        self.nominal_period = nominal_period
        self.poll = poll
        # An edge seen through a stall (the thread descheduled between two polls) is blurred. We start strict and
        # relax when a busy machine lets no sharp edge through: a blurred lock beats none.
        self.sharp_edge_err = 2.0 * poll
        self.max_edge_err = self.sharp_edge_err
        self.max_refine_every = max_refine_every
        self._now = now
        self._sleep = sleep
        self.grid: Grid | None = None
        self._obs: list[tuple[int, Edge]] = []
        self.lost_locks = 0
        self._last: LastStamp | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- what the sampler uses -------------------------------------------------------------------------
    def stamp(self, t_start: float, t_end: float, value: float) -> tuple[float, CounterTiming]:
        """Stamps a value the sampler read during [t_start, t_end]."""
        last = self._last
        t, how = stamp_read(self.grid, t_start, t_end, value, last, self.nominal_period)
        rate = last.rate if last is not None else None
        if last is not None and value > last.value and t > last.stamp:
            rate = (value - last.value) / (t - last.stamp)
        self._last = LastStamp(value=value, stamp=t, read_start=t_start, rate=rate)
        return t, how

    def wait_clear_of_update(self, guard: float = 0.003) -> None:
        """Sleeps out the stretch around a predicted update (wider where the grid is uncertain), so the read
        that follows falls unambiguously on one side of it."""
        grid = self.grid
        if grid is None:
            return
        guard = max(guard, 3.0 * grid.anchor_err)
        now = self._now()
        last = grid_point_at_or_before(grid, now)
        if now - last < guard:
            self._sleep(last + guard - now)
        elif last + grid.period - now < guard:
            self._sleep(last + grid.period + guard - now)

    # --- locating edges ----------------------------------------------------------------------------------
    def _watch(self, until: float, max_edges: int) -> Watch:
        """Polls the counter until `until` or `max_edges` sharp changes."""
        watch = Watch(edges=[], first_read=self._now())
        last = self._read()
        last_start = watch.first_read
        while len(watch.edges) < max_edges:
            t_start = self._now()
            if t_start > until:
                break
            value = self._read()
            t_end = self._now()
            if value != last:
                edge = Edge(lo=last_start, hi=t_end)
                if edge.err > self.max_edge_err:
                    watch.blurred = True
                    if max_edges == 1:
                        break
                else:
                    watch.edges.append(edge)
                last = value
            last_start = t_start
            self._sleep(self.poll)
        if not watch.edges and not watch.blurred and self._read() != last:
            watch.blurred = True  # it changed while we were stalled past the end: seen, but not where
        return watch

    def acquire(self) -> bool:
        """Locks onto the grid with one burst that spans a little over three nominal periods."""
        edges = self._watch(self._now() + 3.2 * self.nominal_period, max_edges=3).edges
        obs = index_edges(edges, self.nominal_period) if edges else []
        grid = fit_grid(obs)
        if grid is None:
            self.grid = None
            self.max_edge_err = min(2.0 * self.max_edge_err, 0.25 * self.nominal_period)
            return False
        self._obs = obs
        self.grid = grid
        return True

    def _window(self, grid: Grid, n_ahead: int) -> float:
        """How far from the prediction n updates ahead an edge may fall (three standard errors, at least a few polls)."""
        return max(4 * self.poll, 3.0 * (grid.anchor_err + n_ahead * grid.period_err))

    def refine_once(self) -> bool:
        """Watches the next predicted update and folds it into the grid; False when the lock was lost.

        A thread that wakes too late to see the counter before the predicted update (a busy machine) has
        learnt nothing and tries again later; only a fully watched window without the update drops the lock.
        """
        grid = self.grid
        if grid is None:
            return self.acquire()
        now = self._now()
        n_ahead = max(1, math.ceil((now - grid.anchor) / grid.period) + 1)
        predicted = grid.anchor + n_ahead * grid.period
        window = self._window(grid, n_ahead)
        if window > 0.4 * grid.period:
            return self.acquire()
        self._sleep(max(0.0, predicted - window - self._now()))
        watch = self._watch(predicted + window, max_edges=1)
        if watch.first_read > predicted - 0.5 * window or watch.blurred:
            return True  # woke too late, or stalled across the update: nothing learnt, nothing contradicted
        if not watch.edges or abs(watch.edges[0].t - predicted) > window:
            self.lost_locks += 1
            return self.acquire()
        k_last = self._obs[-1][0] if self._obs else 0
        n = round((watch.edges[0].t - grid.anchor) / grid.period)
        self._obs.append((k_last + n, watch.edges[0]))
        if len(self._obs) > MAX_EDGES:
            del self._obs[KEEP_FIRST_EDGES]  # the first edges hold the long baseline, the last ones the present
        self.grid = fit_grid(self._obs) or grid
        if watch.edges[0].err <= self.sharp_edge_err:
            self.max_edge_err = self.sharp_edge_err
        return True

    def next_refine_delay(self) -> float:
        """Refine again before the accumulated period error would push an edge out of a few-poll window."""
        grid = self.grid
        if grid is None:
            return self.nominal_period
        if grid.period_err <= 0:
            return self.max_refine_every
        # Periods ahead before the window would outgrow a few polls, then half of that for safety.
        spare = max(0.0, (4 * self.poll) / 3.0 - grid.anchor_err)
        safe_periods = spare / grid.period_err
        return min(self.max_refine_every, max(grid.period, 0.5 * safe_periods * grid.period))

    # --- background thread -------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="counter-clock", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refine_once()
            except Exception:  # the counter can vanish with the GPU; the sampler reports that, we just retry
                self.grid = None
            self._stop.wait(self.next_refine_delay())

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
