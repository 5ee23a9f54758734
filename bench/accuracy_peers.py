"""The tools measured beside our daemon, each set up as a user would, and the thread that posts our markers.

Every peer records, per GPU, the instants it was called at and the energy it reported, so that each is judged
against the exact integral over its own instants. `skipped` says, per GPU it does not measure, why not.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pynvml

from telemetry_service.sensors.simulated import SensorProfile

# CodeCarbon keeps to the sensors it was first measured on: a task costs ~2 ms per tracker at every boundary
# (it starts a timer thread), and with 20 ms phases to the first of them only: three trackers there made the
# training thread fall behind its schedule.
CODECARBON_SENSORS = ("ideal-100ms", "average-power", "no-counter", "no-counter-average")
CODECARBON_SHORT_S = 0.2


@dataclass
class Window:
    """One measurement a tool made: the phase, the instants it was called at, the energy it reported."""

    scenario: str
    name: str
    gpu: int
    t0: float
    t1: float
    energy_j: float


class Naive:
    """The simplest reader of the same NVML: at each boundary, the counter's difference; without a counter, the
    mean of the power read at the phase's two boundaries times its duration."""

    def __init__(self, sensors: list[SensorProfile]) -> None:
        pynvml.nvmlInit()  # reference counted: the other readers' shutdowns leave it usable
        self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(len(sensors))]
        self.counter = [s.counter for s in sensors]
        self.open: dict[int, tuple[str, str, float, float]] = {}
        self.last: dict[int, tuple[float, float]] = {}  # (instant, reading) taken at the boundary just passed
        self.windows: list[Window] = []
        self.skipped: dict[int, str] = {}
        self.settings = {"reader": "nvmlDeviceGetTotalEnergyConsumption difference between the boundaries; "
                                   "without a counter, mean of nvmlDeviceGetPowerUsage at both x duration"}

    def _read(self, gpu: int) -> float:
        h = self.handles[gpu]
        if self.counter[gpu]:
            return pynvml.nvmlDeviceGetTotalEnergyConsumption(h) / 1e3
        return pynvml.nvmlDeviceGetPowerUsage(h) / 1e3

    def end(self) -> None:
        """Ends the open windows; the readings taken here also begin the next ones (see `begin`)."""
        self.last = {}
        for gpu, (scenario, name, t0, v0) in self.open.items():
            t1 = time.time()
            v1 = self._read(gpu)
            self.last[gpu] = (t1, v1)
            e = v1 - v0 if self.counter[gpu] else (v0 + v1) / 2 * (t1 - t0)
            self.windows.append(Window(scenario, name, gpu, t0, t1, e))
        self.open = {}

    def begin(self, scenario: str, name: str) -> None:
        for gpu in range(len(self.handles)):
            t0, v0 = self.last.pop(gpu, None) or (time.time(), self._read(gpu))
            self.open[gpu] = (scenario, name, t0, v0)


class Zeus:
    """ZeusMonitor windows, one monitor per GPU, configured as its docs advise for each sensor."""

    def __init__(self, sensors: list[SensorProfile], poller: bool) -> None:
        from zeus.monitor import ZeusMonitor

        warnings.filterwarnings("ignore", message="The energy consumption of one or more GPUs was measured as zero")
        self.monitors: dict[int, Any] = {}
        self.skipped: dict[int, str] = {}
        self.windows: list[Window] = []
        self.open: dict[int, tuple[str, str, float]] = {}
        self.costs: list[float] = []  # seconds per end_window
        self.settings = {"counter GPUs": "ZeusMonitor(gpu_indices=[i], cpu_indices=[], approx_instant_energy="
                                         "<GPU has instant power>)",
                         "no counter": "pre-Volta path: PowerMonitor polling instant power in a spawned process, "
                                       "niced to 19", "sync_execution": False}
        if not (sensors[0].counter and sensors[0].power_mode == "instant"):
            self.skipped = {i: "GPU 0 lacks a counter or instant power, and Zeus probes GPU 0 only"
                            for i in range(len(sensors))}
            return
        for i, s in enumerate(sensors):
            if s.counter:
                # approx_instant_energy: Zeus's own advice for windows shorter than the counter period; it
                # needs instant power, which an averaging sensor lacks.
                self.monitors[i] = ZeusMonitor(gpu_indices=[i], cpu_indices=[],
                                               approx_instant_energy=s.power_mode == "instant")
            elif s.power_mode == "average":
                self.skipped[i] = "Zeus probes power fields on GPU 0 only; this GPU lacks its instant field (0 J)"
            elif poller:
                self._start_poller(ZeusMonitor, i)
            else:
                self.skipped[i] = ("no counter: its power poller's end_window scans every sample kept, "
                                   "longer than a 20 ms phase")

    def _start_poller(self, monitor: Any, gpu: int) -> None:
        try:
            mon = monitor(gpu_indices=[gpu], cpu_indices=[], approx_instant_energy=True)
        except RuntimeError as exc:  # its poller did not come up within Zeus's 10 s on a loaded machine
            self.skipped[gpu] = f"power poller failed to start: {exc!r}"
            return
        # Zeus 0.16 polls with no pause at all (its inferred period is min(0.0, p) = 0): at the lowest priority
        # it takes idle CPU only, so that it does not delay the tools measured.
        for proc in mon.power_monitor.processes.values():
            os.setpriority(os.PRIO_PROCESS, proc.pid, 19)
        self.monitors[gpu] = mon

    def end(self) -> None:
        for gpu, (scenario, name, t0) in self.open.items():
            t1 = time.time()
            m = self.monitors[gpu].end_window(name, sync_execution=False)
            self.costs.append(time.time() - t1)
            self.windows.append(Window(scenario, name, gpu, t0, t1, float(m.gpu_energy[gpu])))
        self.open = {}

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

    def __init__(self, out_dir: Path, sensors: list[SensorProfile], length: float) -> None:
        from codecarbon import OfflineEmissionsTracker

        out_dir.mkdir(parents=True, exist_ok=True)
        gpus = [i for i, s in enumerate(sensors) if s.name in CODECARBON_SENSORS]
        if length < CODECARBON_SHORT_S:
            gpus = gpus[:1]
        self.skipped = {i: "not run on this sensor (cost per boundary); with a counter it reads the counter's "
                           "difference, as the naive reader" if s.name not in CODECARBON_SENSORS else
                           f"not run with phases under {CODECARBON_SHORT_S:g} s (cost per boundary)"
                        for i, s in enumerate(sensors) if i not in gpus}
        self.trackers = {i: OfflineEmissionsTracker(country_iso_code="FRA", gpu_ids=[i], measure_power_secs=1,
                                                    output_dir=str(out_dir), log_level="error",
                                                    allow_multiple_runs=True) for i in gpus}
        if not all(hasattr(t, "_active_task") for t in self.trackers.values()):  # it logs and swallows errors
            raise RuntimeError("a CodeCarbon tracker failed to initialise (see its log above)")
        for trk in self.trackers.values():  # hardware detection runs on the first task: not inside the schedule
            trk.start_task("warm-up")
            trk.stop_task()
        self.open: dict[int, tuple[str, str, float]] = {}
        self.windows: list[Window] = []
        self.settings = {
            "tracker": "OfflineEmissionsTracker(country_iso_code='FRA', gpu_ids=[i], measure_power_secs=1, "
                       "output_dir=<temp>, log_level='error', allow_multiple_runs=True), one per GPU",
            "api": "start_task(name) / stop_task() at every phase boundary; gpu_energy (kWh) x 3.6e6",
        }

    def end(self) -> None:
        for gpu, (scenario, name, t0) in self.open.items():
            t1 = time.time()
            data = self.trackers[gpu].stop_task()
            self.windows.append(Window(scenario, name, gpu, t0, t1, float(data.gpu_energy) * 3.6e6))
        self.open = {}

    def begin(self, scenario: str, name: str) -> None:
        for gpu, trk in self.trackers.items():
            t0 = time.time()
            trk.start_task(name)
            self.open[gpu] = (scenario, name, t0)

    def close(self) -> None:
        for trk in self.trackers.values():
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
