"""A columnar copy of the columns the energy math reads, one block per device and minute.

The energy of a long run needs every sample of its devices; fetching a million rows one by one through SQL
takes seconds, reading ~1 700 minute blocks of packed float64 takes milliseconds. Blocks are derived data:
the daemon builds them from `samples` once a minute is closed, and a query reads blocks up to the device's
watermark and raw rows after it, so an answer never waits for the indexer and never misses a sample.
"""

from __future__ import annotations

import math
import time

import numpy as np
from sqlalchemy import case, delete, insert, select, update
from sqlalchemy.orm import Session

from telemetry_service.energy import DeviceSeries
from telemetry_service.store.models import BlockWatermark, Sample, SampleBlock
from telemetry_service.store.raw import fetch_tuples

BLOCK_S = 60.0
# A minute is closed once the sampler's buffered rows for it are surely written.
SETTLE_S = 30.0
# One indexing pass builds at most this much history per device, so a big backfill never holds the writer long.
MAX_PASS_S = 3600.0
# The timing state travels as a number so a block stays one float64 array.
TIMING_CODES = {"edge": 0.0, "grid": 1.0, "read": 2.0}
_TIMING = case(*((Sample.timing == name, code) for name, code in TIMING_CODES.items()), else_=None)
COLUMNS = (Sample.t, Sample.power_w, Sample.energy_t, Sample.energy_j, Sample.stamp_err_s, _TIMING)
WIDTH = len(COLUMNS)


def _fetch(session: Session, device_pk: int, lo: float, hi: float, include_hi: bool = False) -> np.ndarray:
    """The block columns of a device's samples with lo <= t < hi (or <= hi), in time order; NaN for none."""
    upper = Sample.t <= hi if include_hi else Sample.t < hi
    rows = fetch_tuples(session, select(*COLUMNS).where(Sample.device_id == int(device_pk), Sample.t >= float(lo),
                                                        upper).order_by(Sample.t))
    return np.array(rows, dtype=np.float64) if rows else np.empty((0, WIDTH))


def _series(a: np.ndarray) -> DeviceSeries:
    has_power = np.isfinite(a[:, 1])
    has_counter = np.isfinite(a[:, 2]) & np.isfinite(a[:, 3])
    return DeviceSeries(a[has_power, 0], a[has_power, 1], a[has_counter, 2], a[has_counter, 3],
                        a[has_counter, 4], a[has_counter, 5])


def closed_until(now: float) -> float:
    """Blocks end at or before this instant: no watermark is ever later."""
    return math.floor((now - SETTLE_S) / BLOCK_S) * BLOCK_S


def index_device(session: Session, device_pk: int, now: float | None = None) -> int:
    """Packs the closed minutes of one device after its watermark into blocks; returns how many were written."""
    until = closed_until(now or time.time())
    mark = session.get(BlockWatermark, device_pk)
    start = mark.indexed_until if mark is not None else None
    if start is None:
        first = session.scalar(select(Sample.t).where(Sample.device_id == device_pk).order_by(Sample.t).limit(1))
        if first is None:
            return 0
        start = math.floor(first / BLOCK_S) * BLOCK_S
    final = until
    until = min(until, start + MAX_PASS_S)
    if until <= start:
        return 0
    a = _fetch(session, device_pk, start, until)
    if not a.size:  # a stretch without samples (the daemon was down): skip to the next sample
        nxt = session.scalar(select(Sample.t).where(Sample.device_id == device_pk, Sample.t >= until)
                             .order_by(Sample.t).limit(1))
        until = final if nxt is None else min(final, math.floor(nxt / BLOCK_S) * BLOCK_S)
        until = max(until, start)
    blocks = _pack(device_pk, a)
    if blocks:
        session.execute(delete(SampleBlock).where(SampleBlock.device_id == device_pk, SampleBlock.start >= start,
                                                  SampleBlock.start < until))
        session.connection().execute(insert(SampleBlock.__table__), blocks)
    if mark is None:
        session.add(BlockWatermark(device_id=device_pk, indexed_until=until))
    else:
        mark.indexed_until = until
    return len(blocks)


def repack(session: Session, device_pk: int, lo: float, hi: float) -> None:
    """Rebuilds the blocks of the minutes touching [lo, hi) from `samples`, after their rows were rewritten
    (retention); minutes past the watermark are left to the indexer."""
    mark = session.get(BlockWatermark, device_pk)
    if mark is None:
        return
    lo = math.floor(lo / BLOCK_S) * BLOCK_S
    hi = min(math.ceil(hi / BLOCK_S) * BLOCK_S, mark.indexed_until)
    if hi <= lo:
        return
    session.execute(delete(SampleBlock).where(SampleBlock.device_id == device_pk, SampleBlock.start >= lo,
                                              SampleBlock.start < hi))
    blocks = _pack(device_pk, _fetch(session, device_pk, lo, hi))
    if blocks:
        session.connection().execute(insert(SampleBlock.__table__), blocks)


def _pack(device_pk: int, a: np.ndarray) -> list[dict[str, object]]:
    """Block rows (see COLUMNS), cut into one block per minute."""
    if not a.size:
        return []
    minute = np.floor(a[:, 0] / BLOCK_S) * BLOCK_S
    cuts = np.nonzero(np.diff(minute))[0] + 1
    blocks = []
    for part in np.split(a, cuts):
        b_start = math.floor(part[0, 0] / BLOCK_S) * BLOCK_S
        blocks.append({"device_id": device_pk, "start": b_start, "end": b_start + BLOCK_S, "n": len(part),
                       "data": np.ascontiguousarray(part, dtype="<f8").tobytes()})
    return blocks


def load_series(session: Session, device_pk: int, t0: float, t1: float) -> DeviceSeries:
    """Every sample of a device over [t0, t1] for the energy math: blocks up to the watermark, raw rows after."""
    mark = session.get(BlockWatermark, device_pk)
    w = mark.indexed_until if mark is not None else -math.inf
    parts = []
    if w > t0:
        blobs = session.execute(select(SampleBlock.data).where(
            SampleBlock.device_id == device_pk, SampleBlock.start < min(t1, w), SampleBlock.end > t0)
            .order_by(SampleBlock.start)).scalars().all()
        if blobs:
            a = np.frombuffer(b"".join(blobs), dtype="<f8").reshape(-1, WIDTH)
            parts.append(a[(a[:, 0] >= t0) & (a[:, 0] <= t1)])
    if t1 >= w:
        parts.append(_fetch(session, device_pk, max(t0, w), t1, include_hi=True))
    a = np.concatenate(parts) if parts else np.empty((0, WIDTH))
    return _series(a)


def reopen_before(session: Session, earliest: dict[int, float], now: float | None = None) -> None:
    """Rows written for instants a device's blocks already cover (a sampler that fell behind, a batch retried
    after a failed write) would be missed by queries: the watermark goes back to the minute of the earliest one,
    so queries read those minutes raw until the indexer packs them again. Rows newer than any watermark can be
    (the usual batch) cost no statement."""
    closed = closed_until(now or time.time())
    for device_pk, t in earliest.items():
        if t >= closed:
            continue
        minute = math.floor(t / BLOCK_S) * BLOCK_S
        session.execute(update(BlockWatermark).where(BlockWatermark.device_id == device_pk,
                                                     BlockWatermark.indexed_until > minute)
                        .values(indexed_until=minute))
