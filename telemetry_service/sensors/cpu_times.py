"""Host CPU utilisation from psutil's cumulative CPU times, so several readers never reset each other's baseline."""

from __future__ import annotations

from typing import Any

import psutil


def _idle(times: Any) -> float:
    return float(times.idle + getattr(times, "iowait", 0.0))


def _total(times: Any) -> float:
    # Linux counts guest time inside user and nice as well: summed once, not twice.
    return float(sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0))


def busy_cpu_seconds() -> float:
    """Cumulative busy CPU seconds of the host, all cores together (the denominator of a process's share)."""
    times = psutil.cpu_times()
    return _total(times) - _idle(times)


class CpuUtilisation:
    def __init__(self) -> None:
        self._last = psutil.cpu_times()

    def percent(self) -> float:
        """Busy share of all cores since the previous call, 0-100."""
        now = psutil.cpu_times()
        total = _total(now) - _total(self._last)
        idle = _idle(now) - _idle(self._last)
        self._last = now
        if total <= 0:
            return 0.0
        return max(0.0, min(100.0, 100.0 * (1.0 - idle / total)))
