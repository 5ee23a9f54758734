"""Time split into innermost phases, the basis of attribution."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from telemetry_service.energy.common import FloatArray

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
