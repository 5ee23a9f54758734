"""Accuracy of energy per phase name across sensor models, phase lengths and host load: our daemon beside
Zeus, CodeCarbon and a naive reader, all reading the same simulated GPUs.

    .venv/bin/python bench/accuracy.py --quick        # every sensor model, 1 s / 0.2 s / 20 ms x 100, once
    .venv/bin/python bench/accuracy.py                # the full matrix, 5 repeats (about 30 minutes on 2 cores)
    .venv/bin/python bench/accuracy.py --lengths 1,0.2 --hosts quiet,loaded --repeats 3

One `SimulatedNvml` instance holds one fake GPU per sensor model (`--profiles`), all playing the same power
trace. The `pynvml` module's functions point at that instance, so Zeus, CodeCarbon and the naive reader read
those GPUs; our daemon runs in this process on the same instance and is asked through its REST API. Each phase
length is one session (daemon, peers and trace of its own); in it, for each repeat and host condition, a
training thread walks the steps/bursts/training traces, each a run, and at every boundary stamps the power
change, marks it for our daemon and ends/begins every peer's window. A loaded host has a busy process on each
core from just before the trial to just after it. Each tool's energy per phase name is compared with the exact
integral over the instants that tool was called at; ours also with what a perfect reader of the sensor could
know (`sensor_energy`, which differs from the truth for part-time sensing). Each cell is the worst over the
phase names and the repeats.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sim_binding import install_from_env  # noqa: E402

if __name__ == "__mp_main__":
    # A power-polling process spawned by Zeus (for GPUs without an energy counter): it plays the same fake GPUs.
    install_from_env()

import argparse  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402
import numpy as np  # noqa: E402

import harness  # noqa: E402
from accuracy_matrix import (DEFAULT_SENSORS, SENSORS, cells, matrix_table, ours_records,  # noqa: E402
                             peer_records, skipped_notes, verdict_table)
from accuracy_peers import CodeCarbon, Naive, Poster, Zeus  # noqa: E402
from accuracy_workload import (IDLE_W, FlatTrace, HostLoad, Marker, Scenario, Tool, build_schedule,  # noqa: E402
                               drive)
from sim_binding import install, publish  # noqa: E402
from telemetry_service.sensors.simulated import SimulatedGpu, SimulatedNvml  # noqa: E402

NODE = "bench"
POLLER_FROM_S = 0.2  # Zeus's power poller scans all its samples per end_window: too slow for shorter phases
SET_UP_S = 2.0  # from the end of set-up to the first boundary


def reps_for(length: float, quick: bool) -> int:
    """Repetitions of each phase name in one run: ≥ 400 at 20 ms (100 when quick), else about 2 s per name."""
    if length <= 0.02:
        return 100 if quick else 400
    return max(1, math.ceil(2.0 / length))


class Session:
    """One phase length: the trace, one fake GPU per sensor model, our daemon and the peers on them."""

    def __init__(self, length: float, args: argparse.Namespace, work: Path, seed: int) -> None:
        rng = random.Random(seed)
        self.length = length
        self.sensors = [SENSORS[name] for name in args.profiles]
        self.elements, scenarios = build_schedule(length, reps_for(length, args.quick), args.repeats, args.hosts,
                                                  rng)
        self.scenarios: dict[str, Scenario] = {sc.id: sc for sc in scenarios}
        self.trace = FlatTrace([el.pieces for el in self.elements], before_w=IDLE_W)
        self.trace.mark(0)
        loaded = time.time() - 3600.0  # the driver loaded an hour ago: the counters have history
        self.gpus = [SimulatedGpu(trace=self.trace, profile=p, index=i, name="Simulated H100",
                                  grid_anchor=loaded + rng.uniform(0.0, p.period_s), driver_loaded_at=loaded,
                                  seed=rng.randrange(1 << 40)) for i, p in enumerate(self.sensors)]
        self.nvml = SimulatedNvml(self.gpus)
        install(self.nvml)
        publish(self.trace, self.gpus, work / f"gpus-{length:g}.json")
        self.work = work
        self.peers = not args.no_peers

    def as_run(self, markers: list[Marker]) -> dict[str, float]:
        """Median length the phases really had, per host condition (a late training thread stretches them)."""
        out: dict[str, list[float]] = {}
        for m in markers:
            out.setdefault(self.scenarios[m.scenario].host, []).append(m.t1 - m.t0)
        return {h: float(np.median(v)) for h, v in out.items()}

    def truth(self, gpu: int, t0: float, t1: float) -> float:
        return self.trace.energy(t0, t1)

    def sensed(self, gpu: int, t0: float, t1: float) -> float:
        """What a perfect reader of the sensor could know: the truth but for part-time sensing."""
        g = self.gpus[gpu]
        return g.sensor_energy(t0, t1) if g.profile.observed < 1.0 else self.trace.energy(t0, t1)

    def set_up_peers(self, errors: dict[str, str]) -> tuple[Naive, Zeus | None, CodeCarbon | None]:
        naive = Naive(self.sensors)
        zeus = cc = None
        if self.peers:
            try:
                zeus = Zeus(self.sensors, poller=self.length >= POLLER_FROM_S)
            except Exception as exc:  # reported with the results, never silently
                errors["zeus"] = repr(exc)
            try:
                cc = CodeCarbon(self.work / f"codecarbon-{self.length:g}", self.sensors, self.length)
            except Exception as exc:
                errors["codecarbon"] = repr(exc)
        return naive, zeus, cc

    def run(self) -> dict[str, Any]:
        from telemetry_service.sensors.discover import SensorSet
        from telemetry_service.sensors.nvml import NvmlSensor

        sensor = NvmlSensor(self.nvml, source="simulated", key_prefix="simgpu")
        errors: dict[str, str] = {}
        to_close: list[Zeus | CodeCarbon] = []
        load = HostLoad()
        try:
            with harness.in_process_daemon(SensorSet(sensors=[sensor], gpu_sensor=sensor), node=NODE) as (url, _):
                naive, zeus, cc = self.set_up_peers(errors)
                to_close = [p for p in (zeus, cc) if p is not None]
                poster = Poster(url)
                poster.start()
                tools: list[Tool] = [naive, *to_close]
                driven = drive(self.elements, time.time() + SET_UP_S, self.trace, tools, poster, load)
                poster.finish()
                with httpx.Client(base_url=url, timeout=300.0) as client:
                    answers = {sid: client.get(f"/api/v1/runs/{sid}/energy").raise_for_status().json()
                               for sid in self.scenarios}
                    health = client.get("/healthz").json()
        finally:
            load.stop()
            for peer in to_close:  # even on failure: Zeus's poller, left running, would spin on a core
                peer.close()
            self.trace.close()
        if poster.errors:
            errors["poster"] = "; ".join(poster.errors)
        out = self.results(driven, answers, {"naive": naive, "zeus": zeus, "codecarbon": cc})
        return {**out, "errors": errors, "sampler": health.get("sampler"),
                "counter_lost_locks": [g.clock.lost_locks for g in sensor.gpus if g.clock is not None],
                "zeus_end_window_s": harness.quantiles(zeus.costs) if zeus is not None and zeus.costs else None}

    def results(self, driven: dict[str, Any], answers: dict[str, Any], peers: dict[str, Any]) -> dict[str, Any]:
        """Every tool's figures against the truth, and how the session ran."""
        names = [s.name for s in self.sensors]
        records = ours_records(driven["ours"], answers, self.scenarios, names, self.truth, self.sensed, NODE)
        skipped: dict[str, dict[str, str]] = {}
        for tool, peer in peers.items():
            if peer is not None:
                records += peer_records(tool, peer.windows, self.scenarios, names, self.truth)
                skipped[tool] = {names[g]: why for g, why in peer.skipped.items()}
        return {"length": self.length, "records": records, "skipped": skipped,
                "load_1m_at_run_start": driven["load_1m"], "lateness_ms": driven["lateness_ms"],
                "schedule_shift_s": driven["schedule_shift_s"], "as_run_median_s": self.as_run(driven["ours"]),
                "peer_settings": {k: p.settings for k, p in peers.items() if p is not None}}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one repeat, 1 s / 0.2 s / 20 ms x 100 (a few minutes)")
    ap.add_argument("--profiles", default=",".join(DEFAULT_SENSORS),
                    help=f"sensor models, comma-separated, from: {', '.join(SENSORS)}")
    ap.add_argument("--lengths", default=None, help="phase lengths in s, in the order run (default 1,0.2,0.02,5)")
    ap.add_argument("--hosts", default="quiet,loaded", help="host conditions: quiet, loaded")
    ap.add_argument("--repeats", type=int, default=None, help="trials per cell; each cell is their worst (5)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-peers", action="store_true", help="our daemon and the naive reader only")
    ap.add_argument("--out", default=None, help="name of the JSON in bench/out/ (accuracy-matrix[-quick])")
    args = ap.parse_args()
    args.profiles = args.profiles.split(",")
    args.hosts = args.hosts.split(",")
    args.lengths = [float(x) for x in (args.lengths or ("1,0.2,0.02" if args.quick else "1,0.2,0.02,5")).split(",")]
    args.repeats = args.repeats or (1 if args.quick else 5)
    unknown = [p for p in args.profiles if p not in SENSORS] + [h for h in args.hosts if h not in ("quiet", "loaded")]
    if unknown:
        ap.error(f"unknown profile or host: {', '.join(unknown)}")
    return args


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    sys.setswitchinterval(0.0005)  # the daemon shares this process's GIL here; in production it has its own
    work = Path(tempfile.mkdtemp(prefix="joulemeter-bench-"))
    fake_bin = work / "bin"  # CodeCarbon runs `nvidia-smi --help` to decide NVML is usable
    fake_bin.mkdir()
    (fake_bin / "nvidia-smi").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "nvidia-smi").chmod(0o755)
    os.environ["PATH"] = f"{fake_bin}{os.pathsep}{os.environ['PATH']}"
    sessions: list[dict[str, Any]] = []
    try:
        for n, length in enumerate(args.lengths):
            t = time.time()
            print(f"session {length:g} s: {reps_for(length, args.quick)} reps per name, {args.repeats} repeats, "
                  f"hosts {args.hosts}", flush=True)
            sessions.append(Session(length, args, work, args.seed * 1000 + n).run())
            print(f"  done in {time.time() - t:.0f} s", flush=True)
            report(args, sessions)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def conditions(session: dict[str, Any]) -> str:
    """How the phases really ran and how busy the process was, per host condition."""
    parts = [f"{h}: phases {1e3 * v:.1f} ms (median as run), training thread late by "
             f"{session['lateness_ms'][h]['median']:.1f} ms median / {session['lateness_ms'][h]['p99']:.0f} ms p99"
             for h, v in session["as_run_median_s"].items()]
    for h in session["as_run_median_s"]:
        loads = [v for k, v in session.get("load_1m_at_run_start", {}).items() if f"-{h}-" in k]
        if loads:
            parts.append(f"{h} runs began at 1-min load {min(loads):.1f}–{max(loads):.1f}")
    sampler = session["sampler"] or {}
    return (f"{'; '.join(parts)}. Daemon sampler: {sampler.get('missed_ticks')} ticks missed of "
            f"{(sampler.get('ticks') or 0) + (sampler.get('missed_ticks') or 0)}, worst gap "
            f"{sampler.get('worst_gap_s', 0):.2f} s; counter timing lost (per GPU): {session['counter_lost_locks']}.")


def report(args: argparse.Namespace, sessions: list[dict[str, Any]]) -> None:
    """Prints the matrix so far and writes it, with every record behind it, to bench/out/."""
    records = [r for s in sessions for r in s["records"]]
    cs = cells(records)
    skipped: dict[str, dict[str, str]] = {}
    for s in sessions:
        for tool, by in s["skipped"].items():
            skipped.setdefault(tool, {}).update(by)
    text = "\n\n".join(matrix_table(cs, args.profiles, s["length"], args.hosts, skipped) + "\n\n" + conditions(s)
                         for s in sessions)
    text += "\n\n" + skipped_notes(skipped) + "\n\n" + verdict_table(cs)
    print(text, flush=True)
    path = harness.write_json(args.out or ("accuracy-matrix-quick" if args.quick else "accuracy-matrix"), {
        "config": {"profiles": args.profiles, "lengths": args.lengths, "hosts": args.hosts, "repeats": args.repeats,
                   "reps": {f"{x:g}": reps_for(x, args.quick) for x in args.lengths}, "seed": args.seed,
                   "sensors": {p: SENSORS[p].__dict__ for p in args.profiles}},
        "cells": [{"sensor": k[0], "length": k[1], "host": k[2], "tool": k[3], **v} for k, v in cs.items()],
        "sessions": sessions, "summary_markdown": text,
    })
    print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
