"""What telemetry costs the training thread: per phase, and per training step of a small CPU model.

    .venv/bin/python bench/overhead.py            # about 3 minutes
    .venv/bin/python bench/overhead.py --quick    # about 40 s

1. Per-phase cost in the training thread (an empty phase, timed from entering to leaving it):
   - our client, `with tc.phase(...)`, with the daemon up (a real daemon process on loopback) and down;
   - a ZeusMonitor window (`begin_window` + `end_window`) on a fake GPU with an energy counter;
   - a CodeCarbon task (`start_task` + `stop_task`), offline, on the same fake GPU.
   Zeus and CodeCarbon read the simulated NVML binding (`telemetry_service.sensors.simulated`), put behind
   the `pynvml` module by `sim_binding.py`, in this process. Zeus is called
   with `sync_execution=False` (there is no CUDA here; with a GPU each tool, ours included, synchronises).
2. Training-step slowdown: a small MLP trained on the CPU (one intra-op thread), each step split into
   forward / backward / optimizer_step phases, with no telemetry, with our client, with Zeus windows and with
   CodeCarbon tasks around each phase. Configurations take turns step by step (in a shuffled order each round)
   so that drifting machine load hits all of them alike. The extra time per step is the median, over rounds,
   of (step with telemetry - step without it in the same round), in wall time and in the training thread's
   CPU time (which other processes on a shared machine disturb less).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from sim_binding import install  # noqa: E402
from telemetry_service.sensors.simulated import TRAINING_PATTERN, SimulatedGpu, SimulatedNvml, StepTrace  # noqa: E402

PhaseFn = Callable[[str, int], contextlib.AbstractContextManager[Any]]


def timed_phases(phase: PhaseFn, n: int, warmup: int = 200) -> np.ndarray:
    """Seconds each of n empty phases cost the calling thread."""
    for i in range(warmup):
        with phase("warmup", i):
            pass
    out = np.empty(n)
    clock = time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        with phase("p", i):
            pass
        out[i] = clock() - t0
    return out / 1e9


# --- the three tools, each as a `phase(name, step)` context manager ------------------------------------


@contextlib.contextmanager
def our_client(url: str) -> Iterator[PhaseFn | None]:
    """Our client library, registered as a run against the daemon at `url`; None where it is not installed."""
    try:
        from trainer.client import TelemetryClient
    except ImportError as exc:
        print(f"our client: not available ({exc})")
        yield None
        return
    with TelemetryClient(name="overhead-bench", config={"bench": "overhead"}, url=url) as tc:
        yield lambda name, step: tc.phase(name, step=step)


def fake_gpu() -> None:
    """One simulated GPU with an energy counter and instant power, behind the `pynvml` module."""
    install(SimulatedNvml([SimulatedGpu(trace=StepTrace(steps=TRAINING_PATTERN), name="Simulated H100")]))


@contextlib.contextmanager
def zeus_windows() -> Iterator[PhaseFn]:
    from zeus.monitor import ZeusMonitor

    warnings.filterwarnings("ignore", message="The energy consumption of one or more GPUs was measured as zero")
    monitor = ZeusMonitor(gpu_indices=[0], cpu_indices=[], approx_instant_energy=True)

    @contextlib.contextmanager
    def phase(name: str, step: int) -> Iterator[None]:
        monitor.begin_window(name, sync_execution=False)
        try:
            yield
        finally:
            monitor.end_window(name, sync_execution=False)

    yield phase


@contextlib.contextmanager
def codecarbon_tasks(out_dir: Path) -> Iterator[PhaseFn]:
    from codecarbon import OfflineEmissionsTracker

    tracker = OfflineEmissionsTracker(country_iso_code="FRA", gpu_ids=[0], measure_power_secs=1,
                                      output_dir=str(out_dir), log_level="error", allow_multiple_runs=True)

    @contextlib.contextmanager
    def phase(name: str, step: int) -> Iterator[None]:
        tracker.start_task(name)
        try:
            yield
        finally:
            tracker.stop_task()

    try:
        yield phase
    finally:
        tracker.stop()


def nvidia_smi_on_path(tmp: Path) -> None:
    """CodeCarbon uses NVML only where `nvidia-smi --help` runs: a no-op one stands in for the driver's."""
    (tmp / "bin").mkdir(exist_ok=True)
    (tmp / "bin" / "nvidia-smi").write_text("#!/bin/sh\nexit 0\n")
    (tmp / "bin" / "nvidia-smi").chmod(0o755)
    os.environ["PATH"] = f"{tmp / 'bin'}{os.pathsep}{os.environ['PATH']}"


# --- 1. per phase --------------------------------------------------------------------------------------------


def per_phase(tmp: Path, n_ours: int, n_zeus: int, n_cc: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with harness.DaemonProcess("--simulate-gpus", "1", tmp=tmp) as daemon:
        with our_client(daemon.url) as phase:
            if phase is not None:
                rows.append({"tool": "ours, daemon up", **harness.quantiles(timed_phases(phase, n_ours))})
    down = f"http://127.0.0.1:{harness.free_port()}"
    with our_client(down) as phase:
        if phase is not None:
            rows.append({"tool": "ours, daemon down", **harness.quantiles(timed_phases(phase, n_ours))})
    with zeus_windows() as phase:
        rows.append({"tool": "Zeus window", **harness.quantiles(timed_phases(phase, n_zeus))})
    with codecarbon_tasks(tmp) as phase:
        rows.append({"tool": "CodeCarbon task", **harness.quantiles(timed_phases(phase, n_cc, warmup=20))})
    return rows


# --- 2. per training step ----------------------------------------------------------------------------------


def make_model() -> tuple[Callable[[], None], Callable[[], None], Callable[[], None]]:
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512),
                                torch.nn.ReLU(), torch.nn.Linear(512, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(64, 256), torch.randint(0, 10, (64,))
    state: dict[str, Any] = {}

    def forward() -> None:
        opt.zero_grad(set_to_none=True)
        state["loss"] = torch.nn.functional.cross_entropy(model(x), y)

    def backward() -> None:
        state["loss"].backward()

    def optimizer_step() -> None:
        opt.step()

    return forward, backward, optimizer_step


def step_times(phase: PhaseFn | None, parts: tuple[Callable[[], None], ...], steps: int) -> np.ndarray:
    """Per step: wall seconds and the training thread's CPU seconds (the latter is immune to other processes)."""
    names = ("forward", "backward", "optimizer_step")
    out = np.empty((steps, 2))
    for s in range(steps):
        w0, c0 = time.perf_counter(), time.thread_time()
        for name, fn in zip(names, parts):
            if phase is None:
                fn()
            else:
                with phase(name, s):
                    fn()
        out[s] = (time.perf_counter() - w0, time.thread_time() - c0)
    return out


def slowdown(tmp: Path, rounds: int) -> list[dict[str, Any]]:
    parts = make_model()
    step_times(None, parts, 100)  # warm-up
    with contextlib.ExitStack() as stack:
        daemon = stack.enter_context(harness.DaemonProcess("--simulate-gpus", "1", tmp=tmp))
        configs: dict[str, PhaseFn | None] = {"no telemetry": None}
        ours = stack.enter_context(our_client(daemon.url))
        if ours is not None:
            configs["ours"] = ours
        configs["Zeus windows"] = stack.enter_context(zeus_windows())
        configs["CodeCarbon tasks"] = stack.enter_context(codecarbon_tasks(tmp))
        times: dict[str, list[np.ndarray]] = {k: [] for k in configs}
        order = list(configs)
        rng = random.Random(0)
        for _ in range(rounds):  # one step of each, in a shuffled order: drifting load hits all of them alike
            rng.shuffle(order)
            for name in order:
                times[name].append(step_times(configs[name], parts, 1))
    base = np.concatenate(times["no telemetry"])
    rows = []
    for name, per_round in times.items():
        t = np.concatenate(per_round)
        # Paired by round: a step with telemetry against the step without it taken moments before or after.
        extra = np.median(t - base, axis=0)
        rows.append({"config": name, "steps": int(t.shape[0]), "median_wall_s": float(np.median(t[:, 0])),
                     "p99_wall_s": float(np.percentile(t[:, 0], 99)), "median_thread_cpu_s": float(np.median(t[:, 1])),
                     "extra_wall_s": float(extra[0]), "extra_thread_cpu_s": float(extra[1]),
                     "slowdown_wall": float(extra[0] / np.median(base[:, 0])),
                     "slowdown_thread_cpu": float(extra[1] / np.median(base[:, 1]))})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n_ours, n_zeus, n_cc = (20_000, 20_000, 2_000) if args.quick else (100_000, 100_000, 10_000)
    rounds = 300 if args.quick else 1500

    with tempfile.TemporaryDirectory(prefix="joulemeter-overhead-") as tmp_:
        tmp = Path(tmp_)
        nvidia_smi_on_path(tmp)
        os.environ["TELEMETRY_SPOOL_DIR"] = str(tmp / "spool")  # markers the daemon-down case spools stay here
        fake_gpu()
        phases = per_phase(tmp, n_ours, n_zeus, n_cc)
        steps_rows = slowdown(tmp, rounds)

    cc = next((r for r in phases if r["tool"] == "CodeCarbon task"), None)
    t1 = harness.table(["tool", "phases", "median", "p99", "mean", "CodeCarbon median / this"],
                       [[r["tool"], r["n"], harness.us(r["median"]), harness.us(r["p99"]), harness.us(r["mean"]),
                         f"{cc['median'] / r['median']:.0f}x" if cc else "n/a"] for r in phases],
                       title="Training-thread cost of one (empty) phase")
    t2 = harness.table(["telemetry", "steps", "median step (wall)", "p99 step (wall)", "extra per step (wall)",
                        "slowdown (wall)", "extra per step (thread CPU)", "slowdown (thread CPU)"],
                       [[r["config"], r["steps"], f"{r['median_wall_s'] * 1e3:.3f} ms", f"{r['p99_wall_s'] * 1e3:.3f} ms",
                         harness.us(r["extra_wall_s"]), harness.pct(r["slowdown_wall"]),
                         harness.us(r["extra_thread_cpu_s"]), harness.pct(r["slowdown_thread_cpu"])]
                        for r in steps_rows],
                       title="Training-step time of a small MLP on the CPU, 3 phases per step")
    print(t1)
    print()
    print(t2)
    path = harness.write_json("overhead-quick" if args.quick else "overhead", {
        "per_phase_s": phases, "step": steps_rows, "config": {"rounds": rounds,
                                                             "model": "MLP 256-512-512-10, batch 64, SGD, 1 thread"},
        "summary_markdown": t1 + "\n\n" + t2})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
