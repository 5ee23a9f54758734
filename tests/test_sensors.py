"""Sensors under the conditions real hardware produces: RAPL wrap-around, counter resets, a GPU that vanishes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from telemetry_service.sensors.rapl import RaplSensor, discover_zones
from telemetry_service.sensors.simulated import StepTrace

RANGE_UJ = 60_000_000  # wraps every 1.2 s at 50 W


def _powercap(root: Path, dram: bool = True) -> Path:
    pkg = root / "intel-rapl:0"
    pkg.mkdir(parents=True)
    (pkg / "name").write_text("package-0\n")
    (pkg / "energy_uj").write_text("0\n")
    (pkg / "max_energy_range_uj").write_text(f"{RANGE_UJ}\n")
    core = pkg / "intel-rapl:0:0"
    core.mkdir()
    (core / "name").write_text("core\n")
    if dram:
        sub = pkg / "intel-rapl:0:1"
        sub.mkdir()
        (sub / "name").write_text("dram\n")
        (sub / "energy_uj").write_text("0\n")
        (sub / "max_energy_range_uj").write_text(f"{RANGE_UJ}\n")
    return pkg


def test_rapl_zones_are_found_with_their_wrap(tmp_path):
    _powercap(tmp_path)
    zones = discover_zones(tmp_path)
    assert [(z.info.key, z.info.kind, z.info.source, z.info.counter_wrap_j) for z in zones] == [
        ("cpu0", "cpu", "rapl", 60.0), ("dram0", "dram", "rapl", 60.0)]
    assert RaplSensor(tmp_path / "absent").available is False


def test_rapl_power_across_a_wrap(tmp_path):
    pkg = _powercap(tmp_path, dram=False)
    sensor = RaplSensor(tmp_path)
    (pkg / "energy_uj").write_text(f"{RANGE_UJ - 1_000_000}\n")
    sensor.read()
    time.sleep(0.05)
    (pkg / "energy_uj").write_text("2000000\n")  # wrapped: 3 J later
    r = sensor.read()[0]
    assert r.counter_j == 2.0 and r.power_w is not None and r.power_w > 0


def _play_rapl(pkg: Path, watts: float, t0: float, stop: threading.Event) -> None:
    while not stop.is_set():
        uj = int(watts * (time.time() - t0) * 1e6) % RANGE_UJ
        (pkg / "energy_uj").write_text(f"{uj}\n")
        time.sleep(0.005)


def test_daemon_counts_rapl_energy_across_wraps(daemon_factory, tmp_path):
    pkg = _powercap(tmp_path / "powercap", dram=False)
    stop = threading.Event()
    writer = threading.Thread(target=_play_rapl, args=(pkg, 50.0, time.time(), stop), daemon=True)
    writer.start()
    try:
        d = daemon_factory(env={"TELEMETRY_RAPL_ROOT": str(tmp_path / "powercap")})
        with d.client() as c:
            start = time.time() + 0.3
            c.post("/api/v1/runs", json={"name": "cpu", "run_id": "rapl", "started_at": start})
            time.sleep(3.5)  # three wraps
            end = time.time() - 0.2
            c.post("/api/v1/runs/rapl/phases", json=[{"name": "work", "start": start, "end": end}])
            c.post("/api/v1/runs/rapl/stop", json={})
            energy = c.get("/api/v1/runs/rapl/energy").json()
    finally:
        stop.set()
    node = energy["run"]["members"][0]["node"]
    work = energy["phases"][0]
    assert work["methods"] == {f"{node}/cpu0": "counter"}
    # The played file can lag behind the clock when this process stalls, so allow 10 %; a mishandled wrap would
    # be off by a whole range (60 J) per wrap.
    assert work["by_device"][f"{node}/cpu0"] == pytest.approx(50.0 * (end - start), rel=0.1)


def _trace(steps, **gpu) -> dict:
    return {"gpus": [{"trace": {"steps": [list(s) for s in steps], "anchor": 0.0}, **gpu}]}


def test_counter_reset_is_rebased_not_negative(daemon_factory):
    reset_at = time.time() + 8.0  # leaves a loaded machine time to start the daemon first
    d = daemon_factory(trace=_trace(((1.0, 200.0),), counter=True, resets=[reset_at]))
    start = max(time.time() + 0.5, reset_at - 2.0)
    end = reset_at + 2.0
    with d.client() as c:
        c.post("/api/v1/runs", json={"name": "reset", "run_id": "reset", "started_at": start - 0.2})
        time.sleep(max(0.0, end + 0.3 - time.time()))
        c.post("/api/v1/runs/reset/phases", json=[{"name": "across", "start": start, "end": end}])
        c.post("/api/v1/runs/reset/stop", json={})
        energy = c.get("/api/v1/runs/reset/energy").json()
        node = energy["run"]["members"][0]["node"]
        series = c.get("/api/v1/runs/reset/samples", params={"device": f"{node}/simgpu0", "max_points": 100000}).json()
    across = energy["phases"][0]["by_device"][f"{node}/simgpu0"]
    exact = 200.0 * (end - start)
    # At most one update interval (100 ms at 200 W) goes unseen at the reset itself.
    assert exact - 20.5 <= across <= exact + 0.5
    e = series["energy_j"]
    assert all(b >= a for a, b in zip(e, e[1:]))


def test_a_gpu_that_fails_mid_run_is_skipped_and_comes_back(daemon_factory):
    fail_from = time.time() + 8.0  # leaves a loaded machine time to start the daemon first
    steps = ((1.0, 150.0),)
    d = daemon_factory(trace=_trace(steps, counter=True, failures=[[fail_from, fail_from + 1.5]]))
    start, end = fail_from - 1.5, fail_from + 3.0
    with d.client() as c:
        c.post("/api/v1/runs", json={"name": "fail", "run_id": "fail", "started_at": start - 0.2})
        time.sleep(max(0.0, end + 0.3 - time.time()))
        c.post("/api/v1/runs/fail/phases", json=[{"name": "across", "start": start, "end": end}])
        c.post("/api/v1/runs/fail/stop", json={})
        energy = c.get("/api/v1/runs/fail/energy").json()
        health = c.get("/healthz").json()
    node = energy["run"]["members"][0]["node"]
    assert health["sampler"]["sensor_errors"]["nvml"] >= 10
    # The hardware counter kept counting while it could not be read: the phase's energy is still exact.
    assert energy["phases"][0]["by_device"][f"{node}/simgpu0"] == pytest.approx(StepTrace(steps).energy(start, end), rel=0.01)
    gpu_gaps = [g for g in energy["gaps"] if g["device"] == f"{node}/simgpu0"]
    assert len(gpu_gaps) == 1 and gpu_gaps[0]["duration_s"] == pytest.approx(1.5, abs=0.3)
    assert gpu_gaps[0]["energy"].startswith("exact")
    assert not [g for g in energy["gaps"] if g["device"] == f"{node}/cpu0"]  # the other sensors went on


def test_a_gpu_lost_at_start_is_left_out_and_the_others_measured(daemon_factory):
    now = time.time()
    trace = {"steps": [[1.0, 100.0]], "anchor": 0.0}
    d = daemon_factory(trace={"gpus": [{"trace": trace, "failures": [[now - 10, now + 3600]]}, {"trace": trace}]})
    with d.client() as c:
        health = c.get("/healthz").json()
        keys = [x["key"] for x in c.get("/api/v1/devices").json() if x["kind"] == "gpu"]
    assert "unreadable GPU 0" in health["sensors"]["simulated"]
    assert keys == ["simgpu1"]


def test_a_restart_whose_counter_went_backwards_adds_no_phantom_energy(daemon_factory):
    """The second life reads a counter 720 kJ lower than the first left it (a counter from another driver load),
    a few seconds later: believing it a reset would add 720 kJ. Only what the device can draw is counted."""
    now = time.time()
    first = daemon_factory(trace=_trace(((1.0, 200.0),), driver_loaded_at=now - 7200.0))
    with first.client() as c:
        start = time.time() + 0.3
        c.post("/api/v1/runs", json={"name": "across", "run_id": "across", "started_at": start})
        time.sleep(1.5)
    assert first.stop() == 0
    second = daemon_factory(trace=_trace(((1.0, 200.0),), driver_loaded_at=now - 3600.0), port=None)
    with second.client() as c:
        time.sleep(1.5)
        end = time.time() - 0.2
        c.post("/api/v1/runs/across/stop", json={"end": end})
        energy = c.get("/api/v1/runs/across/energy").json()
    assert "went backwards" in second.log()
    gpu = next(v for k, v in energy["total"]["by_device"].items() if k.endswith("simgpu0"))
    assert gpu <= 200.0 * (end - start) * 1.05  # at most the power drawn; the restart's gap adds nothing
    assert gpu >= 200.0 * 2.0  # both lives' energy is still there
