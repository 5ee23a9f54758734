"""Retention: old samples become coarse buckets, the energy of every run stays what it was, rows go away, and
phases, runs and real holes in the data survive it."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, insert, select

from telemetry_service.gaps import find_holes
from telemetry_service.report import run_energy
from telemetry_service.retention import EPS_S, Retention, Tier, parse_tiers, plan_stretch
from telemetry_service.sampler import register_node
from telemetry_service.sensors.base import DeviceInfo
from telemetry_service.sensors.simulated import StepTrace
from telemetry_service.store.db import open_ledger
from telemetry_service.store.models import (DownsampledSpan, Phase, ProcessSample, Run, RunMember, Sample,
                                             SamplerSession)
from telemetry_service.store.writer import Writer

T0 = math.floor(time.time() / 3600) * 3600 - 3 * 86400.0
SPAN_S = 2400.0
DOWN = (T0 + 1000.0, T0 + 1040.0)  # the daemon was down: no samples at all
TIERS = "10m:1s,30m:1m"
NOW = T0 + SPAN_S + 60.0  # tier 2 (1 min) below T0 + 660, tier 1 (1 s) to T0 + 1860, raw after
TRACE = StepTrace(((0.3, 120.0), (0.7, 350.0), (0.5, 280.0), (1.1, 410.0), (7.0, 95.0), (2.3, 300.0)), anchor=T0)
DRIVER_ORIGIN = T0 - 3600.0


def test_parse_tiers():
    assert parse_tiers("1d:1s,7d:1m") == [Tier(86400.0, 1.0), Tier(604800.0, 60.0)]
    assert parse_tiers("off") == []
    assert parse_tiers("90s:1s") == [Tier(90.0, 1.0)]
    for bad in ("1d", "1d:1s,7d:7s,30d:10s", "7d:1m,1d:1s", "1s:1s", "1x:1s"):
        with pytest.raises(ValueError):
            parse_tiers(bad)


def _row(t: float, power: float | None, energy: float | None = None, energy_t: float | None = None) -> dict[str, Any]:
    return {"device_id": 1, "t": t, "power_w": power, "energy_j": energy, "energy_t": energy_t,
            "counter_raw_j": energy, "timing": "grid" if energy_t is not None else None, "util_pct": 50.0,
            "mem_util_pct": None, "mem_used_bytes": 10, "mem_total_bytes": 20, "temp_c": 40.0, "sm_clock_mhz": None,
            "power_limit_w": None}


def _trapezoid(rows: list[dict[str, Any]]) -> float:
    t = np.array([r["t"] for r in rows])
    p = np.array([r["power_w"] for r in rows])
    return float(np.sum(0.5 * (p[1:] + p[:-1]) * np.diff(t)))


def test_a_stretch_keeps_its_power_integral_and_counter_values():
    rng = random.Random(7)
    rows = []
    energy, t = 1000.0, 100.0
    for i in range(95):
        t += 0.1 + rng.uniform(-0.004, 0.004)
        if i % 3 == 0:
            energy += rng.uniform(20, 40)
        rows.append(_row(t, rng.choice([90.0, 300.0, 410.0]), energy, t - 0.01))
    following = _row(t + 0.1, 250.0, energy + 5.0, t + 0.09)
    plan = plan_stretch(rows, following, 1.0, last_energy_j=None)
    assert plan is not None and plan.after_t == rows[0]["t"] and plan.before_t == following["t"]
    new = [rows[0], *plan.rows, following]
    assert [r["t"] for r in new] == sorted(r["t"] for r in new)
    assert _trapezoid(new) == pytest.approx(_trapezoid([*rows, following]), rel=1e-12)
    # Each bucket edge keeps the cumulative integral it had, whatever lies between edges.
    for opening in plan.rows[0::2][1:]:
        before = [r for r in [*rows, following] if r["t"] <= opening["t"]]
        after = [r for r in new if r["t"] <= opening["t"]]
        assert _trapezoid(after) == pytest.approx(_trapezoid(before), rel=1e-12)
    # Every counter value kept is one read before, with its stamp: a subset of the raw counter points.
    raw_points = {(r["energy_t"], r["energy_j"]) for r in rows}
    kept = [(r["energy_t"], r["energy_j"]) for r in plan.rows if r["energy_t"] is not None]
    assert len(kept) >= 9 and set(kept) <= raw_points
    assert plan.removed == len(rows) - 1 and len(plan.rows) < len(rows) / 4
    assert all(r["power_w"] >= 0 for r in plan.rows)
    assert plan_stretch(rows[:3], None, 1.0, None) is None  # too short to save anything


def _counter_at(t: float) -> float:
    update = T0 + 0.037 + math.floor((t - T0 - 0.037) / 0.1) * 0.1
    return TRACE.energy(DRIVER_ORIGIN, update), update


def _samples(pk_counter: int, pk_power: int, pk_host: int) -> list[dict[str, Any]]:
    rng = random.Random(1)
    rows: list[dict[str, Any]] = []
    running = 0.0
    last: tuple[float, float] | None = None
    for k in range(int(SPAN_S / 0.1)):
        t = T0 + 0.1 * k + rng.uniform(0.0, 0.006)
        if DOWN[0] <= t <= DOWN[1]:
            continue
        p = TRACE.power(t)
        e, u = _counter_at(t)
        if last is not None:
            running += 0.5 * (last[1] + p) * (t - last[0])
        last = (t, p)
        common = {"util_pct": p / 5, "mem_util_pct": 30.0, "mem_used_bytes": 2**33, "mem_total_bytes": 2**36,
                  "temp_c": 40 + p / 20, "sm_clock_mhz": 1980.0, "power_limit_w": 700.0}
        rows.append({"device_id": pk_counter, "t": t, "power_w": p, "energy_j": e, "energy_t": u, "counter_raw_j": e,
                     "timing": "grid", **common})
        rows.append({"device_id": pk_power, "t": t, "power_w": 0.8 * p, "energy_j": 0.8 * running, "energy_t": None,
                     "counter_raw_j": None, "timing": None, **common})
        rows.append({"device_id": pk_host, "t": t, "power_w": None, "energy_j": None, "energy_t": None,
                     "counter_raw_j": None, "timing": None, "util_pct": 20.0, "mem_util_pct": None,
                     "mem_used_bytes": 2**34, "mem_total_bytes": 2**35, "temp_c": None, "sm_clock_mhz": None,
                     "power_limit_w": None})
    return rows


RUNS = {  # run id: (start, end) relative to T0, with phases
    "long": (30.0, 2300.0),  # through every tier and the hole
    "old": (100.0, 160.0),  # all in the 1 min tier
    "middle": (1200.3, 1500.7),  # all in the 1 s tier
    "fresh": (2000.0, 2100.0),  # still raw
}


@pytest.fixture(scope="module")
def ledger(tmp_path_factory):
    path = Path(tmp_path_factory.mktemp("retention")) / "ledger.db"
    engine, sessions = open_ledger(f"sqlite:///{path}")
    infos = [DeviceInfo("gpu0", "gpu", "simulated", True, "counter GPU", 0, update_period_s=0.1),
             DeviceInfo("gpu1", "gpu", "simulated", False, "power-only GPU", 1, update_period_s=0.1),
             DeviceInfo("host", "host", "psutil", False, "host")]
    with sessions() as s, s.begin():
        node_id, ids = register_node(s, "node", infos, T0)
        s.connection().execute(insert(Sample.__table__), _samples(ids["gpu0"], ids["gpu1"], ids["host"]))
        s.connection().execute(insert(ProcessSample.__table__), [
            {"node_id": node_id, "pid": pid, "t": T0 + k + 0.01 * pid % 1, "cpu_percent": float((k * pid) % 97),
             "rss_bytes": 2**30 + k, "gpu_mem_bytes": None} for pid in (101, 202) for k in range(int(SPAN_S))])
        s.add_all([SamplerSession(node_id=node_id, started_at=T0 - 1, last_sample_at=DOWN[0], interval_s=0.1),
                   SamplerSession(node_id=node_id, started_at=DOWN[1], last_sample_at=T0 + SPAN_S, interval_s=0.1)])
        rng = random.Random(3)
        for run_id, (a, b) in RUNS.items():
            run = Run(run_id=run_id, name=run_id, status="completed", started_at=T0 + a, ended_at=T0 + b)
            s.add(run)
            s.flush()
            s.add(RunMember(run_pk=run.id, node_id=node_id, device_keys=["gpu0", "gpu1", "host"], joined_at=T0 + a))
            t = T0 + a + 0.5
            while t < T0 + b - 2.0:  # steps of about a second, and an eval now and then
                name, width = ("eval", 12.0) if rng.random() < 0.02 else ("step", rng.uniform(0.6, 1.4))
                s.add(Phase(run_pk=run.id, node_id=node_id, name=name, start=t, end=min(t + width, T0 + b - 1.0)))
                t += width + rng.uniform(0.0, 0.3)
    yield engine, sessions, node_id, ids
    engine.dispose()


def _energies(sessions) -> dict[str, dict[str, Any]]:
    with sessions() as s:
        return {run_id: run_energy(s, s.scalars(select(Run).where(Run.run_id == run_id)).one(), 0.1, now=NOW)
                for run_id in RUNS}


def _count(sessions, pk: int) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(Sample).where(Sample.device_id == pk))


def test_energy_of_every_run_survives_retention(ledger):
    engine, sessions, node_id, ids = ledger
    before = _energies(sessions)
    with sessions() as s:
        phases_before = s.execute(select(Phase.__table__).order_by(Phase.id)).all()
        runs_before = s.execute(select(Run.__table__).order_by(Run.id)).all()
    rows_before = {key: _count(sessions, pk) for key, pk in ids.items()}

    with sessions() as s:
        processes_before = [r._mapping for r in s.execute(select(ProcessSample.pid, ProcessSample.t,
                                                                   ProcessSample.cpu_percent, ProcessSample.rss_bytes))]
    writer = Writer(sessions)
    retention = Retention(writer, sessions, node_id, list(ids.values()), parse_tiers(TIERS), 0.1, every_s=3600.0)
    removed = retention.run_pass(NOW)
    assert retention.run_pass(NOW) == 0  # up to date: a second pass finds nothing to do
    writer.close()
    after = _energies(sessions)

    rows_after = {key: _count(sessions, pk) for key, pk in ids.items()}
    with sessions() as s:
        processes_left = s.scalar(select(func.count()).select_from(ProcessSample))
    assert removed == sum(rows_before.values()) - sum(rows_after.values()) + len(processes_before) - processes_left
    # ~6 600 raw rows in the 1 min tier become ~2 a minute, ~12 000 in the 1 s tier ~2 a second; a few
    # thousand stay raw around the runs' ends and in the newest stretch.
    for key in ids:
        assert rows_after[key] < 0.45 * rows_before[key], (key, rows_before[key], rows_after[key])
    with sessions() as s:
        assert s.execute(select(Phase.__table__).order_by(Phase.id)).all() == phases_before
        assert s.execute(select(Run.__table__).order_by(Run.id)).all() == runs_before
        buckets = {w for (w,) in s.execute(select(DownsampledSpan.bucket_s).distinct())}
    assert buckets == {1.0, 60.0}

    # Process samples in the 1 min tier: one row per process and minute, with its mean CPU % and peak RSS.
    with sessions() as s:
        processes_after = [r._mapping for r in s.execute(select(ProcessSample.pid, ProcessSample.t,
                                                                  ProcessSample.cpu_percent, ProcessSample.rss_bytes))]
    old_cut = math.floor((NOW - 1800.0) / 60.0) * 60.0
    for pid in (101, 202):
        minutes = {}
        for p in processes_before:
            if p["pid"] == pid and p["t"] < old_cut:
                minutes.setdefault(math.floor(p["t"] / 60.0), []).append(p)
        kept = {math.floor(p["t"] / 60.0): p for p in processes_after if p["pid"] == pid and p["t"] < old_cut}
        assert len([p for p in processes_after if p["pid"] == pid and p["t"] < old_cut]) == len(minutes) == len(kept)
        for minute, members in minutes.items():
            assert kept[minute]["cpu_percent"] == pytest.approx(sum(m["cpu_percent"] for m in members) / len(members))
            assert kept[minute]["rss_bytes"] == max(m["rss_bytes"] for m in members)
    assert len(processes_after) < 0.75 * len(processes_before)

    worst_counter = worst_power = 0.0
    for run_id in RUNS:
        b, a = before[run_id]["total"]["by_device"], after[run_id]["total"]["by_device"]
        counter, power = "node/gpu0", "node/gpu1"
        # Counter device: E(end) - E(start) from untouched raw samples around both ends.
        assert a[counter] == pytest.approx(b[counter], rel=1e-9), run_id
        worst_counter = max(worst_counter, abs(a[counter] / b[counter] - 1))
        # Power-only device: each bucket's integral is kept; only held power at phase boundaries differs.
        assert a[power] == pytest.approx(b[power], rel=2e-3), run_id
        worst_power = max(worst_power, abs(a[power] / b[power] - 1))
        phases_b = {p["name"]: p for p in before[run_id]["phases"]}
        for p in after[run_id]["phases"]:
            assert p["count"] == phases_b[p["name"]]["count"]
            # Phases many buckets long keep their energy closely; shorter ones are interpolated across buckets.
            if run_id == "middle" and p["name"] == "eval":
                assert p["by_device"][counter] == pytest.approx(phases_b["eval"]["by_device"][counter], rel=0.02)
    print(f"\nretention: rows {rows_before} -> {rows_after}; worst relative change of a run's energy: "
          f"counter {worst_counter:.2e}, power-only {worst_power:.2e}")

    # The hole where the daemon was down is still there, and nothing else is taken for one.
    for run_id in ("long",):
        gaps = after[run_id]["gaps"]
        assert {g["device"] for g in gaps} == {"node/gpu0", "node/gpu1"}
        for g in gaps:
            assert g["start"] <= DOWN[0] + 0.2 and g["end"] >= DOWN[1] - 0.2 and g["daemon_down"]
        assert [(d["start"], d["end"]) for d in after[run_id]["downtime"]] == [DOWN]
    assert all(not after[r]["gaps"] for r in ("old", "middle", "fresh"))
    # The answer says where samples are stored coarser, and at what width.
    coarse = {(c["device"], c["bucket_s"]): c for c in after["long"]["downsampled"]}
    assert set(coarse) == {(d, w) for d in ("node/gpu0", "node/gpu1") for w in (1.0, 60.0)}
    assert coarse[("node/gpu0", 60.0)]["start"] == T0 + RUNS["long"][0]
    assert coarse[("node/gpu0", 1.0)]["end"] <= NOW - 600.0 + 1.0
    assert before["long"]["downsampled"] == [] and after["fresh"]["downsampled"] == []


def test_holes_are_told_from_the_spacing_of_coarse_buckets():
    t = np.array([0.0, 0.1, 0.2, 5.0, 5.1, 65.0, 125.0, 126.0 + EPS_S, 300.0])
    spans = [(60.0, 200.0, 60.0)]
    assert find_holes(t, 1.0, spans) == [(0.2, 5.0), (5.1, 65.0), (126.0 + EPS_S, 300.0)]
