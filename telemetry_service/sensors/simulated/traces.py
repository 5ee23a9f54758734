"""Power traces a simulated GPU plays: exact integrals, so tests and benchmarks know the true energy.

`StepTrace` is a cyclic sequence of constant steps; `LiveTrace` follows a workload as it runs, its boundaries
stamped by the thread running it and shared with spawned processes through shared memory.
"""

from __future__ import annotations

import bisect
import functools
import math
import threading
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class Trace(Protocol):
    def power(self, t: float) -> float: ...

    def cumulative(self, t: float) -> float: ...

    def energy(self, t0: float, t1: float) -> float: ...


def cumulative_many(trace: Trace, ts: np.ndarray) -> np.ndarray:
    """`trace.cumulative` at many instants, vectorised where the trace can do it."""
    many = getattr(trace, "cumulative_many", None)
    if many is not None:
        return np.asarray(many(ts), dtype=np.float64)
    return np.fromiter((trace.cumulative(float(t)) for t in ts), dtype=np.float64, count=len(ts))


# A training step as a GPU sees it: a data-loading dip, forward, backward, an optimizer blip.
TRAINING_PATTERN = ((0.03, 90.0), (0.04, 320.0), (0.07, 410.0), (0.01, 240.0))


@dataclass(frozen=True)
class StepTrace:
    """Power as a cyclic sequence of constant steps starting at `anchor`; its integral is exact."""

    steps: tuple[tuple[float, float], ...]  # (duration_s, watts)
    anchor: float = 0.0

    def __post_init__(self) -> None:
        if not self.steps or any(d <= 0 or w < 0 or not math.isfinite(d + w) for d, w in self.steps):
            raise ValueError("a trace needs steps of positive duration and non-negative finite power")

    @functools.cached_property
    def period(self) -> float:
        return sum(d for d, _ in self.steps)

    @functools.cached_property
    def cycle_energy(self) -> float:
        return sum(d * w for d, w in self.steps)

    @functools.cached_property
    def _starts(self) -> list[float]:
        out, acc = [], 0.0
        for d, _ in self.steps:
            out.append(acc)
            acc += d
        return out

    def power(self, t: float) -> float:
        offset = (t - self.anchor) % self.period
        i = bisect.bisect_right(self._starts, offset) - 1
        return self.steps[i][1]

    def cumulative(self, t: float) -> float:
        """Energy in joules from `anchor` to `t` (negative before it)."""
        period = self.period
        cycles = math.floor((t - self.anchor) / period)
        offset = (t - self.anchor) - cycles * period
        acc = 0.0
        for start, (d, w) in zip(self._starts, self.steps):
            if offset <= start:
                break
            acc += min(d, offset - start) * w
        return cycles * self.cycle_energy + acc

    def cumulative_many(self, ts: np.ndarray) -> np.ndarray:
        starts = np.asarray(self._starts)
        watts = np.asarray([w for _, w in self.steps])
        before = np.concatenate([[0.0], np.cumsum([d * w for d, w in self.steps])])[:-1]
        cycles = np.floor((ts - self.anchor) / self.period)
        offset = (ts - self.anchor) - cycles * self.period
        i = np.searchsorted(starts, offset, side="right") - 1
        return cycles * self.cycle_energy + before[i] + (offset - starts[i]) * watts[i]

    def energy(self, t0: float, t1: float) -> float:
        return self.cumulative(t1) - self.cumulative(t0)


class LiveTrace:
    """Power that follows a workload as it runs: a list of elements (phases and idle stretches), each a
    sequence of (seconds, watts) pieces, whose start instants are stamped by the thread that runs them.

    Power therefore changes exactly when the training thread reaches a boundary, however late it wakes,
    as a GPU's power does when the next kernels start. Start instants live in shared memory so that a
    process spawned by a peer (Zeus's power poller) sees the same power. Integrals are exact.
    """

    def __init__(self, elements: list[list[tuple[float, float]]], before_w: float, shm_name: str | None = None) -> None:
        from multiprocessing import shared_memory

        self.elements = elements
        self.before_w = before_w
        self._ends = [np.cumsum([d for d, _ in e]) for e in elements]
        self._cums = [np.concatenate([[0.0], np.cumsum([d * w for d, w in e])]) for e in elements]
        size = 8 * (len(elements) + 1)
        self.owner = shm_name is None
        self.shm = shared_memory.SharedMemory(create=self.owner, size=size, name=shm_name)
        # slot 0: how many elements have started; slots 1..: their start instants
        self._arr = np.ndarray((len(elements) + 1,), dtype=np.float64, buffer=self.shm.buf)
        if self.owner:
            self._arr[:] = 0.0
        self._lock = threading.Lock()
        self._cum_at_start: list[float] = [0.0]

    @property
    def started(self) -> int:
        return int(self._arr[0])

    def starts(self) -> np.ndarray:
        return self._arr[1:1 + self.started].copy()

    def mark(self, i: int) -> float:
        """Element i starts now (elements start in order); returns that instant."""
        with self._lock:
            if i != self.started:
                raise ValueError(f"element {i} cannot start after {self.started} started")
            t = time.time()
            self._arr[1 + i] = t
            self._arr[0] = i + 1
            return t

    def _element_energy(self, i: int, offset: float) -> float:
        ends, cum, pieces = self._ends[i], self._cums[i], self.elements[i]
        if offset >= ends[-1]:  # ran longer than planned: the last level holds
            return float(cum[-1] + (offset - ends[-1]) * pieces[-1][1])
        j = int(np.searchsorted(ends, offset, side="right"))
        start = 0.0 if j == 0 else float(ends[j - 1])
        return float(cum[j] + (offset - start) * pieces[j][1])

    def _element_power(self, i: int, offset: float) -> float:
        j = min(int(np.searchsorted(self._ends[i], offset, side="right")), len(self.elements[i]) - 1)
        return self.elements[i][j][1]

    def power(self, t: float) -> float:
        with self._lock:
            n = self.started
            i = int(np.searchsorted(self._arr[1:1 + n], t, side="right")) - 1
            return self.before_w if i < 0 else self._element_power(i, t - float(self._arr[1 + i]))

    def cumulative(self, t: float) -> float:
        """Energy from the start of element 0 to t (negative before it)."""
        with self._lock:
            n = self.started
            if n == 0:
                raise RuntimeError("no element has started yet")
            starts = self._arr[1:1 + n]
            while len(self._cum_at_start) < n:
                k = len(self._cum_at_start)
                self._cum_at_start.append(self._cum_at_start[-1]
                                          + self._element_energy(k - 1, float(starts[k] - starts[k - 1])))
            i = int(np.searchsorted(starts, t, side="right")) - 1
            if i < 0:
                return float((t - starts[0]) * self.before_w)
            return self._cum_at_start[i] + self._element_energy(i, t - float(starts[i]))

    def energy(self, t0: float, t1: float) -> float:
        return self.cumulative(t1) - self.cumulative(t0)

    def close(self) -> None:
        """Releases the shared memory; the trace keeps answering from a private copy."""
        with self._lock:
            self._arr = self._arr.copy()
        self.shm.close()
        if self.owner:
            self.shm.unlink()
