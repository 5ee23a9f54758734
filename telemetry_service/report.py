"""Energy of a run, per device, node and phase name: loads what the ledger holds and applies the energy math."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from telemetry_service.carbon import Intensity, add_carbon
from telemetry_service.energy import PhaseEnergies, combine_methods, overlaps, phase_energies
from telemetry_service.phase_rows import PhaseRows, share
from telemetry_service.gaps import coarse_stretches, daemon_downtime, device_gaps, gap_threshold, power_holes
from telemetry_service.run_share import PhaseArrays, add_run_share
from telemetry_service.store.blocks import load_series
from telemetry_service.store.models import Device, Phase, Run
from telemetry_service.store.raw import fetch_tuples

# Samples this far outside a run still matter: the counter updates that bracket its first and last instants.
MARGIN_S = 2.0


@dataclass(frozen=True)
class RunDevice:
    id: str  # node/key
    device_pk: int
    node: str
    node_id: int
    key: str
    kind: str
    source: str
    energy_counter: bool
    update_period_s: float | None
    power_window_s: float | None


def device_id(node: str, key: str) -> str:
    return f"{node}/{key}"


def run_span(run: Run, now: float | None = None) -> tuple[float, float]:
    return run.started_at, run.ended_at if run.ended_at is not None else (now or time.time())


def run_devices(session: Session, run: Run) -> list[RunDevice]:
    """The devices a run owns: on each node it registered from, the GPUs its processes see plus CPU and DRAM."""
    out: dict[str, RunDevice] = {}
    for member in run.members:
        keys = set(member.device_keys or [])
        for dev in session.scalars(select(Device).where(Device.node_id == member.node_id)):
            if dev.key in keys:
                rd = RunDevice(id=device_id(member.node.name, dev.key), device_pk=dev.id, node=member.node.name,
                               node_id=member.node_id, key=dev.key, kind=dev.kind, source=dev.source,
                               energy_counter=dev.energy_counter, update_period_s=dev.update_period_s,
                               power_window_s=dev.power_window_s)
                out[rd.id] = rd
    return sorted(out.values(), key=lambda d: d.id)


def shared_devices(session: Session, run: Run, devices: list[RunDevice], now: float) -> dict[str, list[str]]:
    """Devices this run shares with other runs over overlapping time: flagged, since both count them."""
    span = run_span(run, now)
    mine = {(d.node_id, d.key): d.id for d in devices}
    flagged: dict[str, list[str]] = defaultdict(list)
    others = session.scalars(select(Run).where(Run.id != run.id, Run.started_at < span[1])).all()
    for other in others:
        if not overlaps(span, run_span(other, now)):
            continue
        for member in other.members:
            for key in member.device_keys or []:
                did = mine.get((member.node_id, key))
                if did is not None and other.run_id not in flagged[did]:
                    flagged[did].append(other.run_id)
    return dict(flagged)


def _load_phases(session: Session, run_pk: int) -> tuple[list[str], Any, Any, Any, Any]:
    """A run's phases as arrays (name index, start, end, node); names in the order they first occur."""
    table = Phase.__table__.c
    # Unordered: the unique index covers these columns, and the order is made below.
    rows = fetch_tuples(session, select(table.name, table.start, table.end, table.node_id)
                        .where(table.run_pk == int(run_pk)))
    if not rows:
        empty = np.empty(0)
        return [], empty.astype(np.int64), empty, empty, empty.astype(np.int64)
    name, start, end, node = zip(*rows)
    index: dict[str, int] = {}
    p_name = np.fromiter((index.setdefault(x, len(index)) for x in name), dtype=np.int64, count=len(name))
    p_start = np.array(start, dtype=np.float64)
    first = np.full(len(index), np.inf)
    np.minimum.at(first, p_name, p_start)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    names = list(index)
    return ([names[i] for i in order], rank[p_name], p_start, np.array(end, dtype=np.float64),
            np.array(node, dtype=np.int64))


def run_energy(session: Session, run: Run, sample_interval: float | None = None, now: float | None = None,
               carbon: Intensity | None = None) -> dict[str, Any]:
    """The energy answer of the REST contract: totals and per phase name, every figure with its method."""
    now = now or time.time()
    t0, t1 = run_span(run, now)
    devices = [d for d in run_devices(session, run) if d.kind != "host"]
    names, p_name, p_start, p_end, p_node = _load_phases(session, run.id)
    n = len(names)

    phases = PhaseRows(names)
    provenance: dict[str, dict[str, Any]] = {}
    total_var = 0.0
    total_by_device: dict[str, float] = {}
    by_node: dict[str, float] = defaultdict(float)
    methods: dict[str, str] = {}
    attribution: dict[str, dict[str, float]] = {}
    gaps: list[dict[str, Any]] = []
    notes: list[dict[str, Any]] = []
    threshold = gap_threshold(sample_interval or 0.1)
    downtime = daemon_downtime(session, {d.node_id: d.node for d in devices}, t0, t1)
    downsampled = [c for d in devices for c in coarse_stretches(session, d.device_pk, d.id, t0, t1)]

    for dev in devices:
        on_node = p_node == dev.node_id
        series = load_series(session, dev.device_pk, t0 - MARGIN_S, t1 + MARGIN_S)
        pe = phase_energies(series, n, p_name[on_node], names, p_start[on_node], p_end[on_node], t0, t1,
                            dev.update_period_s, estimated=dev.source == "estimate",
                            power_window_s=dev.power_window_s,
                            holes=power_holes(session, dev.device_pk, series.power_t, threshold))
        if pe.method is None:
            notes.append({"device": dev.id, "note": "no samples over this run"})
            continue
        methods[dev.id] = pe.method
        provenance[dev.id] = device_provenance(pe)
        if np.isfinite(pe.total_j):
            total_by_device[dev.id] = pe.total_j
            total_var += pe.total_err_j ** 2
            by_node[dev.node] += pe.total_j
        else:
            notes.append({"device": dev.id, "note": "no energy figure could be formed over this run; left out of "
                                                    "the total, which is incomplete"})
        if pe.attribution is not None:
            attribution[dev.id] = pe.attribution
        phases.add(dev.id, pe)
        all_t = series.counter_t if series.counter_t.size else series.power_t
        gaps += device_gaps(session, dev.device_pk, dev.id, pe.method,
                            all_t[(all_t >= t0 - MARGIN_S) & (all_t <= t1 + MARGIN_S)], threshold,
                            [d for d in downtime if d["node"] == dev.node])

    total_energy = float(sum(total_by_device.values()))
    duration = t1 - t0
    counts = np.bincount(p_name, minlength=n)
    durations = np.bincount(p_name, weights=p_end - p_start, minlength=n)
    answer: dict[str, Any] = {
        "run": run_summary(run),
        "total": {
            "energy_j": total_energy, "duration_s": duration,
            "avg_power_w": total_energy / duration if duration > 0 else None,
            "by_device": total_by_device, "by_node": dict(by_node),
            "method": combine_methods(list(methods.values())),
            "uncertainty_j": float(np.sqrt(total_var)),
            "complete": bool(provenance) and len(total_by_device) == len(devices)
            and all(pv["complete"] for pv in provenance.values()) and not downtime,
        },
        "phases": phases.rows(counts, durations),
        "devices": [{"id": d.id, "kind": d.kind, "source": d.source, "simulated": d.source == "simulated",
                     "energy_counter": d.energy_counter, "method": methods.get(d.id),
                     "update_period_s": d.update_period_s, "power_window_s": d.power_window_s,
                     **provenance.get(d.id, {})} for d in devices],
        "simulated": any(d.source == "simulated" for d in devices),
        "shared_devices": shared_devices(session, run, devices, now),
        "gaps": gaps,
        "downtime": downtime,
        "downsampled": downsampled,
        "attribution": {"power_w": attribution} if attribution else None,
        "notes": notes,
    }
    add_run_share(session, run, answer, devices, PhaseArrays(p_name, p_start, p_end, p_node), t0, t1)
    add_carbon(answer, carbon, p_name, p_start, p_end, t0, t1)
    return answer


def device_provenance(pe: PhaseEnergies) -> dict[str, Any]:
    """How one device's run figure was obtained and how far to trust it."""
    return {
        "uncertainty_j": pe.total_err_j, "complete": pe.total_complete, "resolution_s": pe.resolution_s,
        "timing_quality": share(int(pe.located.sum()), int(pe.timed.sum())),
        "holes": [{"start": a, "end": b} for a, b in pe.holes],
    }


def run_summary(run: Run, totals: dict[str, Any] | None = None, config: bool = True) -> dict[str, Any]:
    """A run as the API shows it; `config` False leaves out the run's config (it can be megabytes: a list or a
    registration's answer does not carry it, the run's own page does)."""
    out: dict[str, Any] = {
        "id": run.run_id, "name": run.name, "status": run.status, "started_at": run.started_at,
        "ended_at": run.ended_at,
        "duration_s": None if run.ended_at is None else run.ended_at - run.started_at,
        "tags": run.tags or {}, "metrics": run.metrics or {},
        "members": [{"node": m.node.name, "pid": m.pid, "host": m.host,
                     "devices": [device_id(m.node.name, k) for k in (m.device_keys or [])], "joined_at": m.joined_at}
                    for m in run.members],
    }
    if config:
        out["config"] = run.config or {}
    if totals is not None:
        out["totals"] = totals
    return out
