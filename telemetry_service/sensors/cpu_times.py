"""Host CPU utilisation from psutil's cumulative CPU times, so several readers never reset each other's baseline."""

from __future__ import annotations

import psutil


class CpuUtilisation:
    def __init__(self) -> None:
        self._last = psutil.cpu_times()

    def percent(self) -> float:
        """Busy share of all cores since the previous call, 0-100."""
        now = psutil.cpu_times()
        total = sum(now) - sum(self._last)
        idle = (now.idle + getattr(now, "iowait", 0.0)) - (self._last.idle + getattr(self._last, "iowait", 0.0))
        self._last = now
        if total <= 0:
            return 0.0
        return max(0.0, min(100.0, 100.0 * (1.0 - idle / total)))
