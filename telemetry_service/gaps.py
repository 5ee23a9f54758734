"""Where a device has no samples over a run, why, and what its energy figure does across the hole.

Two sources: the samples themselves (any stretch without a reading longer than a threshold: a failed sensor, a
stalled sampler, a daemon that was down) and the daemon's lives in `sampler_sessions` (each start, its last
written sample, and whether it stopped cleanly), which say when and how the daemon was away.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from telemetry_service.energy import counter_increment, find_gaps
from telemetry_service.store.models import Device, DownsampledSpan, Sample, SamplerSession


def gap_threshold(interval: float | None) -> float:
    """A hole is a stretch without samples this long: ten sampling intervals, at least a second."""
    return max(1.0, 10.0 * (interval or 0.1))


def downsampled_spans(session: Session, device_pk: int, lo: float, hi: float) -> list[tuple[float, float, float]]:
    """The stretches of a device that retention stored coarser, overlapping [lo, hi]: (start, end, bucket_s)."""
    rows = session.execute(select(DownsampledSpan.start, DownsampledSpan.end, DownsampledSpan.bucket_s).where(
        DownsampledSpan.device_id == device_pk, DownsampledSpan.start < hi, DownsampledSpan.end > lo)).all()
    return [(a, b, w) for a, b, w in rows]


def coarse_stretches(session: Session, device_pk: int, device_id: str, t0: float, t1: float) -> list[dict[str, Any]]:
    """The parts of [t0, t1] where a device's samples are stored as buckets, with the bucket width: there a
    phase's energy is interpolated between bucket edges (a run's total is not: its ends stay raw)."""
    spans = downsampled_spans(session, device_pk, t0, t1)
    cuts = sorted({t0, t1, *(min(max(x, t0), t1) for a, b, _ in spans for x in (a, b))})
    out: list[dict[str, Any]] = []
    for a, b in zip(cuts, cuts[1:]):
        width = float(resolution_at(spans, np.array([0.5 * (a + b)]))[0])
        if width == 0.0 or b <= a:
            continue
        if out and out[-1]["bucket_s"] == width and out[-1]["end"] == a:
            out[-1]["end"] = b
        else:
            out.append({"device": device_id, "start": a, "end": b, "bucket_s": width})
    return out


def resolution_at(spans: list[tuple[float, float, float]], t: np.ndarray) -> np.ndarray:
    """The bucket width samples are stored at, at each instant (0 where they are raw)."""
    res = np.zeros(np.shape(t))
    for a, b, w in spans:
        res = np.where((t >= a) & (t < b), np.maximum(res, w), res)
    return res


def find_holes(times: np.ndarray, threshold: float, spans: list[tuple[float, float, float]]) -> list[tuple[float, float]]:
    """Stretches without a sample longer than `threshold`, or than 1.5 buckets where samples are stored coarser
    (a hole shorter than that cannot be told from the spacing of the buckets there)."""
    holes = find_gaps(times, threshold)
    if not spans or not holes:
        return holes
    a, b = np.array(holes).T
    res = resolution_at(spans, 0.5 * (a + b))
    return [h for h, keep in zip(holes, b - a > np.maximum(threshold, 1.5 * res)) if keep]


def power_holes(session: Session, device_pk: int, times: np.ndarray, threshold: float) -> list[tuple[float, float]]:
    """Where a device without a counter has no power reading: such stretches get no energy."""
    if len(times) < 2:
        return []
    spans = downsampled_spans(session, device_pk, float(np.min(times)), float(np.max(times)))
    return find_holes(times, threshold, spans)


def daemon_downtime(session: Session, nodes: dict[int, str], t0: float, t1: float) -> list[dict[str, Any]]:
    """The stretches of [t0, t1] when a node's daemon was not sampling: from one life's last written sample to
    the next life's start. `clean_stop` is false where the daemon was killed or crashed (no stop recorded)."""
    out: list[dict[str, Any]] = []
    for node_id, node in nodes.items():
        lives = session.execute(
            select(SamplerSession.started_at, SamplerSession.last_sample_at, SamplerSession.stopped_at)
            .where(SamplerSession.node_id == node_id, SamplerSession.started_at <= t1)
            .order_by(SamplerSession.started_at)).all()
        for (started, last, stopped), (next_start, _, _) in zip(lives, lives[1:]):
            down_from = last if last is not None else started
            if next_start <= t0 or down_from >= t1 or next_start <= down_from:
                continue
            out.append({"node": node, "start": down_from, "end": next_start, "duration_s": next_start - down_from,
                        "clean_stop": stopped is not None})
    return sorted(out, key=lambda d: d["start"])


def _raw_counter(session: Session, device_pk: int, at: float, before: bool) -> float | None:
    q = select(Sample.counter_raw_j).where(Sample.device_id == device_pk, Sample.counter_raw_j.is_not(None))
    q = q.where(Sample.energy_t <= at).order_by(Sample.t.desc()) if before else \
        q.where(Sample.energy_t >= at).order_by(Sample.t)
    return session.scalar(q.limit(1))


def _counter_across(session: Session, device: Device, a: float, b: float) -> str:
    before, after = _raw_counter(session, device.id, a, True), _raw_counter(session, device.id, b, False)
    if before is None or after is None:
        return "unknown: no counter reading on one side of the gap"
    step = counter_increment(before, after, device.counter_wrap_j, b - a)
    if step.note is None:
        return ("counter wrapped inside the gap: exact if it wrapped once" if after < before
                else "exact: the hardware counter ran on")
    if step.note == "counter reset":
        return "counter reset inside the gap (driver reload): the energy before the reset is missing"
    return f"none counted: {step.note}"


def device_gaps(session: Session, device_pk: int, device_id: str, method: str | None, times: np.ndarray,
                threshold: float, downtime: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Holes in one device's sample times, each with what the energy across it rests on and whether the
    daemon was down then."""
    out = []
    device = session.get(Device, device_pk)
    lo, hi = (float(np.min(times)), float(np.max(times))) if len(times) else (0.0, 0.0)
    for a, b in find_holes(times, threshold, downsampled_spans(session, device_pk, lo, hi)):
        if method == "counter" and device is not None:
            energy = _counter_across(session, device, a, b)
        else:
            energy = "none: no power reading, so no energy is counted across the gap"
        down = any(d["start"] < b and d["end"] > a for d in downtime)
        out.append({"device": device_id, "start": a, "end": b, "duration_s": b - a, "energy": energy,
                    "daemon_down": down})
    return out
