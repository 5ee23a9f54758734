"""Grams of CO2-equivalent beside every energy figure, from a configured grid carbon intensity.

The intensity is either a constant (gCO2e/kWh) or a CSV time series for the node (`unix_time,gco2e_per_kwh`,
one row per change). The rule, kept simple on purpose:

- the series is a step function: each row's intensity holds from its time until the next row's; before the first
  row the first holds, after the last the last;
- a figure's gCO2e is its energy in kWh times the intensity averaged over its time (a phase: the union of its
  intervals, each counted once per occurrence; the run: its span). Power is taken as even over that time: the
  energy is not weighted by when within a phase it was drawn.

Nothing is fetched: the series is what the operator put in the file.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

J_PER_KWH = 3.6e6
NOT_CONFIGURED = {"configured": False, "source": None,
                  "note": "no grid carbon intensity configured (serve --carbon-intensity or --carbon-intensity-file): "
                          "no gCO2e figures"}


@dataclass(frozen=True)
class Intensity:
    source: str
    times: np.ndarray  # unix seconds, ascending
    values: np.ndarray  # gCO2e/kWh from each time on

    @classmethod
    def constant(cls, g_per_kwh: float) -> Intensity:
        return cls(f"constant {g_per_kwh:g} gCO2e/kWh", np.zeros(1), np.array([float(g_per_kwh)]))

    def _integral(self, t: np.ndarray) -> np.ndarray:
        """∫ intensity dt from the first row's time to t (negative before it)."""
        cum = np.concatenate(([0.0], np.cumsum(self.values[:-1] * np.diff(self.times))))
        k = np.clip(np.searchsorted(self.times, t, side="right") - 1, 0, None)
        return cum[k] + self.values[k] * (t - self.times[k])

    def mean(self, starts: Any, ends: Any) -> float:
        """Time-weighted mean over the intervals; intervals of no length (marks) take the value at their instant."""
        a, b = np.asarray(starts, dtype=float), np.asarray(ends, dtype=float)
        span = float((b - a).sum())
        if span > 0:
            return float((self._integral(b) - self._integral(a)).sum() / span)
        k = np.clip(np.searchsorted(self.times, a, side="right") - 1, 0, None)
        return float(self.values[k].mean()) if a.size else float(self.values[0])


def grams(energy_j: float | None, g_per_kwh: float) -> float | None:
    return None if energy_j is None else energy_j / J_PER_KWH * g_per_kwh


def read_series(path: Path) -> Intensity:
    """The CSV `unix_time,gco2e_per_kwh` (a header row and #-comments allowed); ValueError says what is wrong."""
    rows: list[tuple[float, float]] = []
    with open(path, newline="") as fh:
        for n, line in enumerate(csv.reader(fh), 1):
            if not line or line[0].lstrip().startswith("#"):
                continue
            try:
                t, g = float(line[0]), float(line[1])
            except (ValueError, IndexError):
                if not rows and n == 1:
                    continue  # the header
                raise ValueError(f"{path}, line {n}: expected unix_time,gco2e_per_kwh") from None
            if not (np.isfinite(t) and np.isfinite(g) and g >= 0):
                raise ValueError(f"{path}, line {n}: time and intensity must be finite, intensity not negative")
            rows.append((t, g))
    if not rows:
        raise ValueError(f"{path} holds no unix_time,gco2e_per_kwh rows")
    rows.sort()
    return Intensity(f"file {path} ({len(rows)} rows, step function)", np.array([r[0] for r in rows]),
                     np.array([r[1] for r in rows]))


def from_settings(constant: float | None, path: Path | None) -> Intensity | None:
    if path is not None:
        return read_series(path)
    return None if constant is None else Intensity.constant(constant)


def add_carbon(answer: dict[str, Any], intensity: Intensity | None, p_name: Any, p_start: Any, p_end: Any,
               t0: float, t1: float) -> None:
    """`co2e_g` beside `energy_j` in the total, the run share and each phase row, and `carbon` naming the source."""
    if intensity is None:
        answer["carbon"] = dict(NOT_CONFIGURED)
        return
    run_g = intensity.mean([t0], [t1])
    answer["total"]["co2e_g"] = grams(answer["total"]["energy_j"], run_g)
    if answer.get("run_share"):
        answer["run_share"]["co2e_g"] = grams(answer["run_share"]["energy_j"], run_g)
    for j, row in enumerate(answer["phases"]):
        mine = p_name == j
        g = intensity.mean(p_start[mine], p_end[mine])
        row["co2e_g"] = grams(row["energy_j"], g)
        row["run_share_co2e_g"] = grams(row.get("run_share_j"), g)
        row["gco2e_per_kwh"] = g
    answer["carbon"] = {"configured": True, "source": intensity.source, "gco2e_per_kwh": run_g,
                        "rule": "energy (kWh) x the intensity averaged over the figure's time"}
