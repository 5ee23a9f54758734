"""How far to trust an energy figure: linear propagation of what can be wrong in E(t) to differences of it.

E(t) at two nearby instants shares its errors: two boundaries inside one counter update interval rest on the same
two update instants and the same split of that interval's energy. Adding their uncertainties as if independent
would state a 5 ms phase's energy as uncertain by more than the whole interval holds. So the doubt is kept by
source, and a figure's variance is formed from the sources it actually depends on:

* each update instant's standard error, with the coefficient (J per second of error) every query carries on it;
* a model doubt per query (how the energy inside one interval is split, or how power ran between two samples),
  shared in full by queries of the same segment and independent between segments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from telemetry_service.energy.common import FloatArray

IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class Doubt:
    """What can be wrong in E(q) at each query: `segment` (queries of one segment share `model`), and, for a
    counter, the two update instants the query rests on (`k`, `k + 1`) with the coefficients on each."""

    segment: IntArray
    model: FloatArray
    k: IntArray | None = None
    c0: FloatArray | None = None  # dE(q) / d(u_k)
    c1: FloatArray | None = None  # dE(q) / d(u_{k+1})
    stamp_err: FloatArray | None = None  # standard error of every update instant

    def take(self, index: IntArray) -> Doubt:
        """The doubt of the queries at `index`."""
        if self.k is None:
            return Doubt(self.segment[index], self.model[index])
        assert self.c0 is not None and self.c1 is not None
        return Doubt(self.segment[index], self.model[index], self.k[index], self.c0[index], self.c1[index],
                     self.stamp_err)


def difference_variance(doubt: Doubt, a: IntArray, b: IntArray, group: IntArray, n_groups: int) -> FloatArray:
    """Variance of the sum over each group of E(q[b_i]) - E(q[a_i]) (query indices a, b; group of each pair)."""
    same = doubt.segment[a] == doubt.segment[b]
    da, db = doubt.model[a], doubt.model[b]
    model = np.where(same, (db - da) ** 2, da ** 2 + db ** 2)
    var = np.bincount(group, weights=np.nan_to_num(model), minlength=n_groups).astype(np.float64)
    if doubt.k is None or doubt.stamp_err is None or doubt.c0 is None or doubt.c1 is None or not a.size:
        return var
    n_stamps = doubt.stamp_err.size
    stamp = np.concatenate([doubt.k[b], doubt.k[b] + 1, doubt.k[a], doubt.k[a] + 1])
    coeff = np.concatenate([doubt.c0[b], doubt.c1[b], -doubt.c0[a], -doubt.c1[a]])
    key = np.tile(group, 4) * n_stamps + stamp
    keys, inverse = np.unique(key, return_inverse=True)
    summed = np.bincount(inverse, weights=np.nan_to_num(coeff))
    per_key = (summed * doubt.stamp_err[keys % n_stamps]) ** 2
    return var + np.bincount(keys // n_stamps, weights=per_key, minlength=n_groups)
