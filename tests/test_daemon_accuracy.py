"""Energy per phase from the running daemon's REST API against the exact integral of a known power trace."""

from __future__ import annotations

import math
import time

import pytest

from telemetry_service.sensors.simulated_nvml import StepTrace

STEPS = ((1.0, 100.0), (1.0, 300.0))


def _trace_spec(anchor: float) -> dict:
    trace = {"steps": [list(s) for s in STEPS], "anchor": anchor}
    return {"gpus": [
        {"trace": trace, "counter": True},  # an energy counter on its own ~100 ms grid
        {"trace": trace, "counter": False},  # power only: integrated
    ]}


def test_energy_per_phase_matches_the_integral(daemon_factory):
    anchor = math.ceil(time.time()) + 2.0
    d = daemon_factory(trace=_trace_spec(anchor))
    cycles = 3
    with d.client() as c:
        r = c.post("/api/v1/runs", json={"name": "accuracy", "run_id": "acc-1", "started_at": anchor - 0.5})
        assert r.status_code == 201, r.text
        phases = []
        for k in range(cycles):
            base = anchor + 2 * k
            phases += [{"name": "low", "start": base, "end": base + 1.0, "step": k},
                       {"name": "high", "start": base + 1.0, "end": base + 2.0, "step": k}]
        end = anchor + 2 * cycles
        time.sleep(max(0.0, end + 0.3 - time.time()))
        assert c.post("/api/v1/runs/acc-1/phases", json=phases).json() == {"accepted": 2 * cycles}
        stopped = c.post("/api/v1/runs/acc-1/stop", json={"end": end + 0.2}).json()
        assert stopped["status"] == "completed"
        energy = c.get("/api/v1/runs/acc-1/energy").json()

    trace = StepTrace(steps=STEPS, anchor=anchor)
    exact = {"low": sum(trace.energy(anchor + 2 * k, anchor + 2 * k + 1) for k in range(cycles)),
             "high": sum(trace.energy(anchor + 2 * k + 1, anchor + 2 * k + 2) for k in range(cycles))}
    assert exact == {"low": pytest.approx(300.0), "high": pytest.approx(900.0)}
    node = energy["run"]["members"][0]["node"]
    by_name = {p["name"]: p for p in energy["phases"]}
    assert set(by_name) == {"low", "high"}
    for name, want in exact.items():
        p = by_name[name]
        assert p["count"] == cycles and p["duration_s"] == pytest.approx(cycles * 1.0)
        counter = p["by_device"][f"{node}/simgpu0"]
        integrated = p["by_device"][f"{node}/simgpu1"]
        assert counter == pytest.approx(want, rel=0.01), (name, counter, want)
        assert integrated == pytest.approx(want, rel=0.01), (name, integrated, want)
        assert p["short"] is False and p["complete"] is True
    devices = {d["id"]: d for d in energy["devices"]}
    assert devices[f"{node}/simgpu0"]["method"] == "counter"
    assert devices[f"{node}/simgpu1"]["method"] == "integrated"
    assert devices[f"{node}/simgpu0"]["source"] == "simulated"
    assert energy["simulated"] is True
    total_gpu0 = energy["total"]["by_device"][f"{node}/simgpu0"]
    assert total_gpu0 == pytest.approx(trace.energy(anchor - 0.5, end + 0.2), rel=0.01)
