"""What recording a phase costs the training thread: median and p99 over 100 000 phases.

    python bench/client_overhead.py [--phases 100000] [--out bench/out/client_overhead.json]

Scenarios: the daemon up (a real daemon process on loopback; the sender thread batches and POSTs while the loop
runs), the daemon down (nothing listens; the sender retries and spools), and the recorder alone (no sender thread:
the bare cost of a timestamp and a deque append), also with torch imported but CUDA not initialised. Each phase is
timed on its own with perf_counter_ns around the `with` block, so figures include the timer's own cost (reported as
`timer`). The loop records phases back to back, the worst case for contention with the sender thread; in training,
phases are milliseconds apart.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tests.daemon_proc import DaemonProcess, free_port  # noqa: E402
from trainer.client import TelemetryClient  # noqa: E402
from trainer.client.buffer import Recorder  # noqa: E402


def timed(n: int, record: Callable[[int], None]) -> list[int]:
    pc = time.perf_counter_ns
    out = [0] * n
    for i in range(n):
        t0 = pc()
        record(i)
        out[i] = pc() - t0
    return out


def summary(ns: list[int]) -> dict[str, float]:
    s = sorted(ns)
    n = len(s)
    return {"median_us": s[n // 2] / 1e3, "p99_us": s[int(n * 0.99)] / 1e3, "p999_us": s[int(n * 0.999)] / 1e3,
            "mean_us": statistics.fmean(s) / 1e3, "max_us": s[-1] / 1e3, "n": n}


def phase_loop(rec: Recorder, n: int) -> list[int]:
    def one(i: int) -> None:
        with rec.phase("step", step=i):
            pass

    return timed(n, one)


def bench_client(n: int, url: str, spool: Path) -> tuple[dict[str, float], dict[str, Any]]:
    tc = TelemetryClient("bench-client-overhead", url=url, spool_dir=spool, sync_cuda=True, register_timeout=10.0)
    with tc:
        samples = phase_loop(tc, n)
        t0 = time.perf_counter()
        delivered = tc.flush(timeout=60.0)
        flush_s = time.perf_counter() - t0
    return summary(samples), {"flushed_all": delivered, "flush_s": flush_s, "sent": tc.stats.sent,
                              "spooled": tc.stats.spooled, "run_id": tc.run_id}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phases", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "client_overhead.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the "no daemon" warning is expected here
    n = args.phases
    results: dict[str, Any] = {"phases": n, "python": platform.python_version(), "machine": platform.machine(),
                               "scenarios": {}}
    scenarios = results["scenarios"]

    scenarios["timer"] = summary(timed(n, lambda i: None))
    scenarios["recorder alone"] = summary(phase_loop(Recorder(sync_cuda=True), n))

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        daemon = DaemonProcess(tmp_path).start()
        try:
            scenarios["daemon up"], up = bench_client(n, daemon.url, tmp_path / "spool-up")
            stored = len(httpx.get(f"{daemon.url}/api/v1/runs/{up['run_id']}/phases",
                                   params={"limit": n}, timeout=60).json()["phases"])
            up["stored_by_daemon"] = stored
        finally:
            daemon.stop()
        scenarios["daemon down"], down = bench_client(n, f"http://127.0.0.1:{free_port()}", tmp_path / "spool-down")
    results["delivery"] = {"daemon up": up, "daemon down": down}
    # A training script has torch imported: with sync_cuda on, each boundary then asks whether CUDA is initialised.
    import torch  # noqa: F401, PLC0415 - imported late on purpose: the scenarios above run without it

    scenarios["recorder, torch imported (CUDA not initialised)"] = summary(phase_loop(Recorder(sync_cuda=True), n))

    print(f"per-phase cost in the training thread, {n} phases (microseconds, timer included)")
    width = max(len(name) for name in scenarios) + 2
    print(f"{'scenario':<{width}}{'median':>10}{'p99':>10}{'p99.9':>10}{'mean':>10}{'max':>12}")
    for name, s in scenarios.items():
        print(f"{name:<{width}}{s['median_us']:>10.2f}{s['p99_us']:>10.2f}{s['p999_us']:>10.2f}{s['mean_us']:>10.2f}"
              f"{s['max_us']:>12.1f}")
    alone = scenarios["recorder alone"]["median_us"]
    for name in ("daemon up", "daemon down"):
        print(f"{name}: median {scenarios[name]['median_us'] / alone:.2f}x the recorder alone")
    print(f"daemon up: {up['sent']} sent, {up['stored_by_daemon']} stored, flush after the loop {up['flush_s']:.2f} s")
    print(f"daemon down: {down['spooled']} spooled, {down['sent']} sent")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
