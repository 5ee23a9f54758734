"""How quickly the dashboard opens a long run: a 1-hour run sampled at 10 Hz on several devices, thousands of phases.

Builds the ledger directly through SQLAlchemy (fast, no sampling in real time), starts the daemon on it, then
measures the REST calls the run page makes and the run page itself in headless Chromium (navigation to charts
drawn, to the energy breakdown shown, and a zoom). Prints figures; run on demand:

    .venv/bin/python bench/dashboard_load.py [--gpus 4] [--hours 1] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from sqlalchemy import insert

from telemetry_service.report import run_energy
from telemetry_service.store.db import open_ledger
from telemetry_service.store.models import Device, Node, Phase, Run, RunMember, Sample

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
NODE = "gpu-node-01"
RUN_ID = "bench-1h"
HZ = 10.0
STEP_S = 1.2  # one training step, then a short data-loading gap
EPOCH_S = 600.0
EVAL_S = 30.0
CHART_FIELDS = "power_w,power_min_w,power_max_w"  # what the run page's charts ask for


def _phases(t0: float, t1: float) -> list[dict[str, Any]]:
    """Epochs of train steps, each epoch closed by an evaluation: a few thousand phases over an hour."""
    out: list[dict[str, Any]] = []
    step = 0
    start = t0 + 5.0
    epoch = 0
    while start + EPOCH_S <= t1:
        end = start + EPOCH_S
        out.append({"name": "epoch", "start": start, "end": end, "step": epoch})
        t = start
        while t + STEP_S <= end - EVAL_S:
            out.append({"name": "train_step", "start": t, "end": t + STEP_S - 0.15, "step": step})
            t += STEP_S
            step += 1
        out.append({"name": "eval", "start": end - EVAL_S + 1.0, "end": end - 0.5, "step": epoch})
        start = end
        epoch += 1
    return out


def _power(t: np.ndarray, phases: list[dict[str, Any]], busy_w: float, idle_w: float, eval_w: float,
           rng: np.random.Generator) -> np.ndarray:
    p = np.full(t.shape, idle_w)
    for ph in phases:
        if ph["name"] == "epoch":
            continue
        lo, hi = np.searchsorted(t, [ph["start"], ph["end"]])
        p[lo:hi] = busy_w if ph["name"] == "train_step" else eval_w
    return np.maximum(p + rng.normal(0.0, 0.03 * busy_w, t.shape), 0.0)


def build_ledger(path: Path, gpus: int, hours: float) -> dict[str, Any]:
    engine, sessions = open_ledger(f"sqlite:///{path}")
    rng = np.random.default_rng(7)
    t0 = time.time() - hours * 3600 - 120
    t1 = t0 + hours * 3600
    phases = _phases(t0, t1)
    n = int(round((t1 - t0 + 4) * HZ))
    built = time.perf_counter()
    with sessions() as s:
        node = Node(name=NODE, first_seen=t0 - 10, last_started=t0 - 10)
        s.add(node)
        s.flush()
        specs = [(f"gpu{i}", "gpu", i, "NVIDIA H100 80GB HBM3", "nvml", 0.1, (650.0, 90.0, 260.0)) for i in range(gpus)]
        specs += [("cpu0", "cpu", 0, "package-0", "rapl", 0.001, (180.0, 60.0, 90.0)),
                  ("dram0", "dram", 0, "dram-0", "rapl", 0.001, (40.0, 12.0, 20.0))]
        devices = []
        for key, kind, index, name, source, period, _ in specs:
            dev = Device(node_id=node.id, key=key, kind=kind, index=index, name=name,
                         uuid=f"GPU-bench-{index}" if kind == "gpu" else None, source=source, energy_counter=True,
                         update_period_s=period, counter_wrap_j=None, present=True)
            s.add(dev)
            devices.append(dev)
        s.flush()
        run = Run(run_id=RUN_ID, name="distilbert 1 h at 10 Hz", status="completed", started_at=t0, ended_at=t1,
                  tags={"bench": "dashboard_load"}, config={}, metrics={"accuracy": 0.901, "f1": 0.887})
        s.add(run)
        s.flush()
        s.add(RunMember(run_pk=run.id, node_id=node.id, pid=4242, host=NODE,
                        device_keys=[k for k, *_ in specs], joined_at=t0))
        if phases:
            s.connection().execute(insert(Phase), [{"run_pk": run.id, "node_id": node.id, **p, "attrs": None} for p in phases])
        t = t0 - 2 + np.arange(n) / HZ + rng.uniform(0, 0.004, n)
        conn = s.connection()  # Core executemany: the ORM's bulk path is several times slower for 200 k rows
        for dev, (key, kind, *_rest, (busy, idle, ev)) in zip(devices, specs):
            p = _power(t, phases, busy, idle, ev, rng)
            e = np.concatenate([[0.0], np.cumsum(0.5 * (p[1:] + p[:-1]) * np.diff(t))])
            util = np.clip(p / busy * 100, 0, 100)
            gpu = kind == "gpu"
            rows = [{"device_id": dev.id, "t": ti, "power_w": pi, "energy_j": ei, "energy_t": ti, "counter_raw_j": ei,
                     "timing": "grid", "util_pct": ui, "mem_util_pct": None,
                     "mem_used_bytes": 60 * 2**30 if gpu else None, "mem_total_bytes": 80 * 2**30 if gpu else None,
                     "temp_c": 40 + ui * 0.3 if gpu else None, "sm_clock_mhz": 1980.0 if gpu else None,
                     "power_limit_w": 700.0 if gpu else None}
                    for ti, pi, ei, ui in zip(t.tolist(), p.tolist(), e.tolist(), util.tolist())]
            conn.execute(insert(Sample), rows)
        s.flush()
        started = time.perf_counter()
        run.totals = run_energy(s, run, 1 / HZ, now=t1 + 10)["total"]
        energy_s = time.perf_counter() - started
        s.commit()
    engine.dispose()
    return {"samples_per_device": n, "devices": len(specs), "phases": len(phases), "build_s": time.perf_counter() - built,
            "offline_energy_s": energy_s}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_daemon(db: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "telemetry_service", "serve", "--port", str(port), "--db", f"sqlite:///{db}",
           "--node", "bench-daemon"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"daemon exited:\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("daemon did not start")


def timed(client: httpx.Client, path: str, params: dict[str, Any] | None, repeat: int) -> tuple[list[float], int]:
    times = []
    size = 0
    for _ in range(repeat):
        started = time.perf_counter()
        r = client.get(path, params=params)
        times.append(time.perf_counter() - started)
        r.raise_for_status()
        size = len(r.content)
    return times, size


def api_latencies(base: str, repeat: int) -> list[tuple[str, list[float], int]]:
    out = []
    with httpx.Client(base_url=base, timeout=120) as c:
        run = c.get(f"/api/v1/runs/{RUN_ID}").json()
        devices = [d for m in run["members"] for d in m["devices"]]
        mid = (run["started_at"] + run["ended_at"]) / 2
        calls = [
            ("GET /runs", "/api/v1/runs", None),
            ("GET /runs/{id}", f"/api/v1/runs/{RUN_ID}", None),
            ("GET /devices?node=", "/api/v1/devices", {"node": NODE}),
            ("GET /runs/{id}/phases (all)", f"/api/v1/runs/{RUN_ID}/phases", {"limit": 20000}),
            ("GET /samples whole run, all fields", f"/api/v1/runs/{RUN_ID}/samples",
             {"device": devices[0], "max_points": 1200}),
            ("GET /samples whole run, power fields", f"/api/v1/runs/{RUN_ID}/samples",
             {"device": devices[0], "max_points": 1200, "fields": CHART_FIELDS}),
            ("GET /samples 60 s zoom, power fields", f"/api/v1/runs/{RUN_ID}/samples",
             {"device": devices[0], "start": mid, "end": mid + 60, "max_points": 1200, "fields": CHART_FIELDS}),
            ("GET /runs/{id}/energy", f"/api/v1/runs/{RUN_ID}/energy", None),
        ]
        for label, path, params in calls:
            times, size = timed(c, path, params, repeat)
            out.append((label, times, size))
    return out


def page_load(base: str, repeat: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    figures: dict[str, list[float]] = {"charts drawn": [], "phase breakdown shown": [], "zoom re-drawn": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        for i in range(repeat + 1):  # the first load warms the daemon's and the browser's caches, and is dropped
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            page = context.new_page()
            page.set_default_timeout(120_000)
            started = time.perf_counter()
            page.goto(f"{base}/#/run/{RUN_ID}")
            page.wait_for_selector(".charts[data-state=ready]")
            charts = time.perf_counter() - started
            page.wait_for_selector("#phase-energy tbody tr[data-phase]")
            breakdown = time.perf_counter() - started
            box = page.locator(".device-chart .u-over").first.bounding_box()
            assert box is not None
            y = box["y"] + box["height"] / 2
            page.mouse.move(box["x"] + box["width"] * 0.40, y)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.42, y, steps=3)
            started = time.perf_counter()
            page.mouse.up()
            page.wait_for_selector(".charts[data-zoomed=true] .refining[hidden]", state="attached")
            zoom = time.perf_counter() - started
            if i == 0:
                out = ROOT / "bench" / "out"
                out.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(out / "dashboard-1h-zoomed.png"), full_page=False)
            else:
                figures["charts drawn"].append(charts)
                figures["phase breakdown shown"].append(breakdown)
                figures["zoom re-drawn"].append(zoom)
            context.close()
        browser.close()
    return figures


def ms(xs: list[float]) -> str:
    return f"median {1000 * statistics.median(xs):7.0f} ms   min {1000 * min(xs):7.0f} ms   max {1000 * max(xs):7.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=4)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "ledger.db"
        info = build_ledger(db, args.gpus, args.hours)
        print(f"ledger: {info['devices']} devices x {info['samples_per_device']:,} samples, {info['phases']:,} phases; "
              f"built in {info['build_s']:.1f} s, {db.stat().st_size / 2**20:.0f} MiB; "
              f"energy of the run computed offline in {1000 * info['offline_energy_s']:.0f} ms")
        port = free_port()
        proc = start_daemon(db, port, Path(tmp) / "daemon.log")
        base = f"http://127.0.0.1:{port}"
        try:
            print(f"\nREST API ({args.repeat} calls each, loopback):")
            for label, times, size in api_latencies(base, args.repeat):
                print(f"  {label:<38} {ms(times)}   {size / 1024:8.0f} KiB")
            print(f"\nrun page in headless Chromium ({args.repeat} loads after one warm-up):")
            for label, times in page_load(base, args.repeat).items():
                print(f"  {label:<38} {ms(times)}")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
