"""One device's energy: its samples composed into E(t) at any instant, and energy per phase name."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from telemetry_service.energy.attribution import AttributionFit, attribute, tagged_fit
from telemetry_service.energy.common import FloatArray, Method, is_short
from telemetry_service.energy.counter import counter_energy_at, counter_points
from telemetry_service.energy.partition import Partition, innermost_partition
from telemetry_service.energy.power import AveragedPowerCurve, PowerCurve, averaged_power_curve, power_curve


@dataclass(frozen=True)
class DeviceSeries:
    """One device's stored samples: its power readings and its counter points (each may be empty)."""

    power_t: FloatArray
    power_w: FloatArray
    counter_t: FloatArray  # the update instant each counter value belongs to
    counter_j: FloatArray  # unwrapped cumulative energy

    @staticmethod
    def of(power: ArrayLike = (), counter: ArrayLike = ()) -> DeviceSeries:
        """From (t, W) and (update instant, J) pairs."""
        p = np.asarray(power, dtype=np.float64).reshape(-1, 2)
        c = np.asarray(counter, dtype=np.float64).reshape(-1, 2)
        return DeviceSeries(p[:, 0], p[:, 1], c[:, 0], c[:, 1])


@dataclass(frozen=True)
class DeviceEnergy:
    """Cumulative energy at each requested instant, how it was found, and the span the data speaks for."""

    at: FloatArray
    method: Method | None
    covered: tuple[float, float] | None


def device_energy_at(series: DeviceSeries, queries: ArrayLike, boundaries: ArrayLike,
                     estimated: bool = False, power_window_s: float | None = None) -> DeviceEnergy:
    """Cumulative energy of one device at each query instant (differences give interval energies).

    A power reading that is a moving average over `power_window_s` is turned back into energy (see
    AveragedPowerCurve) rather than integrated as if it were power at its instant.
    """
    q = np.asarray(queries, dtype=np.float64)
    shape: PowerCurve | AveragedPowerCurve | None
    if power_window_s:
        shape = averaged_power_curve(series.power_t, series.power_w, power_window_s) if series.power_t.size else None
    else:
        shape = power_curve(series.power_t, series.power_w, boundaries) if series.power_t.size else None
    u, e = counter_points(series.counter_t, series.counter_j)
    if u.size >= 2:
        return DeviceEnergy(counter_energy_at(u, e, q, shape, boundaries), "counter", (float(u[0]), float(u[-1])))
    if shape is not None and not shape.empty:
        covered = (float(shape.knots[0]), float(shape.knots[-1]))
        return DeviceEnergy(shape.integral_to(q), "estimated" if estimated else "integrated", covered)
    return DeviceEnergy(np.full(q.shape, np.nan), None, None)



ATTRIBUTE_BELOW_PERIODS = 1.5
MIN_REPEATS = 10
MAX_FIT_WINDOWS = 200_000


@dataclass(frozen=True)
class PhaseEnergies:
    """One device's energy over a run and per phase name (indexed as the caller's names)."""

    total_j: float
    method: Method | None  # of the device's direct figures
    energy_j: FloatArray
    methods: list[Method | None]
    stderr_j: FloatArray  # zero for direct figures
    short: NDArray[np.bool_]
    complete: NDArray[np.bool_]
    attribution: dict[str, float] | None  # power per innermost label, where a fit was made


def phase_energies(series: DeviceSeries, n_names: int, name_idx: ArrayLike, names: list[str], starts: ArrayLike,
                   ends: ArrayLike, t0: float, t1: float, period: float | None, estimated: bool = False,
                   power_window_s: float | None = None) -> PhaseEnergies:
    """Energy per phase name: E(end) - E(start) summed over each name's intervals, and, for names shorter than the
    sensor's update period that repeat often enough, the attributed figure instead.

    `period` is the device's update period (the counter's, or the power reading's); `power_window_s` is set for a
    power reading that is an average over that window (each reading then observes a window's energy).
    """
    idx = np.asarray(name_idx, dtype=np.int64)
    s = np.asarray(starts, dtype=np.float64)
    e = np.asarray(ends, dtype=np.float64)
    boundaries = np.concatenate([s, e, [t0, t1]])
    queries, inverse = np.unique(boundaries, return_inverse=True)
    de = device_energy_at(series, queries, boundaries, estimated, power_window_s)
    at = de.at[inverse]
    k = s.size
    per = at[k:2 * k] - at[:k]
    ok = np.isfinite(per)
    energy = np.bincount(idx[ok], weights=per[ok], minlength=n_names).astype(np.float64)
    counts = np.bincount(idx, minlength=n_names)
    present = counts > 0
    methods: list[Method | None] = [de.method if present[j] else None for j in range(n_names)]
    stderr = np.zeros(n_names)
    durations = e - s
    short = np.zeros(n_names, dtype=bool)
    complete = present.copy()
    short[np.unique(idx[is_short(durations, period)])] = True
    if de.covered is not None:
        tol = 2.0 * (period or 0.1)
        outside = (s < de.covered[0] - tol) | (e > de.covered[1] + tol) | ~ok
        complete[np.unique(idx[outside])] = False
    else:
        complete[:] = False
    total = float(at[-1] - at[-2])

    attribution = None
    mean_duration = np.bincount(idx, weights=durations, minlength=n_names) / np.maximum(counts, 1)
    wanted = present & (counts >= MIN_REPEATS) & (period is not None) & \
        (mean_duration < ATTRIBUTE_BELOW_PERIODS * (period or 0.0))
    if wanted.any() and de.method in ("counter", "integrated"):
        partition = innermost_partition([names[i] for i in idx], s, e, t0, t1)
        # Fit only where the repeated pattern lives: time outside it is unmarked too, but spent on other work.
        mine = wanted[idx]
        fit = _fit(partition, series, de.method, float(s[mine].min()), float(e[mine].max()), power_window_s)
        if fit is not None and fit.identifiable:
            occupancy = partition.time_in(s, e)
            by_name = np.zeros((n_names, len(partition.labels)))
            np.add.at(by_name, idx, occupancy)
            for j in np.nonzero(wanted)[0]:
                energy[j], stderr[j] = fit.energy(by_name[j])
                methods[j] = "attributed"
            attribution = {label: float(w) for label, w in zip(fit.labels, fit.power_w)}
    return PhaseEnergies(total_j=total, method=de.method, energy_j=energy, methods=methods, stderr_j=stderr,
                         short=short, complete=complete, attribution=attribution)


def _fit(partition: Partition, series: DeviceSeries, method: Method | None, t0: float, t1: float,
         power_window_s: float | None) -> AttributionFit | None:
    if method == "counter":
        u, e = counter_points(series.counter_t, series.counter_j)
        inside = (u >= t0) & (u <= t1)
        u, e = u[inside], e[inside]
        if u.size < 3:
            return None
        # Past a few hundred thousand windows the fit is as good as settled, so a long run uses a sample of them:
        # drawn at random (a regular stride could fall in step with the training loop), with a fixed seed so the
        # answer never changes between queries; the stated uncertainty comes from the windows used.
        k = np.arange(u.size - 1)
        if k.size > MAX_FIT_WINDOWS:
            k = np.sort(np.random.default_rng(0).choice(k, MAX_FIT_WINDOWS, replace=False))
        return attribute(partition, u[k], u[k + 1], e[k + 1] - e[k])
    inside = (series.power_t >= t0) & (series.power_t <= t1)
    t, p = series.power_t[inside], series.power_w[inside]
    if power_window_s:
        keep = t - power_window_s >= t0
        return attribute(partition, t[keep] - power_window_s, t[keep], p[keep] * power_window_s)
    return tagged_fit(partition, t, p, t0, t1)
