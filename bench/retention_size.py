"""The ledger's size for a node sampled for 30 days, with and without retention.

Writes a stretch of realistic samples (8 GPUs with counters, CPU and DRAM RAPL counters at the sampling
interval, host stats once a second, and the CPU/RSS of 8 training processes once a second) into a real
SQLite ledger through the daemon's own store code, measures
bytes per row on disk (table and index, after VACUUM), runs the retention tiers over copies of it to measure
how many rows each tier keeps and what they cost, and extrapolates to 30 days (and a year).

Usage: python bench/retention_size.py [--minutes 20] [--gpus 8] [--processes 8] [--interval 0.1]
                                     [--tiers 1d:1s,7d:1m,90d:15m]
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

from telemetry_service.config import Settings
from telemetry_service.retention import Retention, Tier, parse_tiers
from telemetry_service.sampler import register_node
from telemetry_service.sensors.base import DeviceInfo
from telemetry_service.store.db import open_ledger
from telemetry_service.store.models import ProcessSample, Sample
from telemetry_service.store.writer import Writer

DAY = 86400.0


def _devices(gpus: int) -> list[DeviceInfo]:
    out = [DeviceInfo(f"gpu{i}", "gpu", "nvml", True, "NVIDIA H100 80GB HBM3", i, f"GPU-{i:08d}", 0.1)
           for i in range(gpus)]
    out += [DeviceInfo("cpu0", "cpu", "rapl", True, "package-0", 0, counter_wrap_j=262143.0),
            DeviceInfo("dram0", "dram", "rapl", True, "dram", 0, counter_wrap_j=65535.0),
            DeviceInfo("host", "host", "psutil", False, "host")]
    return out


def _rows(ids: dict[str, int], gpus: int, t0: float, seconds: float, interval: float) -> list[dict[str, Any]]:
    """What the sampler writes: NVML values (mW and mJ as reported, so fractional watts and joules)."""
    rng = random.Random(0)
    rows: list[dict[str, Any]] = []
    blank = {c.name: None for c in Sample.__table__.columns if c.name != "id"}
    energy = {k: 1e6 * rng.random() for k in ids}
    n = int(seconds / interval)
    for k in range(n):
        t = t0 + k * interval + rng.uniform(0, 0.004)
        for i in range(gpus):
            key = f"gpu{i}"
            p = round(rng.uniform(90, 690), 3)
            energy[key] += p * interval
            rows.append({**blank, "device_id": ids[key], "t": t, "power_w": p, "energy_j": energy[key],
                         "energy_t": t - rng.uniform(0, 0.1), "counter_raw_j": round(energy[key], 3), "timing": "grid",
                         "util_pct": float(rng.randint(0, 100)), "mem_util_pct": float(rng.randint(0, 100)),
                         "mem_used_bytes": rng.randint(1, 80) * 2**30, "mem_total_bytes": 80 * 2**30,
                         "temp_c": float(rng.randint(30, 80)), "sm_clock_mhz": float(rng.choice([1755, 1980])),
                         "power_limit_w": 700.0})
        for key, watts in (("cpu0", 180.0), ("dram0", 25.0)):
            p = watts * rng.uniform(0.5, 1.0)
            energy[key] += p * interval
            rows.append({**blank, "device_id": ids[key], "t": t, "power_w": p, "energy_j": energy[key], "energy_t": t,
                         "counter_raw_j": energy[key] % 262143.0, "timing": "read"})
        if k % max(1, round(1.0 / interval)) == 0:
            rows.append({**blank, "device_id": ids["host"], "t": t, "util_pct": rng.uniform(0, 100),
                         "mem_used_bytes": rng.randint(1, 500) * 2**30, "mem_total_bytes": 1024 * 2**30})
    return rows


def _process_rows(node_id: int, processes: int, t0: float, seconds: float) -> list[dict[str, Any]]:
    rng = random.Random(1)
    return [{"node_id": node_id, "pid": 4000 + p, "t": t0 + k + rng.uniform(0, 0.01), "cpu_percent": rng.uniform(90, 110),
             "rss_bytes": rng.randint(4, 12) * 2**30, "gpu_mem_bytes": {f"gpu{p}": rng.randint(20, 70) * 2**30}}
            for k in range(int(seconds)) for p in range(processes)]


def _size(path: Path) -> int:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("VACUUM")  # in WAL mode the compacted pages reach the file at the checkpoint
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path.stat().st_size


def _row_count(sessions: Any) -> int:
    with sessions() as s:
        return sum(s.scalar(select(func.count()).select_from(table)) or 0 for table in (Sample, ProcessSample))


def measure(minutes: float, gpus: int, processes: int, interval: float, tiers: list[Tier]) -> dict[str, Any]:
    seconds = minutes * 60.0
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "raw.db"
        engine, sessions = open_ledger(f"sqlite:///{base}")
        t0 = math.floor(time.time() / 3600) * 3600 - 400 * DAY
        with sessions() as s, s.begin():
            node_id, ids = register_node(s, "bench-node", _devices(gpus), t0)
        empty = _size(base)
        rows = _rows(ids, gpus, t0, seconds, interval)
        for i in range(0, len(rows), 5000):  # batches, as the sampler writes
            with sessions() as s, s.begin():
                s.connection().execute(insert(Sample.__table__), rows[i:i + 5000])
        procs = _process_rows(node_id, processes, t0, seconds)
        with sessions() as s, s.begin():
            if procs:
                s.connection().execute(insert(ProcessSample.__table__), procs)
        engine.dispose()
        raw_rows = len(rows) + len(procs)
        raw_bytes = _size(base) - empty
        out: dict[str, Any] = {"raw_rows": raw_rows, "raw_bytes_per_row": raw_bytes / raw_rows,
                               "raw_rows_per_s": raw_rows / seconds, "tiers": []}
        for tier in tiers:
            copy = Path(tmp) / f"tier-{tier.bucket_s:g}.db"
            shutil.copy(base, copy)
            engine, sessions = open_ledger(f"sqlite:///{copy}")
            writer = Writer(sessions)
            # Only this tier, everything old enough for it: how many rows a second of history keeps, at what cost.
            Retention(writer, sessions, node_id, list(ids.values()), [Tier(tier.bucket_s * 2, tier.bucket_s)],
                      interval, 3600.0).run_pass(t0 + seconds + 4 * tier.bucket_s + tier.chunk_s)
            writer.close()
            kept = _row_count(sessions)
            engine.dispose()
            kept_bytes = _size(copy) - empty
            out["tiers"].append({"age_s": tier.age_s, "bucket_s": tier.bucket_s, "rows_per_s": kept / seconds,
                                 "bytes_per_row": kept_bytes / kept, "bytes_per_s": kept_bytes / seconds})
        return out


def project(m: dict[str, Any], days: float, tiers: list[Tier]) -> tuple[float, float]:
    """Bytes of `days` of history without retention, and with the tiers."""
    raw_bps = m["raw_rows_per_s"] * m["raw_bytes_per_row"]
    without = raw_bps * days * DAY
    edges = [0.0] + [t.age_s for t in tiers] + [math.inf]
    rates = [raw_bps] + [t["bytes_per_s"] for t in m["tiers"]]
    with_ = sum(rate * max(0.0, min(days * DAY, hi) - lo) for rate, lo, hi in zip(rates, edges, edges[1:]))
    return without, with_


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20.0, help="history written and measured")
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--processes", type=int, default=8, help="training processes whose CPU/RSS is sampled at 1 s")
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--tiers", default=Settings.model_fields["retention"].default)
    args = ap.parse_args()
    tiers = parse_tiers(args.tiers)
    started = time.perf_counter()
    m = measure(args.minutes, args.gpus, args.processes, args.interval, tiers)
    print(f"{args.gpus} GPUs + CPU + DRAM at {args.interval:g} s, host stats and {args.processes} processes at 1 s: "
          f"{m['raw_rows_per_s']:.1f} rows/s; "
          f"measured on {m['raw_rows']:,} rows ({args.minutes:g} min) in {time.perf_counter() - started:.0f} s")
    print(f"  raw: {m['raw_bytes_per_row']:.1f} bytes/row on disk (row + index)")
    for t in m["tiers"]:
        print(f"  after {t['age_s'] / DAY:g} d, {t['bucket_s']:g} s buckets: {t['rows_per_s']:.3f} rows/s "
              f"(x{m['raw_rows_per_s'] / t['rows_per_s']:,.0f} fewer), {t['bytes_per_row']:.1f} bytes/row")
    gib = 2**30
    for days in (1, 7, 30, 365):
        without, with_ = project(m, days, tiers)
        print(f"  {days:>3} days: {without / gib:8.2f} GiB without retention, {with_ / gib:6.2f} GiB with "
              f"'{args.tiers}' (x{without / with_:,.1f})")


if __name__ == "__main__":
    main()
