"""What the energy modules share: how a figure was obtained, and clean power readings."""

from __future__ import annotations

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


def sorted_by(key: FloatArray, other: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Both arrays in the order of `key` (stable); series from the ledger already are, and skip the sort."""
    if key.size < 2 or bool(np.all(key[1:] >= key[:-1])):
        return key, other
    order = np.argsort(key, kind="stable")
    return key[order], other[order]


def clean_readings(t: ArrayLike, p: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Power readings with a finite time and value, in time order."""
    t = np.asarray(t, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    ok = np.isfinite(t) & np.isfinite(p)
    return sorted_by(t[ok], p[ok])


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
