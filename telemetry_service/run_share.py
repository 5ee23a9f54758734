"""The run's share beside the node figure in the energy answer: loads the CPU-second and SM-second series of
the node and of the run's processes, and applies process_share's and gpu_share's math to the devices' energy
already in the answer.

CPU and DRAM energy is split by CPU time (DRAM follows the cores that drive it); a GPU the run shares with other
runs is split by SM time; a GPU of its own is the run's whole, as in the node figure. Every figure names its
attribution: "node" (all the devices' energy) or "run-share", and each device its method in the share.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from telemetry_service.gpu_share import sm_share
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


@dataclass(frozen=True)
class GpuSm:
    """SM-seconds on one GPU the run shares: its processes', every process's, and the GPU's cumulative energy."""

    run: list[Cumulative]
    every: list[Cumulative]
    energy_j: Cumulative
    idle_w: float

    def share(self, starts: Any, ends: Any) -> Share | None:
        return sm_share(self.run, self.every, self.energy_j, self.idle_w, starts, ends)


def _gpu_sm(session: Session, run: Run, dev: Any, idle_w: float, t0: float, t1: float) -> GpuSm | None:
    """None where no process's SM use on the GPU is on record over the run (the GPU cannot tell, or an older
    daemon wrote the samples)."""
    lo, hi = t0 - MARGIN_S, t1 + MARGIN_S
    rows = fetch_tuples(session, select(ProcessSample.pid, ProcessSample.t, ProcessSample.gpu_sm_s).where(
        ProcessSample.node_id == dev.node_id, ProcessSample.t >= lo, ProcessSample.t <= hi,
        ProcessSample.gpu_sm_s.is_not(None)))
    points: dict[int, list[tuple[float, float]]] = {}
    for pid, t, raw in rows:
        sm = json.loads(raw) if isinstance(raw, str) else raw  # raw rows: SQLite gives JSON text, psycopg a dict
        if sm and dev.key in sm:  # a JSON null is not an SQL NULL
            points.setdefault(pid, []).append((t, float(sm[dev.key])))
    if not points:
        return None
    series = {pid: Cumulative.of(*zip(*p)) for pid, p in points.items()}
    mine = {m.pid for m in run.members if m.node_id == dev.node_id}
    s = load_series(session, dev.device_pk, lo, hi)
    energy = Cumulative.of(s.counter_t, s.counter_j) if s.counter_t.size else \
        Cumulative.of(s.power_t, trapezoid_cumulative(s.power_t, s.power_w))
    return GpuSm([c for pid, c in series.items() if pid in mine], list(series.values()), energy, idle_w)


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


NO_SHARE = Share(0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Splits:
    """What each device is split by: CPU seconds per node; SM seconds per shared GPU, with the run's share over
    its whole span (for a phase in which no process used the SMs)."""

    cpus: dict[int, NodeCpu]
    gpus: dict[str, tuple[GpuSm, Share]]

    def share(self, dev: Any, starts: Any, ends: Any) -> Share | None:
        """The run's share of the device's active energy over the intervals; None where it counts whole."""
        if dev.kind in SHARED_KINDS:
            cpu = self.cpus.get(dev.node_id)
            return (_share(cpu, starts, ends) if cpu is not None else None) or NO_SHARE
        if dev.id not in self.gpus:
            return None
        gpu, whole_run = self.gpus[dev.id]
        return gpu.share(starts, ends) or whole_run


def _share_variance(share: Share | None, active_j: float, device_err_j: float) -> float:
    """Variance of a device's run-share figure: the device's own measurement uncertainty scaled by the share,
    and the share's sampling range taken as the bounds of a uniform doubt."""
    if share is None:
        return device_err_j ** 2
    return (share.value * device_err_j) ** 2 + (active_j * share.half_width) ** 2 / 3.0


def _phase_share_j(answer: dict[str, Any], devices: list[Any], splits: Splits, idle: dict[str, float],
                   ph: PhaseArrays) -> None:
    for j, row in enumerate(answer["phases"]):
        total = 0.0
        var = 0.0
        for dev in devices:
            e = row["by_device"].get(dev.id)
            if e is None:
                continue
            err = row.get("uncertainty_by_device", {}).get(dev.id, 0.0)
            mine = (ph.name == j) & (ph.node == dev.node_id)
            share = splits.share(dev, ph.start[mine], ph.end[mine])
            if share is None:
                total += e
                var += err ** 2
                continue
            dur = float(np.sum(ph.end[mine] - ph.start[mine]))
            active = active_energy(e, idle[dev.id], dur)
            total += active * share.value
            var += _share_variance(share, active, err)
        row["attribution"] = "node"
        row["run_share_j"] = total
        row["run_share_uncertainty_j"] = float(np.sqrt(var))
        row["run_share_attribution"] = "run-share"


def _shared_gpus(session: Session, run: Run, answer: dict[str, Any], devices: list[Any], t0: float, t1: float,
                 idle: dict[str, tuple[float, str]]) -> dict[str, tuple[GpuSm, Share]]:
    """The GPUs shared with other runs that can be split by SM use (their idle power added to `idle`); the
    others count whole for each run, and the answer says so."""
    out: dict[str, tuple[GpuSm, Share]] = {}
    for dev in devices:
        if dev.kind != "gpu" or dev.id not in answer["total"]["by_device"] or dev.id not in answer["shared_devices"]:
            continue
        idle_w = _idle_w(session, dev, t0, t1)
        gpu = _gpu_sm(session, run, dev, idle_w[0], t0, t1)
        share = gpu.share([t0], [t1]) if gpu is not None else None
        if gpu is None or share is None:
            answer["notes"].append({"device": dev.id, "note": "shared with other runs, but no process's use of its "
                                    "SMs is on record (per-process utilisation not supported, or no samples): "
                                    "counted whole for this run, as for each run sharing it"})
            continue
        out[dev.id] = (gpu, share)
        idle[dev.id] = idle_w
    return out


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
            row.update({"attribution": "node", "run_share_j": None, "run_share_uncertainty_j": None,
                        "run_share_attribution": "run-share"})
        answer["notes"].append({"note": "no CPU seconds of the run's processes on record: run share unavailable"})
        return
    idle = {d.id: _idle_w(session, d, t0, t1) for d in shared}
    splits = Splits(cpus, _shared_gpus(session, run, answer, devices, t0, t1, idle))
    out: dict[str, float] = {}
    methods: dict[str, str] = {}
    cpu_shares: dict[str, float] = {}
    variance = 0.0
    device_err = {d["id"]: d.get("uncertainty_j") or 0.0 for d in answer["devices"]}
    for dev in devices:
        if dev.id not in by_device:
            continue
        share = splits.share(dev, [t0], [t1])
        if share is None:
            out[dev.id], methods[dev.id] = by_device[dev.id], "whole"
            variance += _share_variance(None, 0.0, device_err.get(dev.id, 0.0))
            continue
        active = active_energy(by_device[dev.id], idle[dev.id][0], t1 - t0)
        out[dev.id] = active * share.value
        variance += _share_variance(share, active, device_err.get(dev.id, 0.0))
        methods[dev.id] = "process-cpu-time" if dev.kind in SHARED_KINDS else "gpu-sm-share"
        if dev.kind in SHARED_KINDS:
            cpu_shares[dev.node] = share.value
    answer["run_share"] = {
        "energy_j": float(sum(out.values())), "by_device": out, "method": "process-cpu-time",
        "methods": methods, "attribution": "run-share", "idle_policy": IDLE_POLICY,
        "uncertainty_j": float(np.sqrt(variance)),
        "cpu_time_share": cpu_shares,
        "gpu_sm_share": {k: share.value for k, (_, share) in splits.gpus.items()},
        "idle_w": {k: {"power_w": w, "source": src} for k, (w, src) in idle.items()},
    }
    _phase_share_j(answer, devices, splits, {k: w for k, (w, _) in idle.items()}, ph)
