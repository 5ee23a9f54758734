"""One device's energy: its samples composed into E(t) at any instant, and energy per phase name."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from numpy.typing import ArrayLike, NDArray

from telemetry_service.energy.attribution import AttributionFit, attribute, tagged_fit
from telemetry_service.energy.common import FloatArray, Method, clean_readings, is_short
from telemetry_service.energy.counter import CounterPoints, counter_estimate, distinct_points
from telemetry_service.energy.partition import Partition, innermost_partition
from telemetry_service.energy.power import AveragedPowerCurve, PowerCurve, averaged_power_curve, power_curve
from telemetry_service.energy.uncertainty import Doubt, difference_variance


def _empty() -> FloatArray:
    return np.empty(0)


@dataclass(frozen=True)
class DeviceSeries:
    """One device's stored samples: its power readings and its counter points (each may be empty)."""

    power_t: FloatArray
    power_w: FloatArray
    counter_t: FloatArray  # the update instant each counter value belongs to
    counter_j: FloatArray  # unwrapped cumulative energy
    counter_err: FloatArray = field(default_factory=_empty)  # standard uncertainty of counter_t (NaN: unknown)
    counter_timing: FloatArray = field(default_factory=_empty)  # 0 edge, 1 grid, 2 read (NaN: unknown)

    @staticmethod
    def of(power: ArrayLike = (), counter: ArrayLike = ()) -> DeviceSeries:
        """From (t, W) and (update instant, J) pairs, or (update instant, J, stamp uncertainty, timing) rows."""
        p = np.asarray(power, dtype=np.float64).reshape(-1, 2)
        c = np.asarray(counter, dtype=np.float64)
        c = c.reshape(-1, c.shape[-1] if c.ndim == 2 else 2)
        extra = (c[:, 2], c[:, 3]) if c.shape[1] == 4 else ()
        return DeviceSeries(p[:, 0], p[:, 1], c[:, 0], c[:, 1], *extra)

    @cached_property
    def points(self) -> CounterPoints:
        """The distinct counter points, found once: every figure of a query rests on them."""
        return distinct_points(self.counter_t, self.counter_j, self.counter_err, self.counter_timing)

    def span(self) -> tuple[float, float] | None:
        """The stretch the data speaks for: first to last counter update, else first to last power reading."""
        pts = self.points
        if pts.size >= 2:
            return float(pts.u[0]), float(pts.u[-1])
        t = self.power_t[np.isfinite(self.power_t) & np.isfinite(self.power_w)]
        return (float(t.min()), float(t.max())) if t.size else None

    def resolution(self) -> float | None:
        """What the stored data resolves: the typical spacing of counter points, else of power readings."""
        pts = self.points
        if pts.size >= 3:
            return pts.resolution()
        return float(np.median(np.diff(self.power_t))) if self.power_t.size >= 3 else None


@dataclass(frozen=True)
class DeviceEnergy:
    """Cumulative energy at each requested instant with what can be wrong in it, the timing state behind it
    (counter only), the part extrapolated past the data, how it was found, the span the data speaks for, and
    the holes inside it that got no energy."""

    at: FloatArray
    doubt: Doubt
    timing: FloatArray
    extrapolated: FloatArray
    method: Method | None
    covered: tuple[float, float] | None
    holes: list[tuple[float, float]] = field(default_factory=list)


def _power_doubt(held: PowerCurve | AveragedPowerCurve, t: FloatArray, p: FloatArray, q: FloatArray) -> FloatArray:
    """Standard uncertainty of integrated power up to each q: where the power between the two samples around q
    went is a model (held at a boundary, or a straight line between samples); the two disagree by this much over
    the stretch from the sample before q, taken as the bound of a uniform doubt."""
    if t.size < 2:
        return np.zeros(q.shape)
    plain = power_curve(t, p)
    i = np.clip(np.searchsorted(t, q, side="right") - 1, 0, t.size - 1)
    before = t[i]
    gap = (held.integral_to(q) - held.integral_to(before)) - (plain.integral_to(q) - plain.integral_to(before))
    return np.abs(gap) / np.sqrt(3.0)


def _without_holes(curve: PowerCurve | AveragedPowerCurve, q: FloatArray,
                   holes: list[tuple[float, float]]) -> FloatArray:
    """The curve's integral up to each q, less what it puts inside holes: time without samples gets no energy."""
    at = curve.integral_to(q)
    for lo, hi in holes:
        base = curve.integral_to(np.array([lo]))[0]
        at = at - (curve.integral_to(np.clip(q, lo, hi)) - base)
    return at


def device_energy_at(series: DeviceSeries, queries: ArrayLike, boundaries: ArrayLike,
                     estimated: bool = False, power_window_s: float | None = None,
                     holes: list[tuple[float, float]] | None = None) -> DeviceEnergy:
    """Cumulative energy of one device at each query instant (differences give interval energies).

    A power reading that is a moving average over `power_window_s` is turned back into energy (see
    AveragedPowerCurve) rather than integrated as if it were power at its instant. Without a counter, the
    `holes` (stretches without a power reading) get no energy.
    """
    q = np.asarray(queries, dtype=np.float64)
    shape: PowerCurve | AveragedPowerCurve | None = None
    if series.power_t.size:
        shape = averaged_power_curve(series.power_t, series.power_w, power_window_s, boundaries=boundaries) \
            if power_window_s else power_curve(series.power_t, series.power_w, boundaries)
    pts = series.points
    if pts.size >= 2:
        est = counter_estimate(pts, q, shape, boundaries)
        return DeviceEnergy(est.at, est.doubt, est.timing, est.extrapolated, "counter",
                            (float(pts.u[0]), float(pts.u[-1])))
    nan = np.full(q.shape, np.nan)
    if shape is None or shape.empty:
        return DeviceEnergy(nan, Doubt(np.zeros(q.shape, dtype=np.int64), nan.copy()), nan.copy(), np.zeros(q.shape),
                            None, None)
    t, p = clean_readings(series.power_t, series.power_w)
    holes = holes or []
    covered = (float(t[0]), float(t[-1]))
    extrapolated = np.where(q < covered[0], shape.integral_to(q) - shape.integral_to(np.array([covered[0]])),
                            np.where(q > covered[1], shape.integral_to(q) - shape.integral_to(np.array([covered[1]])), 0.0))
    segment = np.searchsorted(t, q, side="right")
    doubt = Doubt(segment, np.hypot(_power_doubt(shape, t, p, q), np.abs(extrapolated)))
    return DeviceEnergy(_without_holes(shape, q, holes), doubt, nan, extrapolated,
                        "estimated" if estimated else "integrated", covered, holes)


ATTRIBUTE_BELOW_PERIODS = 1.5
MIN_REPEATS = 10
MAX_FIT_WINDOWS = 200_000


@dataclass(frozen=True)
class PhaseEnergies:
    """One device's energy over a run and per phase name (indexed as the caller's names), with provenance."""

    total_j: float
    total_err_j: float
    total_complete: bool
    method: Method | None  # of the device's direct figures
    energy_j: FloatArray
    methods: list[Method | None]
    stderr_j: FloatArray  # standard uncertainty of every figure (the fit's for attributed ones)
    short: NDArray[np.bool_]
    complete: NDArray[np.bool_]
    attribution: dict[str, float] | None  # power per innermost label, where a fit was made
    extrapolated_j: FloatArray  # the part of each figure extrapolated past the data
    located: NDArray[np.int64]  # boundaries whose counter updates were located (edge or grid), per name
    timed: NDArray[np.int64]  # boundaries whose timing state is known, per name
    holes: list[tuple[float, float]] = field(default_factory=list)
    resolution_s: float | None = None


def phase_energies(series: DeviceSeries, n_names: int, name_idx: ArrayLike, names: list[str], starts: ArrayLike,
                   ends: ArrayLike, t0: float, t1: float, period: float | None, estimated: bool = False,
                   power_window_s: float | None = None,
                   holes: list[tuple[float, float]] | None = None) -> PhaseEnergies:
    """Energy per phase name: E(end) - E(start) summed over each name's intervals, and, for names shorter than
    what the data resolves that repeat often enough, the attributed figure instead.

    `period` is the sensor's own update period where it is known; the spacing of the stored data counts too
    (a 10 ms counter read every 100 ms resolves 100 ms). `power_window_s` is set for a power reading that is an
    average over that window (each reading then observes a window's energy). Time before the first or after the
    last sample gets no energy beyond two resolutions of extrapolation, and makes the figure incomplete.
    """
    idx = np.asarray(name_idx, dtype=np.int64)
    s = np.asarray(starts, dtype=np.float64)
    e = np.asarray(ends, dtype=np.float64)
    resolution = max(period or 0.0, series.resolution() or 0.0) or None
    boundaries = np.concatenate([s, e, [t0, t1]])
    queries, inverse = np.unique(boundaries, return_inverse=True)
    reach = 2.0 * (resolution or 0.1)
    span = series.span()
    if span is not None:
        queries = np.clip(queries, span[0] - reach, span[1] + reach)
    de = device_energy_at(series, queries, boundaries, estimated, power_window_s, holes)
    at, timing, extra = (a[inverse] for a in (de.at, de.timing, de.extrapolated))
    doubt = de.doubt.take(inverse)
    k = s.size
    per = at[k:2 * k] - at[:k]
    ok = np.isfinite(per)
    energy = np.bincount(idx[ok], weights=per[ok], minlength=n_names).astype(np.float64)
    pairs = np.arange(k)[ok]
    var = difference_variance(doubt, pairs, pairs + k, idx[ok], n_names)
    if estimated:  # utilisation x TDP is a model, not a measurement: a third either way
        var = var + (0.3 * energy) ** 2
    stderr = np.sqrt(var)
    extrapolated = np.bincount(idx[ok], weights=(extra[k:2 * k] - extra[:k])[ok], minlength=n_names)
    counts = np.bincount(idx, minlength=n_names)
    present = counts > 0
    methods: list[Method | None] = [de.method if present[j] else None for j in range(n_names)]
    code = np.concatenate([timing[:k], timing[k:2 * k]])
    both = np.concatenate([idx, idx])
    located = np.bincount(both[code <= 1], minlength=n_names)
    timed = np.bincount(both[np.isfinite(code)], minlength=n_names)
    # A name is short when its typical interval is: one short interval among many long ones is not the name.
    typical = np.array([np.median((e - s)[idx == j]) if present[j] else np.inf for j in range(n_names)])
    short = is_short(typical, resolution)
    complete = present.copy()
    if de.covered is not None:
        outside = (s < de.covered[0] - reach) | (e > de.covered[1] + reach) | ~ok
        outside |= np.array([any(lo < b and hi > a for lo, hi in de.holes) for a, b in zip(s, e)], dtype=bool) \
            if de.holes else False
        complete[np.unique(idx[outside])] = False
        total_complete = bool(t0 >= de.covered[0] - reach and t1 <= de.covered[1] + reach and not de.holes)
    else:
        complete[:] = False
        total_complete = False
    total = float(at[-1] - at[-2])
    last = np.array([at.size - 1])
    total_err = float(np.sqrt(difference_variance(doubt, last - 1, last, np.zeros(1, dtype=np.int64), 1)[0]))
    if estimated:
        total_err = float(np.hypot(total_err, 0.3 * total))
    attribution = _attribute(series, idx, names, s, e, t0, t1, counts, resolution, de.method, power_window_s,
                             energy, stderr, methods)
    return PhaseEnergies(total_j=total, total_err_j=total_err, total_complete=total_complete, method=de.method,
                         energy_j=energy, methods=methods, stderr_j=stderr, short=short, complete=complete,
                         attribution=attribution, extrapolated_j=extrapolated, located=located, timed=timed,
                         holes=de.holes, resolution_s=resolution)


def _attribute(series: DeviceSeries, idx: NDArray[np.int64], names: list[str], s: FloatArray, e: FloatArray,
               t0: float, t1: float, counts: NDArray[np.int64], resolution: float | None, method: Method | None,
               power_window_s: float | None, energy: FloatArray, stderr: FloatArray,
               methods: list[Method | None]) -> dict[str, float] | None:
    """Replaces, in place, the figures of names too short to measure directly that repeat often enough with the
    attribution fit's; returns the power per label, or None where no fit was made."""
    n_names = counts.size
    mean_duration = np.bincount(idx, weights=e - s, minlength=n_names) / np.maximum(counts, 1)
    wanted = (counts >= MIN_REPEATS) & (resolution is not None) & \
        (mean_duration < ATTRIBUTE_BELOW_PERIODS * (resolution or 0.0))
    if not wanted.any() or method not in ("counter", "integrated"):
        return None
    partition = innermost_partition([names[i] for i in idx], s, e, t0, t1)
    # Fit only where the repeated pattern lives: time outside it is unmarked too, but spent on other work.
    mine = wanted[idx]
    fit = _fit(partition, series, method, float(s[mine].min()), float(e[mine].max()), power_window_s)
    if fit is None or not fit.identifiable:
        return None
    occupancy = partition.time_in(s, e)
    by_name = np.zeros((n_names, len(partition.labels)))
    np.add.at(by_name, idx, occupancy)
    for j in np.nonzero(wanted)[0]:
        energy[j], stderr[j] = fit.energy(by_name[j])
        methods[j] = "attributed"
    return {label: float(w) for label, w in zip(fit.labels, fit.power_w)}


def _fit(partition: Partition, series: DeviceSeries, method: Method | None, t0: float, t1: float,
         power_window_s: float | None) -> AttributionFit | None:
    if method == "counter":
        pts = series.points
        u, e = pts.u, pts.e
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
