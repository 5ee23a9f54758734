"""Per-phase-name figures of a run, summed over its devices, as rows of the energy answer."""

from __future__ import annotations

from typing import Any

import numpy as np

from telemetry_service.energy import PhaseEnergies, combine_methods


def share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


class PhaseRows:
    """Accumulates each device's figures per phase name; devices add in quadrature for the uncertainty."""

    def __init__(self, names: list[str]) -> None:
        n = len(names)
        self.names = names
        self.energy = np.zeros(n)
        self.var = np.zeros(n)
        self.extrapolated = np.zeros(n)
        self.located = np.zeros(n, dtype=np.int64)
        self.timed = np.zeros(n, dtype=np.int64)
        self.short = np.zeros(n, dtype=bool)
        self.complete = np.ones(n, dtype=bool)
        self.by_device: list[dict[str, float]] = [{} for _ in range(n)]
        self.methods: list[dict[str, str]] = [{} for _ in range(n)]
        self.uncertainty: list[dict[str, float]] = [{} for _ in range(n)]

    def add(self, device_id: str, pe: PhaseEnergies) -> None:
        """One device's figures; names it has no figure for are left as they are."""
        has = np.array([m is not None for m in pe.methods], dtype=bool)
        self.energy[has] += pe.energy_j[has]
        self.var[has] += pe.stderr_j[has] ** 2
        self.extrapolated[has] += pe.extrapolated_j[has]
        self.located[has] += pe.located[has]
        self.timed[has] += pe.timed[has]
        self.short[has] |= pe.short[has]
        self.complete[has] &= pe.complete[has]
        for j in np.nonzero(has)[0]:
            self.by_device[j][device_id] = float(pe.energy_j[j])
            self.methods[j][device_id] = pe.methods[j]  # type: ignore[assignment]
            self.uncertainty[j][device_id] = float(pe.stderr_j[j])

    def rows(self, counts: np.ndarray, durations: np.ndarray) -> list[dict[str, Any]]:
        out = []
        for j, name in enumerate(self.names):
            dur, e = float(durations[j]), float(self.energy[j])
            row: dict[str, Any] = {
                "name": name, "count": int(counts[j]), "duration_s": dur, "energy_j": e,
                "avg_power_w": e / dur if dur > 0 else None, "by_device": self.by_device[j],
                "method": combine_methods(list(self.methods[j].values())), "methods": self.methods[j],
                "short": bool(self.short[j]), "complete": bool(self.complete[j]),
                "uncertainty_j": float(np.sqrt(self.var[j])),  # standard uncertainty; devices in quadrature
                "uncertainty_by_device": self.uncertainty[j],
                "extrapolated_j": float(self.extrapolated[j]),
                "timing_quality": share(int(self.located[j]), int(self.timed[j])),
            }
            if "attributed" in self.methods[j].values():
                row["repeats"] = int(counts[j])
            out.append(row)
        return out
