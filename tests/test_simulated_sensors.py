"""The simulated sensors against answers worked out by hand: each profile, determinism, restarts, replay."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pynvml
import pytest

from telemetry_service.config import Settings
from telemetry_service.sensors.simulated import (
    PROFILES, ReplayGpu, SensorProfile, SimulatedGpu, SimulatedNvml, StepTrace, load_gpus,
)
from telemetry_service.sensors.simulated.profiles import uniform, uniform_many
from telemetry_service.sensors.simulated.replay import read_recording

T0 = 1_800_000_000.0  # the driver loads here; every instant below is measured from it
CONSTANT = StepTrace(((1.0, 300.0),))
RECORDING = Path(__file__).parent / "data" / "synthetic-h100-like.json.gz"


def gpu(profile: str | SensorProfile, trace: StepTrace = CONSTANT, **kw: object) -> SimulatedGpu:
    p = PROFILES[profile] if isinstance(profile, str) else profile
    return SimulatedGpu(trace=trace, profile=p, driver_loaded_at=T0, **kw)  # type: ignore[arg-type]


def field(nvml: SimulatedNvml) -> pynvml.c_nvmlFieldValue_t:
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    return nvml.nvmlDeviceGetFieldValues(h, [pynvml.NVML_FI_DEV_POWER_INSTANT])[0]


@pytest.mark.parametrize("ms", [10, 20, 50, 100, 200])
def test_the_counter_holds_its_last_update_on_its_own_grid(ms: int) -> None:
    g = gpu(f"ideal-{ms}ms", grid_anchor=T0 + 0.005)
    period = ms / 1000
    for t in (T0 + 0.5 + 0.001, T0 + 7.3, T0 + 60.0 + period * 0.99):
        last_update = T0 + 0.005 + math.floor((t - T0 - 0.005) / period) * period
        assert g.counter_mj(t) == pytest.approx(300_000 * (last_update - T0), abs=1)


def test_the_counter_reads_as_pynvml_does_and_absent_features_are_not_supported() -> None:
    nvml = SimulatedNvml([gpu("no-counter-average")], now=lambda: T0 + 10.0)
    nvml.nvmlInit()
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        nvml.nvmlDeviceGetTotalEnergyConsumption(h)
    assert field(nvml).nvmlReturn == pynvml.NVML_ERROR_NOT_SUPPORTED
    assert nvml.nvmlDeviceGetPowerUsage(h) == 300_000  # mW, the 1 s average of a constant
    nvml.nvmlShutdown()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        nvml.nvmlDeviceGetPowerUsage(h)


def test_init_is_reference_counted() -> None:
    nvml = SimulatedNvml([gpu("ideal-100ms")], now=lambda: T0 + 1.0)
    nvml.nvmlInit()
    nvml.nvmlInitWithFlags(0)
    nvml.nvmlShutdown()
    assert nvml.nvmlDeviceGetTotalEnergyConsumption(nvml.nvmlDeviceGetHandleByIndex(0)) > 0


def test_a_dropped_update_holds_the_counter_until_the_next_carries_both() -> None:
    g = gpu(replace(PROFILES["drops-100ms"], drop=0.3), grid_anchor=T0, seed=7)
    k = next(k for k in range(1, 1000) if g.grid.dropped(k) and not g.grid.dropped(k - 1) and not g.grid.dropped(k + 1))
    before, at_drop, after = (g.counter_mj(T0 + 0.1 * j + 0.01) for j in (k - 1, k, k + 1))
    assert at_drop == before
    assert after - at_drop == pytest.approx(2 * 30_000, abs=2)  # two updates of 100 ms at 300 W


def test_an_update_is_readable_only_after_its_latency() -> None:
    g = gpu("latency-100ms", grid_anchor=T0)
    latency, k = 0.03, 42
    u_k = T0 + 0.1 * k
    assert g.counter_mj(u_k + latency / 2) == pytest.approx(300_000 * 0.1 * (k - 1), abs=1)
    assert g.counter_mj(u_k + latency + 1e-6) == pytest.approx(300_000 * 0.1 * k, abs=1)


def test_part_time_sensing_misses_a_burst_outside_the_observed_quarter() -> None:
    # 400 W over the first half of every 100 ms window, nothing over the second; the sensor sees the last quarter.
    early = gpu("part-time-100ms", trace=StepTrace(((0.05, 400.0), (0.05, 0.0)), anchor=T0), grid_anchor=T0)
    t = T0 + 5.001
    # Near 1.8e9 s an instant is good to ~0.2 µs: a window's edges may graze the next burst by that much.
    assert early.counter_mj(t) == pytest.approx(0, abs=5)
    assert early.true_energy(T0, T0 + 5.0) == pytest.approx(1000.0)
    assert early.sensor_energy(T0, T0 + 5.0) == pytest.approx(0.0, abs=0.005)
    watts, produced = early.instant_power(t)
    assert watts == pytest.approx(0.0, abs=0.05) and produced == pytest.approx(T0 + 5.0)  # when the sensor made it
    # The same burst inside the observed quarter counts four times over.
    late = gpu("part-time-100ms", trace=StepTrace(((0.075, 0.0), (0.025, 400.0)), anchor=T0), grid_anchor=T0)
    assert late.counter_mj(t) == pytest.approx(4 * 1000 * late.true_energy(T0, T0 + 5.0), abs=10)


def test_part_time_sums_over_many_windows_equal_the_sum_of_each_window() -> None:
    trace = StepTrace(((0.013, 450.0), (0.021, 80.0), (0.007, 300.0)), anchor=T0)
    g = gpu("part-time-100ms", trace=trace, grid_anchor=T0 + 0.004)
    k = 9_000  # more than two chunks of windows
    u = [T0 + 0.004 + 0.1 * j for j in range(0, k + 1)]
    by_hand = trace.cumulative(u[0]) - trace.cumulative(T0) + sum(
        4 * trace.energy(b - 0.25 * (b - a), b) for a, b in zip(u, u[1:]))  # the last quarter of each window
    assert g.counter_mj(u[-1] + 0.01) == pytest.approx(1000 * by_hand, abs=2)


def test_jittered_instants_stay_within_ten_percent_and_are_the_same_every_time() -> None:
    g = gpu("jitter-100ms", grid_anchor=T0, seed=3)
    ks = np.arange(-50, 5000)
    offsets = g.grid.instants(ks) - (T0 + 0.1 * ks)
    assert np.all(np.abs(offsets) <= 0.01 + 1e-9) and offsets.std() > 0.004
    twin = gpu("jitter-100ms", grid_anchor=T0, seed=3)
    ts = T0 + 100.0 + np.sort(np.random.default_rng(1).uniform(0, 30, 500))
    first = [g.counter_mj(t) for t in ts]
    assert first == [twin.counter_mj(t) for t in ts] == [g.counter_mj(t) for t in ts]
    assert all(b >= a for a, b in zip(first, first[1:]))


def test_the_randomness_is_one_function_in_python_and_numpy() -> None:
    ks = np.array([-3, 0, 1, 2**40, 123456789])
    assert uniform_many(99, 1, ks).tolist() == [uniform(99, 1, int(k)) for k in ks]


def test_a_drifting_period_wanders_by_tenths_of_a_percent() -> None:
    g = gpu("drift-100ms", grid_anchor=T0)
    periods = np.diff(g.grid.instants(np.arange(0, 6001)))  # one 10-minute cycle
    assert periods.min() == pytest.approx(0.0997, rel=1e-4) and periods.max() == pytest.approx(0.1003, rel=1e-4)
    t = T0 + 321.2345
    k = g.grid.last_index(t)
    assert g.grid.instant(k) <= t < g.grid.instant(k + 1)


def test_instant_power_can_lag_and_refresh_on_its_own_grid() -> None:
    step = StepTrace(((1.0, 100.0), (1.0, 500.0)), anchor=T0)  # 500 W from T0 + 1
    lagging = gpu("lagging-power", trace=step)
    assert lagging.instant_power(T0 + 1.025) == (100.0, T0 + 1.025)
    assert lagging.instant_power(T0 + 1.051)[0] == 500.0
    refreshed = gpu("refresh-power-20ms", trace=step, grid_anchor=T0 + 0.003)
    nvml = SimulatedNvml([refreshed], now=lambda: T0 + 1.001)
    nvml.nvmlInit()
    value = field(nvml)
    assert value.value.uiVal == 100_000 and value.timestamp == round((T0 + 0.983) * 1e6)
    nvml.now = lambda: T0 + 1.03
    value = field(nvml)
    assert value.value.uiVal == 500_000 and value.timestamp == round((T0 + 1.023) * 1e6)


def test_average_power_is_a_one_second_moving_average_without_an_instant_field() -> None:
    step = StepTrace(((1.0, 100.0), (1.0, 500.0)), anchor=T0)
    g = gpu("average-power", trace=step)
    assert g.instant_power(T0 + 1.25) is None
    assert g.power_usage_mw(T0 + 1.25) == 200_000  # 0.75 s at 100 W and 0.25 s at 500 W


def test_a_restarted_daemon_sees_the_same_counter_continued() -> None:
    first, second = load_gpus(2, None), load_gpus(2, None)
    assert [g.grid_anchor for g in first] == [g.grid_anchor for g in second]
    assert first[0].grid_anchor != first[1].grid_anchor  # each GPU on a grid of its own
    t = first[0].driver_loaded_at + 50_000.0
    assert [g.counter_mj(t) for g in first] == [g.counter_mj(t) for g in second]
    assert second[0].counter_mj(t + 1.0) > first[0].counter_mj(t)


def test_a_spec_names_profiles_and_keeps_driver_load_and_resets(tmp_path: Path) -> None:
    spec = tmp_path / "gpus.json"
    spec.write_text('{"profile": "jitter-100ms", "gpus": ['
                    '{"trace": {"steps": [[1, 300]]}, "driver_loaded_at": 1800000000, "resets": [1800000010.05],'
                    ' "counter_phase_s": 0.0},'
                    '{"profile": "no-counter", "power": "average"}]}')
    a, b = load_gpus(0, spec)
    assert isinstance(a, SimulatedGpu) and isinstance(b, SimulatedGpu)
    assert a.profile.name == "jitter-100ms" and not b.profile.counter and b.profile.power_mode == "average"
    assert a.counter_mj(T0 + 10.5) < 300_000 * 0.5  # counted from the reset, not from the driver load
    assert load_gpus(0, spec, "drops-100ms")[0].profile.name == "drops-100ms"
    assert load_gpus(1, None, "part-time-100ms")[0].profile.observed == 0.25


def test_an_unknown_profile_is_refused_by_the_settings() -> None:
    assert Settings(simulate_profile="ideal-20ms").simulate_profile == "ideal-20ms"
    with pytest.raises(ValueError, match="unknown sensor profile"):
        Settings(simulate_profile="perfect")


def test_a_recording_replays_its_counter_and_power_as_recorded() -> None:
    reads = read_recording(RECORDING)["gpus"][0]["reads"]
    start = T0
    (g,) = load_gpus(0, RECORDING)
    assert isinstance(g, ReplayGpu)
    g.start_at = start
    first, shift = reads["t0"][0], start - reads["t0"][0]
    for i in (0, 37, 104, 199):
        mid = 0.5 * (reads["t0"][i] + reads["t1"][i]) + shift
        assert g.counter_mj(mid) == reads["counter_mj"][i]
        watts, produced = g.instant_power(mid)
        assert watts * 1000 == reads["power_instant_mw"][i]
        assert produced == pytest.approx(reads["power_instant_ts_us"][i] / 1e6 + shift, abs=1e-6)
        assert g.power_usage_mw(mid) == reads["power_usage_mw"][i]
    # Looping, the counter goes on from where the recording ended.
    one_pass = reads["t1"][-1] - first
    gained = reads["counter_mj"][-1] - reads["counter_mj"][0]
    assert g.counter_mj(start + one_pass + 0.001) == reads["counter_mj"][0] + gained
    assert g.true_energy(start, start + 2 * one_pass) == pytest.approx(2 * gained / 1000, rel=0.02)


def test_a_replayed_gpu_reads_through_the_binding() -> None:
    (g,) = load_gpus(0, RECORDING)
    nvml = SimulatedNvml([g], now=lambda: g.start_at + 1.5)
    nvml.nvmlInit()
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    assert nvml.nvmlDeviceGetArchitecture(h) == 9
    assert nvml.nvmlDeviceGetTotalEnergyConsumption(h) >= 5_000_000
    assert field(nvml).value.uiVal == 300_000


def test_serve_takes_a_profile_for_its_simulated_gpus(tmp_path: Path) -> None:
    from telemetry_service.cli import _parser, settings_from
    from telemetry_service.sensors.discover import discover

    args = _parser().parse_args(["serve", "--simulate-gpus", "2", "--simulate-profile", "drops-100ms"])
    settings = settings_from(args)
    found = discover(settings.cpu_tdp_w, tmp_path, settings.simulate_gpus, None, settings.simulate_profile)
    try:
        sim = next(s for s in found.sensors if getattr(s, "source", None) == "simulated")
        assert [g.profile.name for g in sim.nvml.gpus] == ["drops-100ms"] * 2  # type: ignore[attr-defined]
        assert {g.info.source for g in sim.gpus} == {"simulated"}  # type: ignore[attr-defined]
    finally:
        found.close()
