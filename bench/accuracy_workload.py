"""The workload of the accuracy matrix: phases whose power a `LiveTrace` follows, a competing load on the host,
and the training thread that walks the schedule and calls every tool at each boundary."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from telemetry_service.sensors.simulated import LiveTrace

IDLE_W = 60.0
JITTER = 0.15  # each phase lasts L x U(1 - JITTER, 1 + JITTER): steps are never phase-locked to a sensor grid
SCENARIO_GAP_S = 1.0
LOAD_LEAD_S = 2.0  # the busy processes start this long before a loaded trial: interpreter start-up is not in it
LOAD_MARGIN_S = 60.0  # a busy process exits by itself this long after its trial was due to end, whatever happens

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
    """One trace kind at one phase length, one repeat, on one host condition: a run of its own in our daemon."""

    id: str
    kind: str
    length: float
    reps: int
    host: str
    repeat: int
    names: list[str]


@dataclass
class Element:
    """A stretch of the workload: a phase of a scenario, or idle. `offset` is scheduled from the origin of the
    drive; the training thread stamps the real instant when it gets there, and the power follows that instant."""

    offset: float
    pieces: list[tuple[float, float]]
    scenario: Scenario | None = None
    name: str | None = None
    load: str | None = None  # "start" / "stop": the competing load is started or stopped in this idle stretch
    load_s: float = 0.0  # with "start": how long the load is planned to run (this stretch and the trial)


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


def idle(offset: float, seconds: float, rng: random.Random, **kw: Any) -> Element:
    return Element(offset=offset, pieces=with_noise([(seconds, IDLE_W)], rng), **kw)


def build_schedule(length: float, reps: int, repeats: int, hosts: list[str], rng: random.Random
                   ) -> tuple[list[Element], list[Scenario]]:
    """One phase length: for each repeat and host condition, the three trace kinds, each a run. The host order
    alternates between repeats so that a drift of the machine's background load favours neither condition."""
    elements = [idle(0.0, 5.0, rng)]  # element 0 is stamped at set-up: its idle power holds until the drive
    scenarios: list[Scenario] = []
    t = 0.0
    for repeat in range(repeats):
        for host in hosts if repeat % 2 == 0 else hosts[::-1]:
            trial: list[Element] = []
            for kind, names in KINDS.items():
                sc = Scenario(id=f"acc-{kind}-{length:g}s-{host}-r{repeat}", kind=kind, length=length, reps=reps,
                              host=host, repeat=repeat, names=[name for name, _ in names])
                scenarios.append(sc)
                for _ in range(reps):
                    for name in sc.names:
                        d = round(length * rng.uniform(1 - JITTER, 1 + JITTER), 6)
                        trial.append(Element(offset=0.0, pieces=phase_pieces(kind, name, d, rng), scenario=sc,
                                             name=name))
                trial.append(idle(0.0, SCENARIO_GAP_S, rng))
            loaded = host == "loaded"
            lead = LOAD_LEAD_S if loaded else SCENARIO_GAP_S
            span = sum(d for el in trial for d, _ in el.pieces)
            elements.append(idle(t, lead, rng, load="start" if loaded else None, load_s=lead + span))
            t += lead
            for el in trial:
                el.offset = t
                t += sum(d for d, _ in el.pieces)
            elements += trial
            if loaded:  # the last idle stretch of the trial stops the load
                trial[-1].load = "stop"
    elements.append(idle(t, 3.0, rng))
    return elements, scenarios


class HostLoad:
    """A competing busy process on each core, started before a loaded trial and stopped after it; each exits
    by itself LOAD_MARGIN_S after the trial was due to end, so none outlives a failed run for long."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, seconds: float) -> None:
        end = time.time() + seconds + LOAD_MARGIN_S
        code = "import sys, time\nend = float(sys.argv[1])\nwhile time.time() < end:\n    pass\n"
        self.procs = [subprocess.Popen([sys.executable, "-c", code, repr(end)]) for _ in range(os.cpu_count() or 1)]

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(timeout=10)
        self.procs = []


class Tool(Protocol):
    """A peer called at every boundary: ends the phase that ended, begins the one that begins."""

    def end(self) -> None: ...

    def begin(self, scenario: str, name: str) -> None: ...


@dataclass
class Marker:
    """Our client's marker: the phase and the instants it was stamped with."""

    scenario: str
    name: str
    t0: float
    t1: float


def wait_until(t: float) -> float:
    """Sleeps until unix time t; returns how late it woke."""
    left = t - time.time()
    if left > 0:
        time.sleep(left)
    return time.time() - t


class Ledger(Protocol):
    """Where our markers go (the daemon's REST API, through a thread of its own)."""

    def register(self, run_id: str, started_at: float) -> None: ...

    def phases(self, run_id: str, markers: list[dict[str, Any]], end: float) -> None: ...


def drive(elements: list[Element], origin: float, trace: LiveTrace, tools: list[Tool], ledger: Ledger,
          load: HostLoad) -> dict[str, Any]:
    """The training thread. At each boundary the power changes (the trace is stamped), our client's marker
    takes that same instant, then every peer's window is ended and begun."""
    lateness: dict[str, list[float]] = {}  # per host condition, at the boundaries inside its trials
    ours: list[Marker] = []
    markers: list[dict[str, Any]] = []
    shift = 0.0  # how far work in idle stretches pushed the rest of the schedule back
    load_1m: dict[str, float] = {}  # the machine's 1-minute load average as each run begins: how quiet "quiet" was

    def at_idle(i: int) -> None:
        """Work done while idle: start or stop the competing load, register the next run."""
        nonlocal shift
        el = elements[i]
        if el.load == "stop":
            load.stop()
        if el.load == "start":
            load.start(el.load_s)
        nxt = elements[i + 1] if i + 1 < len(elements) else None
        if nxt is not None and nxt.scenario is not None:
            late = time.time() + 0.2 - (origin + nxt.offset + shift)
            if late > 0:  # the power follows the real instants, so the schedule can simply move
                shift += late
            ledger.register(nxt.scenario.id, origin + nxt.offset + shift - 0.3)
            load_1m[nxt.scenario.id] = os.getloadavg()[0]

    at_idle(0)
    prev_t = float(trace.starts()[0])
    for i in range(1, len(elements)):
        el, prev = elements[i], elements[i - 1]
        late = wait_until(origin + el.offset + shift)
        if el.scenario is not None:
            lateness.setdefault(el.scenario.host, []).append(late)
        t = trace.mark(i)
        if prev.scenario is not None and prev.name is not None:
            markers.append({"name": prev.name, "start": prev_t, "end": t})
            ours.append(Marker(prev.scenario.id, prev.name, prev_t, t))
        for tool in tools:
            if prev.name is not None:
                tool.end()
            if el.scenario is not None and el.name is not None:
                tool.begin(el.scenario.id, el.name)
        prev_t = t
        if el.name is None:
            if prev.scenario is not None:  # a scenario just ended
                ledger.phases(prev.scenario.id, markers, t + 0.3)
                markers = []
            at_idle(i)
    return {"ours": ours, "schedule_shift_s": shift, "load_1m": load_1m,
            "lateness_ms": {h: {"median": float(np.median(v) * 1e3), "p99": float(np.percentile(v, 99) * 1e3),
                                "max": float(np.max(v) * 1e3)} for h, v in lateness.items()}}


class FlatTrace(LiveTrace):
    """A `LiveTrace` that also integrates many instants at once. Elements that have ended are flattened into one
    piecewise-constant power (an element cut short by the next start ends there; one that ran long holds its
    last level, as in `LiveTrace`); instants in the element still running fall back to `cumulative`.

    The simulator's part-time sensor integrates every sensor window since its last chunk start on each read;
    through `LiveTrace.cumulative` alone that costs milliseconds per read, which starved the sampler and the
    training thread of CPU with eleven GPUs read at once."""

    def __init__(self, elements: list[list[tuple[float, float]]], before_w: float) -> None:
        super().__init__(elements, before_w)
        self._flat = 0  # elements flattened so far
        self._b, self._w, self._c = np.empty(0), np.empty(0), np.empty(0)  # piece starts, watts, energy at start
        self._flat_lock = threading.Lock()
        self._origin = 0.0  # element 0's start, once stamped

    def _flatten(self) -> float:
        """Flattens the elements that have ended; returns the instant up to which the arrays hold."""
        with self._flat_lock:
            starts = self.starts()
            if self._flat < len(starts) - 1:
                bs, ws = [], []
                for i in range(self._flat, len(starts) - 1):
                    pieces = self.elements[i]
                    offsets = np.concatenate([[0.0], np.cumsum([d for d, _ in pieces])[:-1]])
                    keep = offsets < starts[i + 1] - starts[i]
                    bs.append((starts[i] - starts[0]) + offsets[keep])  # from element 0: epoch floats are coarse
                    ws.append(np.array([w for _, w in pieces])[keep])
                nb, nw = np.concatenate(bs), np.concatenate(ws)
                c0 = self._c[-1] + (nb[0] - self._b[-1]) * self._w[-1] if self._b.size else 0.0
                nc = c0 + np.concatenate([[0.0], np.cumsum(np.diff(nb) * nw[:-1])])
                self._b, self._w, self._c = (np.concatenate([self._b, nb]), np.concatenate([self._w, nw]),
                                             np.concatenate([self._c, nc]))
                self._flat = len(starts) - 1
            self._origin = float(starts[0]) if len(starts) else 0.0
            return float(starts[self._flat] - self._origin) if len(starts) else -np.inf

    def cumulative_many(self, ts: np.ndarray) -> np.ndarray:
        upto = self._flatten()
        ts = np.asarray(ts, dtype=np.float64) - self._origin
        out = np.full(ts.shape, np.nan)
        if self._b.size:
            before, flat = ts < self._b[0], (ts >= self._b[0]) & (ts < upto)
            out[before] = (ts[before] - self._b[0]) * self.before_w
            j = np.searchsorted(self._b, ts[flat], side="right") - 1
            out[flat] = self._c[j] + (ts[flat] - self._b[j]) * self._w[j]
        for k in np.flatnonzero(np.isnan(out)):  # in the element still running: a few instants
            out[k] = self.cumulative(float(ts[k]) + self._origin)
        return out
