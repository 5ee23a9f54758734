"""Accuracy of energy per phase name: our daemon, Zeus and CodeCarbon, reading one simulated GPU binding at once.

    .venv/bin/python bench/accuracy.py            # the full run, about 10 minutes
    .venv/bin/python bench/accuracy.py --quick    # about 3 minutes, fewer repetitions, phases up to 1 s

One `SimulatedNvml` instance holds four fake GPUs playing the same power trace (the same workload on four GPUs
with different sensors): with and without the energy counter (counter on its own ~100 ms grid, random phase),
power reported instant or as a 1 s moving average. The `pynvml` module's functions point at that instance, so
Zeus and CodeCarbon read those GPUs; our daemon runs in this process on the same instance and is asked through
its REST API. A "training thread" walks a schedule of phases (step changes, bursts, a training step pattern)
whose power the trace follows, and at every phase boundary marks it for our daemon (a timestamp, as our client
does), ends/begins a ZeusMonitor window and stops/starts a CodeCarbon task. Each tool's energy per phase name
is compared with the exact integral of the trace over the instants that tool was called at.
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
import queue  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections import defaultdict  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402
import numpy as np  # noqa: E402

import harness  # noqa: E402
from sim_binding import install, publish  # noqa: E402
from telemetry_service.sensors.simulated import PROFILES, LiveTrace, SimulatedGpu, SimulatedNvml  # noqa: E402

NODE = "bench"
IDLE_W = 60.0
# Which sensor each fake GPU has. Zeus probes GPU 0 only and assumes every GPU is alike (see RESULTS.md).
VARIANTS = (
    {"key": "counter+instant", "profile": "ideal-100ms"},
    {"key": "counter+average", "profile": "average-power"},
    {"key": "none+instant", "profile": "no-counter"},
    {"key": "none+average", "profile": "no-counter-average"},
)
# (length s, repetitions of each phase name) full / quick
LENGTHS_FULL = ((0.02, 1000), (0.05, 150), (0.2, 40), (1.0, 8), (5.0, 2))
LENGTHS_QUICK = ((0.02, 120), (0.05, 30), (0.2, 6), (1.0, 1))
JITTER = 0.15  # each phase lasts L x U(1 - JITTER, 1 + JITTER): steps are never phase-locked to a sensor grid
SCENARIO_GAP_S = 1.0
SEGMENT_GAP_S = 2.0  # between phase lengths
POLLER_FROM_S = 0.2  # Zeus's power poller (GPU 2) measures phases from this length on (see Zeus.start_power_poller)
POLLER_GAP_S = 15.0  # the idle stretch in which it starts
LEAD_S = 30.0  # set-up time before the first phase: daemon, trackers, Zeus's spawned poller

# The power inside each phase name, as (fraction of the phase, watts) pieces.
KINDS: dict[str, tuple[tuple[str, tuple[tuple[float, float], ...]], ...]] = {
    "steps": (("low", ((1.0, 90.0),)), ("high", ((1.0, 400.0),))),
    "bursts": (("burst", ()), ("quiet", ((1.0, 70.0),))),  # burst: see BURST
    "training": (("data_loading", ((1.0, 90.0),)),  # a dip while the GPU waits for data
                 ("forward", ((0.3, 380.0), (0.7, 320.0))),  # a spike as the kernels ramp up
                 ("backward", ((0.3, 460.0), (0.7, 410.0))),
                 ("optimizer_step", ((0.2, 330.0), (0.8, 240.0)))),  # a short blip
}
BURST = ((0.003, 480.0), (0.004, 150.0))  # 3 ms bursts every 7 ms, from the start of each burst phase
NOISE_S, NOISE_SD = 0.005, 0.02  # sensor-visible fluctuation of every level: 5 ms pieces, 2 % standard deviation


@dataclass
class Scenario:
    """One trace kind at one phase length: a run of its own in our daemon."""

    id: str
    kind: str
    length: float
    reps: int
    names: list[str]


@dataclass
class Element:
    """A stretch of the workload: a phase of a scenario, or idle (lead-in, gaps). Starts are scheduled; the
    training thread stamps the real instant when it gets there, and the power follows that instant."""

    start: float
    pieces: list[tuple[float, float]]
    scenario: Scenario | None = None
    name: str | None = None
    start_poller: bool = False  # Zeus's power poller starts in this idle stretch


def with_noise(pieces: list[tuple[float, float]], rng: random.Random) -> list[tuple[float, float]]:
    """Real power is never flat: each level is cut into NOISE_S pieces, each NOISE_SD off in a random direction.

    The integral stays exact (it is the integral of these pieces). Without it, a poller that keeps only changed
    readings (Zeus's) would see nothing inside a constant phase, a blindness real sensors never cause."""
    out = []
    for d, w in pieces:
        n = max(1, round(d / NOISE_S))
        out += [(d / n, w * (1.0 + rng.gauss(0.0, NOISE_SD))) for _ in range(n)]
    return out


def phase_pieces(kind: str, name: str, duration: float, rng: random.Random) -> list[tuple[float, float]]:
    if kind == "bursts" and name == "burst":
        out, t = [], 0.0
        while t < duration - 1e-9:
            for d, w in BURST:
                d = min(d, duration - t)
                if d > 1e-9:
                    out.append((d, w * (1.0 + rng.gauss(0.0, NOISE_SD))))
                    t += d
        return out
    return with_noise([(f * duration, w) for f, w in dict(KINDS[kind])[name]], rng)


def build_schedule(lengths: tuple[tuple[float, int], ...], t0: float, rng: random.Random
                   ) -> tuple[list[Element], list[Scenario]]:
    """The workload from t0 - LEAD_S: idle lead-in, then for each phase length one scenario per trace kind."""
    elements = [Element(start=t0 - LEAD_S, pieces=with_noise([(LEAD_S, IDLE_W)], rng))]
    scenarios: list[Scenario] = []
    t = t0
    for n, (length, reps) in enumerate(lengths):
        if n:
            poller = length >= POLLER_FROM_S and lengths[n - 1][0] < POLLER_FROM_S
            gap = POLLER_GAP_S if poller else SEGMENT_GAP_S
            elements.append(Element(start=t, pieces=with_noise([(gap, IDLE_W)], rng), start_poller=poller))
            t += gap
        for kind, names in KINDS.items():
            sc = Scenario(id=f"acc-{kind}-{length:g}s", kind=kind, length=length, reps=reps,
                          names=[name for name, _ in names])
            scenarios.append(sc)
            for _ in range(reps):
                for name in sc.names:
                    d = round(length * rng.uniform(1 - JITTER, 1 + JITTER), 6)
                    elements.append(Element(start=t, pieces=phase_pieces(kind, name, d, rng), scenario=sc,
                                            name=name))
                    t += d
            elements.append(Element(start=t, pieces=with_noise([(SCENARIO_GAP_S, IDLE_W)], rng)))
            t += SCENARIO_GAP_S
    elements.append(Element(start=t, pieces=with_noise([(5.0, IDLE_W)], rng)))
    return elements, scenarios


# --- the tools --------------------------------------------------------------------------------------------


@dataclass
class Window:
    """One measurement a tool made: the phase, the instants it was called at, the energy it reported per GPU."""

    scenario: str
    name: str
    t0: float
    t1: float
    energy: dict[int, float]


class Zeus:
    """ZeusMonitor windows, one monitor per GPU, configured as its docs advise for each sensor."""

    def __init__(self) -> None:
        from zeus.monitor import ZeusMonitor

        self.ZeusMonitor = ZeusMonitor
        warnings.filterwarnings("ignore", message="The energy consumption of one or more GPUs was measured as zero")
        # approx_instant_energy: Zeus's own advice for windows shorter than the counter period; it needs
        # instant power, which GPU 1 does not report.
        self.monitors: dict[int, Any] = {
            0: ZeusMonitor(gpu_indices=[0], cpu_indices=[], approx_instant_energy=True),
            1: ZeusMonitor(gpu_indices=[1], cpu_indices=[]),
        }
        self.costs: dict[tuple[int, float], list[float]] = defaultdict(list)  # (gpu, L) -> seconds per end_window
        self.poller_error: str | None = None
        self.open: dict[int, tuple[str, str, float]] = {}
        self.windows: list[Window] = []
        self.settings = {
            "gpu0": "ZeusMonitor(gpu_indices=[0], cpu_indices=[], approx_instant_energy=True)",
            "gpu1": "ZeusMonitor(gpu_indices=[1], cpu_indices=[]) (no instant power: approx_instant_energy impossible)",
            "gpu2": "ZeusMonitor(gpu_indices=[2], cpu_indices=[], approx_instant_energy=True): pre-Volta path, "
                    "PowerMonitor polling instant power in a spawned process (niced to 19 once started), from the "
                    f"first phase length of {POLLER_FROM_S:g} s on: its end_window scans every power sample kept "
                    "so far, which costs more than a phase of 20-50 ms once thousands are kept",
            "gpu3": "not measured: Zeus probes which power fields exist on GPU 0 only (it assumes identical GPUs); "
                    "GPU 3 lacks the instant-power field GPU 0 has, so its poller would get no sample (0 J)",
            "sync_execution": False,
        }

    def start_power_poller(self) -> None:
        """GPU 2 (no counter) through Zeus's pre-Volta path: a PowerMonitor polling in a spawned process."""
        try:
            mon = self.ZeusMonitor(gpu_indices=[2], cpu_indices=[], approx_instant_energy=True)
        except RuntimeError as exc:  # its poller did not come up within Zeus's 10 s on a loaded machine
            self.poller_error = repr(exc)
            return
        # Zeus 0.16 polls with no pause at all (its inferred period is min(0.0, p) = 0): once its poller is up,
        # it runs at the lowest priority, taking idle CPU only, so that it does not delay the tools measured.
        for proc in mon.power_monitor.processes.values():
            os.setpriority(os.PRIO_PROCESS, proc.pid, 19)
        self.monitors[2] = mon

    def end(self, length: float) -> None:
        for gpu, mon in self.monitors.items():
            if gpu in self.open:
                scenario, name, t0 = self.open.pop(gpu)
                t1 = time.time()
                m = mon.end_window(name, sync_execution=False)
                self.costs[(gpu, length)].append(time.time() - t1)
                self.windows.append(Window(scenario, name, t0, t1, {gpu: float(m.gpu_energy[gpu])}))

    def begin(self, scenario: str, name: str) -> None:
        for gpu, mon in self.monitors.items():
            t0 = time.time()
            mon.begin_window(name, sync_execution=False)
            self.open[gpu] = (scenario, name, t0)

    def close(self) -> None:
        for mon in self.monitors.values():
            if mon.power_monitor is not None:
                mon.power_monitor.stop()


class CodeCarbon:
    """CodeCarbon's task API, offline, one tracker per GPU (a task reports the sum over its tracker's GPUs)."""

    def __init__(self, out_dir: Path, n_gpus: int) -> None:
        from codecarbon import OfflineEmissionsTracker

        out_dir.mkdir(parents=True, exist_ok=True)
        self.trackers = [OfflineEmissionsTracker(country_iso_code="FRA", gpu_ids=[i], measure_power_secs=1,
                                                 output_dir=str(out_dir), log_level="error",
                                                 allow_multiple_runs=True) for i in range(n_gpus)]
        if not all(hasattr(t, "_active_task") for t in self.trackers):  # its constructor logs and swallows errors
            raise RuntimeError("a CodeCarbon tracker failed to initialise (see its log above)")
        for trk in self.trackers:  # hardware detection runs on the first task: not inside the schedule
            trk.start_task("warm-up")
            trk.stop_task()
        self.open: dict[int, tuple[str, str, float]] = {}
        self.windows: list[Window] = []
        self.settings = {
            "tracker": "OfflineEmissionsTracker(country_iso_code='FRA', gpu_ids=[i], measure_power_secs=1, "
                       "output_dir=<temp>, log_level='error', allow_multiple_runs=True), one per GPU",
            "api": "start_task(name) / stop_task() at every phase boundary; gpu_energy (kWh) x 3.6e6",
            "detection": "a no-op `nvidia-smi` on PATH (CodeCarbon runs `nvidia-smi --help` to decide NVML is usable)",
        }

    def end(self, length: float) -> None:
        for gpu, trk in enumerate(self.trackers):
            if gpu in self.open:
                scenario, name, t0 = self.open.pop(gpu)
                t1 = time.time()
                data = trk.stop_task()
                self.windows.append(Window(scenario, name, t0, t1, {gpu: float(data.gpu_energy) * 3.6e6}))

    def begin(self, scenario: str, name: str) -> None:
        for gpu, trk in enumerate(self.trackers):
            t0 = time.time()
            trk.start_task(name)
            self.open[gpu] = (scenario, name, t0)

    def close(self) -> None:
        for trk in self.trackers:
            trk.stop()


class Poster(threading.Thread):
    """Registers each run off the training thread; its markers and its stop are sent once the schedule is over.

    In production the daemon has a process of its own. Here it shares this process's GIL, and ingesting thousands
    of markers, then computing a stopped run's totals, would stall the training thread and the sampler for
    seconds in the middle of the next run: an artefact of hosting, which deferring that work removes.
    """

    def __init__(self, url: str) -> None:
        super().__init__(name="poster", daemon=True)
        self.client = httpx.Client(base_url=url, timeout=300.0)
        self.jobs: queue.Queue[Any] = queue.Queue()
        self.deferred: list[Any] = []
        self.errors: list[str] = []

    def run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            try:
                job(self.client)
            except Exception as exc:  # reported with the results, never silently
                self.errors.append(repr(exc))

    def register(self, run_id: str, started_at: float) -> None:
        self.jobs.put(lambda c: c.post("/api/v1/runs", json={"name": run_id, "run_id": run_id,
                                                              "started_at": started_at}).raise_for_status())

    def phases(self, run_id: str, markers: list[dict[str, Any]], end: float) -> None:
        def job(c: httpx.Client) -> None:
            for i in range(0, len(markers), 5000):
                c.post(f"/api/v1/runs/{run_id}/phases", json=markers[i:i + 5000]).raise_for_status()
            c.post(f"/api/v1/runs/{run_id}/stop", json={"end": end}).raise_for_status()
        self.deferred.append(job)

    def finish(self) -> None:
        for job in self.deferred:
            self.jobs.put(job)
        self.jobs.put(None)
        self.join()


def wait_until(t: float) -> float:
    """Sleeps until unix time t; returns how late it woke."""
    left = t - time.time()
    if left > 0:
        time.sleep(left)
    return time.time() - t


def drive(elements: list[Element], trace: LiveTrace, zeus: Zeus | None, cc: CodeCarbon | None,
          poster: Poster) -> dict[str, Any]:
    """The training thread. At each boundary the power changes (the trace is stamped), our client's marker
    takes that same instant, then Zeus's window and CodeCarbon's task are ended and begun."""
    lateness: list[float] = []
    ours: list[Window] = []
    markers: list[dict[str, Any]] = []

    shift = 0.0  # how far set-up work in idle stretches pushed the rest of the schedule back

    def idle(i: int) -> None:
        """Work done while idle: start Zeus's power poller where planned, register the next run."""
        nonlocal shift
        if elements[i].start_poller and zeus is not None:
            t0 = time.time()
            zeus.start_power_poller()
            print(f"Zeus power poller started in {time.time() - t0:.1f} s ({zeus.poller_error or 'ok'})", flush=True)
        nxt = elements[i + 1] if i + 1 < len(elements) else None
        if nxt is not None and nxt.scenario is not None:
            late = time.time() + 0.2 - (nxt.start + shift)
            if late > 0:  # the power follows the real instants, so the schedule can simply move
                shift += late
            poster.register(nxt.scenario.id, nxt.start + shift - 0.3)

    idle(0)
    prev_t = float(trace.starts()[0])
    for i in range(1, len(elements)):
        el, prev = elements[i], elements[i - 1]
        lateness.append(wait_until(el.start + shift))
        t = trace.mark(i)
        if prev.name is not None:
            assert prev.scenario is not None
            markers.append({"name": prev.name, "start": prev_t, "end": t})
            ours.append(Window(prev.scenario.id, prev.name, prev_t, t, {}))
        for tool in (zeus, cc):
            if tool is not None:
                if prev.name is not None:
                    assert prev.scenario is not None
                    tool.end(prev.scenario.length)
                if el.name is not None:
                    assert el.scenario is not None
                    tool.begin(el.scenario.id, el.name)
        prev_t = t
        if el.name is None:
            if prev.name is not None:  # a scenario just ended
                assert prev.scenario is not None
                poster.phases(prev.scenario.id, markers, t + 0.3)
                markers = []
            idle(i)
    lat = np.array(lateness)
    return {"ours": ours, "schedule_shift_s": shift, "lateness": {"median_ms": float(np.median(lat) * 1e3),
                                       "p99_ms": float(np.percentile(lat, 99) * 1e3), "max_ms": float(lat.max() * 1e3)}}


# --- evaluation -------------------------------------------------------------------------------------------


def truth_and_estimate(windows: list[Window], trace: LiveTrace, gpu: int) -> dict[tuple[str, str], tuple[float, float]]:
    """Per (scenario, name): exact energy over the instants this tool was called at, and what it reported."""
    acc: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for w in windows:
        if gpu in w.energy:
            a = acc[(w.scenario, w.name)]
            a[0] += trace.energy(w.t0, w.t1)
            a[1] += w.energy[gpu]
    return {k: (v[0], v[1]) for k, v in acc.items()}


def ours_by_name(client: httpx.Client, scenarios: list[Scenario]) -> tuple[dict[str, Any], dict[str, float]]:
    answers, latency = {}, {}
    for sc in scenarios:
        t = time.perf_counter()
        r = client.get(f"/api/v1/runs/{sc.id}/energy")
        latency[sc.id] = time.perf_counter() - t
        r.raise_for_status()
        answers[sc.id] = r.json()
    return answers, latency


def device_energy(value: Any) -> float:
    """A phase's energy on one device, whether the API gives a number or an object with `energy_j`."""
    return float(value["energy_j"] if isinstance(value, dict) else value)


def evaluate(scenarios: list[Scenario], trace: LiveTrace, ours_windows: list[Window],
             answers: dict[str, Any], zeus: Zeus | None, cc: CodeCarbon | None) -> list[dict[str, Any]]:
    rows = []
    # Every GPU plays the same trace: the exact energy over our markers is the same for all of them.
    ours_truth = {k: t for k, (t, _) in truth_and_estimate(
        [Window(w.scenario, w.name, w.t0, w.t1, {0: 0.0}) for w in ours_windows], trace, 0).items()}
    lengths: dict[str, list[float]] = defaultdict(list)
    for w in ours_windows:
        lengths[w.scenario].append(w.t1 - w.t0)
    for gpu, variant in enumerate(VARIANTS):
        zeus_est = truth_and_estimate(zeus.windows, trace, gpu) if zeus is not None else {}
        cc_est = truth_and_estimate(cc.windows, trace, gpu) if cc is not None else {}
        for sc in scenarios:
            phases = {p["name"]: p for p in answers[sc.id]["phases"]}
            devices = {d["id"]: d for d in answers[sc.id].get("devices", [])}
            dev_id = f"{NODE}/simgpu{gpu}"
            for name in sc.names:
                truth = ours_truth[(sc.id, name)]
                p = phases.get(name, {})
                est = device_energy(p["by_device"][dev_id]) if dev_id in p.get("by_device", {}) else float("nan")
                row: dict[str, Any] = {
                    "variant": variant["key"], "gpu": gpu, "length": sc.length, "kind": sc.kind, "name": name,
                    "reps": sc.reps, "median_length_s": float(np.median(lengths[sc.id])), "ours": {"truth_j": truth, "energy_j": est, "rel_err": (est - truth) / truth,
                                              "method": p.get("method"),
                                              # per phase and device where the API says so, else the device's
                                              "device_method": p.get("methods", {}).get(dev_id)
                                              or devices.get(dev_id, {}).get("method"),
                                              "phase": {k: v for k, v in p.items() if k != "by_device"}},
                }
                for tool, est_map in (("zeus", zeus_est), ("codecarbon", cc_est)):
                    if (sc.id, name) in est_map:
                        t_, e_ = est_map[(sc.id, name)]
                        row[tool] = {"truth_j": t_, "energy_j": e_, "rel_err": (e_ - t_) / t_}
                rows.append(row)
    return rows


def summary_tables(rows: list[dict[str, Any]], lengths: list[float]) -> str:
    out = []
    for variant in VARIANTS:
        body = []
        for length in lengths:
            sel = [r for r in rows if r["variant"] == variant["key"] and r["length"] == length]
            real = f"{1e3 * float(np.median([r['median_length_s'] for r in sel])):.1f} ms" if sel else ""
            cells: list[Any] = [f"{length:g} s", real, sel[0]["reps"] if sel else ""]
            for tool in ("ours", "zeus", "codecarbon"):
                errs = [abs(r[tool]["rel_err"]) for r in sel if tool in r]
                cells.append(harness.pct(max(errs)) if errs else "n/a")
                cells.append(harness.pct(float(np.mean(errs))) if errs else "n/a")
            methods = sorted({str(r["ours"]["device_method"]) for r in sel})
            cells.append(", ".join(methods))
            body.append(cells)
        out.append(harness.table(
            ["phase", "as run (median)", "reps/name", "ours max", "ours mean", "Zeus max", "Zeus mean", "CodeCarbon max",
             "CodeCarbon mean", "our method"], body,
            title=f"GPU {VARIANTS.index(variant)}: {variant['key']} — |relative error| of energy per phase name"))
    return "\n\n".join(out)


def detail_table(rows: list[dict[str, Any]]) -> str:
    body = []
    for r in rows:
        body.append([r["variant"], f"{r['length']:g}", r["kind"], r["name"], f"{r['ours']['truth_j']:.2f}",
                     harness.pct(r["ours"]["rel_err"]),
                     harness.pct(r["zeus"]["rel_err"]) if "zeus" in r else "n/a",
                     harness.pct(r["codecarbon"]["rel_err"]) if "codecarbon" in r else "n/a", r["ours"]["device_method"]])
    return harness.table(["sensor", "L s", "trace", "phase", "exact J (ours)", "ours", "Zeus", "CodeCarbon",
                          "method"], body, title="Signed relative error per phase name")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, phases up to 1 s (about 3 minutes)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-peers", action="store_true", help="measure our daemon only")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sys.setswitchinterval(0.0005)  # the daemon shares this process's GIL here; in production it has its own

    rng = random.Random(args.seed)
    lengths = LENGTHS_QUICK if args.quick else LENGTHS_FULL
    t0 = time.time() + LEAD_S
    elements, scenarios = build_schedule(lengths, t0, rng)
    trace = LiveTrace([el.pieces for el in elements], before_w=IDLE_W)
    trace.mark(0)
    loaded = time.time() - 3600.0
    gpus = [SimulatedGpu(trace=trace, profile=PROFILES[v["profile"]], index=i, name="Simulated H100",
                         grid_anchor=loaded + rng.uniform(0.0, 0.1), driver_loaded_at=loaded)
            for i, v in enumerate(VARIANTS)]
    nvml = SimulatedNvml(gpus)
    install(nvml)
    work = Path(tempfile.mkdtemp(prefix="joulemeter-bench-"))
    publish(trace, gpus, work / "gpus.json")
    fake_bin = work / "bin"
    fake_bin.mkdir()
    (fake_bin / "nvidia-smi").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "nvidia-smi").chmod(0o755)
    os.environ["PATH"] = f"{fake_bin}{os.pathsep}{os.environ['PATH']}"
    n_phases = sum(1 for el in elements if el.name is not None)
    print(f"schedule: {n_phases} phases over {elements[-1].start - elements[0].start:.0f} s; "
          f"first phase in {t0 - time.time():.0f} s", flush=True)

    from telemetry_service.sensors.discover import SensorSet
    from telemetry_service.sensors.nvml import NvmlSensor

    sensor = NvmlSensor(nvml, source="simulated", key_prefix="simgpu")
    try:
        with harness.in_process_daemon(SensorSet(sensors=[sensor], gpu_sensor=sensor), node=NODE) as (url, daemon):
            zeus = cc = None
            peer_errors: dict[str, str] = {}
            if not args.no_peers:
                t = time.time()
                try:
                    zeus = Zeus()
                except Exception as exc:
                    peer_errors["zeus"] = repr(exc)
                t1 = time.time()
                try:
                    cc = CodeCarbon(work / "codecarbon", len(gpus))
                except Exception as exc:
                    peer_errors["codecarbon"] = repr(exc)
                print(f"set-up: Zeus {t1 - t:.1f} s, CodeCarbon {time.time() - t1:.1f} s", flush=True)
            poster = Poster(url)
            poster.start()
            driven = drive(elements, trace, zeus, cc, poster)
            poster.finish()
            with httpx.Client(base_url=url, timeout=300.0) as client:
                answers, latency = ours_by_name(client, scenarios)
                health = client.get("/healthz").json()
            lost_locks = [g.clock.lost_locks for g in sensor.gpus if g.clock is not None]
            if zeus is not None:
                zeus.close()
            if cc is not None:
                cc.close()
    finally:
        trace.close()
        shutil.rmtree(work, ignore_errors=True)

    rows = evaluate(scenarios, trace, driven["ours"], answers, zeus, cc)
    lengths_s = [length for length, _ in lengths]
    text = summary_tables(rows, lengths_s)
    print(text)
    print()
    print(detail_table(rows))
    print(f"\ntraining-thread lateness at boundaries: {driven['lateness']}")
    print(f"daemon sampler: {health['sampler']}; counter-clock lost locks: {lost_locks}")
    print(f"energy query latency per run: max {max(latency.values()) * 1e3:.0f} ms")
    zeus_costs = {f"gpu{g} L={length:g}": harness.quantiles(v) for (g, length), v in sorted(zeus.costs.items())} \
        if zeus is not None else {}
    for key, q in zeus_costs.items():
        print(f"Zeus end_window {key}: median {q['median'] * 1e3:.2f} ms, p99 {q['p99'] * 1e3:.2f} ms, "
              f"max {q['max'] * 1e3:.1f} ms")
    if poster.errors or peer_errors:
        print(f"errors: poster {poster.errors} peers {peer_errors}")
    path = harness.write_json("accuracy-quick" if args.quick else "accuracy", {
        "config": {"lengths": lengths, "jitter": JITTER, "variants": VARIANTS, "kinds": KINDS, "burst": BURST,
                   "noise": {"piece_s": NOISE_S, "sd": NOISE_SD},
                   "seed": args.seed, "daemon_interval_s": 0.1, "switch_interval_s": 0.0005,
                   "zeus": zeus.settings if zeus else None, "codecarbon": cc.settings if cc else None,
                   "counter_grid_anchor": [g.grid_anchor for g in gpus]},
        "rows": rows, "lateness": driven["lateness"], "schedule_shift_s": driven["schedule_shift_s"],
        "zeus_end_window_s": zeus_costs, "zeus_poller_error": zeus.poller_error if zeus else None, "sampler": health["sampler"], "counter_lost_locks": lost_locks,
        "energy_query_s": latency, "errors": {"poster": poster.errors, "peers": peer_errors},
        "summary_markdown": text,
    })
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
