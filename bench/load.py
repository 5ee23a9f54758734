"""Load: many client processes posting phase markers while the daemon samples simulated GPUs.

Each client registers its own run and posts `--rate` phases a second in batches every `--batch-every` seconds,
retrying a batch (the same markers) until the daemon takes it, as the client library does. `--kill-at S`
SIGKILLs the daemon S seconds in and starts it again `--down-s` later on the same port and ledger: the
retries carry the markers over the outage. At the end the ledger is read directly: every marker must be
stored exactly once. Printed: throughput, POST latency (p50/p99/max), the sampler's worst gap between
samples (from the stored samples and from /healthz), and the counts.

Usage: python bench/load.py [--clients 16] [--rate 1000] [--seconds 60] [--gpus 8] [--interval 0.1]
                            [--kill-at S --down-s 2] [--repost 0.1] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    def __init__(self, db: Path, port: int, gpus: int, interval: float, log: Path) -> None:
        self.cmd = [sys.executable, "-m", "telemetry_service", "serve", "--port", str(port), "--db", f"sqlite:///{db}",
                    "--simulate-gpus", str(gpus), "--interval", str(interval), "--retention", "off"]
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("daemon did not start")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


def client(index: int, url: str, rate: float, every: float, seconds: float, repost: float, go: Any, out: Any) -> None:
    """One training process: registers a run, posts `rate` markers a second in batches, retries until taken,
    and with probability `repost` sends an earlier, acknowledged batch again (as a replayed spool would)."""
    rng = np.random.default_rng(index)
    run_id = f"load-{index}"
    per_batch = max(1, round(rate * every))
    batches = round(seconds / every)
    latencies: list[float] = []
    retries = reposts = 0
    sent_batches: list[list[dict[str, Any]]] = []
    with httpx.Client(base_url=url, timeout=30.0) as c:
        while True:
            try:
                if c.post("/api/v1/runs", json={"name": "load", "run_id": run_id, "pid": os.getpid()}).status_code < 300:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        go.wait()
        start = time.time()
        for b in range(batches):
            due = start + (b + 1) * every
            time.sleep(max(0.0, due - time.time()))
            # Back-to-back markers on a fixed grid from the start: each one distinct, whenever its batch is sent.
            batch = [{"name": "step", "start": start + (b * per_batch + i) / rate,
                      "end": start + (b * per_batch + i + 0.5) / rate, "step": b * per_batch + i}
                     for i in range(per_batch)]
            sent_batches.append(batch)
            if rng.random() < repost:
                batch = sent_batches[int(rng.integers(len(sent_batches)))] + batch
                reposts += 1
            while True:
                sent = time.perf_counter()
                try:
                    r = c.post(f"/api/v1/runs/{run_id}/phases", json=batch)
                    if r.status_code == 202:
                        latencies.append(time.perf_counter() - sent)
                        break
                    if r.status_code < 500:
                        raise RuntimeError(f"batch refused: {r.status_code} {r.text[:200]}")
                except httpx.HTTPError:
                    pass
                retries += 1
                time.sleep(0.1)
        elapsed = time.time() - start
    out.put({"run_id": run_id, "sent": batches * per_batch, "latencies": latencies, "retries": retries,
             "reposts": reposts, "elapsed": elapsed})


def _worst_gaps(db: Path, t0: float, t1: float) -> dict[str, float]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        out = {}
        for pk, key in conn.execute("SELECT id, key FROM devices WHERE kind = 'gpu'"):
            t = np.array([r[0] for r in conn.execute("SELECT t FROM samples WHERE device_id = ? AND t >= ? AND t <= ? "
                                                      "ORDER BY t", (pk, t0, t1))])
            out[key] = float(np.max(np.diff(t))) if t.size > 1 else float("inf")
        return out


def _stored(db: Path) -> dict[str, tuple[int, int]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT r.run_id, count(*), count(DISTINCT p.step) FROM phases p JOIN runs r "
                            "ON r.id = p.run_pk GROUP BY r.run_id").fetchall()
    return {run_id: (n, distinct) for run_id, n, distinct in rows}


def run(clients: int, rate: float, seconds: float, gpus: int, interval: float, every: float,
        kill_at: float | None = None, down_s: float = 2.0, repost: float = 0.0,
        workdir: Path | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        work = workdir or Path(tmp)
        db = work / "load.db"
        daemon = Daemon(db, _free_port(), gpus, interval, work / "daemon.log")
        daemon.start()
        ctx = mp.get_context("spawn")
        go, out = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=client, args=(i, daemon.url, rate, every, seconds, repost, go, out)) for i in range(clients)]
        for p in procs:
            p.start()
        time.sleep(2.0 + 0.2 * clients)  # every client registered and waiting
        began = time.time()
        go.set()
        health: list[dict[str, Any]] = []
        killed_at = restarted_at = None
        results: list[dict[str, Any]] = []
        while len(results) < clients:
            now = time.time() - began
            if kill_at is not None and killed_at is None and now >= kill_at:
                daemon.kill()
                killed_at = time.time()
                time.sleep(down_s)
                daemon.start()
                restarted_at = time.time()
            try:
                results.append(out.get(timeout=0.5))
            except Exception:
                try:
                    health.append(httpx.get(f"{daemon.url}/healthz", timeout=5.0).json()["sampler"])
                except httpx.HTTPError:
                    pass
        ended = time.time()
        for p in procs:
            p.join()
        final_health = httpx.get(f"{daemon.url}/healthz", timeout=10.0).json()["sampler"]
        rc = daemon.stop()
        stored = _stored(db)
        lost_s = None
        if killed_at is not None:  # how much sampling the kill cost: the newest sample written before it
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                (last,) = conn.execute("SELECT max(t) FROM samples WHERE t < ?", (killed_at,)).fetchone()
            lost_s = killed_at - last
        # Sampling cadence while under load (a killed daemon's hole is not the sampler's doing).
        windows = [(began, ended)] if killed_at is None else [(began, killed_at - 1.0), (restarted_at + 1.0, ended)]
        per_window = [_worst_gaps(db, *w) for w in windows if w[1] > w[0]]
        gaps = {k: max(g[k] for g in per_window) for k in per_window[0]}
        lat = np.array([x for r in results for x in r["latencies"]])
        sent = sum(r["sent"] for r in results)
        exactly_once = all(stored.get(r["run_id"]) == (r["sent"], r["sent"]) for r in results)
        return {
            "clients": clients, "rate_per_client": rate, "seconds": seconds, "gpus": gpus, "interval_s": interval,
            "sent": sent, "stored": sum(n for n, _ in stored.values()), "exactly_once": exactly_once,
            "achieved_phases_per_s": sent / max(r["elapsed"] for r in results),
            "client_elapsed_max_s": max(r["elapsed"] for r in results),
            "posts": int(lat.size), "retries": sum(r["retries"] for r in results),
            "reposts": sum(r["reposts"] for r in results),
            "post_latency_ms": {"p50": float(np.percentile(lat, 50) * 1e3), "p99": float(np.percentile(lat, 99) * 1e3),
                                "max": float(lat.max() * 1e3)},
            "worst_sample_gap_s": max(gaps.values()), "worst_sample_gap_by_gpu_s": gaps,
            "healthz_worst_gap_s": final_health["worst_gap_s"], "healthz_missed_ticks": final_health["missed_ticks"],
            "killed": killed_at is not None, "samples_lost_at_kill_s": lost_s, "daemon_exit": rc,
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--rate", type=float, default=1000.0, help="phases per second per client")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--batch-every", type=float, default=0.1)
    ap.add_argument("--kill-at", type=float, help="SIGKILL the daemon this many seconds in, then restart it")
    ap.add_argument("--down-s", type=float, default=2.0)
    ap.add_argument("--repost", type=float, default=0.0, help="chance a client re-sends an acknowledged batch")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    r = run(args.clients, args.rate, args.seconds, args.gpus, args.interval, args.batch_every, args.kill_at,
            args.down_s, args.repost)
    if args.json:
        print(json.dumps(r))
        return
    lat = r["post_latency_ms"]
    print(f"{r['clients']} clients x {r['rate_per_client']:g} phases/s for {r['seconds']:g} s, "
          f"{r['gpus']} simulated GPUs sampled every {r['interval_s']:g} s (machine: {os.cpu_count()} CPUs)")
    print(f"  phases: sent {r['sent']:,}, stored {r['stored']:,}, each exactly once: {r['exactly_once']}; "
          f"achieved {r['achieved_phases_per_s']:,.0f} phases/s (clients took up to {r['client_elapsed_max_s']:.1f} s)")
    print(f"  POST /phases latency: p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, max {lat['max']:.1f} ms "
          f"over {r['posts']:,} posts ({r['retries']} retries, {r['reposts']} acknowledged batches sent again)")
    print(f"  sampler: worst gap between stored samples {r['worst_sample_gap_s'] * 1e3:.0f} ms "
          f"(target {r['interval_s'] * 1e3:.0f} ms); /healthz worst tick gap {r['healthz_worst_gap_s'] * 1e3:.0f} ms, "
          f"missed ticks {r['healthz_missed_ticks']}")
    if r["killed"]:
        print(f"  the daemon was SIGKILLed and restarted during the run; the newest sample written before the kill "
              f"was {r['samples_lost_at_kill_s'] * 1e3:.0f} ms old")


if __name__ == "__main__":
    main()
