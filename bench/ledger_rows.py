"""How many sample rows per second the ledger takes through the single writer (SQLite, WAL), in batches as the
sampler writes them. Usage: python bench/ledger_rows.py [--seconds 10] [--batch 160]"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert

from telemetry_service.sampler import register_node
from telemetry_service.sensors.base import DeviceInfo
from telemetry_service.store.db import open_ledger
from telemetry_service.store.models import Sample
from telemetry_service.store.writer import Writer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--batch", type=int, default=160, help="rows per batch (8 GPUs x 20 ticks = one 2 s flush)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engine, sessions = open_ledger(f"sqlite:///{Path(tmp) / 'bench.db'}")
        infos = [DeviceInfo(key=f"gpu{i}", kind="gpu", source="simulated", energy_counter=True, name="bench", index=i)
                 for i in range(8)]
        with sessions() as s, s.begin():
            _, ids = register_node(s, "bench", infos, time.time())
        writer = Writer(sessions)
        dev_ids = list(ids.values())
        rows_written = 0
        t = time.time()
        start = time.perf_counter()
        pending = []
        while time.perf_counter() - start < args.seconds:
            rows = []
            for i in range(args.batch):
                t += 0.1 / len(dev_ids)
                rows.append({"device_id": dev_ids[i % len(dev_ids)], "t": t, "power_w": 300.0, "energy_j": t,
                             "energy_t": t, "counter_raw_j": t, "timing": "grid", "util_pct": 90.0,
                             "mem_util_pct": 50.0, "mem_used_bytes": 1 << 34, "mem_total_bytes": 1 << 36,
                             "temp_c": 60.0, "sm_clock_mhz": 1980.0, "power_limit_w": 700.0})
            pending.append(writer.submit(lambda s, rows=rows: s.execute(insert(Sample), rows)))
            rows_written += len(rows)
            if len(pending) > 32:
                pending.pop(0).result()
        for f in pending:
            f.result()
        elapsed = time.perf_counter() - start
        writer.close()
        engine.dispose()
    result = {"rows": rows_written, "seconds": elapsed, "rows_per_s": rows_written / elapsed,
              "batch": args.batch, "transactions": writer.batches,
              "rows_per_s_needed_8_gpus_at_0.1s": (8 + 2) * 10}
    print(f"{result['rows_per_s']:,.0f} sample rows/s in batches of {args.batch} "
          f"({writer.batches} transactions); a node with 8 GPUs at 0.1 s needs ~100 rows/s "
          f"(headroom x{result['rows_per_s'] / 100:,.0f})")
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / "ledger_rows.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
