"""Energy math: pure functions over stored samples and phase boundaries.

Two ways to know a device's cumulative energy E(t) at any instant:

* counter: the hardware counter's values, each stamped with the update instant it belongs to, interpolated
  between updates. Inside one update interval the increment is shaped by instant power where we have it, so a
  boundary that falls inside the interval gets the share of energy that was really spent before it.
* integrated: power samples integrated with the trapezoid rule. The workload changes at phase boundaries
  (the client marks them after synchronising the device), so power is not interpolated across a boundary:
  each side holds its nearest sample within its own segment. A segment without samples falls back to the
  plain trapezoid across it.

Energy over [a, b] is E(b) - E(a). Every answer says which method produced it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

Method = Literal["counter", "integrated", "estimated", "attributed"]
# Weakest first wins when a figure combines several devices.
_METHOD_RANK: dict[str, int] = {"counter": 0, "integrated": 1, "attributed": 2, "estimated": 3}

FloatArray = NDArray[np.float64]


def combine_methods(methods: list[str]) -> str | None:
    """The method of a sum: the least direct of its parts."""
    return max(methods, key=lambda m: _METHOD_RANK[m]) if methods else None


# --- counters --------------------------------------------------------------------------------------------


def counter_increment(previous: float, current: float, wrap: float | None) -> float:
    """Energy between two raw counter reads.

    A counter that goes backwards either wrapped (RAPL: `wrap` is max_energy_range) or was reset (NVML on a
    driver reload: it restarts from zero, so the energy since the reset is the new value). Never negative.
    """
    delta = current - previous
    if delta >= 0:
        return delta
    if wrap is not None and wrap > 0:
        return delta + wrap
    return max(current, 0.0)


def unwrap_counter(raw: ArrayLike, wrap: float | None = None, start: float = 0.0) -> FloatArray:
    """Monotonic cumulative energy from raw counter reads, starting at `start`."""
    values = np.asarray(raw, dtype=np.float64)
    out = np.empty_like(values)
    acc = start
    for i, v in enumerate(values):
        if i:
            acc += counter_increment(values[i - 1], v, wrap)
        out[i] = acc
    return out


def counter_points(update_t: ArrayLike, energy: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """The distinct (update instant, cumulative energy) points of a counter read many times per update.

    A value read twice belongs to the first instant it was stamped with; instants must increase.
    """
    u = np.asarray(update_t, dtype=np.float64)
    e = np.asarray(energy, dtype=np.float64)
    ok = np.isfinite(u) & np.isfinite(e)
    u, e = u[ok], e[ok]
    if u.size == 0:
        return u, e
    u, e = _sorted_by(u, e)
    keep = np.ones(u.size, dtype=bool)
    keep[1:] = e[1:] != e[:-1]
    u, e = u[keep], e[keep]
    keep = np.ones(u.size, dtype=bool)
    keep[1:] = np.diff(u) > 0
    return u[keep], e[keep]


def _sorted_by(key: FloatArray, other: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Both arrays in the order of `key` (stable); series from the ledger already are, and skip the sort."""
    if key.size < 2 or bool(np.all(key[1:] >= key[:-1])):
        return key, other
    order = np.argsort(key, kind="stable")
    return key[order], other[order]


def _readings(t: ArrayLike, p: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Power readings with a finite time and value, in time order."""
    t = np.asarray(t, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    ok = np.isfinite(t) & np.isfinite(p)
    return _sorted_by(t[ok], p[ok])


# --- power, integrated with jumps at phase boundaries ------------------------------------------------------


@dataclass(frozen=True)
class PowerCurve:
    """Piecewise-linear power with jumps allowed at boundaries; `cum` is its integral at each knot."""

    knots: FloatArray
    left: FloatArray  # power just before each knot
    right: FloatArray  # power just after each knot
    cum: FloatArray

    @property
    def empty(self) -> bool:
        return self.knots.size == 0

    def integral_to(self, q: ArrayLike) -> FloatArray:
        """Integral of power from the first knot to each q; flat (held) power outside the knots."""
        q = np.asarray(q, dtype=np.float64)
        k = self.knots
        if k.size == 0:
            return np.full(q.shape, np.nan)
        if k.size == 1:
            return (q - k[0]) * self.right[0]
        i = np.clip(np.searchsorted(k, q, side="right") - 1, 0, k.size - 2)
        t0, t1 = k[i], k[i + 1]
        width = t1 - t0
        with np.errstate(invalid="ignore", divide="ignore"):
            slope = np.where(width > 0, (self.left[i + 1] - self.right[i]) / np.where(width > 0, width, 1.0), 0.0)
        dt = q - t0
        inside = self.cum[i] + dt * self.right[i] + 0.5 * slope * dt * dt
        before = self.cum[0] + (q - k[0]) * self.right[0]
        after = self.cum[-1] + (q - k[-1]) * self.left[-1]
        return np.where(q < k[0], before, np.where(q > k[-1], after, inside))


def power_curve(t: ArrayLike, p: ArrayLike, boundaries: ArrayLike = ()) -> PowerCurve:
    """Power through the samples (t, p), broken at the boundaries.

    At a boundary, each side holds the nearest sample of its own segment (the stretch between neighbouring
    boundaries); a side whose segment has no sample takes the linear interpolation instead.
    """
    t, p = _readings(t, p)
    if t.size == 0:
        empty = np.empty(0)
        return PowerCurve(empty, empty, empty, empty)
    b = np.unique(np.asarray(boundaries, dtype=np.float64))
    b = b[np.isfinite(b) & (b > t[0]) & (b < t[-1])]
    seg = np.searchsorted(b, t, side="right")  # samples at a boundary open the next segment
    interp = np.interp(b, t, p)
    j = np.arange(b.size)
    before = np.searchsorted(t, b, side="left") - 1
    after = np.searchsorted(t, b, side="left")
    left = np.where(seg[before] == j, p[before], interp)
    right = np.where(seg[np.minimum(after, t.size - 1)] == j + 1, p[np.minimum(after, t.size - 1)], interp)
    # Both are sorted: place each boundary after the samples at or before it, no sort needed.
    at = np.searchsorted(t, b, side="right") + np.arange(b.size)
    is_sample = np.ones(t.size + b.size, dtype=bool)
    is_sample[at] = False
    knots, lefts, rights = (np.empty(t.size + b.size) for _ in range(3))
    knots[is_sample], knots[at] = t, b
    lefts[is_sample], lefts[at] = p, left
    rights[is_sample], rights[at] = p, right
    areas = 0.5 * (rights[:-1] + lefts[1:]) * np.diff(knots)
    cum = np.concatenate([[0.0], np.cumsum(areas)])
    return PowerCurve(knots, lefts, rights, cum)


@dataclass(frozen=True)
class AveragedPowerCurve:
    """Cumulative energy recovered from a power reading that is a moving average over a window w.

    Such a reading at t is (E(t) - E(t - w)) / w, so E(t) = E(t - w) + w p(t): unrolled back to the first
    reading, the energy at any instant is a sum of readings one window apart (before the first one, power is
    taken as that reading). The average of piecewise-constant power is piecewise linear, so interpolating the
    readings linearly loses little; the sums are tabulated on a grid that divides the window.
    """

    knots: FloatArray  # the grid
    cum: FloatArray  # energy at each grid instant, from the first reading's window start

    @property
    def empty(self) -> bool:
        return self.knots.size == 0

    def integral_to(self, q: ArrayLike) -> FloatArray:
        q = np.asarray(q, dtype=np.float64)
        if self.knots.size == 0:
            return np.full(q.shape, np.nan)
        return np.interp(q, self.knots, self.cum)


def averaged_power_curve(t: ArrayLike, p: ArrayLike, window: float, step: float = 0.01) -> AveragedPowerCurve:
    t, p = _readings(t, p)
    if t.size == 0:
        empty = np.empty(0)
        return AveragedPowerCurve(empty, empty)
    m = max(1, math.ceil(window / step))
    rows = math.ceil((t[-1] - t[0]) / window) + 1
    grid = t[0] + np.arange(rows * m) * (window / m)
    increments = (window * np.interp(grid, t, p)).reshape(rows, m)
    # Within the first window E climbs from the window before the first reading at that reading's power.
    first = (grid[:m] - t[0] + window) * p[0]
    cum = (np.cumsum(increments, axis=0) - increments[0] + first).reshape(-1)
    keep = grid <= t[-1]
    return AveragedPowerCurve(grid[keep], cum[keep])


def integrate_power(t: ArrayLike, p: ArrayLike, boundaries: ArrayLike, queries: ArrayLike) -> FloatArray:
    """Cumulative energy (J, from the first sample) at each query instant, from power samples alone."""
    return power_curve(t, p, boundaries).integral_to(queries)


# How far the power curve's energy over an update interval may stray from the counter's increment and still shape it.
SHAPE_AGREEMENT = 0.25


def neighbour_split(update_t: FloatArray, energy: FloatArray, k: NDArray[np.int64], q: FloatArray,
                    boundaries: FloatArray) -> FloatArray:
    """The share of update interval k's energy spent before q, from the counter's own rate in the whole
    intervals next to it; NaN where that cannot be said.

    A boundary is where the workload changes, so on each side of q the power is most likely what the counter
    measured just before (the interval ending at u_k) and just after (the one starting at u_{k+1}), if those
    intervals hold no boundary themselves. Counter increments integrate everything, so bursts that fall between
    two power readings cannot mislead this split. Only an interval that holds q as its one boundary is split so.
    """
    b = np.unique(boundaries[np.isfinite(boundaries)])
    inside = np.searchsorted(b, update_t[1:], side="left") - np.searchsorted(b, update_t[:-1], side="right")
    whole = inside == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.diff(energy) / np.diff(update_t)
    n = rate.size
    left_ok = (k >= 1) & whole[np.maximum(k - 1, 0)]
    right_ok = (k + 1 < n) & whole[np.minimum(k + 1, n - 1)]
    r_left = np.where(left_ok, rate[np.maximum(k - 1, 0)], np.nan)
    r_right = np.where(right_ok, rate[np.minimum(k + 1, n - 1)], np.nan)
    u0, u1 = update_t[k], update_t[k + 1]
    before = r_left * (q - u0)
    after = r_right * (u1 - q)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = before / (before + after)
    return np.where((inside[k] == 1) & (before + after > 0), frac, np.nan)


def counter_energy_at(update_t: FloatArray, energy: FloatArray, queries: ArrayLike,
                      shape: PowerCurve | AveragedPowerCurve | None = None,
                      boundaries: ArrayLike = ()) -> FloatArray:
    """Cumulative counter energy at each query instant.

    Between two updates u_k < q < u_{k+1} the increment is split, in order of preference: by the energy the
    power curve puts on each side of q, where that curve agrees with the counter over the interval; by the
    counter's rate in the whole intervals on either side, where q is the interval's only boundary; linearly.
    Queries beyond the first or last update extend with the power curve if there is one, else are NaN.
    """
    q = np.asarray(queries, dtype=np.float64)
    if update_t.size == 0:
        return np.full(q.shape, np.nan)
    if update_t.size == 1:
        return np.where(q == update_t[0], energy[0], np.nan)
    k = np.clip(np.searchsorted(update_t, q, side="right") - 1, 0, update_t.size - 2)
    u0, u1 = update_t[k], update_t[k + 1]
    e0, e1 = energy[k], energy[k + 1]
    frac = (q - u0) / (u1 - u0)
    b = np.asarray(boundaries, dtype=np.float64)
    if b.size:
        by_rate = neighbour_split(update_t, energy, k, q, b)
        frac = np.where(np.isfinite(by_rate), by_rate, frac)
    if shape is not None and not shape.empty:
        s_q, s0, s1 = shape.integral_to(q), shape.integral_to(u0), shape.integral_to(u1)
        span = s1 - s0
        with np.errstate(invalid="ignore", divide="ignore"):
            shaped = (s_q - s0) / span
            # Power samples that miss what the counter saw in the interval (a burst between two readings) say
            # nothing reliable about its shape inside it either.
            agrees = np.abs(span / (e1 - e0) - 1.0) <= SHAPE_AGREEMENT
        frac = np.where((span > 0) & np.isfinite(shaped) & agrees, shaped, frac)
    inside = e0 + np.clip(frac, 0.0, 1.0) * (e1 - e0)
    if shape is not None and not shape.empty:
        before = energy[0] - (shape.integral_to(update_t[0]) - shape.integral_to(q))
        after = energy[-1] + (shape.integral_to(q) - shape.integral_to(update_t[-1]))
    else:
        before = np.full(q.shape, np.nan)
        after = np.full(q.shape, np.nan)
    return np.where(q < update_t[0], before, np.where(q > update_t[-1], after, inside))


# --- one device over many intervals ------------------------------------------------------------------------


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


# --- flags ---------------------------------------------------------------------------------------------------


def find_gaps(t: ArrayLike, max_gap: float) -> list[tuple[float, float]]:
    """Stretches longer than `max_gap` without a sample (the daemon was down, or a sensor failed)."""
    t = np.asarray(t, dtype=np.float64)
    if t.size < 2:
        return []
    d = np.diff(t)
    if (d < 0).any():  # series come sorted from the ledger; sort only what is not
        t = np.sort(t)
        d = np.diff(t)
    idx = np.nonzero(d > max_gap)[0]
    return [(float(t[i]), float(t[i + 1])) for i in idx]


def overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether two closed time intervals share more than an instant."""
    return min(a[1], b[1]) > max(a[0], b[0])


def is_short(duration_s: ArrayLike, update_period_s: float | None) -> NDArray[np.bool_]:
    """A phase shorter than the sensor's update period cannot be measured directly, only statistically."""
    d = np.asarray(duration_s, dtype=np.float64)
    return np.zeros(d.shape, dtype=bool) if update_period_s is None else d < update_period_s


# --- attribution of phases shorter than the sensor's update period ------------------------------------------

UNMARKED = "(unmarked)"


@dataclass(frozen=True)
class Partition:
    """Time split into innermost phases: at each instant the most recently started phase still running (the
    unmarked rest is its own label). `occupancy[:, j]` is the time label j has held up to each knot."""

    labels: list[str]
    knots: FloatArray
    occupancy: FloatArray  # shape (knots, labels)

    def time_in(self, lo: ArrayLike, hi: ArrayLike) -> FloatArray:
        """Seconds each label holds within each window (lo, hi]: shape (windows, labels)."""
        lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
        if lo.size > 1 and np.array_equal(lo[1:], hi[:-1]):  # back-to-back windows: one look-up per edge
            return np.diff(self.occupancy_at(np.concatenate([lo[:1], hi])), axis=0)
        return self.occupancy_at(hi) - self.occupancy_at(lo)

    def occupancy_at(self, t: ArrayLike) -> FloatArray:
        """Time each label has held up to each instant: shape (instants, labels); one search for all labels."""
        t = np.clip(np.asarray(t, dtype=np.float64), self.knots[0], self.knots[-1])
        i = np.clip(np.searchsorted(self.knots, t, side="right") - 1, 0, max(self.knots.size - 2, 0))
        if self.knots.size < 2:
            return np.zeros((t.size, len(self.labels)))
        frac = (t - self.knots[i]) / np.where(self.knots[i + 1] > self.knots[i], self.knots[i + 1] - self.knots[i], 1.0)
        return self.occupancy[i] + frac[:, None] * (self.occupancy[i + 1] - self.occupancy[i])

    def label_at(self, t: ArrayLike) -> NDArray[np.int64]:
        """Index of the label holding each instant."""
        t = np.asarray(t, dtype=np.float64)
        i = np.clip(np.searchsorted(self.knots, t, side="right") - 1, 0, max(self.knots.size - 2, 0))
        if self.knots.size < 2:
            return np.full(t.shape, self.labels.index(UNMARKED), dtype=np.int64)
        seg = np.diff(self.occupancy, axis=0)[i]  # which label's occupancy grows over the segment
        return np.argmax(seg, axis=1).astype(np.int64)


def innermost_partition(names: list[str], starts: ArrayLike, ends: ArrayLike, t0: float, t1: float) -> Partition:
    """Partitions [t0, t1] by innermost phase name (nested phases: the child holds the time it covers).

    The innermost phase at an instant is the most recently started one still running (of two that start
    together, the shorter): painting phases in that order, each over the elementary segments it spans, leaves
    every segment to its innermost phase.
    """
    s = np.clip(np.asarray(starts, dtype=np.float64), t0, t1)
    e = np.clip(np.asarray(ends, dtype=np.float64), t0, t1)
    labels = sorted(set(names)) + [UNMARKED]
    index = {n: i for i, n in enumerate(labels)}
    knots = np.unique(np.concatenate([[t0, t1], s, e]))
    owner = np.full(max(knots.size - 1, 0), index[UNMARKED], dtype=np.int64)
    lo = np.searchsorted(knots, s)
    hi = np.searchsorted(knots, e)
    label = np.array([index[n] for n in names], dtype=np.int64)
    order = np.lexsort((-e, s))
    # A phase spanning one segment is never painted over by one spanning several (that one would have to start
    # at the same instant and be longer, so it comes first): paint the long ones in a loop, the rest at once.
    single = (hi - lo) == 1
    for i in order[~single[order]]:
        owner[lo[i]:hi[i]] = label[i]
    ones = order[single[order]]
    owner[lo[ones]] = label[ones]
    widths = np.diff(knots)
    occ = np.zeros((knots.size, len(labels)))
    for j in range(len(labels)):
        occ[1:, j] = np.cumsum(np.where(owner == j, widths, 0.0))
    return Partition(labels=labels, knots=knots, occupancy=occ)


@dataclass(frozen=True)
class AttributionFit:
    """Power per innermost label from energy observed over windows: non-negative least squares."""

    labels: list[str]
    power_w: FloatArray
    covariance: FloatArray  # of power_w, from the residuals (zero rows/columns where the bound is active)
    windows: int
    # False where the windows cannot tell some labels apart (a pattern in lockstep with the counter's updates).
    identifiable: bool = True

    def energy(self, occupancy: FloatArray) -> tuple[float, float]:
        """Energy and its standard error for a span that holds `occupancy` seconds of each label."""
        e = float(occupancy @ self.power_w)
        var = float(occupancy @ self.covariance @ occupancy)
        return e, math.sqrt(max(var, 0.0))


def attribute(partition: Partition, lo: ArrayLike, hi: ArrayLike, energy_j: ArrayLike) -> AttributionFit | None:
    """Solves energy_j[k] = sum_j P_j * time of label j in window k, with P_j >= 0.

    Windows are the intervals between counter updates (or the averaging windows of a power reading). With many
    windows over a repeating pattern each label's power is determined even though no window isolates it.
    The fit works on the normal equations (labels x labels), so a million windows cost one matrix product.
    """
    from scipy.optimize import nnls

    a = partition.time_in(lo, hi)
    b = np.asarray(energy_j, dtype=np.float64)
    ata_full = a.T @ a
    used = np.diag(ata_full) > 0
    n_used = int(used.sum())
    if n_used == 0 or b.size < n_used + 1:
        return None
    ata = ata_full[np.ix_(used, used)]
    atb = (a.T @ b)[used]
    # min |A x - b|^2 = min |M x - d|^2 + const with A'A = M'M, M'd = A'b; M from the eigen-decomposition.
    w, v = np.linalg.eigh(ata)
    keep = w > max(float(w.max()), 0.0) * 1e-12
    m = np.sqrt(w[keep])[:, None] * v[:, keep].T
    d = (v[:, keep].T @ atb) / np.sqrt(w[keep])
    x_used, _ = nnls(m, d)
    rss = max(float(b @ b - 2.0 * x_used @ atb + x_used @ ata @ x_used), 0.0)
    sigma2 = rss / max(b.size - n_used, 1)
    free = x_used > 0
    cov_used = np.zeros((n_used, n_used))
    if free.any():
        fi = np.nonzero(free)[0]
        cov_used[np.ix_(fi, fi)] = sigma2 * np.linalg.pinv(ata[np.ix_(fi, fi)])
    p = len(partition.labels)
    power = np.zeros(p)
    power[used] = x_used
    cov = np.zeros((p, p))
    ui = np.nonzero(used)[0]
    cov[np.ix_(ui, ui)] = cov_used
    return AttributionFit(labels=partition.labels, power_w=power, covariance=cov, windows=int(b.size),
                          identifiable=bool(keep.all()))


def tagged_power(partition: Partition, t: ArrayLike, p: ArrayLike) -> dict[str, tuple[float, int]]:
    """Mean instant power of the samples that fall in each label, and how many there were: the second estimator."""
    t = np.asarray(t, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    inside = (t >= partition.knots[0]) & (t <= partition.knots[-1]) & np.isfinite(p)
    lab = partition.label_at(t[inside])
    n = np.bincount(lab, minlength=len(partition.labels))
    s = np.bincount(lab, weights=p[inside], minlength=len(partition.labels))
    return {name: (float(s[j] / n[j]), int(n[j])) for j, name in enumerate(partition.labels) if n[j]}


def tagged_fit(partition: Partition, t: ArrayLike, p: ArrayLike, lo: float, hi: float) -> AttributionFit | None:
    """The tagged-power estimator as a fit over [lo, hi]: each label's mean sample power, with the standard error
    of that mean. It stands where every label holding a real share of that time (over 0.5 %) got a sample."""
    tagged = tagged_power(partition, t, p)
    if not tagged:
        return None
    t = np.asarray(t, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    inside = (t >= partition.knots[0]) & (t <= partition.knots[-1]) & np.isfinite(p)
    lab = partition.label_at(t[inside])
    k = len(partition.labels)
    power = np.zeros(k)
    var = np.zeros(k)
    for j, name in enumerate(partition.labels):
        if name in tagged:
            mean, n = tagged[name]
            power[j] = mean
            values = p[inside][lab == j]
            var[j] = float(np.var(values, ddof=1)) / n if n > 1 else mean * mean
    held = partition.time_in([lo], [hi])[0]
    observed = all(name in tagged for name, share in zip(partition.labels, held) if share > 0.005 * (hi - lo))
    return AttributionFit(labels=partition.labels, power_w=power, covariance=np.diag(var),
                          windows=int(inside.sum()), identifiable=observed)


# --- energy per phase name on one device -----------------------------------------------------------------------

# A phase name is attributed when its intervals average under this many update periods and it repeats enough.
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
