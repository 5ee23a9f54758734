"""Time series out of the ledger, bucketed in the database so a chart never pulls more rows than it can draw."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Integer, cast, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from telemetry_service.store.models import Sample

# Per bucket: power as mean, min and max (spikes stay visible); the counter as its last value; the rest as means.
_MEANS = ("util_pct", "mem_util_pct", "mem_used_bytes", "temp_c", "sm_clock_mhz")
COLUMNS = ("t", "power_w", "power_min_w", "power_max_w", "energy_j") + _MEANS


def _bucket(t0: float, width: float, dialect: str) -> ColumnElement[Any]:
    scaled = (Sample.t - t0) / width
    # PostgreSQL rounds when casting to integer; SQLite truncates (and t >= t0 here, so truncation is floor).
    return func.floor(scaled) if dialect == "postgresql" else cast(scaled, Integer)


def _aggregate(name: str) -> ColumnElement[Any]:
    if name == "power_min_w":
        return func.min(Sample.power_w)
    if name == "power_max_w":
        return func.max(Sample.power_w)
    if name == "energy_j":
        return func.max(Sample.energy_j)
    return func.avg(getattr(Sample, name))


def _raw(name: str) -> ColumnElement[Any]:
    return Sample.power_w if name in ("power_min_w", "power_max_w") else getattr(Sample, name)


def device_series(session: Session, device_pk: int, start: float, end: float, max_points: int,
                  fields: Sequence[str] = COLUMNS) -> tuple[dict[str, list[Any]], int]:
    """Samples of one device over [start, end], at most `max_points` of them, as columns; and how many are stored.

    `fields` picks the columns ("t" always comes): a chart that draws power only asks for less, and the
    bucketing query runs several times faster without the other aggregates.
    """
    names = ["t", *(c for c in COLUMNS if c != "t" and c in fields)]
    where = (Sample.device_id == device_pk, Sample.t >= start, Sample.t <= end)
    count = session.scalar(select(func.count()).select_from(Sample).where(*where)) or 0
    if count <= max_points:
        rows = session.execute(select(*(_raw(c) for c in names)).where(*where).order_by(Sample.t)).all()
    else:
        width = max((end - start) / max_points, 1e-9)
        bucket = _bucket(start, width, session.get_bind().dialect.name).label("bucket")
        rows = session.execute(
            select(*(_aggregate(c) for c in names)).where(*where).group_by(bucket).order_by(bucket)
        ).all()
    return {name: [r[i] for r in rows] for i, name in enumerate(names)}, count
