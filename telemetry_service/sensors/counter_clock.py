"""Locates the update instants of a cumulative energy counter that holds its value between updates.

NVML's energy counter changes on a grid of its own whose period differs between GPUs and drivers (about 100 ms
on some, about 10 ms reported on others), whose instants jitter, and which now and then skips an update. Its
phase has nothing to do with when we read it, so stamping a value with its read time shifts it by up to one
period. This tracker learns the grid from the device alone: a burst of fast polls finds edges (the instants the
value changed), their spacing gives the period (dropped updates show as multiples of it), a weighted fit gives
the anchor and the jitter, and short polls around predicted updates keep it honest. A lock the edges disagree
with is rejected. Every stamp says how it was found and how uncertain it is:

* `edge`: the value's update was itself located by a poll (uncertainty: the poll bracket);
* `grid`: the update instant comes from the fitted grid (uncertainty: jitter and fit error);
* `read`: no trustworthy grid; the update lies somewhere in the last period (or since the previous read),
  stamped at the midpoint of that window, with the uniform distribution's standard deviation.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from telemetry_service.sensors.base import CounterTiming
from telemetry_service.sensors.counter_grid import (
    MAX_WINDOW_PERIODS,
    Edge,
    Grid,
    LastStamp,
    Stamp,
    estimate_period,
    fit_grid,
    grid_disagrees,
    grid_point_at_or_before,
    index_edges,
    stamp_read,
)

log = logging.getLogger(__name__)

# Edges kept for the fit: the most recent ones, over at most the last half-minute, so that a period that drifts
# is followed (a grid that wanders by a fraction of a percent drifts tens of ms from a line fitted over minutes).
MAX_EDGES = 48
FIT_SPAN_S = 30.0
# Edges a first burst must locate before a grid is believed.
MIN_EDGES = 4
# Predicted updates seen missing in a row before the lock is rejected (one alone is a dropped update).
MAX_MISSES = 2
# Of the recently watched predictions, the share that may miss before the lock is rejected: a grid at a fraction
# of the real period sees every other prediction missing, never two in a row.
MAX_MISS_SHARE = 0.25
RECENT_WATCHES = 20
# The longest first burst: long enough for four edges of a 200 ms counter, with some dropped.
ACQUIRE_S = 1.5
# Updates jittering by more than this many polls (standard deviation) are each located as an edge.
JITTER_TRACKED_POLLS = 2.0
# Located edges remembered for `edge` stamps.
RECENT_EDGES = 64


@dataclass
class Watch:
    edges: list[Edge]
    first_read: float  # when the reference read began
    changes: int = 0  # changes seen, sharp or not
    blurred: bool = False  # a change was seen only across a stall


class CounterClock:
    """Tracks one counter's update grid from a background thread; `stamp` is called by the sampler."""

    def __init__(self, read: Callable[[], float], name: str = "counter", poll: float = 0.001,
                 max_refine_every: float = 2.0, now: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._read = read
        self.name = name
        self.poll = poll
        # An edge seen through a stall (the thread descheduled between two polls) is blurred. We start strict and
        # relax when a busy machine lets no sharp edge through: a blurred lock beats none.
        self.sharp_edge_err = 2.0 * poll
        self.max_edge_err = self.sharp_edge_err
        self.max_refine_every = max_refine_every
        self._now = now
        self._sleep = sleep
        self.grid: Grid | None = None
        self.period: float | None = None  # learned from edges, with or without a usable grid
        self._obs: list[tuple[int, Edge]] = []
        self._recent: OrderedDict[float, Edge] = OrderedDict()
        self._misses = 0
        self._outcomes: deque[bool] = deque(maxlen=RECENT_WATCHES)  # True where a watched prediction was missed
        self.lost_locks = 0
        self.dropped_updates = 0
        self._last: LastStamp | None = None
        self._dither = random.Random(name)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- what the sampler uses -------------------------------------------------------------------------
    def stamp(self, t_start: float, t_end: float, value: float) -> Stamp:
        """Stamps a value the sampler read during [t_start, t_end]."""
        last = self._last
        located = self._recent.get(value)
        if located is not None and (last is None or value != last.value):
            stamp = Stamp(located.t, "edge", located.err / math.sqrt(3.0))
        else:
            stamp = stamp_read(self.grid, t_start, t_end, value, last, self.period)
        rate = last.rate if last is not None else None
        if last is not None and value > last.value and stamp.t > last.stamp.t:
            rate = (value - last.value) / (stamp.t - last.stamp.t)
        self._last = LastStamp(value=value, stamp=stamp, read_start=t_start, rate=rate)
        return stamp

    def wait_clear_of_update(self, guard: float = 0.003) -> None:
        """Sleeps out the stretch around a predicted update (wider where the grid is uncertain or jitters), so
        the read that follows falls unambiguously on one side of it."""
        grid = self.grid
        if grid is None:
            return
        now = self._now()
        last = grid_point_at_or_before(grid, now)
        guard = max(guard, 3.0 * grid.point_err((last - grid.anchor) / grid.period))
        if now - last < guard:
            self._sleep(last + guard - now)
        elif last + grid.period - now < guard:
            self._sleep(last + grid.period + guard - now)

    # --- state -------------------------------------------------------------------------------------------
    @property
    def state(self) -> CounterTiming:
        """Whether stamps come from a locked grid or from read times (an `edge` is per value, not a state)."""
        return "grid" if self.grid is not None else "read"

    def _set_grid(self, grid: Grid | None, why: str) -> None:
        if (grid is None) != (self.grid is None):
            if grid is not None:
                log.info("%s: counter timing locked (%s): period %.3f ms, jitter %.2f ms", self.name, why,
                         grid.period * 1e3, grid.jitter * 1e3)
            else:
                log.warning("%s: counter timing lost (%s); update instants now estimated from read times",
                            self.name, why)
        self.grid = grid
        if grid is not None:
            self.period = grid.period

    def _remember(self, edges: list[Edge]) -> None:
        for e in edges:
            self._recent[e.value] = e
        while len(self._recent) > RECENT_EDGES:
            self._recent.popitem(last=False)

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
                watch.changes += 1
                edge = Edge(lo=last_start, hi=t_end, value=value)
                if edge.err > self.max_edge_err:
                    watch.blurred = True
                    if max_edges == 1:
                        break
                else:
                    watch.edges.append(edge)
                last = value
            last_start = t_start
            # Dithered: a fixed poll spacing can fall in step with the counter's period, which biases where the
            # edges seem to lie in their brackets the same way each time, and so the period.
            self._sleep(self.poll * self._dither.uniform(0.5, 1.5))
        if not watch.edges and not watch.blurred and self._read() != last:
            watch.blurred = True  # it changed while we were stalled past the end: seen, but not where
        return watch

    def acquire(self) -> bool:
        """Learns the period and locks onto the grid with one burst of fast polls (at most ACQUIRE_S)."""
        start = self._now()
        watch = self._watch(start + ACQUIRE_S, max_edges=2 * MIN_EDGES)
        self._remember(watch.edges)
        period = estimate_period(watch.edges, watch.changes, self._now() - start)
        if period is not None:
            self.period = period
        if period is None or len(watch.edges) < MIN_EDGES:
            self.max_edge_err = min(2.0 * self.max_edge_err, 0.25 * (self.period or ACQUIRE_S))
            self._set_grid(None, f"{len(watch.edges)} clear edges in {ACQUIRE_S:g} s")
            return False
        obs = index_edges(watch.edges, period)
        grid = fit_grid(obs)
        why = "the edges fit no grid" if grid is None else grid_disagrees(grid, obs)
        if grid is None or why is not None:
            self._set_grid(None, why or "no fit")
            return False
        self._obs = obs
        self._misses = 0
        self._outcomes.clear()
        self._set_grid(grid, f"{len(obs)} edges")
        return True

    def _window(self, grid: Grid, n_ahead: int) -> float:
        """How far from the prediction n updates ahead an edge may fall: three standard uncertainties of the
        update instant (jitter included), plus a poll, at least two polls."""
        return max(2 * self.poll, 3.0 * grid.point_err(n_ahead) + self.poll)

    def refine_once(self) -> bool:
        """Watches the next predicted update and folds it into the grid; False when the lock was lost.

        A thread that wakes too late to see the counter before the predicted update (a busy machine) has
        learnt nothing and tries again later. A fully watched window without the update is a dropped update
        once; twice in a row, the grid is wrong and is rejected.
        """
        grid = self.grid
        if grid is None:
            return self.acquire()
        now = self._now()
        # The first update whose watch window still lies ahead (the window widens a little with n: once more).
        window = self._window(grid, max(1, math.ceil((now - grid.anchor) / grid.period) + 1))
        n_ahead = max(1, math.ceil((now + window - grid.anchor) / grid.period))
        predicted = grid.anchor + n_ahead * grid.period
        window = self._window(grid, n_ahead)
        if window > MAX_WINDOW_PERIODS * grid.period:
            return self.acquire()
        self._sleep(max(0.0, predicted - window - self._now()))
        watch = self._watch(predicted + window, max_edges=1)
        if watch.first_read > predicted - 0.5 * window or watch.blurred:
            return True  # woke too late, or stalled across the update: nothing learnt, nothing contradicted
        missed = not watch.edges or abs(watch.edges[0].t - predicted) > window
        self._outcomes.append(missed)
        share = sum(self._outcomes) / len(self._outcomes)
        if missed:
            self._misses += 1
            if self._misses < MAX_MISSES and (len(self._outcomes) < RECENT_WATCHES or share <= MAX_MISS_SHARE):
                self.dropped_updates += 1
                return True
            self.lost_locks += 1
            self._set_grid(None, f"{self._misses} predicted update(s) in a row not seen, {share:.0%} of the last "
                                 f"{len(self._outcomes)}")
            return self.acquire()
        self._misses = 0
        edge = watch.edges[0]
        self._remember([edge])
        self._obs.append((self._obs[-1][0] + round((edge.t - self._obs[-1][1].t) / grid.period), edge))
        del self._obs[:-MAX_EDGES]
        while len(self._obs) > MIN_EDGES and self._obs[0][1].t < edge.t - FIT_SPAN_S:
            del self._obs[0]
        refit = fit_grid(self._obs)
        why = "no fit" if refit is None else grid_disagrees(refit, self._obs)
        if refit is None or why is not None:
            self.lost_locks += 1
            self._set_grid(None, why or "no fit")
            return self.acquire()
        self._set_grid(refit, "refined")
        if edge.err <= self.sharp_edge_err:
            self.max_edge_err = self.sharp_edge_err
        return True

    def next_refine_delay(self) -> float:
        """Refine again before the accumulated period error would widen the window much past the jitter; at
        once after a missed update, to tell a dropped update from a wrong grid; and at once, watching every
        update, where the updates jitter more than two polls: the grid cannot place those, only their edges can."""
        grid = self.grid
        if grid is None:
            return self.period or 0.1
        if self._misses or grid.jitter > JITTER_TRACKED_POLLS * self.poll:
            return 0.0
        if grid.period_err <= 0:
            return self.max_refine_every
        spare = max(2 * self.poll, 3.0 * grid.jitter) / 3.0
        safe_periods = spare / grid.period_err
        return min(self.max_refine_every, max(grid.period, 0.5 * safe_periods * grid.period))

    # --- background thread -------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"counter-clock-{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self.refine_once()
                failures = 0
            except Exception as exc:  # the counter can vanish with the GPU: say so, fall back, retry
                failures += 1
                if failures == 1:
                    log.warning("%s: counter unreadable for timing (%s)", self.name, exc)
                self._set_grid(None, f"read failed: {exc}")
            self._stop.wait(self.next_refine_delay())

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
