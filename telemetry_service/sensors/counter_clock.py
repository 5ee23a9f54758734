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

from telemetry_service.sensors.base import CounterTiming


@dataclass(frozen=True)
class Grid:
    anchor: float  # a located update instant, unix seconds
    period: float  # seconds between updates
    period_err: float  # uncertainty of `period`, seconds


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
    if last is not None and last.stamp >= g0 - 0.5 * grid.period:
        return g1, "grid"
    return g0, "grid"


def grid_from_burst(edges: list[Edge]) -> Grid | None:
    """A first grid from consecutive edges seen in one fast-polling burst."""
    if len(edges) < 2:
        return None
    span = edges[-1].t - edges[0].t
    n = len(edges) - 1
    period = span / n
    if period <= 0:
        return None
    return Grid(anchor=edges[-1].t, period=period, period_err=(edges[0].err + edges[-1].err) / n)


def refine_grid(grid: Grid, base: float, base_k: int, edge: Edge, window: float) -> tuple[Grid, int] | None:
    """Fold a newly located edge into the grid.

    `base` is the first edge the grid was locked on and `base_k` the index of grid.anchor counted from it; the
    period is re-estimated over the whole baseline, so its error shrinks as 1/k. Returns None where the edge
    does not fall within `window` of a predicted grid point: the lock is lost.
    """
    n = round((edge.t - grid.anchor) / grid.period)
    predicted = grid.anchor + n * grid.period
    if abs(edge.t - predicted) > window:
        return None
    k = base_k + n
    if k <= 0:
        return grid, base_k
    period = (edge.t - base) / k
    period_err = 2.0 * edge.err / k
    return Grid(anchor=edge.t, period=period, period_err=period_err), k


class CounterClock:
    """Tracks one counter's update grid from a background thread; `stamp` is called by the sampler."""

    def __init__(self, read: Callable[[], float], nominal_period: float = 0.1, poll: float = 0.001,
                 max_refine_every: float = 5.0, now: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._read = read
        self.nominal_period = nominal_period
        self.poll = poll
        # An edge seen through a stall (the thread descheduled between two polls) is too blurred to anchor on.
        self.max_edge_err = 2.0 * poll
        self.max_refine_every = max_refine_every
        self._now = now
        self._sleep = sleep
        self.grid: Grid | None = None
        self._base = 0.0
        self._base_k = 0
        self.lost_locks = 0
        self._last: LastStamp | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- what the sampler uses -------------------------------------------------------------------------
    def stamp(self, t_start: float, t_end: float, value: float) -> tuple[float, CounterTiming]:
        """Stamps a value the sampler read during [t_start, t_end]."""
        t, how = stamp_read(self.grid, t_start, t_end, value, self._last, self.nominal_period)
        self._last = LastStamp(value=value, stamp=t, read_start=t_start)
        return t, how

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
                    watch.edges.clear()  # a burst's edges must be consecutive updates
                    if max_edges == 1:
                        break
                else:
                    watch.edges.append(edge)
                last = value
            last_start = t_start
            self._sleep(self.poll)
        return watch

    def acquire(self) -> bool:
        """Locks onto the grid with one burst that spans a little over three nominal periods."""
        edges = self._watch(self._now() + 3.2 * self.nominal_period, max_edges=3).edges
        grid = grid_from_burst(edges)
        if grid is None:
            self.grid = None
            return False
        self._base = edges[0].t
        self._base_k = len(edges) - 1
        self.grid = grid
        return True

    def refine_once(self) -> bool:
        """Watches the next predicted update and re-anchors on it; False when the lock was lost.

        A thread that wakes too late to see the counter before the predicted update (a busy machine) has
        learnt nothing and tries again later; only a fully watched window without the update drops the lock.
        """
        grid = self.grid
        if grid is None:
            return self.acquire()
        now = self._now()
        n_ahead = max(1, math.ceil((now - grid.anchor) / grid.period) + 1)
        predicted = grid.anchor + n_ahead * grid.period
        window = max(4 * self.poll, 3.0 * n_ahead * grid.period_err)
        if window > 0.4 * grid.period:
            return self.acquire()
        self._sleep(max(0.0, predicted - window - self._now()))
        watch = self._watch(predicted + window, max_edges=1)
        if watch.first_read > predicted - 0.5 * window or watch.blurred:
            return True  # woke too late, or stalled across the update: nothing learnt, nothing contradicted
        refined = refine_grid(grid, self._base, self._base_k, watch.edges[0], window) if watch.edges else None
        if refined is None:
            self.lost_locks += 1
            return self.acquire()
        self.grid, self._base_k = refined
        return True

    def next_refine_delay(self) -> float:
        """Refine again before the accumulated period error would push an edge out of a few-poll window."""
        grid = self.grid
        if grid is None:
            return self.nominal_period
        if grid.period_err <= 0:
            return self.max_refine_every
        safe_periods = (4 * self.poll) / (3.0 * grid.period_err)
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
