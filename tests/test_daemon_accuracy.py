"""Energy per phase from the running daemon's REST API against the exact integral of a known power trace."""

from __future__ import annotations

import math
import time

import pytest

from telemetry_service.sensors.simulated import StepTrace

STEPS = ((1.0, 100.0), (1.0, 300.0))


def _trace_spec(anchor: float) -> dict:
    trace = {"steps": [list(s) for s in STEPS], "anchor": anchor}
    return {"gpus": [
        {"trace": trace, "counter": True},  # an energy counter on its own ~100 ms grid
        {"trace": trace, "counter": False},  # power only: integrated
    ]}


def test_energy_per_phase_matches_the_integral(daemon_factory):
    d = daemon_factory(trace=_trace_spec(0.0))
    # The trace repeats every 2 s from t=0: low on even seconds, high on odd ones. Start on the next even second
    # with a margin, so the sampler and the counter's grid lock are under way.
    anchor = 2.0 * math.ceil((time.time() + 1.5) / 2.0)
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

    trace = StepTrace(steps=STEPS, anchor=0.0)
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


def test_a_20ms_phase_repeated_many_times_is_attributed_within_5_percent(daemon_factory):
    # 20 ms at 400 W, then 33 ms at 120 W: far shorter than the ~100 ms counter updates, and not in lockstep with them.
    steps = ((0.02, 400.0), (0.033, 120.0))
    d = daemon_factory(trace={"gpus": [{"trace": {"steps": [list(x) for x in steps], "anchor": 0.0}, "counter": True}]})
    trace = StepTrace(steps=steps, anchor=0.0)
    start = time.time() + 1.0
    first = math.ceil(start / trace.period)
    count = 180
    phases = [{"name": "forward", "start": k * trace.period, "end": k * trace.period + 0.02, "step": k}
              for k in range(first, first + count)]
    with d.client() as c:
        assert c.post("/api/v1/runs", json={"name": "short", "run_id": "short-1", "started_at": start}).status_code == 201
        end = phases[-1]["end"] + 0.5
        time.sleep(max(0.0, end + 0.2 - time.time()))
        assert c.post("/api/v1/runs/short-1/phases", json=phases).status_code == 202
        c.post("/api/v1/runs/short-1/stop", json={"end": end})
        energy = c.get("/api/v1/runs/short-1/energy").json()
    forward = energy["phases"][0]
    gpu = f"{energy['run']['members'][0]['node']}/simgpu0"
    truth = sum(trace.energy(p["start"], p["end"]) for p in phases)
    assert truth == pytest.approx(count * 0.02 * 400.0)
    assert forward["methods"][gpu] == "attributed" and forward["short"] is True
    assert forward["repeats"] == count
    assert forward["by_device"][gpu] == pytest.approx(truth, rel=0.05)
    assert forward["uncertainty_j"] < 0.05 * truth
