"""A run's share of CPU energy by its processes' CPU time: the math against hand-computed answers, and a real
daemon telling a run that sleeps from a run that computes, side by side on one node."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from telemetry_service.process_share import (Cumulative, Increment, active_energy, cpu_share, increment,
                                             observed_idle_w, total_increment, trapezoid_cumulative)
from telemetry_service.sensors.cpu_times import busy_cpu_seconds
from telemetry_service.sensors.processes import tree_cpu_seconds
from tests.daemon_proc import DaemonProcess

BUSY_S = 3.0
BUSY = f"import time\nend = time.time() + {BUSY_S}\nwhile time.time() < end:\n    pass\n"


# --- the math -----------------------------------------------------------------------------------------------
def test_increment_interpolates_and_bounds_by_the_samples_around_each_boundary() -> None:
    c = Cumulative.of([0.0, 1.0, 2.0], [0.0, 1.0, 3.0])
    inc = increment(c, [0.5], [1.5])
    # interpolated: 2.0 - 0.5; boundaries anywhere in their sample gaps: at least 1 - 1, at most 3 - 0
    assert (inc.value, inc.low, inc.high) == (1.5, 0.0, 3.0)
    on_samples = increment(c, [0.0], [2.0])
    assert (on_samples.value, on_samples.low, on_samples.high) == (3.0, 3.0, 3.0)


def test_increment_sums_intervals_and_counts_nothing_outside_the_samples() -> None:
    c = Cumulative.of([2.0, 0.0, 1.0], [4.0, 0.0, 2.0])  # unordered on purpose
    assert increment(c, [0.0, 1.0], [0.5, 2.0]).value == pytest.approx(1.0 + 2.0)
    assert increment(c, [-5.0], [-1.0]).value == 0.0
    assert increment(c, [3.0], [9.0]).value == 0.0
    assert increment(Cumulative.of([], []), [0.0], [1.0]) == Increment(0.0, 0.0, 0.0)


def test_processes_are_interpolated_each_on_its_own_instants() -> None:
    a = Cumulative.of([0.0, 2.0], [0.0, 2.0])  # one core busy
    b = Cumulative.of([1.0, 3.0], [10.0, 11.0])  # half a core, sampled out of step with a
    assert total_increment([a, b], [1.0], [2.0]).value == pytest.approx(1.0 + 0.5)


def test_share_is_clipped_and_carries_the_sampling_range() -> None:
    share = cpu_share(Increment(1.5, 0.0, 3.0), Increment(3.0, 2.0, 6.0))
    assert share is not None
    assert (share.value, share.low, share.high) == (0.5, 0.0, 1.0)
    assert share.half_width == 0.5
    # more than the node (samples out of step): all of it, never more
    assert cpu_share(Increment(4.0, 4.0, 4.0), Increment(3.0, 3.0, 3.0)).value == 1.0  # type: ignore[union-attr]
    assert cpu_share(Increment(-1.0, 0.0, 0.0), Increment(3.0, 3.0, 3.0)).value == 0.0  # type: ignore[union-attr]
    assert cpu_share(Increment(1.0, 1.0, 1.0), Increment(0.0, 0.0, 0.0)) is None


def test_ratio_of_sums_times_active_energy_is_the_sum_over_intervals() -> None:
    """With active power proportional to busy CPU time (the estimate's model), the aggregated share times the
    aggregated active energy equals the interval-by-interval sum."""
    node_busy = np.array([1.0, 4.0, 0.5])  # busy CPU seconds per interval
    run = np.array([0.5, 1.0, 0.5])
    watts_per_busy_s = 12.0
    by_interval = float(np.sum(run / node_busy * watts_per_busy_s * node_busy))
    node_c = Cumulative.of([0, 1, 2, 3], np.concatenate([[0.0], np.cumsum(node_busy)]))
    run_c = Cumulative.of([0, 1, 2, 3], np.concatenate([[0.0], np.cumsum(run)]))
    share = cpu_share(increment(run_c, [0.0], [3.0]), increment(node_c, [0.0], [3.0]))
    assert share is not None
    assert share.value * watts_per_busy_s * node_busy.sum() == pytest.approx(by_interval)


def test_active_energy_is_what_is_above_idle_and_never_negative() -> None:
    assert active_energy(100.0, 10.0, 5.0) == 50.0
    assert active_energy(40.0, 10.0, 5.0) == 0.0


def test_idle_power_is_a_low_percentile_of_one_second_power() -> None:
    t = np.arange(0.0, 100.0, 0.1)
    power = np.where((t > 40) & (t < 60), 80.0, 20.0)  # a busy stretch over an idle 20 W
    idle = observed_idle_w(t, trapezoid_cumulative(t, power))
    assert idle == pytest.approx(20.0, abs=0.5)
    assert observed_idle_w([0.0, 1.0], [0.0, 5.0]) is None  # too short to tell


# --- a real daemon --------------------------------------------------------------------------------------------
@pytest.fixture
def spawn() -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(code: str) -> subprocess.Popen[bytes]:
        procs.append(subprocess.Popen([sys.executable, "-c", code]))
        return procs[-1]

    yield start
    for p in procs:
        p.kill()
        p.wait()


def _register(c: httpx.Client, run_id: str, pid: int) -> None:
    c.post("/api/v1/runs", json={"name": run_id, "run_id": run_id, "pid": pid}).raise_for_status()


def _finish(c: httpx.Client, run_id: str, start: float, end: float) -> dict:
    c.post(f"/api/v1/runs/{run_id}/phases", json=[{"name": "work", "start": start, "end": end}]).raise_for_status()
    c.post(f"/api/v1/runs/{run_id}/stop", json={}).raise_for_status()
    return c.get(f"/api/v1/runs/{run_id}/energy").json()


def _node_active_j(answer: dict, dev: str) -> float:
    idle = answer["run_share"]["idle_w"][dev]["power_w"]
    return active_energy(answer["total"]["by_device"][dev], idle, answer["total"]["duration_s"])


def test_a_sleeping_run_beside_a_busy_one_gets_almost_none_of_the_active_cpu_energy(
        daemon_factory: Callable[..., DaemonProcess], spawn: Callable[[str], subprocess.Popen[bytes]],
        tmp_path: Path) -> None:
    # The utilisation estimate on every machine: RAPL, where readable, would make the figures machine-specific.
    d = daemon_factory(env={"TELEMETRY_RAPL_ROOT": str(tmp_path / "no-rapl")})
    sleeper = spawn("import time\ntime.sleep(60)")
    # The busy loop runs in a child of the registered process: a run's CPU time includes its children's.
    parent = spawn(f"import subprocess, sys, time\nsubprocess.run([sys.executable, '-c', {BUSY!r}])\ntime.sleep(60)")
    with d.client() as c:
        # The test's own view of the busy run's share, over a window just around the run's.
        before = (tree_cpu_seconds(psutil.Process(parent.pid)), busy_cpu_seconds())
        _register(c, "busy", parent.pid)
        _register(c, "sleeper", sleeper.pid)
        t0 = time.time()
        time.sleep(BUSY_S + 0.5)
        t1 = time.time()
        busy = _finish(c, "busy", t0, t1)
        after = (tree_cpu_seconds(psutil.Process(parent.pid)), busy_cpu_seconds())
        quiet = _finish(c, "sleeper", t0, t1)
    expected = (after[0] - before[0]) / (after[1] - before[1])

    cpu = next(dev for dev in quiet["total"]["by_device"] if dev.endswith("/cpu0"))
    for answer in (quiet, busy):
        share = answer["run_share"]
        assert share["method"] == "process-cpu-time" and share["attribution"] == "run-share"
        assert share["idle_policy"] == "excluded" and answer["total"]["attribution"] == "node"
        assert share["idle_w"][cpu]["source"] == "configured"
        assert answer["phases"][0]["attribution"] == "node"
        assert answer["phases"][0]["run_share_attribution"] == "run-share"
    node_active = _node_active_j(busy, cpu)
    assert node_active > 0
    assert quiet["run_share"]["by_device"][cpu] < 0.05 * _node_active_j(quiet, cpu)
    assert quiet["phases"][0]["run_share_j"] < 0.05 * _node_active_j(quiet, cpu)
    # Most of the active energy when nothing else computes; on a shared machine, what its CPU time says.
    assert busy["run_share"]["cpu_time_share"][cpu.split("/")[0]] == pytest.approx(expected, abs=0.1)
    assert busy["run_share"]["by_device"][cpu] > 0.9 * expected * node_active
    assert busy["run_share"]["by_device"][cpu] > 10 * quiet["run_share"]["by_device"][cpu]
    assert busy["run_share"]["energy_j"] < busy["total"]["energy_j"]  # the idle draw is not billed
    assert 0 <= busy["run_share"]["uncertainty_j"] < node_active
