"""Power per innermost phase label from many windows of observed energy: phases shorter than the sensor can
resolve are only knowable statistically, over many repetitions."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from telemetry_service.energy.common import FloatArray
from telemetry_service.energy.partition import Partition


@dataclass(frozen=True)
class AttributionFit:
    """Power per innermost label from energy observed over windows: non-negative least squares."""

    labels: list[str]
    power_w: FloatArray
    covariance: FloatArray  # of power_w, from the residuals of the unconstrained fit
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
    # Every label's uncertainty comes from the unconstrained fit: one held at zero by the bound is not thereby
    # known to be zero (a phase that drew hundreds of joules must not read 0 ± 0).
    cov_used = sigma2 * np.linalg.pinv(ata)
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
