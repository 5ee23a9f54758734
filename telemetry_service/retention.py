"""Retention: old raw samples become a coarser series that keeps the energy; phases and runs are never touched.

Tiers such as "1d:1s,7d:1m" say: samples older than a day are kept as 1 s buckets, older than a week as 1 min
buckets. A bucket becomes two rows holding the same power, one where the bucket starts and one just before
the next starts, so power is flat across the bucket and steps (over EPS_S) at its edges; that flat power is
solved for so that the integral of power over every bucket is what it was. Counter devices keep, per bucket,
the first new counter value they read there, with the instant it was stamped: the cumulative energy E(t) at
each of those instants is unchanged, and between them it is interpolated. Around every run's start and end
(a second, or five sampling intervals) raw samples stay as they were, so the energy of a run, E(end) - E(start), does not change at all
for a counter device, and only by the treatment of phase boundaries inside the old stretch for a device
measured by power alone (the bucket integral is that of the plain trapezoid, without the held power the
energy math uses on each side of a boundary). Per-process samples keep one row per process and bucket.

Retention works in chunks of a few minutes of one device, each one transaction through the ledger's single
writer, so the sampler's batches and the API's phases wait at most one chunk. Which stretches were
downsampled, and to what, is recorded in `downsampled_spans`: the energy answer reads it to tell a hole in
the data from the spacing of a coarse series.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import bindparam, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from telemetry_service.gaps import downsampled_spans, gap_threshold
from telemetry_service.store.blocks import repack
from telemetry_service.store.models import DownsampledSpan, ProcessSample, Run, RunMember, Sample
from telemetry_service.store.writer import Writer

log = logging.getLogger(__name__)

# The step between neighbouring buckets' flat power: short enough that a phase boundary falling inside it
# moves nothing measurable, long enough to be many float64 ulps at today's unix time (~2.4e-7 s).
EPS_S = 1e-3
# Raw samples kept on each side of a run's start and end: E(t) there rests on the counter updates and power
# readings just around t; this keeps several sampling intervals of them.
PROTECT_S = 1.0
PROTECT_INTERVALS = 5.0
# At most this many rows in one writer job (~0.1 s of work on a small machine), whatever the bucket width.
MAX_CHUNK_ROWS = 5000
MEAN_COLUMNS = ("util_pct", "mem_util_pct", "mem_used_bytes", "mem_total_bytes", "temp_c", "sm_clock_mhz",
                "power_limit_w")
INT_COLUMNS = frozenset({"mem_used_bytes", "mem_total_bytes"})
COUNTER_COLUMNS = ("energy_j", "energy_t", "counter_raw_j", "timing")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}

Row = dict[str, Any]


@dataclass(frozen=True)
class Tier:
    age_s: float  # samples older than this ...
    bucket_s: float  # ... are kept as buckets this wide

    @property
    def chunk_s(self) -> float:
        """How much history one writer job downsamples: a few hundred buckets, on the bucket grid."""
        return self.bucket_s * max(1.0, math.ceil(max(300.0, 60.0 * self.bucket_s) / self.bucket_s))


def _seconds(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if m is None:
        raise ValueError(f"{text!r} is not a duration (e.g. 90s, 1m, 1d, 1w)")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def parse_tiers(spec: str) -> list[Tier]:
    """'1d:1s,7d:1m' -> tiers, finest first; 'off' -> none. Ages and buckets grow, each bucket a multiple of the
    one before (so bucket grids nest)."""
    if spec.strip().lower() in ("off", "none", ""):
        return []
    tiers = []
    for part in spec.split(","):
        age, sep, bucket = part.partition(":")
        if not sep:
            raise ValueError(f"retention tier {part!r} is not AGE:BUCKET (e.g. 1d:1s)")
        tiers.append(Tier(_seconds(age), _seconds(bucket)))
    for t in tiers:
        if t.bucket_s <= 0 or t.age_s < 2 * t.bucket_s:
            raise ValueError(f"retention tier {t.age_s:g}s:{t.bucket_s:g}s: the age must be at least two buckets")
    for a, b in zip(tiers, tiers[1:]):
        ratio = b.bucket_s / a.bucket_s
        if b.age_s <= a.age_s or b.bucket_s <= a.bucket_s or abs(ratio - round(ratio)) > 1e-9:
            raise ValueError("retention tiers need growing ages and buckets, each bucket a multiple of the one before")
    return tiers


# --- the pure part: one contiguous stretch of rows in, its coarse replacement out ------------------------------


def split_stretches(rows: Sequence[Row], gap_s: float, protected: Sequence[tuple[float, float]]) -> list[list[Row]]:
    """Rows cut into stretches that may be downsampled: a hole longer than `gap_s` ends one, and rows inside a
    protected interval belong to none."""
    out: list[list[Row]] = []
    cur: list[Row] = []
    for r in rows:
        if any(a <= r["t"] <= b for a, b in protected):
            if cur:
                out.append(cur)
            cur = []
            continue
        if cur and r["t"] - cur[-1]["t"] > gap_s:
            out.append(cur)
            cur = []
        cur.append(r)
    if cur:
        out.append(cur)
    return out


def _cell_edges(rows: Sequence[Row], end_t: float, bucket_s: float, eps: float) -> list[int]:
    """Indices of the rows that open a bucket: the stretch's first row, then the first row of each later bucket
    (one too close to the previous edge or to the end joins its neighbour)."""
    edges = [0]
    for i in range(1, len(rows)):
        t = rows[i]["t"]
        if (math.floor(t / bucket_s) != math.floor(rows[i - 1]["t"] / bucket_s)
                and t - rows[edges[-1]]["t"] > 4 * eps and end_t - t > 4 * eps):
            edges.append(i)
    return edges


def _flat_power(edges_t: Sequence[float], end_t: float, areas: Sequence[float], p_first: float, p_end: float,
                eps: float) -> list[float]:
    """Flat power per cell so that the new curve's integral over each cell equals `areas`.

    Cell i spans [e_i, e_{i+1}]: flat from e_i (from e_0 + eps for the first, which starts at the kept first
    row) to e_{i+1} - eps, then a step to the next cell's value (the kept end row's power after the last).
    Its area is linear in its own value and the next one's, so the values are solved from the end backwards;
    each step divides the error by about bucket/eps, so the solve is stable.
    """
    k = len(edges_t)
    values = [0.0] * k
    following = p_end
    for i in range(k - 1, -1, -1):
        lo = edges_t[i]
        hi = edges_t[i + 1] if i + 1 < k else end_t
        g = hi - eps
        if i == 0:
            h = lo + eps
            alpha, gamma = 0.5 * (h - lo) + (g - h) + 0.5 * (hi - g), 0.5 * p_first * (h - lo)
        else:
            alpha, gamma = (g - lo) + 0.5 * (hi - g), 0.0
        values[i] = (areas[i] - gamma - 0.5 * (hi - g) * following) / alpha
        following = values[i]
    return values


def _means(rows: Sequence[Row]) -> Row:
    out: Row = {}
    for col in MEAN_COLUMNS:
        vals = [r[col] for r in rows if r.get(col) is not None]
        if not vals:
            out[col] = None
        else:
            mean = sum(vals) / len(vals)
            out[col] = int(round(mean)) if col in INT_COLUMNS else mean
    return out


@dataclass(frozen=True)
class Plan:
    """Delete a device's rows strictly between `after_t` and `before_t`, insert `rows`."""

    after_t: float
    before_t: float
    rows: list[Row]
    removed: int


def plan_stretch(stretch: Sequence[Row], following: Row | None, bucket_s: float, last_energy_j: float | None,
                 eps: float = EPS_S) -> Plan | None:
    """The coarse replacement of one stretch, or None where it would not save rows or cannot keep the energy.

    The stretch's first row stays as it is; so does the row that ends it: `following` (the next row, contiguous,
    left to a later chunk or protected) or else the stretch's own last row. `last_energy_j` is the counter value
    read just before the stretch, so that a bucket keeps the first *new* value read in it.
    """
    first = stretch[0]
    end = following if following is not None else stretch[-1]
    body = list(stretch) if following is not None else list(stretch[:-1])
    if len(body) < 2:
        return None
    edges = _cell_edges(body, end["t"], bucket_s, eps)
    if len(body) - 1 <= 2 * len(edges):  # the buckets would hold as many rows as before
        return None
    known = [r["power_w"] is not None for r in (*body, end)]
    if any(known) and not all(known):
        return None  # a row without power would make the integral ambiguous: left raw
    edges_t = [body[i]["t"] for i in edges]
    power: list[float | None] = [None] * len(edges)
    if all(known):
        t = np.array([r["t"] for r in (*body, end)])
        p = np.array([r["power_w"] for r in (*body, end)])
        cum = np.concatenate([[0.0], np.cumsum(0.5 * (p[1:] + p[:-1]) * np.diff(t))])
        bounds = [*edges, len(body)]
        areas = [float(cum[bounds[i + 1]] - cum[bounds[i]]) for i in range(len(edges))]
        power = list(_flat_power(edges_t, end["t"], areas, first["power_w"], end["power_w"], eps))
    new_rows: list[Row] = []
    seen = first["energy_j"] if first["energy_j"] is not None else last_energy_j
    device_id = first["device_id"]
    for i, start in enumerate(edges):
        stop = edges[i + 1] if i + 1 < len(edges) else len(body)
        members = body[start:stop]
        point: Row | None = None
        for r in members[1:] if i == 0 else members:
            if r["energy_t"] is not None and r["energy_j"] is not None and r["energy_j"] != seen:
                point = r
                break
        for r in members:
            if r["energy_j"] is not None:
                seen = r["energy_j"]
        hi = edges_t[i + 1] if i + 1 < len(edges) else end["t"]
        means = _means(members)
        # A cumulative reading (the host's busy CPU seconds) stays true at the instant it was read.
        opening: Row = {"device_id": device_id, "t": edges_t[i] + eps if i == 0 else edges_t[i],
                        "power_w": power[i], **means, "cpu_busy_s": members[0].get("cpu_busy_s")}
        if point is not None:
            opening.update({c: point[c] for c in COUNTER_COLUMNS})
        elif members[0]["energy_t"] is None:  # power-only: the sampler's running total, for charts
            opening.update({"energy_j": members[0]["energy_j"], "energy_t": None, "counter_raw_j": None,
                            "timing": None})
        else:
            opening.update({c: None for c in COUNTER_COLUMNS})
        closing: Row = {"device_id": device_id, "t": hi - eps, "power_w": power[i], **means, "cpu_busy_s": None,
                        **{c: None for c in COUNTER_COLUMNS}}
        new_rows += [opening, closing]
    return Plan(after_t=first["t"], before_t=end["t"], rows=new_rows, removed=len(body) - 1)


# --- the ledger part ---------------------------------------------------------------------------------------------


_SAMPLE_COLUMNS = [c for c in Sample.__table__.columns if c.name != "id"]


def _rows(session: Session, device_pk: int, lo: float, hi: float) -> list[Row]:
    result = session.execute(select(*_SAMPLE_COLUMNS).where(Sample.device_id == device_pk, Sample.t >= lo,
                                                            Sample.t < hi).order_by(Sample.t, Sample.id))
    return [dict(r._mapping) for r in result]


def _first_after(session: Session, device_pk: int, t: float) -> Row | None:
    r = session.execute(select(*_SAMPLE_COLUMNS).where(Sample.device_id == device_pk, Sample.t >= t)
                        .order_by(Sample.t, Sample.id).limit(1)).first()
    return None if r is None else dict(r._mapping)


def _energy_before(session: Session, device_pk: int, t: float) -> float | None:
    return session.scalar(select(Sample.energy_j).where(Sample.device_id == device_pk, Sample.t < t,
                                                        Sample.energy_j.is_not(None)).order_by(Sample.t.desc()).limit(1))


def protected_intervals(session: Session, node_id: int, lo: float, hi: float,
                        protect_s: float) -> list[tuple[float, float]]:
    """Around each start and end of a run on this node near [lo, hi]: raw samples stay."""
    near = lambda col: col.between(lo - protect_s, hi + protect_s)  # noqa: E731
    edges = session.execute(select(Run.started_at, Run.ended_at).join(RunMember).where(
        RunMember.node_id == node_id, or_(near(Run.started_at), near(Run.ended_at))).distinct()).all()
    out = []
    for started, ended in edges:
        for t in (started, ended):
            if t is not None:
                out.append((t - protect_s, t + protect_s))
    return out


def _row_capped(session: Session, table: Any, owner: Any, lo: float, hi: float, bucket_s: float) -> float:
    """`hi`, brought back to a bucket edge so that [lo, hi) holds about MAX_CHUNK_ROWS rows (one bucket at least)."""
    t = session.scalar(select(table.c.t).where(owner, table.c.t >= lo, table.c.t < hi).order_by(table.c.t)
                       .offset(MAX_CHUNK_ROWS).limit(1))
    if t is None:
        return hi
    return max(lo + bucket_s, math.floor(t / bucket_s) * bucket_s)


def _owner(device_pk: int | None, node_id: int | None) -> tuple[Any, ...]:
    """A device's own spans, or (no device) a node's process-sample spans."""
    if device_pk is not None:
        return (DownsampledSpan.device_id == device_pk,)
    return (DownsampledSpan.device_id.is_(None), DownsampledSpan.node_id == node_id)


def _done_until(session: Session, bucket_s: float, device_pk: int | None, node_id: int | None = None) -> float | None:
    """Where this tier or a coarser one stopped (never refine what is already coarser)."""
    return session.scalar(select(func.max(DownsampledSpan.end)).where(*_owner(device_pk, node_id),
                                                                      DownsampledSpan.bucket_s >= bucket_s))


def _record_span(session: Session, device_pk: int | None, lo: float, hi: float, bucket_s: float,
                 node_id: int | None = None) -> None:
    span = session.scalars(select(DownsampledSpan).where(*_owner(device_pk, node_id),
                                                         DownsampledSpan.bucket_s == bucket_s,
                                                         DownsampledSpan.end == lo)).first()
    if span is not None:
        span.end = hi
    else:
        session.add(DownsampledSpan(device_id=device_pk, node_id=node_id, start=lo, end=hi, bucket_s=bucket_s))


@dataclass(frozen=True)
class ChunkResult:
    start: float
    end: float
    rows_before: int
    rows_after: int


def _next_window(session: Session, tier: Tier, now: float, done: float | None, t_col: Any,
                 owner: Any) -> tuple[float, float, float] | None:
    """The next stretch [lo, hi) a tier should work on, on its bucket grid, and the instant it may reach (now -
    age): from where it stopped, else from the owner's first row; None when there is nothing to do."""
    w = tier.bucket_s
    if done is None:
        first = session.scalar(select(func.min(t_col)).where(owner))
        if first is None:
            return None
        done = math.floor(first / w) * w
    until = math.floor((now - tier.age_s) / w) * w
    hi = min(done + tier.chunk_s, until)
    return None if hi <= done else (done, hi, until)


def downsample_next_chunk(session: Session, device_pk: int, node_id: int, tier: Tier, now: float,
                          interval: float) -> ChunkResult | None:
    """Downsamples the oldest stretch of one device this tier has not done yet; None when it is up to date.

    Work starts where this tier or a coarser one stopped (never refining what is already coarser), on the
    bucket grid, and ends a chunk later or at now - age.
    """
    w = tier.bucket_s
    window = _next_window(session, tier, now, _done_until(session, w, device_pk), Sample.t,
                          Sample.device_id == device_pk)
    if window is None:
        return None
    lo, hi, until = window
    hi = _row_capped(session, Sample.__table__, Sample.device_id == device_pk, lo, hi, w)
    rows = _rows(session, device_pk, lo, hi)
    if not rows:  # a stretch without samples: go on to the next one
        nxt = session.scalar(select(func.min(Sample.t)).where(Sample.device_id == device_pk, Sample.t >= hi))
        hi = until if nxt is None else max(hi, min(until, math.floor(nxt / w) * w))
        _record_span(session, device_pk, lo, hi, w)
        return ChunkResult(lo, hi, 0, 0)
    # A hole is judged against the device's own cadence (host stats come once a second), and rows already
    # coarser (a finer tier's buckets) are spaced up to their bucket apart: that is no hole either.
    stored_at = max((s[2] for s in downsampled_spans(session, device_pk, lo, hi) if s[2] < w), default=0.0)
    cadence = float(np.median(np.diff([r["t"] for r in rows]))) if len(rows) > 1 else interval
    gap_s = max(gap_threshold(max(interval, cadence)), 1.5 * stored_at)
    following = _first_after(session, device_pk, hi)
    last_energy = _energy_before(session, device_pk, lo)
    protected = protected_intervals(session, node_id, lo, hi, max(PROTECT_S, PROTECT_INTERVALS * interval))
    sequence = rows + ([following] if following is not None else [])
    position = {id(r): i for i, r in enumerate(sequence)}
    inserted = removed = 0
    for stretch in split_stretches(rows, gap_s, protected):
        # The row after a stretch is protected or the next chunk's first, and stays as it is: where it is close,
        # the stretch's last bucket runs up to it; otherwise the stretch's own last row closes the stretch.
        i = position[id(stretch[-1])] + 1
        nxt = sequence[i] if i < len(sequence) else None
        closes = nxt if nxt is not None and nxt["t"] - stretch[-1]["t"] <= gap_s else None
        plan = plan_stretch(stretch, closes, w, last_energy)
        for r in stretch:
            if r["energy_j"] is not None:
                last_energy = r["energy_j"]
        if plan is None:
            continue
        session.execute(delete(Sample).where(Sample.device_id == device_pk, Sample.t > plan.after_t,
                                             Sample.t < plan.before_t))
        session.connection().execute(insert(Sample.__table__), plan.rows)
        removed += plan.removed
        inserted += len(plan.rows)
    _record_span(session, device_pk, lo, hi, w)
    if removed or inserted:
        repack(session, device_pk, lo, hi)  # the energy queries' packed copy follows the rewritten rows
    return ChunkResult(lo, hi, len(rows), len(rows) - removed + inserted)


def thin_next_process_chunk(session: Session, node_id: int, tier: Tier, now: float) -> ChunkResult | None:
    """Per-process samples (CPU %, RSS, GPU memory of the runs' processes) older than the tier's age: one row
    per process and bucket, holding the bucket's mean CPU % and peak RSS. None when up to date."""
    w = tier.bucket_s
    window = _next_window(session, tier, now, _done_until(session, w, None, node_id), ProcessSample.t,
                          ProcessSample.node_id == node_id)
    if window is None:
        return None
    lo, hi, until = window
    hi = _row_capped(session, ProcessSample.__table__, ProcessSample.node_id == node_id, lo, hi, w)
    rows = session.execute(select(ProcessSample.id, ProcessSample.pid, ProcessSample.t, ProcessSample.cpu_percent,
                                  ProcessSample.rss_bytes).where(ProcessSample.node_id == node_id,
                                                                 ProcessSample.t >= lo, ProcessSample.t < hi)
                           .order_by(ProcessSample.pid, ProcessSample.t)).all()
    if not rows:
        nxt = session.scalar(select(func.min(ProcessSample.t)).where(ProcessSample.node_id == node_id,
                                                                     ProcessSample.t >= hi))
        hi = until if nxt is None else max(hi, min(until, math.floor(nxt / w) * w))
        _record_span(session, None, lo, hi, w, node_id)
        return ChunkResult(lo, hi, 0, 0)
    groups: dict[tuple[int, int], list[tuple[int, float | None, int | None]]] = {}
    for row_id, pid, t, cpu_percent, rss_bytes in rows:
        groups.setdefault((pid, math.floor(t / w)), []).append((row_id, cpu_percent, rss_bytes))
    kept, gone = [], []
    for members in groups.values():
        if len(members) < 2:
            continue
        cpu = [c for _, c, _ in members if c is not None]
        rss = [r for _, _, r in members if r is not None]
        kept.append({"kid": members[0][0], "cpu": sum(cpu) / len(cpu) if cpu else None, "rss": max(rss, default=None)})
        gone += [m[0] for m in members[1:]]
    if kept:
        session.connection().execute(update(ProcessSample.__table__).where(ProcessSample.__table__.c.id == bindparam("kid"))
                                     .values(cpu_percent=bindparam("cpu"), rss_bytes=bindparam("rss")), kept)
    for i in range(0, len(gone), 900):  # within any SQLite's limit on bound parameters
        session.execute(delete(ProcessSample).where(ProcessSample.id.in_(gone[i:i + 900])))
    _record_span(session, None, lo, hi, w, node_id)
    return ChunkResult(lo, hi, len(rows), len(rows) - len(gone))


class Retention:
    """Runs the tiers over every device of this node now and then, one chunk per writer job."""

    def __init__(self, writer: Writer, sessions: sessionmaker[Session], node_id: int, device_pks: list[int],
                 tiers: list[Tier], interval: float, every_s: float) -> None:
        self.writer = writer
        self.sessions = sessions
        self.node_id = node_id
        self.device_pks = device_pks
        self.tiers = tiers
        self.interval = interval
        self.every_s = every_s
        self.rows_removed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="retention", daemon=True)

    def start(self) -> None:
        if self.tiers:
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30.0)

    def run_pass(self, now: float | None = None) -> int:
        """Brings every device, and the node's process samples, up to date with every tier (coarsest first);
        returns how many rows went."""
        now = now or time.time()
        removed = 0
        jobs = [lambda s, pk=pk, tier=tier: downsample_next_chunk(s, pk, self.node_id, tier, now, self.interval)
                for pk in self.device_pks for tier in reversed(self.tiers)]
        jobs += [lambda s, tier=tier: thin_next_process_chunk(s, self.node_id, tier, now)
                 for tier in reversed(self.tiers)]
        for job in jobs:
            while not self._stop.is_set():
                result = self.writer.submit(job).result(timeout=120.0)
                if result is None:
                    break
                removed += result.rows_before - result.rows_after
        self.rows_removed += removed
        return removed

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                removed = self.run_pass()
            except Exception as exc:  # retention can wait for the next pass; sampling must not be disturbed
                log.warning("retention pass failed: %s", exc)
                continue
            if removed:
                log.info("retention: %d old sample rows folded into buckets", removed)
