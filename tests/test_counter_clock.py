"""Learning an energy counter's update grid from the device alone, on a simulated clock (no sleeping).

The counters here differ from any nominal grid the way real ones do: other periods, jittered instants, dropped
updates, a grid that changes under the tracker, a busy machine. Each test checks the tracker against the
counter's true update instants, which only the test knows.
"""

from __future__ import annotations

import logging
import math
import random

import numpy as np
import pytest

from telemetry_service.sensors.counter_clock import CounterClock
from telemetry_service.sensors.counter_grid import (
    Edge,
    Grid,
    LastStamp,
    Stamp,
    estimate_period,
    fit_grid,
    grid_disagrees,
    index_edges,
    stamp_read,
)


class FakeCounter:
    """A counter whose update k falls at phase + k * period + jitter_k (|jitter_k| <= jitter * period) unless
    dropped; its value counts updates, so a dropped one shows as a double step at the next. Reads cost time."""

    def __init__(self, period: float = 0.1, phase: float = 0.0437, jitter: float = 0.0, drop: float = 0.0,
                 read_cost: float = 20e-6, t: float = 1000.0, seed: int = 1) -> None:
        self.period, self.phase, self.jitter, self.drop = period, phase, jitter, drop
        self.read_cost, self.t, self.seed = read_cost, t, seed

    def _rng(self, k: int) -> random.Random:
        return random.Random(hash((self.seed, k, self.period, self.phase)))

    def update_at(self, k: int) -> float:
        return self.phase + k * self.period + self.jitter * self.period * self._rng(k).uniform(-1.0, 1.0)

    def dropped(self, k: int) -> bool:
        return self.drop > 0 and self._rng(k).random() < self.drop

    def last_update(self, t: float) -> int:
        """Index of the last published update at or before t."""
        k = math.floor((t - self.phase) / self.period) + 1
        while self.update_at(k) > t or self.dropped(k):
            k -= 1
        return k

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += max(s, 0.0)

    def read(self) -> float:
        self.t += self.read_cost / 2
        value = float(self.last_update(self.t))
        self.t += self.read_cost / 2
        return value


class StallingCounter(FakeCounter):
    """A busy machine: every sleep overshoots by up to `stall` seconds."""

    def __init__(self, stall: float, **kw) -> None:
        super().__init__(**kw)
        self.stall = stall
        self.rng = random.Random(4)

    def sleep(self, s: float) -> None:
        self.t += max(s, 0.0) + self.rng.uniform(0.0, self.stall)


def _clock(fc: FakeCounter) -> CounterClock:
    return CounterClock(fc.read, name="gpu0", poll=0.001, now=fc.now, sleep=fc.sleep)


def _run(fc: FakeCounter, clock: CounterClock, refines: int) -> None:
    for _ in range(refines):
        fc.sleep(clock.next_refine_delay())
        clock.refine_once()


def _sampled_stamp_errors(fc: FakeCounter, clock: CounterClock, reads: int, every: float = 0.0731):
    """Reads as the sampler does; returns (stamp - true update instant, stated uncertainty, timing) per read."""
    out = []
    refine_at = fc.t + clock.next_refine_delay()
    for _ in range(reads):
        target = fc.t + every
        while refine_at < target - 0.03:  # the clock's thread works between reads, on its own schedule
            fc.t = max(fc.t, refine_at)
            clock.refine_once()
            refine_at = fc.t + clock.next_refine_delay()
        fc.t = max(fc.t, target)
        clock.wait_clear_of_update()
        t0 = fc.now()
        value = fc.read()
        stamp = clock.stamp(t0, fc.now(), value)
        out.append((stamp.t - fc.update_at(int(value)), stamp.err, stamp.timing))
    return out


@pytest.mark.parametrize("period", [0.010, 0.020, 0.050, 0.100, 0.200])
def test_the_period_is_learned_from_the_device(period):
    fc = FakeCounter(period=period)
    clock = _clock(fc)
    assert clock.acquire()
    assert clock.grid is not None and clock.state == "grid"
    assert clock.grid.period == pytest.approx(period, rel=0.01)
    _run(fc, clock, 60)
    assert clock.grid.period == pytest.approx(period, rel=1e-4)
    errors = [abs(e) for e, _, _ in _sampled_stamp_errors(fc, clock, 100)]
    assert max(errors) < 0.0015


def test_jittered_instants_and_dropped_updates_keep_the_lock_and_honest_uncertainties():
    fc = FakeCounter(period=0.1, jitter=0.1, drop=0.03)  # +-10 ms jitter, 3 % of updates never published
    clock = _clock(fc)
    _run(fc, clock, 300)
    assert clock.grid is not None and clock.lost_locks == 0
    assert clock.grid.period == pytest.approx(0.1, rel=1e-3)
    assert 0.003 < clock.grid.jitter < 0.009  # uniform +-10 ms has a standard deviation of 5.8 ms
    assert clock.dropped_updates > 0
    rows = _sampled_stamp_errors(fc, clock, 300)
    z = np.array([abs(e) / err for e, err, _ in rows])
    assert np.mean(z < 2.0) > 0.9  # the stated uncertainty covers the error it claims to
    # Jitter this large is beyond the grid: every update is located as an edge instead.
    assert np.mean([timing == "edge" for _, _, timing in rows]) > 0.8
    assert np.percentile([abs(e) for e, _, _ in rows], 90) < 0.002


class WanderingCounter(FakeCounter):
    """A counter whose period wanders by 0.3 % over a 10-minute cycle: its updates drift up to ~0.3 s from any
    fixed grid, slowly."""

    def update_at(self, k: int) -> float:
        x = 2 * math.pi * k * self.period / 600.0
        return self.phase + k * self.period + 0.003 * 600.0 / (2 * math.pi) * (1 - math.cos(x))

    def last_update(self, t: float) -> int:
        k = math.floor((t - self.phase) / self.period)
        while self.update_at(k) > t:
            k -= 1
        while self.update_at(k + 1) <= t:
            k += 1
        return k


def test_a_wandering_period_is_followed_and_stamps_stay_close():
    fc = WanderingCounter(period=0.1, t=1000.0 + 120.0)  # a quarter of the way into the wander, where it is fastest
    clock = _clock(fc)
    _run(fc, clock, 150)  # five minutes of refining
    assert clock.grid is not None
    rows = _sampled_stamp_errors(fc, clock, 3000, every=0.1)  # five more minutes of reads
    assert max(abs(e) for e, _, _ in rows) < 0.005  # a grid fitted over minutes strays by a whole period here


def test_a_wrong_period_lock_is_rejected_and_relearned():
    fc = FakeCounter(period=0.2)
    clock = _clock(fc)
    # Locked at half the real period, as a tracker assuming 100 ms would: every other prediction misses.
    clock.grid = Grid(anchor=fc.update_at(fc.last_update(fc.t)), period=0.1, period_err=1e-6, anchor_err=1e-4)
    clock._obs = [(0, Edge(clock.grid.anchor - 5e-4, clock.grid.anchor + 5e-4))]
    _run(fc, clock, 60)
    assert clock.lost_locks >= 1
    assert clock.grid is not None and clock.grid.period == pytest.approx(0.2, rel=1e-3)


def test_a_grid_that_jumps_is_relocked():
    fc = FakeCounter()
    clock = _clock(fc)
    _run(fc, clock, 5)
    fc.phase += 0.05  # the driver reloaded: a new grid phase
    fc.sleep(0.3)
    _run(fc, clock, 6)
    assert clock.lost_locks == 1
    g = clock.grid
    assert g is not None
    assert abs(g.anchor - fc.update_at(fc.last_update(g.anchor + 0.0005))) < 0.0011


def test_edges_that_fit_no_grid_are_refused():
    period = 0.1
    edges = [Edge(t - 5e-4, t + 5e-4) for t in (0.0, 0.1, 0.2, 0.3, 0.44)]  # the last is 40 ms off its grid point
    obs = index_edges(edges, period)
    grid = fit_grid(obs)
    assert grid is not None and grid_disagrees(grid, obs) is not None
    good = index_edges(edges[:4], period)
    assert grid_disagrees(fit_grid(good), good) is None


def test_period_estimate_sees_through_dropped_and_unseen_updates():
    true = [0.013 + 0.02 * k for k in range(40) if k not in (3, 4, 17)]  # three updates missing
    edges = [Edge(t - 2e-4, t + 2e-4) for t in true]
    assert estimate_period(edges) == pytest.approx(0.02, rel=1e-3)
    assert [k for k, _ in index_edges(edges, 0.02)][:5] == [0, 1, 2, 5, 6]
    # Every other update unseen: spacing says 40 ms, but 80 changes in 1.6 s say 20 ms.
    sparse = [Edge(t - 2e-4, t + 2e-4) for t in np.arange(0.0, 1.6, 0.04)]
    assert estimate_period(sparse, changes=80, span=1.6) == pytest.approx(0.02, rel=1e-3)


def test_a_busy_machine_still_gets_a_lock_and_good_stamps():
    fc = StallingCounter(stall=0.012, period=0.1001)
    clock = _clock(fc)
    _run(fc, clock, 400)
    assert clock.grid is not None
    rows = _sampled_stamp_errors(fc, clock, 200)
    assert all(timing in ("grid", "edge") for _, _, timing in rows)
    assert max(abs(e) for e, _, _ in rows) < 0.004


def test_without_a_grid_the_stamp_is_the_midpoint_of_the_learned_period():
    # A 10 ms counter read 100 ms after the previous read: the update lies in the last 10 ms, not the last 100.
    stamp = stamp_read(None, 10.0, 10.0, 5.0, LastStamp(4.0, Stamp(9.9, "read", 0.0), 9.9), period=0.01)
    assert stamp.t == pytest.approx(9.995) and stamp.timing == "read"
    assert stamp.err == pytest.approx(0.01 / math.sqrt(12))
    # Read again 4 ms later with a new value: the update lies in those 4 ms.
    stamp = stamp_read(None, 10.004, 10.004, 6.0, LastStamp(5.0, stamp, 10.0), period=0.01)
    assert stamp.t == pytest.approx(10.002)


def test_a_value_read_again_keeps_its_stamp_across_a_dropped_update():
    g = Grid(anchor=9.0031, period=0.1, period_err=0.0)
    first = stamp_read(g, 10.0, 10.0, 7.0, None, 0.1)
    assert first.t == pytest.approx(9.9031) and first.timing == "grid"
    # The update due at 10.0031 was dropped: the same value read at 10.05 still belongs to 9.9031.
    again = stamp_read(g, 10.05, 10.05, 7.0, LastStamp(7.0, first, 10.0), 0.1)
    assert again.t == pytest.approx(9.9031)


def test_a_read_stretched_across_an_update_is_resolved_by_the_previous_value():
    g = Grid(anchor=9.0031, period=0.1, period_err=0.0)
    stretched = (10.001, 10.009)  # the read began before the update at 10.0031 and ended after it
    same = LastStamp(value=7.0, stamp=Stamp(9.9031, "grid", 0.0), read_start=9.95)
    assert stamp_read(g, *stretched, 8.0, same, 0.1).t == pytest.approx(10.0031)  # a new value: the later update
    stale = LastStamp(value=6.0, stamp=Stamp(9.8031, "grid", 0.0), read_start=9.85)
    assert stamp_read(g, *stretched, 8.0, stale, 0.1).t == pytest.approx(9.9031)
    # Two reads a period or more apart, then a stretched one: the counter's rate (10 per 0.1 s) decides.
    steady = LastStamp(value=60.0, stamp=Stamp(9.8031, "grid", 0.0), read_start=9.85, rate=100.0)
    assert stamp_read(g, *stretched, 70.0, steady, 0.1).t == pytest.approx(9.9031)
    assert stamp_read(g, *stretched, 80.0, steady, 0.1).t == pytest.approx(10.0031)


def test_a_located_edge_stamps_its_value_exactly():
    fc = FakeCounter(period=0.1, jitter=0.1)
    clock = _clock(fc)
    _run(fc, clock, 20)
    value, edge = next(reversed(clock._recent.items()))
    stamp = clock.stamp(fc.t, fc.t, value)
    assert stamp.timing == "edge" and stamp.t == edge.t
    assert abs(stamp.t - fc.update_at(int(value))) < 0.0015


def test_state_changes_are_logged_and_a_failing_counter_falls_back(caplog):
    fc = FakeCounter()
    clock = _clock(fc)
    with caplog.at_level(logging.INFO, logger="telemetry_service.sensors.counter_clock"):
        clock.acquire()
        assert any("locked" in r.message for r in caplog.records)

        def broken() -> float:
            raise RuntimeError("GPU is lost")

        clock._read = broken
        clock._stop.wait = lambda _t: clock._stop.set()  # one pass of the thread's loop
        clock._run()
    assert clock.grid is None and clock.state == "read"
    assert any("GPU is lost" in r.message for r in caplog.records if r.levelno >= logging.WARNING)


def test_a_read_due_just_before_an_update_waits_for_it():
    fc = FakeCounter()
    clock = _clock(fc)
    clock.acquire()
    g = clock.grid
    assert g is not None
    fc.t = g.anchor + 10 * g.period - 0.001  # 1 ms before an update
    clock.wait_clear_of_update()
    assert fc.t > g.anchor + 10 * g.period
    fc.t = g.anchor + 10 * g.period + 0.05  # well clear: no wait
    clock.wait_clear_of_update()
    assert fc.t == g.anchor + 10 * g.period + 0.05
