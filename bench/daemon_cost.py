"""What the daemon costs the node: CPU (% of one core) and memory, by sampling interval and number of GPUs.

    .venv/bin/python bench/daemon_cost.py            # 8 configurations x (5 s warm-up + 20 s), about 4 minutes
    .venv/bin/python bench/daemon_cost.py --quick    # 8 s per configuration, about 2 minutes

The real daemon (`python -m telemetry_service serve --simulate-gpus N --interval X`) runs as a subprocess
with a fresh SQLite ledger; psutil reads its CPU time and memory over the measuring window, while nothing
else talks to it. Every simulated GPU has an energy counter, so its update grid is tracked as on real
hardware (a short burst of fast counter reads around each expected update). /healthz gives the sampler's
own view: ticks, ticks it had to skip, the longest gap between two ticks.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402

INTERVALS = (0.1, 0.01)
GPU_COUNTS = (0, 1, 8, 64)  # 0: the daemon with only its CPU and host sensors, as a baseline


def measure(tmp: Path, gpus: int, interval: float, warmup: float, window: float) -> dict[str, Any]:
    with harness.DaemonProcess("--simulate-gpus", str(gpus), "--interval", str(interval), tmp=tmp) as d:
        assert d.proc is not None
        proc = psutil.Process(d.proc.pid)
        time.sleep(warmup)
        h0 = httpx.get(f"{d.url}/healthz", timeout=10).json()["sampler"]
        c0, w0 = proc.cpu_times(), time.monotonic()
        rss_peak = 0
        threads = 0
        end = w0 + window
        while time.monotonic() < end:
            mem = proc.memory_info()
            rss_peak = max(rss_peak, mem.rss)
            threads = proc.num_threads()
            time.sleep(0.5)
        c1, w1 = proc.cpu_times(), time.monotonic()
        h1 = httpx.get(f"{d.url}/healthz", timeout=10).json()["sampler"]
        uss = proc.memory_full_info().uss
        rss = proc.memory_info().rss
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    ticks = h1["ticks"] - h0["ticks"]
    return {"gpus": gpus, "interval_s": interval, "window_s": w1 - w0, "cpu_core_pct": 100.0 * cpu / (w1 - w0),
            "cpu_user_s": c1.user - c0.user, "cpu_system_s": c1.system - c0.system, "rss_bytes": rss,
            "rss_peak_bytes": rss_peak, "uss_bytes": uss, "threads": threads, "ticks": ticks,
            "expected_ticks": (w1 - w0) / interval, "missed_ticks": h1["missed_ticks"] - h0["missed_ticks"],
            "missed_ticks_total": h1["missed_ticks"], "worst_gap_s": h1["worst_gap_s"],
            "sensor_errors": h1["sensor_errors"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    warmup, window = (3.0, 8.0) if args.quick else (5.0, 20.0)
    rows = []
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="joulemeter-daemon-cost-") as tmp:
        for interval in INTERVALS:
            for gpus in GPU_COUNTS:
                r = measure(Path(tmp), gpus, interval, warmup, window)
                rows.append(r)
                print(f"{gpus:3d} GPUs every {interval:g} s: {r['cpu_core_pct']:.1f} % of a core, "
                      f"RSS {r['rss_bytes'] / 2**20:.0f} MiB", flush=True)
    text = harness.table(
        ["interval", "GPUs", "CPU (% of one core)", "RSS", "USS", "threads", "ticks / expected", "missed ticks",
         "worst gap (since start)"],
        [[f"{r['interval_s']:g} s", r["gpus"], f"{r['cpu_core_pct']:.1f} %", f"{r['rss_bytes'] / 2**20:.0f} MiB",
          f"{r['uss_bytes'] / 2**20:.0f} MiB", r["threads"], f"{r['ticks']} / {r['expected_ticks']:.0f}",
          r["missed_ticks"], f"{r['worst_gap_s'] * 1e3:.0f} ms"] for r in rows],
        title="Daemon process cost (simulated GPUs with energy counters, SQLite ledger)")
    print()
    print(text)
    print(f"\nload average (1 min) before / after: {load0:.2f} / {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    path = harness.write_json("daemon_cost-quick" if args.quick else "daemon_cost", {
        "rows": rows, "warmup_s": warmup, "window_s": window,
        "load_avg_1m": {"before": load0, "after": os.getloadavg()[0]}, "summary_markdown": text})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
