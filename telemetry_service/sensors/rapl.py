"""CPU package and DRAM energy from Intel/AMD RAPL counters under /sys/class/powercap."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from telemetry_service.energy.counter import counter_increment
from telemetry_service.sensors.base import DeviceInfo, Reading

# RAPL counters update about every millisecond: reading them stamps them well enough.
RAPL_PERIOD_S = 0.001


@dataclass(frozen=True)
class RaplZone:
    path: Path
    info: DeviceInfo


def discover_zones(root: Path) -> list[RaplZone]:
    """Package zones (intel-rapl:N, named package-N) and their DRAM sub-zones; zones we cannot read are skipped."""
    zones: list[RaplZone] = []
    if not root.is_dir():
        return zones
    for pkg in sorted(root.glob("intel-rapl:*")):
        if not re.fullmatch(r"intel-rapl:\d+", pkg.name):
            continue
        name = _read_text(pkg / "name")
        if name is None or not name.startswith("package"):
            continue
        index = int(pkg.name.split(":")[1])
        candidates = [(pkg, "cpu", f"cpu{index}", f"CPU package {index}")]
        for sub in sorted(pkg.glob(f"intel-rapl:{index}:*")):
            if _read_text(sub / "name") == "dram":
                candidates.append((sub, "dram", f"dram{index}", f"DRAM of package {index}"))
        for path, kind, key, label in candidates:
            wrap = _read_int(path / "max_energy_range_uj")
            if _read_int(path / "energy_uj") is None or wrap is None:
                continue
            info = DeviceInfo(key=key, kind=kind, source="rapl", energy_counter=True, name=label, index=index,  # type: ignore[arg-type]
                              update_period_s=RAPL_PERIOD_S, counter_wrap_j=wrap / 1e6)
            zones.append(RaplZone(path=path, info=info))
    return zones


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    text = _read_text(path)
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


class RaplSensor:
    name = "rapl"

    def __init__(self, root: Path = Path("/sys/class/powercap")) -> None:
        self.zones = discover_zones(root)
        self._last: dict[str, tuple[float, float]] = {}

    @property
    def available(self) -> bool:
        return bool(self.zones)

    def devices(self) -> list[DeviceInfo]:
        return [z.info for z in self.zones]

    def read(self) -> list[Reading]:
        readings = []
        for zone in self.zones:
            uj = _read_int(zone.path / "energy_uj")
            t = time.time()
            if uj is None:
                raise OSError(f"{zone.path / 'energy_uj'} became unreadable")
            joules = uj / 1e6
            power = None
            last = self._last.get(zone.info.key)
            if last is not None and t > last[0]:
                power = counter_increment(last[1], joules, zone.info.counter_wrap_j).joules / (t - last[0])
            self._last[zone.info.key] = (t, joules)
            readings.append(Reading(key=zone.info.key, t=t, power_w=power, counter_j=joules, counter_t=t,
                                    counter_timing="read"))
        return readings

    def close(self) -> None:
        pass
