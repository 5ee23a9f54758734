"""The energy math against answers computed by hand."""

import math

import numpy as np
import pytest

from telemetry_service.energy import (
    DeviceSeries,
    combine_methods,
    counter_energy_at,
    counter_increment,
    counter_points,
    device_energy_at,
    find_gaps,
    is_short,
    overlaps,
    power_curve,
)
from telemetry_service.sensors.simulated import StepTrace


def test_constant_power_integrates_exactly():
    t = np.arange(0.0, 10.01, 0.1)
    e = power_curve(t, np.full(t.size, 100.0)).integral_to([0.0, 10.0])
    assert e[1] - e[0] == pytest.approx(1000.0)


def test_trapezoid_of_a_ramp_is_exact():
    t = np.array([0.0, 1.0, 2.0])
    e = power_curve(t, np.array([0.0, 100.0, 200.0])).integral_to([0.0, 0.5, 2.0])
    assert e[1] - e[0] == pytest.approx(12.5)  # area under p=100 t on [0, 0.5]
    assert e[2] - e[0] == pytest.approx(200.0)


def test_power_steps_at_a_boundary_are_not_smeared_across_it():
    # 100 W until 1.03, 300 W after; samples every 100 ms do not land on the step.
    t = np.arange(0.0, 2.01, 0.1)
    p = np.where(t < 1.03, 100.0, 300.0)
    b = [1.03]
    e = power_curve(t, p, b).integral_to([0.5, 1.03, 1.8])
    assert e[1] - e[0] == pytest.approx(0.53 * 100.0)
    assert e[2] - e[1] == pytest.approx(0.77 * 300.0)
    # Without the boundary the plain trapezoid mixes the two levels over the sample interval around the step.
    plain = power_curve(t, p, []).integral_to([0.5, 1.03, 1.8])
    assert plain[1] - plain[0] != pytest.approx(0.53 * 100.0)


def test_segment_without_samples_falls_back_to_the_trapezoid():
    t = np.array([0.0, 1.0])
    p = np.array([100.0, 200.0])
    e = power_curve(t, p, [0.4, 0.6]).integral_to([0.4, 0.6])
    assert e[1] - e[0] == pytest.approx(0.2 * 150.0)


def test_power_curve_holds_outside_the_samples():
    curve = power_curve([1.0, 2.0], [50.0, 50.0])
    assert curve.integral_to(np.array([0.0, 3.0])).tolist() == pytest.approx([-50.0, 100.0])


@pytest.mark.parametrize("prev,cur,wrap,expected", [
    (10.0, 12.5, None, 2.5),
    (1000.0, 3.0, None, 3.0),  # NVML reset on driver reload: energy since the reset
    (262143.0, 5.0, 262144.0, 6.0),  # RAPL wrap at max_energy_range
    (7.0, 7.0, 100.0, 0.0),
])
def test_counter_increment(prev, cur, wrap, expected):
    assert counter_increment(prev, cur, wrap).joules == pytest.approx(expected)


def test_a_reset_is_believed_only_where_the_device_could_have_drawn_it():
    # 2.5 MJ "since a reset" 5 s after the last read, on a 700 W GPU: a counter from elsewhere, not a reset.
    step = counter_increment(2_600_000.0, 2_500_000.0, None, elapsed_s=5.0, max_power_w=700.0)
    assert step.joules == 0.0 and "went backwards" in step.note
    # 1.2 kJ since a reset in 5 s at up to 700 W is plausible (3.5 kJ): taken, and said.
    step = counter_increment(2_600_000.0, 1200.0, None, elapsed_s=5.0, max_power_w=700.0)
    assert step.joules == 1200.0 and step.note == "counter reset"
    # A forward jump beyond the power limit is refused as well.
    assert counter_increment(10.0, 50_010.0, None, elapsed_s=0.1, max_power_w=700.0).joules == 0.0
    assert counter_increment(10.0, 80.0, None, elapsed_s=0.1, max_power_w=700.0).joules == 70.0
    # Two reads 10 ms apart, the second seeing a 200 ms update (one that carried a dropped one) at 420 W: real.
    assert counter_increment(10.0, 94.0, None, elapsed_s=0.01, max_power_w=700.0).joules == 84.0


def test_counter_points_keep_the_first_stamp_of_each_value():
    u, e = counter_points([0.1, 0.1, 0.2, 0.3, 0.3], [1.0, 1.0, 2.0, 2.0, 3.0])
    assert u.tolist() == [0.1, 0.2, 0.3]
    assert e.tolist() == [1.0, 2.0, 3.0]


def test_counter_interpolates_linearly_without_power():
    u = np.array([0.0, 0.1, 0.2])
    e = np.array([0.0, 10.0, 30.0])
    assert counter_energy_at(u, e, [0.05, 0.15]).tolist() == pytest.approx([5.0, 20.0])
    assert counter_energy_at(u, e, [0.3, -1.0]).tolist() == [30.0, 0.0]  # nothing past the updates: held


def _grid_counter(trace: StepTrace, phase: float, period: float, t0: float, t1: float):
    """Update instants and exact cumulative energy of a counter on a grid, as the sensor would stamp them."""
    u = phase + np.arange(math.ceil((t0 - phase) / period), math.floor((t1 - phase) / period) + 1) * period
    return u, np.array([trace.energy(t0, x) for x in u])


def test_counter_shaped_by_power_is_exact_for_steps_at_boundaries():
    trace = StepTrace(steps=((1.0, 100.0), (1.0, 300.0)))
    u, e = _grid_counter(trace, phase=0.0371, period=0.1, t0=0.0, t1=10.0)
    reads = np.arange(0.013, 10.0, 0.1)
    power = np.array([trace.power(x) for x in reads])
    bounds = np.arange(1.0, 10.0, 1.0)
    series = DeviceSeries(reads, power, u, e)
    de = device_energy_at(series, bounds, bounds)
    assert de.method == "counter"
    for a, b, got in zip(bounds[:-1], bounds[1:], np.diff(de.at)):
        assert got == pytest.approx(trace.energy(a, b), rel=1e-9)


def test_counter_without_shaping_is_off_at_a_mid_interval_step():
    trace = StepTrace(steps=((1.0, 100.0), (1.0, 300.0)))
    u, e = _grid_counter(trace, phase=0.05, period=0.1, t0=0.0, t1=4.0)
    got = np.diff(counter_energy_at(u, e, [1.0, 2.0]))[0]
    # The step at 1.0 sits halfway through an update interval: linear interpolation gives it 5 J of low power.
    assert got == pytest.approx(trace.energy(1.0, 2.0) - 10.0)


def test_power_only_device_is_integrated_and_estimate_is_labelled():
    series = DeviceSeries.of(power=[(0.0, 10.0), (1.0, 10.0), (2.0, 10.0)])
    assert device_energy_at(series, [0.0, 2.0], []).method == "integrated"
    de = device_energy_at(series, [0.0, 2.0], [], estimated=True)
    assert de.method == "estimated"
    assert de.at[1] - de.at[0] == pytest.approx(20.0)


def test_no_data_gives_no_method():
    de = device_energy_at(DeviceSeries.of(), [0.0, 1.0], [])
    assert de.method is None and np.isnan(de.at).all()


def test_flags():
    assert find_gaps([0.0, 0.1, 0.2, 5.0, 5.1], max_gap=1.0) == [(0.2, 5.0)]
    assert overlaps((0.0, 2.0), (1.0, 3.0)) and not overlaps((0.0, 1.0), (1.0, 2.0))
    assert is_short(0.05, 0.1) and not is_short(0.2, 0.1) and not is_short(0.01, None)
    assert combine_methods(["counter", "estimated", "integrated"]) == "estimated"
    assert combine_methods([]) is None


def test_a_one_second_average_power_reading_is_turned_back_into_energy():
    trace = StepTrace(steps=((2.0, 100.0), (2.0, 300.0)))
    reads = np.arange(10.03, 30.0, 0.1)
    averaged = np.array([trace.energy(t - 1.0, t) for t in reads])  # what nvmlDeviceGetPowerUsage reports on H100
    bounds = np.arange(12.0, 28.01, 2.0)
    series = DeviceSeries.of(power=np.column_stack([reads, averaged]))
    recovered = device_energy_at(series, bounds, bounds, power_window_s=1.0)
    as_instant = device_energy_at(series, bounds, bounds)
    exact = np.array([trace.energy(a, b) for a, b in zip(bounds[:-1], bounds[1:])])
    err_recovered = np.abs(np.diff(recovered.at) / exact - 1.0).max()
    err_instant = np.abs(np.diff(as_instant.at) / exact - 1.0).max()
    # What remains is the readings' linear interpolation across the kinks the steps put in the average.
    assert err_recovered < 0.05 and err_instant > 0.4


def test_counter_shaping_ignores_power_that_missed_what_the_counter_saw():
    # 100 W throughout, except a 5 ms burst at 10 kW inside [0.1, 0.2] that no power sample caught.
    u = np.array([0.0, 0.1, 0.2, 0.3])
    e = np.array([0.0, 10.0, 10.0 + 10.0 + 49.5, 79.5])
    power = [(0.05, 100.0), (0.15, 100.0), (0.25, 100.0)]
    series = DeviceSeries.of(power=power, counter=np.column_stack([u, e]))
    got = device_energy_at(series, [0.15], [])
    assert got.at[0] == pytest.approx(10.0 + 0.5 * 59.5)  # linear inside the interval, not 100 W-shaped


@pytest.mark.parametrize("grid_phase", [0.011, 0.043, 0.077])
def test_where_power_readings_miss_bursts_the_counters_rate_on_either_side_splits_the_update(grid_phase):
    # 0.2 s phases: 7 ms bursts at 1 kW every 20 ms (80 W between), then quiet at 50 W. Power is read 10 times a
    # second and never lands on a burst, so it disagrees with the counter and cannot shape the updates.
    burst = tuple(x for _ in range(10) for x in ((0.007, 1000.0), (0.013, 80.0)))
    trace = StepTrace(steps=burst + ((0.2, 50.0),))
    u, e = _grid_counter(trace, phase=grid_phase, period=0.1, t0=0.0, t1=20.0)
    reads = np.arange(0.053, 20.0, 0.1)
    power = np.array([trace.power(x) for x in reads])
    bounds = np.arange(0.4, 19.6, 0.2)
    exact = np.array([trace.energy(a, b) for a, b in zip(bounds[:-1], bounds[1:])])
    ours = np.diff(device_energy_at(DeviceSeries(reads, power, u, e), bounds, bounds).at)
    linear = np.diff(counter_energy_at(*counter_points(u, e), bounds))
    quiet = slice(1, None, 2)  # the quiet phases, which a linear split overcharges with their neighbours' bursts
    err_ours = abs(ours[quiet].sum() / exact[quiet].sum() - 1.0)
    err_linear = abs(linear[quiet].sum() / exact[quiet].sum() - 1.0)
    assert err_ours < 0.2 * err_linear and err_ours < 0.15


def _steady_counter(t0: float, t1: float, watts: float, period: float = 0.1, err: float = 0.0) -> DeviceSeries:
    u = np.arange(t0, t1 + 1e-9, period)
    return DeviceSeries(np.empty(0), np.empty(0), u, watts * (u - t0), np.full(u.size, err), np.ones(u.size))


def test_time_before_the_first_or_after_the_last_sample_gets_no_energy():
    from telemetry_service.energy import phase_energies

    series = _steady_counter(1000.0, 1010.0, 300.0)
    starts, ends = np.array([-2600.0, 1002.0, 1009.0, 5000.0]), np.array([-2599.0, 1003.0, 1011.0, 5001.0])
    pe = phase_energies(series, 4, np.arange(4), ["past", "inside", "over-end", "future"], starts + 0, ends,
                        -2600.0, 5001.0, None)
    assert pe.energy_j[0] == 0.0 and pe.energy_j[3] == 0.0  # no counter reading near them: nothing invented
    assert pe.energy_j[1] == pytest.approx(300.0)
    assert pe.energy_j[2] == pytest.approx(300.0, rel=1e-9)  # only the covered second of the two
    assert pe.complete.tolist() == [False, True, False, False]
    assert pe.total_complete is False
    assert pe.total_j == pytest.approx(3000.0)


def test_a_boundary_inside_an_update_interval_states_its_timing_uncertainty():
    from telemetry_service.energy import phase_energies

    # 300 W; each update instant known to +-2 ms (standard uncertainty): a boundary at a fraction f of an interval
    # moves by 300 W x ((1 - f) 2 ms, f 2 ms) in quadrature; a phase has two such boundaries.
    series = _steady_counter(1000.0, 1010.0, 300.0, err=0.002)
    pe = phase_energies(series, 1, [0], ["p"], [1002.025], [1003.05], 1000.0, 1010.0, None)
    one = lambda f: 300.0 * 0.002 * math.hypot(1 - f, f)  # noqa: E731
    assert pe.energy_j[0] == pytest.approx(300.0 * 1.025)
    assert pe.stderr_j[0] == pytest.approx(math.hypot(one(0.25), one(0.5)), rel=1e-6)
    assert pe.located[0] == 2 and pe.timed[0] == 2


def test_a_name_is_short_by_its_typical_interval_not_its_shortest():
    from telemetry_service.energy import phase_energies

    series = _steady_counter(1000.0, 1100.0, 300.0)
    starts = 1001.0 + np.arange(56) * 1.5
    ends = starts + np.where(np.arange(56) == 7, 0.02, 1.0)  # one interval in 56 is short
    pe = phase_energies(series, 2, np.r_[np.zeros(56, int), [1] * 12], ["train_step", "tick"],
                        np.r_[starts, 1001.0 + np.arange(12)], np.r_[ends, 1001.0 + np.arange(12) + 0.01],
                        1000.0, 1100.0, None)
    assert pe.short.tolist() == [False, True]
