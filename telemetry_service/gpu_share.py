"""A run's share of a GPU it shares with other runs, Kepler-style for time-sliced GPUs: over each interval, its
processes' SM-seconds over every process's SM-seconds on that GPU, applied to the GPU's *active* energy (above
its idle draw, which stays in the node figure as for CPUs).

SM-seconds are cumulative per process (SM % / 100 x seconds), sampled about once a second. The span is cut
into steps of about a second; each step's share is weighted by the active energy the GPU drew in it, so a
run busy while the GPU draws much gets more than one busy while it draws little. Steps where no process used
the SMs carry no share of their own: their active energy follows the other steps' split. Pure functions:
loading is in run_share.py.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from telemetry_service.process_share import Cumulative, FloatArray, Share, cpu_share, total_increment

STEP_S = 1.0


def steps(starts: ArrayLike, ends: ArrayLike, step_s: float = STEP_S) -> tuple[FloatArray, FloatArray]:
    """Each interval [starts[i], ends[i]] cut into pieces of at most `step_s` (the last one shorter)."""
    lo: list[FloatArray] = []
    hi: list[FloatArray] = []
    for a, b in zip(np.asarray(starts, dtype=np.float64), np.asarray(ends, dtype=np.float64)):
        if b <= a:
            continue
        edges = np.append(np.arange(a, b, step_s), b)
        lo.append(edges[:-1])
        hi.append(edges[1:])
    if not lo:
        return np.empty(0), np.empty(0)
    return np.concatenate(lo), np.concatenate(hi)


def growth(series: list[Cumulative], a: FloatArray, b: FloatArray) -> FloatArray:
    """Summed growth of the series over each piece [a[k], b[k]]; nothing outside a series' samples."""
    out = np.zeros(a.size)
    for c in series:
        if not c.empty:
            out += np.interp(b, c.t, c.v) - np.interp(a, c.t, c.v)
    return out


def sm_share(run: list[Cumulative], every: list[Cumulative], energy_j: Cumulative, idle_w: float,
             starts: ArrayLike, ends: ArrayLike) -> Share | None:
    """The run's share of the GPU's active energy over the intervals, in [0, 1], with the range sampling allows
    (that of the ratio of the summed SM-seconds). `every` holds all processes on the GPU, the run's included;
    None when none used the SMs there (or nothing is on record)."""
    a, b = steps(starts, ends)
    mine, total = growth(run, a, b), growth(every, a, b)
    used = total > 0.0
    if not used.any():
        return None
    per_step = np.clip(mine[used] / total[used], 0.0, 1.0)
    active = np.maximum(growth([energy_j], a, b)[used] - idle_w * (b - a)[used], 0.0)
    # Without active energy on record (no power samples), the steps count alike.
    weights = active if active.sum() > 0.0 else np.ones(per_step.size)
    value = float(np.sum(per_step * weights) / weights.sum())
    whole = cpu_share(total_increment(run, starts, ends), total_increment(every, starts, ends))
    if whole is None:
        return Share(value, value, value)
    return Share(value, min(value, whole.low), max(value, whole.high))
