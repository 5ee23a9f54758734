"""The host as a whole (CPU %, memory) from psutil; no energy of its own."""

from __future__ import annotations

import socket
import time

import psutil

from telemetry_service.sensors.base import DeviceInfo, Reading
from telemetry_service.sensors.cpu_times import CpuUtilisation, busy_cpu_seconds


class HostSensor:
    name = "host"
    # Host CPU % and memory move slowly, and reading /proc/meminfo costs a few hundred microseconds.
    every_s = 1.0

    def __init__(self) -> None:
        self._util = CpuUtilisation()
        self.info = DeviceInfo(key="host", kind="host", source="psutil", energy_counter=False,
                               name=socket.gethostname())

    def devices(self) -> list[DeviceInfo]:
        return [self.info]

    def read(self) -> list[Reading]:
        mem = psutil.virtual_memory()
        return [Reading(key="host", t=time.time(), util_pct=self._util.percent(),
                        mem_used_bytes=int(mem.total - mem.available), mem_total_bytes=int(mem.total),
                        cpu_busy_s=busy_cpu_seconds())]

    def close(self) -> None:
        pass
