"""GET /metrics read by prometheus-client's own parser, from a running daemon with a simulated GPU."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.daemon_proc import DaemonProcess

WATTS = 250.0
NODE = "metrics-node"
DEVICE_LABELS = {"hostname", "device", "uuid", "kind", "source"}


def _trace(driver_loaded_at: float) -> dict[str, Any]:
    return {"gpus": [{"trace": {"steps": [[1.0, WATTS]]}, "counter": True, "driver_loaded_at": driver_loaded_at}]}


def scrape(d: DaemonProcess) -> dict[str, Any]:
    r = httpx.get(f"{d.url}/metrics", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(r.text)}


def gpu_energy(d: DaemonProcess, timeout: float = 10.0) -> tuple[float, float]:
    """(the energy counter of simgpu0, when it was scraped), once the daemon has read the GPU."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        now = time.time()
        for s in scrape(d)["joulemeter_energy_joules"].samples:
            if s.labels["device"] == "simgpu0" and s.value > 0:  # the second read gives the first increment
                return s.value, now
        time.sleep(0.1)
    raise AssertionError(f"no energy for simgpu0 within {timeout} s:\n{d.log()}")


def test_exposition_names_labels_and_run_info(daemon_factory) -> None:
    d = daemon_factory("--node", NODE, trace=_trace(time.time() - 100))
    gpu_energy(d)
    with d.client() as c:
        uuid = {x["key"]: x["uuid"] for x in c.get("/api/v1/devices").json()}["simgpu0"]
        assert c.post("/api/v1/runs", json={"name": "distil", "run_id": "777_3", "pid": 1234,
                                            "tags": {"slurm_job_id": "777_3"}}).status_code == 201
        families = scrape(d)
        assert c.post("/api/v1/runs/777_3/stop", json={}).status_code == 200
        after_stop = scrape(d)

    energy = families["joulemeter_energy_joules"]
    assert energy.type == "counter"
    gpu = [s for s in energy.samples if s.labels["device"] == "simgpu0"]
    assert [s.name for s in gpu] == ["joulemeter_energy_joules_total"]
    assert gpu[0].labels == {"hostname": NODE, "device": "simgpu0", "uuid": uuid, "kind": "gpu", "source": "simulated"}
    assert gpu[0].value > 0
    power = {s.labels["device"]: s.value for s in families["joulemeter_power_watts"].samples}
    assert families["joulemeter_power_watts"].type == "gauge"
    assert power["simgpu0"] == pytest.approx(WATTS)
    for name in ("utilization_ratio", "memory_used_bytes", "memory_total_bytes", "temperature_celsius",
                 "power_limit_watts"):
        family = families[f"joulemeter_{name}"]
        assert family.type == "gauge"
        assert "simgpu0" in {s.labels["device"] for s in family.samples}, name
    util = {s.labels["device"]: s.value for s in families["joulemeter_utilization_ratio"].samples}
    assert all(0.0 <= v <= 1.0 for v in util.values())
    # the host has no energy of its own, but its utilisation and memory are there
    assert "host" not in {s.labels["device"] for s in energy.samples}
    assert "host" in util

    run_info = families["joulemeter_run_info"]  # an info metric: in the text format, a gauge of value 1
    assert run_info.type == "gauge"
    assert [(s.name, s.labels, s.value) for s in run_info.samples] == [
        ("joulemeter_run_info", {"hostname": NODE, "run_id": "777_3", "name": "distil", "slurm_job_id": "777_3"}, 1.0)]
    assert after_stop["joulemeter_run_info"].samples == []

    # No run or phase labels anywhere but the join metric: series must not multiply with runs.
    for family in families.values():
        for s in family.samples:
            if family.name != "joulemeter_run_info":
                assert not {"run_id", "phase", "name"} & set(s.labels), (family.name, s.labels)
            if s.labels.get("device"):
                assert set(s.labels) == DEVICE_LABELS, (family.name, s.labels)


def test_energy_counter_runs_on_across_a_restart(daemon_factory) -> None:
    trace = _trace(time.time() - 100)  # one driver load for both daemons: the hardware counter runs on
    first = daemon_factory("--node", NODE, trace=trace)
    readings = [gpu_energy(first)]
    for _ in range(5):
        time.sleep(0.2)
        readings.append(gpu_energy(first))
    first.stop()
    second = daemon_factory("--node", NODE, trace=trace)
    readings.append(gpu_energy(second))
    for _ in range(3):
        time.sleep(0.2)
        readings.append(gpu_energy(second))

    values = [v for v, _ in readings]
    assert values == sorted(values), values
    assert values[-1] > values[0]
    # Across the restart the counter went on by what the GPU drew meanwhile (the hardware counter ran on),
    # neither restarting from zero nor taken for a driver reset (which would add the 100 s since the load).
    (e1, t1), (e2, t2) = readings[5], readings[6]
    assert e2 - e1 == pytest.approx(WATTS * (t2 - t1), abs=WATTS * 0.5)
