"""The run's share beside the node figure in the energy answer: loads the CPU-second series of the node and of
the run's processes, and applies process_share's math to the CPU devices' energy already in the answer.

CPU and DRAM energy is split by CPU time (DRAM follows the cores that drive it); GPUs are the run's whole, as
in the node figure. Every figure names its attribution: "node" (all the devices' energy) or "run-share".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from telemetry_service.process_share import (IDLE_POLICY, Cumulative, Share, active_energy, cpu_share,
                                             observed_idle_w, total_increment, trapezoid_cumulative)
from telemetry_service.store.blocks import load_series
from telemetry_service.store.models import Device, ProcessSample, Run, Sample
from telemetry_service.store.raw import fetch_tuples

# Process and host samples come about once a second: this much around the run brackets its ends.
MARGIN_S = 2.0
# Idle power of a device without a known floor is looked for this far before the run too, when the node was
# more likely quiet.
IDLE_LOOKBACK_S = 600.0
SHARED_KINDS = frozenset({"cpu", "dram"})


@dataclass(frozen=True)
class PhaseArrays:
    name: Any  # index into the answer's phase rows
    start: Any
    end: Any
    node: Any


@dataclass(frozen=True)
class NodeCpu:
    busy: Cumulative
    procs: list[Cumulative]


def _node_cpu(session: Session, run: Run, node_id: int, t0: float, t1: float) -> NodeCpu | None:
    host = session.scalar(select(Device.id).where(Device.node_id == node_id, Device.kind == "host"))
    pids = sorted({m.pid for m in run.members if m.node_id == node_id and m.pid is not None})
    if host is None or not pids:
        return None
    lo, hi = t0 - MARGIN_S, t1 + MARGIN_S
    busy = fetch_tuples(session, select(Sample.t, Sample.cpu_busy_s).where(
        Sample.device_id == host, Sample.t >= lo, Sample.t <= hi, Sample.cpu_busy_s.is_not(None)))
    rows = fetch_tuples(session, select(ProcessSample.pid, ProcessSample.t, ProcessSample.cpu_time_s).where(
        ProcessSample.node_id == node_id, ProcessSample.pid.in_(pids), ProcessSample.t >= lo,
        ProcessSample.t <= hi, ProcessSample.cpu_time_s.is_not(None)))
    if len(busy) < 2 or not rows:
        return None
    procs = [Cumulative.of([t for p, t, _ in rows if p == pid], [v for p, _, v in rows if p == pid])
             for pid in {r[0] for r in rows}]
    return NodeCpu(Cumulative.of(*zip(*busy)), procs)


def _idle_w(session: Session, dev: Any, t0: float, t1: float) -> tuple[float, str]:
    known = session.scalar(select(Device.idle_power_w).where(Device.id == dev.device_pk))
    if known is not None:
        return float(known), "configured"
    s = load_series(session, dev.device_pk, t0 - IDLE_LOOKBACK_S, t1)
    t, e = (s.counter_t, s.counter_j) if s.counter_t.size else (s.power_t, trapezoid_cumulative(s.power_t, s.power_w))
    seen = observed_idle_w(t, e)
    return (seen, "observed: p5 of 1 s power") if seen is not None else (0.0, "unknown (taken as 0)")


def _share(cpu: NodeCpu, starts: Any, ends: Any) -> Share | None:
    return cpu_share(total_increment(cpu.procs, starts, ends), total_increment([cpu.busy], starts, ends))


def _phase_share_j(answer: dict[str, Any], devices: list[Any], cpus: dict[int, NodeCpu], idle: dict[str, float],
                   ph: PhaseArrays) -> None:
    for j, row in enumerate(answer["phases"]):
        total = 0.0
        for dev in devices:
            e = row["by_device"].get(dev.id)
            if e is None:
                continue
            if dev.kind not in SHARED_KINDS:
                total += e
                continue
            mine = (ph.name == j) & (ph.node == dev.node_id)
            cpu = cpus.get(dev.node_id)
            share = _share(cpu, ph.start[mine], ph.end[mine]) if cpu is not None else None
            dur = float(np.sum(ph.end[mine] - ph.start[mine]))
            total += active_energy(e, idle[dev.id], dur) * (share.value if share is not None else 0.0)
        row["attribution"] = "node"
        row["run_share_j"] = total
        row["run_share_attribution"] = "run-share"


def add_run_share(session: Session, run: Run, answer: dict[str, Any], devices: list[Any], ph: PhaseArrays,
                  t0: float, t1: float) -> None:
    """Adds `run_share` to the answer's total and `run_share_j` to each phase row (None where the ledger holds
    no CPU seconds for the run, e.g. samples from before they were recorded)."""
    answer["total"]["attribution"] = "node"
    by_device = answer["total"]["by_device"]
    cpus = {n: c for n in {d.node_id for d in devices if d.kind in SHARED_KINDS}
            if (c := _node_cpu(session, run, n, t0, t1)) is not None}
    shared = [d for d in devices if d.kind in SHARED_KINDS and d.id in by_device]
    if any(d.node_id not in cpus for d in shared):
        answer["run_share"] = None
        for row in answer["phases"]:
            row.update({"attribution": "node", "run_share_j": None, "run_share_attribution": "run-share"})
        answer["notes"].append({"note": "no CPU seconds of the run's processes on record: run share unavailable"})
        return
    idle = {d.id: _idle_w(session, d, t0, t1) for d in shared}
    out: dict[str, float] = {}
    shares: dict[str, float] = {}
    uncertainty = 0.0
    for dev in devices:
        if dev.id not in by_device:
            continue
        if dev.kind not in SHARED_KINDS:
            out[dev.id] = by_device[dev.id]
            continue
        share = _share(cpus[dev.node_id], [t0], [t1])
        active = active_energy(by_device[dev.id], idle[dev.id][0], t1 - t0)
        out[dev.id] = active * (share.value if share is not None else 0.0)
        uncertainty += active * (share.half_width if share is not None else 0.0)
        shares[dev.node] = share.value if share is not None else 0.0
    answer["run_share"] = {
        "energy_j": float(sum(out.values())), "by_device": out, "method": "process-cpu-time",
        "attribution": "run-share", "idle_policy": IDLE_POLICY, "uncertainty_j": uncertainty,
        "cpu_time_share": shares,
        "idle_w": {k: {"power_w": w, "source": src} for k, (w, src) in idle.items()},
    }
    _phase_share_j(answer, devices, cpus, {k: w for k, (w, _) in idle.items()}, ph)
