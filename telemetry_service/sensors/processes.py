"""Per-process CPU %, resident memory and cumulative CPU seconds (children included) for the PIDs of registered
runs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import psutil


@dataclass(frozen=True)
class ProcessReading:
    pid: int
    t: float
    cpu_percent: float | None
    rss_bytes: int | None
    cpu_time_s: float | None = None  # user + system of the process and all its descendants, cumulative
    descendants: tuple[int, ...] = ()  # live ones: a launcher's GPU workers are the run's as its CPU time is


def _own(times: Any) -> float:
    return times.user + times.system


def tree_cpu_seconds(proc: psutil.Process, children: list[psutil.Process] | None = None) -> float:
    """CPU seconds of a process, of its children it has waited for, and of its live descendants (DataLoader
    workers, spawned helpers; listed here unless given): the CPU time that is the run's."""
    times = proc.cpu_times()
    total = _own(times) + times.children_user + times.children_system
    for child in proc.children(recursive=True) if children is None else children:
        try:
            # A live child's reaped children are counted by it; its own time joins the parent's when it is reaped.
            c = child.cpu_times()
            total += _own(c) + c.children_user + c.children_system
        except psutil.Error:
            continue  # it ended between the listing and the read
    return total


class ProcessWatcher:
    def __init__(self) -> None:
        self._procs: dict[int, psutil.Process] = {}
        self._cpu_s: dict[int, float] = {}

    def watch(self, pids: set[int]) -> list[ProcessReading]:
        """Follows exactly `pids`; returns a first reading of each new one, so its CPU seconds have a baseline
        from the moment it is registered (its CPU % comes from the next read)."""
        for pid in list(self._procs):
            if pid not in pids:
                self._forget(pid)
        t = time.time()
        out = []
        for pid in pids - self._procs.keys():
            try:
                proc = psutil.Process(pid)
                self._procs[pid] = proc
                out.append(self._reading(pid, proc, t, prime=True))
            except psutil.Error:
                self._forget(pid)
        return out

    def read(self) -> list[ProcessReading]:
        out = []
        t = time.time()
        for pid, proc in list(self._procs.items()):
            try:
                out.append(self._reading(pid, proc, t))
            except psutil.Error:
                self._forget(pid)  # the process ended
        return out

    def _reading(self, pid: int, proc: psutil.Process, t: float, prime: bool = False) -> ProcessReading:
        with proc.oneshot():
            # Never backwards: a child reaped by someone else (re-parented) takes its seconds with it, and the
            # time it used stays used.
            children = proc.children(recursive=True)
            cpu_s = max(tree_cpu_seconds(proc, children), self._cpu_s.get(pid, 0.0))
            self._cpu_s[pid] = cpu_s
            percent = proc.cpu_percent(None)  # the first call only sets psutil's baseline
            return ProcessReading(pid=pid, t=t, cpu_percent=None if prime else percent,
                                  rss_bytes=proc.memory_info().rss, cpu_time_s=cpu_s,
                                  descendants=tuple(c.pid for c in children))

    def _forget(self, pid: int) -> None:
        self._procs.pop(pid, None)
        self._cpu_s.pop(pid, None)
