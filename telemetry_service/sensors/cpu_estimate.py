"""Where RAPL is unreadable: CPU power estimated from utilisation between an idle floor and TDP, labelled
`estimate` wherever it appears."""

from __future__ import annotations

import platform
import time

from telemetry_service.sensors.base import DeviceInfo, Reading
from telemetry_service.sensors.cpu_times import CpuUtilisation


class CpuEstimateSensor:
    name = "cpu-estimate"

    def __init__(self, tdp_w: float, idle_w: float = 0.0) -> None:
        self.tdp_w = tdp_w
        self.idle_w = min(idle_w, tdp_w)
        self.formula = f"{self.idle_w:g} W idle + utilisation x {self.tdp_w - self.idle_w:g} W (TDP {tdp_w:g} W)"
        self._util = CpuUtilisation()
        self.info = DeviceInfo(key="cpu0", kind="cpu", source="estimate", energy_counter=False,
                               name=f"{platform.processor() or platform.machine()} (estimated: {self.formula})",
                               index=0, idle_power_w=self.idle_w)

    def devices(self) -> list[DeviceInfo]:
        return [self.info]

    def read(self) -> list[Reading]:
        util = self._util.percent()
        power = self.idle_w + (self.tdp_w - self.idle_w) * util / 100.0
        return [Reading(key="cpu0", t=time.time(), power_w=power, util_pct=util)]

    def close(self) -> None:
        pass
