"""Where RAPL is unreadable: CPU power estimated as utilisation x TDP, labelled `estimate` wherever it appears."""

from __future__ import annotations

import platform
import time

from telemetry_service.sensors.base import DeviceInfo, Reading
from telemetry_service.sensors.cpu_times import CpuUtilisation


class CpuEstimateSensor:
    name = "cpu-estimate"

    def __init__(self, tdp_w: float) -> None:
        self.tdp_w = tdp_w
        self._util = CpuUtilisation()
        self.info = DeviceInfo(key="cpu0", kind="cpu", source="estimate", energy_counter=False,
                               name=f"{platform.processor() or platform.machine()} (estimated from utilisation x {tdp_w:g} W TDP)",
                               index=0)

    def devices(self) -> list[DeviceInfo]:
        return [self.info]

    def read(self) -> list[Reading]:
        util = self._util.percent()
        return [Reading(key="cpu0", t=time.time(), power_w=self.tdp_w * util / 100.0, util_pct=util)]

    def close(self) -> None:
        pass
