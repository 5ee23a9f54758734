"""Locating the energy counter's update grid, on a simulated clock (no sleeping, exact answers)."""

from __future__ import annotations

import math

import pytest

from telemetry_service.sensors.counter_clock import (
    CounterClock,
    Edge,
    Grid,
    LastStamp,
    grid_from_burst,
    refine_grid,
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
    assert clock.next_refine_delay() == pytest.approx(5.0)
    for k in range(50):
        t = fc.t + k * 0.0731
        stamped, how = clock.stamp(t, t + 1e-5, float(k))
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


def test_refine_grid_rejects_an_edge_off_the_grid():
    g = grid_from_burst([Edge(0.0995, 0.1005), Edge(0.1995, 0.2005)])
    assert g is not None and g.period == pytest.approx(0.1)
    assert refine_grid(g, 0.1, 1, Edge(1.2495, 1.2505), window=0.004) is None
    refined = refine_grid(g, 0.1, 1, Edge(1.1997, 1.2007), window=0.004)
    assert refined is not None and refined[1] == 11
