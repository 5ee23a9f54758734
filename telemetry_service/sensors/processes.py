"""Per-process CPU % and resident memory for the PIDs of registered runs."""

from __future__ import annotations

import time
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class ProcessReading:
    pid: int
    t: float
    cpu_percent: float | None
    rss_bytes: int | None


class ProcessWatcher:
    def __init__(self) -> None:
        self._procs: dict[int, psutil.Process] = {}

    def watch(self, pids: set[int]) -> None:
        for pid in list(self._procs):
            if pid not in pids:
                del self._procs[pid]
        for pid in pids - self._procs.keys():
            try:
                proc = psutil.Process(pid)
                proc.cpu_percent(None)  # primes the baseline; the first real figure comes next call
                self._procs[pid] = proc
            except psutil.Error:
                continue

    def read(self) -> list[ProcessReading]:
        out = []
        t = time.time()
        for pid, proc in list(self._procs.items()):
            try:
                with proc.oneshot():
                    out.append(ProcessReading(pid=pid, t=t, cpu_percent=proc.cpu_percent(None),
                                              rss_bytes=proc.memory_info().rss))
            except psutil.Error:
                del self._procs[pid]  # the process ended
        return out
