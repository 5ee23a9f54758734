"""Flat rows of a run's energy per phase, phases and samples, written as CSV or JSON lines.

Shared by `python -m telemetry_service export` and the API's `?format=csv`, so both give the same columns.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Any

from telemetry_service.series import COLUMNS

ENERGY_COLUMNS = ("name", "count", "duration_s", "energy_j", "uncertainty_j", "co2e_g", "avg_power_w", "method",
                  "timing_quality", "extrapolated_j", "short", "complete", "attribution", "run_share_j",
                  "run_share_uncertainty_j", "run_share_co2e_g", "simulated")
PHASE_COLUMNS = ("name", "start", "end", "duration_s", "step", "node", "attrs")
SAMPLE_COLUMNS = ("device",) + COLUMNS


def energy_rows(answer: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per phase name of the energy answer."""
    simulated = bool(answer.get("simulated"))
    return [{**{c: row.get(c) for c in ENERGY_COLUMNS}, "simulated": simulated} for row in answer.get("phases") or []]


def phase_rows(phases: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per phase interval."""
    return [{**{c: p.get(c) for c in PHASE_COLUMNS}, "duration_s": p["end"] - p["start"]} for p in phases]


def sample_rows(samples: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per sample point of one device's /samples answer (columns → rows)."""
    present = [c for c in COLUMNS if c in samples]
    return [{"device": samples["device"], **{c: samples[c][i] for c in present}} for i in range(len(samples["t"]))]


def _cell(value: Any) -> Any:
    # Attributes are a mapping: CSV keeps them as one JSON cell.
    return json.dumps(value) if isinstance(value, (dict, list)) else value


def write_rows(rows: Sequence[Mapping[str, Any]], fmt: str, out: IO[str], columns: Sequence[str] | None = None) -> None:
    if fmt == "jsonl":
        for row in rows:
            out.write(json.dumps(row) + "\n")
        return
    fields = list(columns or (rows[0].keys() if rows else ()))
    writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})


def to_text(rows: Sequence[Mapping[str, Any]], fmt: str, columns: Sequence[str] | None = None) -> str:
    buf = io.StringIO()
    write_rows(rows, fmt, buf, columns)
    return buf.getvalue()
