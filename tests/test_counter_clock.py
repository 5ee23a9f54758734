"""Locating the energy counter's update grid, on a simulated clock (no sleeping, exact answers)."""

from __future__ import annotations

import math

import pytest

from telemetry_service.sensors.counter_clock import (
    CounterClock,
    Edge,
    Grid,
    LastStamp,
    fit_grid,
    index_edges,
    stamp_read,
)


class FakeCounter:
    """A counter that changes every `period` seconds from `phase`; every read costs `read_cost` of fake time."""

    def __init__(self, period: float = 0.1, phase: float = 0.0437, read_cost: float = 20e-6, t: float = 1000.0) -> None:
        self.period, self.phase, self.read_cost, self.t = period, phase, read_cost, t

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += max(s, 0.0)

    def read(self) -> float:
        self.t += self.read_cost / 2
        value = math.floor((self.t - self.phase) / self.period)
        self.t += self.read_cost / 2
        return float(value)

    def last_update(self, t: float) -> float:
        return self.phase + math.floor((t - self.phase) / self.period) * self.period


def _clock(fc: FakeCounter) -> CounterClock:
    return CounterClock(fc.read, nominal_period=0.1, poll=0.001, now=fc.now, sleep=fc.sleep)


def test_acquire_finds_the_grid_within_a_poll():
    fc = FakeCounter()
    clock = _clock(fc)
    assert clock.acquire()
    g = clock.grid
    assert g is not None
    assert g.period == pytest.approx(0.1, abs=1e-3)
    assert abs(g.anchor - fc.last_update(g.anchor + 0.0005)) < 0.0011


def test_refining_drives_the_period_error_down_and_stamps_stay_on_the_grid():
    fc = FakeCounter(period=0.10013)  # a grid that is not exactly the nominal 100 ms
    clock = _clock(fc)
    clock.acquire()
    for _ in range(40):
        fc.sleep(clock.next_refine_delay())
        assert clock.refine_once()
    g = clock.grid
    assert g is not None and clock.lost_locks == 0
    assert g.period == pytest.approx(0.10013, abs=2e-6)
    assert clock.next_refine_delay() == pytest.approx(clock.max_refine_every)  # settled: rare checks suffice
    for k in range(50):
        t = fc.t + k * 0.0731
        stamped, how = clock.stamp(t, t + 1e-5, float(math.floor((t - fc.phase) / fc.period)))
        assert how == "grid"
        assert abs(stamped - fc.last_update(t)) < 0.0015


def test_a_grid_that_jumps_is_relocked():
    fc = FakeCounter()
    clock = _clock(fc)
    clock.acquire()
    for _ in range(5):
        fc.sleep(clock.next_refine_delay())
        clock.refine_once()
    fc.phase += 0.05  # the driver reloaded: a new grid phase
    fc.sleep(0.3)
    clock.refine_once()
    assert clock.lost_locks == 1
    g = clock.grid
    assert g is not None and abs(g.anchor - fc.last_update(g.anchor + 0.0005)) < 0.0011


def test_without_a_grid_the_stamp_is_the_unbiased_midpoint():
    assert stamp_read(None, 10.0, 10.0, 5.0, LastStamp(4.0, 9.9, 9.95), 0.1) == (pytest.approx(9.975), "read")
    assert stamp_read(None, 10.0, 10.0, 5.0, LastStamp(4.0, 9.4, 9.5), 0.1) == (pytest.approx(9.95), "read")


def test_a_read_stretched_across_an_update_is_resolved_by_the_previous_value():
    g = Grid(anchor=9.0031, period=0.1, period_err=0.0)
    assert stamp_read(g, 10.0, 10.0, 7.0, None, 0.1) == (pytest.approx(9.9031), "grid")
    # The read began before the update at 10.0031 and ended after it.
    stretched = (10.001, 10.009)
    same = LastStamp(value=7.0, stamp=9.9031, read_start=9.95)
    assert stamp_read(g, *stretched, 7.0, same, 0.1)[0] == pytest.approx(9.9031)  # still the old value
    assert stamp_read(g, *stretched, 8.0, same, 0.1)[0] == pytest.approx(10.0031)  # a new one: the later update
    stale = LastStamp(value=6.0, stamp=9.8031, read_start=9.85)
    assert stamp_read(g, *stretched, 8.0, stale, 0.1)[0] == pytest.approx(9.9031)
    # Two reads a period or more apart, then a stretched one: the counter's rate (10 per 0.1 s) decides.
    steady = LastStamp(value=60.0, stamp=9.8031, read_start=9.85, rate=100.0)
    assert stamp_read(g, *stretched, 70.0, steady, 0.1)[0] == pytest.approx(9.9031)
    assert stamp_read(g, *stretched, 80.0, steady, 0.1)[0] == pytest.approx(10.0031)


def test_fit_grid_weighs_sharp_edges_over_blurred_ones():
    true = lambda k: 5.0371 + 0.1002 * k  # noqa: E731
    sharp = [(k, Edge(true(k) - 0.0005, true(k) + 0.0005)) for k in (0, 1, 7, 30)]
    blurred = [(k, Edge(true(k) - 0.003, true(k) + 0.017)) for k in (2, 3)]  # seen through a stall, off-centre
    g = fit_grid(sharp + blurred)
    assert g is not None
    assert g.period == pytest.approx(0.1002, abs=5e-5)
    assert g.anchor == pytest.approx(true(30), abs=0.001)
    assert fit_grid(sharp[:1]) is None


def test_edges_of_a_burst_are_numbered_across_a_skipped_update():
    edges = [Edge(0.0995, 0.1005), Edge(0.2995, 0.3005), Edge(0.3995, 0.4005)]  # the update at 0.2 went unseen
    assert [k for k, _ in index_edges(edges, 0.1)] == [0, 2, 3]


class StallingCounter(FakeCounter):
    """A busy machine: every sleep overshoots by up to `stall` seconds."""

    def __init__(self, stall: float, seed: int = 0, **kw) -> None:
        super().__init__(**kw)
        self.stall = stall
        self.rng = __import__("random").Random(seed)

    def sleep(self, s: float) -> None:
        self.t += max(s, 0.0) + self.rng.uniform(0.0, self.stall)


def test_a_busy_machine_still_gets_a_lock_and_good_stamps():
    fc = StallingCounter(stall=0.012, period=0.1001, seed=4)
    clock = _clock(fc)
    for _ in range(400):
        fc.sleep(clock.next_refine_delay())
        clock.refine_once()
    assert clock.grid is not None
    errors = []
    for _ in range(200):  # as the sampler reads: clear of a predicted update, then the counter
        fc.sleep(0.0731)
        clock.wait_clear_of_update()
        t0 = fc.now()
        value = fc.read()
        stamped, how = clock.stamp(t0, fc.now(), value)
        assert how == "grid"
        errors.append(abs(stamped - fc.last_update(t0)))
    assert max(errors) < 0.004


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
