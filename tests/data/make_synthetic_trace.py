"""Writes `synthetic-h100-like.json.gz`: a tiny made-up recording in the probe's format, for replay tests.

It is not a measurement ("host": "synthetic"): one GPU polled every 10 ms for 2 s, idle at 60 W then a
"matmul" at 300 W, its counter updating every 100 ms, instant power refreshed every 20 ms.

    python tests/data/make_synthetic_trace.py
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path
from typing import Any

STARTED_AT = 1_700_000_000.0
POLL_S, READ_S, READS = 0.01, 0.0002, 200
COUNTER_PERIOD_S, COUNTER_START_MJ = 0.1, 5_000_000
INSTANT_PERIOD_S = 0.02
IDLE_W, BUSY_W, BUSY_FROM_S = 60.0, 300.0, 1.0
PATH = Path(__file__).with_name("synthetic-h100-like.json.gz")


def power_w(s: float) -> float:
    return BUSY_W if s >= BUSY_FROM_S else IDLE_W


def energy_j(s: float) -> float:
    """Energy from the start to s seconds in."""
    return IDLE_W * min(s, BUSY_FROM_S) + BUSY_W * max(0.0, s - BUSY_FROM_S)


def _last_tick(t: float, period: float) -> float:
    # rounded first: near 1.7e9 s a float is only good to ~0.2 µs, and 0.1 s must be 1 tick, not 0.99999
    return STARTED_AT + math.floor(round((t - STARTED_AT) / period, 4)) * period


def reads() -> dict[str, list[Any]]:
    t0 = [STARTED_AT + i * POLL_S for i in range(READS)]
    # The counter holds its last update; instant power holds its last refresh, stamped with it.
    counter = [COUNTER_START_MJ + round(1000 * energy_j(_last_tick(t, COUNTER_PERIOD_S) - STARTED_AT)) for t in t0]
    refreshed = [_last_tick(t, INSTANT_PERIOD_S) for t in t0]
    average = [round(1000 * (energy_j(t - STARTED_AT) - energy_j(max(0.0, t - STARTED_AT - 1.0)))
                     / min(1.0, max(t - STARTED_AT, POLL_S))) for t in t0]
    return {"t0": t0, "t1": [t + READ_S for t in t0], "counter_mj": counter,
            "power_instant_mw": [round(1000 * power_w(r - STARTED_AT)) for r in refreshed],
            "power_instant_ts_us": [round(r * 1e6) for r in refreshed], "power_usage_mw": average}


def recording() -> dict[str, Any]:
    return {"format": "joulemeter-nvml-trace/1", "host": "synthetic", "driver": "synthetic",
            "started_at": STARTED_AT,
            "gpus": [{"index": 0, "name": "Synthetic GPU", "uuid": "GPU-00000000-0000-0000-0000-synthetic000",
                      "architecture": 9, "reads": reads()}],
            "load": [{"start": STARTED_AT, "end": STARTED_AT + BUSY_FROM_S, "kind": "idle"},
                     {"start": STARTED_AT + BUSY_FROM_S, "end": STARTED_AT + READS * POLL_S, "kind": "matmul"}],
            "call_cost_us": {"nvmlDeviceGetTotalEnergyConsumption": {"median": 0.0, "p99": 0.0}}}


if __name__ == "__main__":
    PATH.write_bytes(gzip.compress(json.dumps(recording()).encode(), mtime=0))
    print(f"wrote {PATH}")
