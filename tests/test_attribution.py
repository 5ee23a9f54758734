"""Attribution of phases shorter than the counter's update period, against synthetic data with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from telemetry_service.energy import (
    UNMARKED,
    DeviceSeries,
    attribute,
    innermost_partition,
    phase_energies,
    tagged_power,
)

POWER = {"forward": 300.0, "backward": 450.0, "optimizer": 200.0}
PIECES = (("forward", 0.02), ("backward", 0.04), ("optimizer", 0.01))
IDLE_W = 80.0


def _training(steps: int, gap: float = 0.037, t0: float = 1000.0, jitter: float = 0.0, seed: int = 0):
    """Phase markers of a training loop (train_step encloses forward, backward, optimizer) and the true power."""
    rng = np.random.default_rng(seed)
    names, starts, ends, segments = [], [], [], []
    t = t0
    for _ in range(steps):
        step_start = t
        for name, d in PIECES:
            d = d * (1.0 + jitter * rng.uniform(-1, 1))
            names.append(name), starts.append(t), ends.append(t + d), segments.append((t, t + d, POWER[name]))
            t += d
        names.append("train_step"), starts.append(step_start), ends.append(t)
        g = gap * (1.0 + jitter * rng.uniform(-1, 1))
        segments.append((t, t + g, IDLE_W))
        t += g
    return names, np.array(starts), np.array(ends), np.array(segments), t


def _cumulative(segments: np.ndarray, x: np.ndarray) -> np.ndarray:
    a, b, w = segments[:, 0], segments[:, 1], segments[:, 2]
    return np.array([np.sum(np.clip(np.minimum(b, xi) - a, 0.0, None) * w) for xi in x])


def _counter(segments: np.ndarray, t0: float, t1: float, period: float = 0.1, phase: float = 0.0371):
    u = t0 + phase + np.arange(int((t1 - t0 - phase) / period) + 1) * period
    return u, _cumulative(segments, u) 


def test_partition_gives_time_to_the_innermost_phase():
    part = innermost_partition(["step", "fwd", "bwd"], [0.0, 0.0, 0.3], [1.0, 0.3, 0.8], -1.0, 2.0)
    held = dict(zip(part.labels, part.time_in([-1.0], [2.0])[0]))
    assert held == pytest.approx({"bwd": 0.5, "fwd": 0.3, "step": 0.2, UNMARKED: 2.0})
    assert [part.labels[i] for i in part.label_at([0.1, 0.5, 0.9, 1.5])] == ["fwd", "bwd", "step", UNMARKED]


def test_back_to_back_phases_do_not_overlap():
    part = innermost_partition(["a", "b"], [0.0, 1.0], [1.0, 2.0], 0.0, 2.0)
    held = dict(zip(part.labels, part.time_in([0.0], [2.0])[0]))
    assert held == pytest.approx({"a": 1.0, "b": 1.0, UNMARKED: 0.0})


def test_exact_recovery_on_noise_free_data():
    names, s, e, seg, t1 = _training(300)
    part = innermost_partition(names, s, e, 1000.0, t1)
    u, cum = _counter(seg, 1000.0, t1)
    fit = attribute(part, u[:-1], u[1:], np.diff(cum))
    assert fit is not None and fit.identifiable
    power = dict(zip(fit.labels, fit.power_w))
    for name, watts in POWER.items():
        assert power[name] == pytest.approx(watts, rel=1e-9)
    assert power[UNMARKED] == pytest.approx(IDLE_W, rel=1e-9)
    assert power["train_step"] == 0.0  # it never holds time of its own: its children do


def test_pattern_in_lockstep_with_the_counter_is_not_identifiable():
    # A 100 ms step on a 100 ms counter: every window sees the same mix, so the pieces cannot be told apart.
    names, s, e, seg, t1 = _training(200, gap=0.03)
    part = innermost_partition(names, s, e, 1000.0, t1)
    u, cum = _counter(seg, 1000.0, t1)
    fit = attribute(part, u[:-1], u[1:], np.diff(cum))
    assert fit is not None and not fit.identifiable


def test_recovery_under_noise_within_its_stated_uncertainty():
    names, s, e, seg, t1 = _training(2000, jitter=0.2, seed=3)
    part = innermost_partition(names, s, e, 1000.0, t1)
    u, cum = _counter(seg, 1000.0, t1)
    rng = np.random.default_rng(7)
    increments = np.diff(cum) + rng.normal(0.0, 0.5, u.size - 1)  # 0.5 J of read noise per 100 ms window
    fit = attribute(part, u[:-1], u[1:], increments)
    assert fit is not None
    occ = np.zeros(len(part.labels))
    forward = [i for i, n in enumerate(names) if n == "forward"]
    occ += part.time_in(s[forward], e[forward]).sum(axis=0)
    energy, stderr = fit.energy(occ)
    truth = float(np.sum((e[forward] - s[forward]) * POWER["forward"]))
    assert abs(energy - truth) < 4 * stderr  # the stated uncertainty covers the error
    assert abs(energy - truth) / truth < 0.02  # and, over 2 000 repeats, it is within 2 %


def test_tagged_power_is_the_mean_of_samples_in_each_phase():
    part = innermost_partition(["a", "b"], [0.0, 1.0], [1.0, 2.0], 0.0, 3.0)
    tagged = tagged_power(part, [0.5, 0.7, 1.5, 2.5], [10.0, 20.0, 40.0, 5.0])
    assert tagged == {"a": (15.0, 2), "b": (40.0, 1), UNMARKED: (5.0, 1)}


def test_phase_energies_attribute_short_repeated_phases_and_keep_long_ones_direct():
    names, s, e, seg, t1 = _training(400, jitter=0.1, seed=1)
    long_start, long_end = t1 + 0.5, t1 + 3.5  # a 3 s evaluation after the loop at 120 W
    seg = np.vstack([seg, [t1, long_start, IDLE_W], [long_start, long_end, 120.0], [long_end, long_end + 1.0, IDLE_W]])
    names, s, e = names + ["eval"], np.append(s, long_start), np.append(e, long_end)
    t_end = long_end + 1.0
    u, cum = _counter(seg, 1000.0, t_end)
    reads = np.arange(1000.013, t_end, 0.1)
    power = np.array([seg[(seg[:, 0] <= x) & (x < seg[:, 1]), 2][0] for x in reads])
    series = DeviceSeries(reads, power, u, cum)
    labels = sorted(set(names))
    idx = np.array([labels.index(n) for n in names])
    pe = phase_energies(series, len(labels), idx, labels, s, e, 1000.0, t_end - 0.2, period=0.1)
    got = dict(zip(labels, pe.energy_j))
    methods = dict(zip(labels, pe.methods))
    for name in POWER:
        mask = np.array(names) == name
        truth = float(np.sum((e[mask] - s[mask]) * POWER[name]))
        assert methods[name] == "attributed"
        assert got[name] == pytest.approx(truth, rel=1e-6)
    assert methods["eval"] == "counter" and got["eval"] == pytest.approx(360.0, rel=1e-3)
    assert dict(zip(labels, pe.short))["forward"] and not dict(zip(labels, pe.short))["eval"]


def test_tagged_power_attributes_short_phases_of_a_device_without_counter():
    # Instant power only (no counter): 20 ms forward, 40 ms backward, 10 ms optimizer step, 37 ms gap, read at
    # 10 Hz; over many steps every piece gets samples, and the pieces' energies come out near their truth.
    names, s, e, seg, t1 = _training(600, jitter=0.3, seed=5)
    reads = np.arange(1000.0 + 0.0137, t1, 0.1)
    owner = np.searchsorted(seg[:, 0], reads, side="right") - 1
    power = seg[owner, 2]
    labels = sorted(set(names))
    idx = np.array([labels.index(n) for n in names])
    pe = phase_energies(DeviceSeries(reads, power, np.empty(0), np.empty(0)), len(labels), idx, labels, s, e,
                        1000.0, t1, period=0.1)
    got = dict(zip(labels, pe.energy_j))
    for name in POWER:
        mask = np.array(names) == name
        truth = float(np.sum((e[mask] - s[mask]) * POWER[name]))
        assert dict(zip(labels, pe.methods))[name] == "attributed"
        assert got[name] == pytest.approx(truth, rel=0.05)


def test_a_label_held_at_zero_by_the_bound_still_states_an_uncertainty():
    names, s, e, seg, t1 = _training(500, jitter=0.2, seed=5)
    seg[seg[:, 2] == POWER["optimizer"], 2] = 0.0  # the optimizer draws nothing: the fit sits on its bound
    part = innermost_partition(names, s, e, 1000.0, t1)
    u, cum = _counter(seg, 1000.0, t1)
    rng = np.random.default_rng(2)
    fit = attribute(part, u[:-1], u[1:], np.diff(cum) + rng.normal(0.0, 0.5, u.size - 1))
    assert fit is not None
    j = part.labels.index("optimizer")
    assert fit.power_w[j] == 0.0  # on the bound (seed chosen so)
    assert fit.covariance[j, j] > 0.0
