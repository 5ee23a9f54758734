"""Ledger throughput and query latency: phases in per second, energy per phase and a chart's samples out.

    .venv/bin/python bench/ingest_query.py            # about 3 minutes
    .venv/bin/python bench/ingest_query.py --quick    # a run 10x smaller, about 1 minute

1. Ingestion: phase markers POSTed to a real daemon process (loopback, SQLite ledger) in batches of 100,
   1 000 and 10 000, one client with keep-alive, each batch acknowledged (202) before the next.
2. Queries on a big run: a ledger built directly with SQLAlchemy bulk inserts holds one run on a node with
   8 GPUs sampled at 10 Hz for 12 500 s (1 000 000 samples: instant power and the energy counter stamped on
   its own 100 ms grid, from a training-step power trace) and 100 000 phases (25 000 steps of data_loading,
   forward, backward, optimizer_step). A daemon process serves that ledger; timed through its REST API:
   `GET /api/v1/runs/{id}/energy` and `GET /api/v1/runs/{id}/samples?device=...&max_points=2000`.
   One in-process run of the same energy answer splits it into the SQL queries, turning the rows into numpy
   arrays, and the math. Where the daemon keeps packed per-minute sample blocks for its queries, they are built
   (as its indexer does while a run is sampled) before the REST timings; in-process timings are given before
   and after.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import insert, select

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from telemetry_service.report import MARGIN_S, run_devices, run_energy  # noqa: E402
from telemetry_service.sensors.simulated import TRAINING_PATTERN  # noqa: E402
from telemetry_service.store.db import open_ledger  # noqa: E402
from telemetry_service.store.models import Device, Node, Phase, Run, RunMember, Sample  # noqa: E402

NODE = "bigrun-node"
RUN_ID = "big-run"
GPUS = 8
HZ = 10.0
STEP_S = 0.5
# The training pattern's pieces, stretched to a 0.5 s step: data_loading, forward, backward, optimizer_step.
PIECES = tuple((d * STEP_S / sum(p[0] for p in TRAINING_PATTERN), w) for d, w in TRAINING_PATTERN)
NAMES = ("data_loading", "forward", "backward", "optimizer_step")


# --- 1. ingestion ----------------------------------------------------------------------------------------


def ingest(tmp: Path, total: int) -> list[dict[str, Any]]:
    rows = []
    with harness.DaemonProcess("--simulate-gpus", "1", tmp=tmp) as d, d.client() as c:
        for batch in (100, 1_000, 10_000):
            run_id = f"ingest-{batch}"
            t0 = time.time()
            c.post("/api/v1/runs", json={"name": run_id, "run_id": run_id, "started_at": t0}).raise_for_status()
            markers = [{"name": NAMES[i % 4], "start": t0 + i * 1e-4, "end": t0 + (i + 1) * 1e-4, "step": i // 4}
                       for i in range(total)]
            latencies = []
            start = time.perf_counter()
            for i in range(0, total, batch):
                t = time.perf_counter()
                r = c.post(f"/api/v1/runs/{run_id}/phases", json=markers[i:i + batch])
                latencies.append(time.perf_counter() - t)
                r.raise_for_status()
            elapsed = time.perf_counter() - start
            stored = c.get(f"/api/v1/runs/{run_id}/phases", params={"limit": 1}).status_code
            rows.append({"batch": batch, "phases": total, "seconds": elapsed, "phases_per_s": total / elapsed,
                         "batch_latency": harness.quantiles(latencies), "check_status": stored})
            print(f"ingest: batches of {batch}: {total / elapsed:,.0f} phases/s", flush=True)
    return rows


# --- 2. a big run, written straight into a ledger -----------------------------------------------------------


def cumulative(t: np.ndarray, anchor: float) -> np.ndarray:
    """Energy (J) of the periodic training-step trace from `anchor` to each t, vectorised."""
    knots = np.concatenate([[0.0], np.cumsum([d for d, _ in PIECES])])
    cum = np.concatenate([[0.0], np.cumsum([d * w for d, w in PIECES])])
    period, per_cycle = knots[-1], cum[-1]
    cycles = np.floor((t - anchor) / period)
    return cycles * per_cycle + np.interp(t - anchor - cycles * period, knots, cum)


def power(t: np.ndarray, anchor: float) -> np.ndarray:
    knots = np.cumsum([d for d, _ in PIECES])
    period = knots[-1]
    i = np.searchsorted(knots, np.mod(t - anchor, period), side="right")
    return np.array([w for _, w in PIECES])[np.minimum(i, len(PIECES) - 1)]


def build_ledger(url: str, duration: float, rng: np.random.Generator) -> dict[str, Any]:
    engine, sessions = open_ledger(url)
    t0 = time.time() - duration - 3600.0  # a run that ended an hour ago
    t1 = t0 + duration
    started = time.perf_counter()
    keys = [f"simgpu{i}" for i in range(GPUS)]
    with sessions() as s, s.begin():
        node = Node(name=NODE, first_seen=t0 - 60, last_started=t0 - 60)
        s.add(node)
        s.flush()
        devices = []
        for i, key in enumerate(keys):
            dev = Device(node_id=node.id, key=key, kind="gpu", index=i, name="Simulated H100",
                         uuid=f"GPU-51a1a7ed-0000-4000-8000-{i:012d}", source="simulated", energy_counter=True,
                         update_period_s=0.1, present=True)
            s.add(dev)
            devices.append(dev)
        s.flush()
        run = Run(run_id=RUN_ID, name="1M samples, 100k phases", status="completed", started_at=t0, ended_at=t1,
                  tags={}, config={}, metrics={})
        s.add(run)
        s.flush()
        s.add(RunMember(run_pk=run.id, node_id=node.id, pid=4242, host=NODE, device_keys=keys, joined_at=t0))
        device_pks = [d.id for d in devices]
        node_id, run_pk = node.id, run.id
    n_steps = int(duration / STEP_S)
    offsets = np.concatenate([[0.0], np.cumsum([d for d, _ in PIECES])])
    with sessions() as s, s.begin():
        starts = (t0 + np.arange(n_steps)[:, None] * STEP_S + offsets[None, :-1]).ravel()
        ends = (t0 + np.arange(n_steps)[:, None] * STEP_S + offsets[None, 1:]).ravel()
        phases = [{"run_pk": run_pk, "node_id": node_id, "name": NAMES[i % 4], "start": float(a), "end": float(b),
                   "step": i // 4, "attrs": None} for i, (a, b) in enumerate(zip(starts, ends))]
        s.execute(insert(Phase), phases)
    n = 0
    for i, pk in enumerate(device_pks):
        anchor = t0 + 0.013 * i  # the GPUs of a data-parallel job are not in lockstep
        grid_phase = rng.uniform(0, 0.1)
        t = t0 - MARGIN_S + np.arange(int((duration + 2 * MARGIN_S) * HZ)) / HZ + rng.uniform(0, 0.002)
        grid = grid_phase + np.floor((t - grid_phase) / 0.1) * 0.1
        energy = cumulative(grid, anchor) - cumulative(np.array([t0 - 3600.0]), anchor)[0]
        p = power(t, anchor)
        for a in range(0, t.size, 50_000):
            b = min(t.size, a + 50_000)
            rows = [{"device_id": pk, "t": float(t[k]), "power_w": float(p[k]), "energy_j": float(energy[k]),
                     "energy_t": float(grid[k]), "counter_raw_j": float(energy[k]) + 1.0e6, "timing": "grid",
                     "util_pct": 97.0, "mem_util_pct": 40.0, "mem_used_bytes": 60 * 2**30, "mem_total_bytes": 80 * 2**30,
                     "temp_c": 61.0, "sm_clock_mhz": 1980.0, "power_limit_w": 700.0} for k in range(a, b)]
            with sessions() as s, s.begin():
                s.execute(insert(Sample), rows)
        n += t.size
    engine.dispose()
    return {"samples": n, "phases": len(phases), "devices": GPUS, "duration_s": duration, "run_started_at": t0,
            "build_s": time.perf_counter() - started}


def _load_series() -> Any:
    """The energy query's sample loader, wherever this version of the daemon keeps it."""
    try:
        from telemetry_service.store.blocks import load_series
    except ImportError:
        from telemetry_service.report import load_series  # type: ignore[attr-defined,no-redef]
    return load_series


def index_blocks(sessions: Any, device_pks: list[int]) -> float | None:
    """Where the daemon keeps packed per-minute blocks of samples for queries, builds them as its indexer would
    have while the run was sampled; returns the seconds it took (None: this version has no such index)."""
    try:
        from telemetry_service.store.blocks import index_device
        from telemetry_service.store.models import BlockWatermark
    except ImportError:
        return None
    started = time.perf_counter()
    for pk in device_pks:
        previous = None
        while True:
            with sessions() as s, s.begin():
                index_device(s, pk, now=time.time())
                mark = s.get(BlockWatermark, pk)
                until = None if mark is None else mark.indexed_until
            if until == previous:
                break
            previous = until
    return time.perf_counter() - started


def timed(fn: Any, repeat: int) -> tuple[list[float], Any]:
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return times, result


def queries(tmp: Path, db_url: str, repeat: int) -> dict[str, Any]:
    """REST timings (`repeat` each), and one in-process breakdown of the energy answer."""
    out: dict[str, Any] = {}
    engine, sessions = open_ledger(db_url)
    with sessions() as s:
        run = s.scalars(select(Run).where(Run.run_id == RUN_ID)).one()
        devices = run_devices(s, run)
        lo, hi = run.started_at - MARGIN_S, run.ended_at + MARGIN_S

        def fetch_rows() -> list[Any]:
            """The two queries load_series makes per device, rows fetched but not converted."""
            rows = []
            for d in devices:
                window = (Sample.device_id == d.device_pk, Sample.t >= lo, Sample.t <= hi)
                rows.append(s.execute(select(Sample.t, Sample.power_w).where(*window, Sample.power_w.is_not(None))
                                      .order_by(Sample.t)).all())
                rows.append(s.execute(select(Sample.energy_t, Sample.energy_j).where(*window, Sample.energy_t.is_not(None))
                                      .order_by(Sample.t)).all())
            return rows

        out["inprocess_fetch_rows_s"], rows = timed(fetch_rows, 1)
        out["inprocess_rows_to_numpy_s"], _ = timed(lambda: [np.asarray(r, dtype=np.float64) for r in rows], 1)
        out["inprocess_rows_to_numpy_fromiter_s"], _ = timed(
            lambda: [np.fromiter(itertools.chain.from_iterable(r), np.float64, 2 * len(r)).reshape(-1, 2) for r in rows], 1)
        load_series = _load_series()
        out["inprocess_load_series_s"], _ = timed(
            lambda: [load_series(s, d.device_pk, lo, hi) for d in devices], 1)
        out["inprocess_run_energy_s"], _ = timed(lambda: run_energy(s, run, 0.1), 1)
    out["index_blocks_s"] = index_blocks(sessions, [d.device_pk for d in devices])
    if out["index_blocks_s"] is not None:
        with sessions() as s:
            run = s.scalars(select(Run).where(Run.run_id == RUN_ID)).one()
            out["inprocess_load_series_indexed_s"], _ = timed(
                lambda: [load_series(s, d.device_pk, lo, hi) for d in devices], 1)
            out["inprocess_run_energy_indexed_s"], _ = timed(lambda: run_energy(s, run, 0.1), 1)
    engine.dispose()
    with harness.DaemonProcess("--node", "query-bench-daemon", "--simulate-gpus", "0", tmp=tmp, db=db_url) as d, \
            d.client(timeout=900.0) as c:
        def energy() -> dict[str, Any]:
            r = c.get(f"/api/v1/runs/{RUN_ID}/energy")
            r.raise_for_status()
            return r.json()

        def samples() -> dict[str, Any]:
            r = c.get(f"/api/v1/runs/{RUN_ID}/samples", params={"device": f"{NODE}/simgpu0", "max_points": 2000})
            r.raise_for_status()
            return r.json()

        out["rest_energy_s"], e = timed(energy, repeat)
        out["rest_samples_s"], sm = timed(samples, max(repeat, 5))
    out["energy_answer"] = {"total_j": e["total"]["energy_j"], "phases": len(e["phases"]),
                            "counts": {p["name"]: p["count"] for p in e["phases"]}}
    out["samples_answer"] = {"points": sm["points"], "stored_points": sm["stored_points"]}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100 000 samples and 10 000 phases; 20 000 phases ingested")
    ap.add_argument("--repeat", type=int, default=3, help="REST energy queries timed (samples: at least 5)")
    args = ap.parse_args()
    duration = 1_250.0 if args.quick else 12_500.0
    with tempfile.TemporaryDirectory(prefix="joulemeter-ingest-") as tmp_:
        tmp = Path(tmp_)
        ingest_rows = ingest(tmp, 20_000 if args.quick else 100_000)
        db_url = f"sqlite:///{tmp / 'big.db'}"
        built = build_ledger(db_url, duration, np.random.default_rng(0))
        print(f"ledger: {built['samples']:,} samples, {built['phases']:,} phases in {built['build_s']:.0f} s", flush=True)
        q = queries(tmp, db_url, args.repeat)
        size = (tmp / "big.db").stat().st_size

    def med(key: str) -> str:
        return f"{statistics.median(q[key]) * 1e3:.0f} ms (min {min(q[key]) * 1e3:.0f})"

    t1 = harness.table(["batch size", "phases", "phases / s", "batch latency median", "batch latency p99"],
                       [[r["batch"], r["phases"], f"{r['phases_per_s']:,.0f}", f"{r['batch_latency']['median'] * 1e3:.1f} ms",
                         f"{r['batch_latency']['p99'] * 1e3:.1f} ms"] for r in ingest_rows],
                       title="Phase markers into the ledger through POST /api/v1/runs/{id}/phases")
    indexed = q.get("index_blocks_s") is not None
    t2 = harness.table(["query", "time: median (min)"], [
        [f"GET /runs/{{id}}/energy (REST, {len(q['rest_energy_s'])} times)"
         + (", sample blocks indexed" if indexed else ""), med("rest_energy_s")],
        *([["  in process: run_energy(), sample blocks indexed", med("inprocess_run_energy_indexed_s")],
           ["  in process: load_series() for every device, blocks indexed", med("inprocess_load_series_indexed_s")],
           ["  (building the blocks for this run, once)", f"{q['index_blocks_s'] * 1e3:.0f} ms"]] if indexed else []),
        ["  in process: run_energy()" + (", before indexing" if indexed else ""), med("inprocess_run_energy_s")],
        ["  in process: load_series() for every device" + (", before indexing" if indexed else ""),
         med("inprocess_load_series_s")],
        ["  in process: the SQL queries alone (rows fetched)", med("inprocess_fetch_rows_s")],
        ["  in process: np.asarray(rows) over result rows", med("inprocess_rows_to_numpy_s")],
        ["  in process: np.fromiter over the same rows", med("inprocess_rows_to_numpy_fromiter_s")],
        [f"GET /runs/{{id}}/samples?device=&max_points=2000 (REST, {len(q['rest_samples_s'])} times)",
         med("rest_samples_s")],
    ], title=f"Queries on one run: {built['samples']:,} samples ({GPUS} GPUs x {HZ:g} Hz x {duration:,.0f} s), "
             f"{built['phases']:,} phases, SQLite ledger of {size / 2**20:,.0f} MiB")
    print()
    print(t1)
    print()
    print(t2)
    path = harness.write_json("ingest_query-quick" if args.quick else "ingest_query", {
        "ingest": ingest_rows, "ledger": {**built, "size_bytes": size}, "queries": q,
        "summary_markdown": t1 + "\n\n" + t2})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
