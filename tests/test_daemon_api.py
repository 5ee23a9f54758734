"""The REST API of a real daemon process: the contract, bad input, and what survives a restart."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.daemon_proc import DaemonProcess


def _run(c: httpx.Client, run_id: str, **extra) -> dict:
    r = c.post("/api/v1/runs", json={"name": "job", "run_id": run_id, **extra})
    assert r.status_code in (200, 201), r.text
    return r.json()


def test_no_gpu_no_rapl_machine_answers(daemon_factory, tmp_path):
    d = daemon_factory(env={"TELEMETRY_RAPL_ROOT": str(tmp_path / "no-powercap")})
    with d.client() as c:
        health = c.get("/healthz").json()
        assert health["status"] == "ok" and health["gpus"] == 0
        assert "no NVIDIA GPUs" in health["sensors"]["nvml"]
        assert health["sensors"]["cpu"].startswith("estimate")
        devices = {x["key"]: x for x in c.get("/api/v1/devices").json()}
        assert devices["cpu0"]["source"] == "estimate" and devices["cpu0"]["energy_counter"] is False
        assert devices["host"]["kind"] == "host"
        assert c.get("/docs").status_code == 200
        assert "/api/v1/runs/{run_id}/energy" in c.get("/openapi.json").json()["paths"]


def test_run_lifecycle_is_idempotent_and_keeps_metrics(daemon_factory):
    d = daemon_factory("--simulate-gpus", "1")
    with d.client() as c:
        created = c.post("/api/v1/runs", json={"name": "bert", "run_id": "job-42", "pid": 1234, "tags": {"slurm_job_id": "42"}})
        assert created.status_code == 201
        run = created.json()
        assert run["id"] == "job-42" and run["status"] == "running"
        node = run["members"][0]["node"]
        assert set(run["members"][0]["devices"]) == {f"{node}/simgpu0", f"{node}/cpu0"}
        again = c.post("/api/v1/runs", json={"name": "bert", "run_id": "job-42", "pid": 1234})
        assert again.status_code == 200 and len(again.json()["members"]) == 1
        second_rank = c.post("/api/v1/runs", json={"name": "bert", "run_id": "job-42", "pid": 1235, "visible_devices": []})
        assert len(second_rank.json()["members"]) == 2
        assert second_rank.json()["members"][1]["devices"] == [f"{node}/cpu0"]
        anonymous = c.post("/api/v1/runs", json={"name": "no id"}).json()
        assert len(anonymous["id"]) == 32
        now = time.time()
        batch = [{"name": "train_step", "start": now - 0.2, "end": now - 0.1, "step": 0, "attrs": {"lr": 0.001}}]
        assert c.post("/api/v1/runs/job-42/phases", json=batch).json() == {"accepted": 1}
        assert c.post("/api/v1/runs/job-42/phases", json=batch).json() == {"accepted": 1}  # a retry
        stored = c.get("/api/v1/runs/job-42/phases").json()["phases"]
        assert len(stored) == 1 and stored[0]["attrs"] == {"lr": 0.001} and stored[0]["step"] == 0
        time.sleep(0.5)
        stopped = c.post("/api/v1/runs/job-42/stop", json={"metrics": {"accuracy": 0.93, "f1": 0.91}}).json()
        assert stopped["status"] == "completed" and stopped["metrics"] == {"accuracy": 0.93, "f1": 0.91}
        assert stopped["totals"]["energy_j"] > 0
        listed = c.get("/api/v1/runs", params={"status": "completed"}).json()
        assert [r["id"] for r in listed] == ["job-42"]
        assert [r["id"] for r in c.get("/api/v1/runs", params={"tag": "slurm_job_id:42"}).json()] == ["job-42"]
        assert c.get("/api/v1/runs", params={"name": "no i"}).json()[0]["id"] == anonymous["id"]


def test_stored_data_survives_a_restart(daemon_factory, tmp_path):
    d = daemon_factory("--simulate-gpus", "1")
    with d.client() as c:
        _run(c, "persist")
        now = time.time()
        c.post("/api/v1/runs/persist/phases", json=[{"name": "a", "start": now - 0.1, "end": now}])
        time.sleep(0.6)
        c.post("/api/v1/runs/persist/stop", json={})
        before = c.get("/api/v1/runs/persist/energy").json()
    d.stop()
    d2 = daemon_factory("--simulate-gpus", "1", db=d.db)
    with d2.client() as c:
        after = c.get("/api/v1/runs/persist/energy").json()
    assert after["total"]["energy_j"] == pytest.approx(before["total"]["energy_j"])
    assert [p["count"] for p in after["phases"]] == [1]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    d = DaemonProcess(tmp_path_factory.mktemp("live"), "--simulate-gpus", "1").start()
    with d.client() as c:
        _run(c, "live")
        _run(c, "done")
        now = time.time()
        c.post("/api/v1/runs/done/phases", json=[{"name": "kept", "start": now - 0.05, "end": now}])
        time.sleep(0.3)
        c.post("/api/v1/runs/done/stop", json={})
        yield c
    d.stop()


def _phase_count(c: httpx.Client, run_id: str) -> int:
    return len(c.get(f"/api/v1/runs/{run_id}/phases").json()["phases"])


@pytest.mark.parametrize("body,status,fragment", [
    (b'{"name": "x", "start": 1', 422, "JSON"),
    (b'[{"name": "x", "start": NaN, "end": 2}]', 422, "finite"),
    (b'[{"name": "x", "start": 1e400, "end": 2}]', 422, "finite"),
    (b'[{"name": "x", "start": 5, "end": 4}]', 422, "ends"),
    (b'[{"name": "", "start": 1, "end": 2}]', 422, "at least 1"),
    (b'[{"name": "' + b"n" * 300 + b'", "start": 1, "end": 2}]', 422, "at most 255"),
    (b'[{"name": "x", "start": "soon", "end": 2}]', 422, "number"),
    (b'[{"name": "x", "start": 1, "end": 2, "colour": "red"}]', 422, "Extra inputs"),
    (b'{"name": "x"}', 422, "list"),
])
def test_bad_phase_batches_are_rejected_with_a_reason(live, body, status, fragment):
    r = live.post("/api/v1/runs/live/phases", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert fragment.lower() in r.text.lower()
    assert _phase_count(live, "live") == 0


def test_unknown_run_is_404(live):
    for r in (live.get("/api/v1/runs/nope"), live.get("/api/v1/runs/nope/energy"),
              live.post("/api/v1/runs/nope/phases", json=[]), live.post("/api/v1/runs/nope/stop", json={})):
        assert r.status_code == 404 and "nope" in r.json()["detail"]


def test_phases_outside_a_stopped_runs_time_are_rejected_whole(live):
    run = live.get("/api/v1/runs/done").json()
    inside = {"name": "late", "start": run["ended_at"] - 0.01, "end": run["ended_at"]}
    outside = {"name": "late", "start": run["ended_at"] + 60, "end": run["ended_at"] + 61}
    r = live.post("/api/v1/runs/done/phases", json=[inside, outside])
    assert r.status_code == 422 and "outside the run's time" in r.json()["detail"]
    assert _phase_count(live, "done") == 1  # the valid one of a rejected batch is not stored either


def test_oversized_batches_and_bodies_are_refused(live):
    now = time.time()
    batch = [{"name": "x", "start": now - 1, "end": now} for _ in range(10_001)]
    r = live.post("/api/v1/runs/live/phases", json=batch)
    assert r.status_code == 413 and "at most 10000" in r.json()["detail"]
    huge = b"[" + b'{"name": "x", "start": 1, "end": 2},' * 300_000 + b"]"
    r = live.post("/api/v1/runs/live/phases", content=huge, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert _phase_count(live, "live") == 0


def test_bad_run_bodies(live):
    assert live.post("/api/v1/runs", json={"run_id": "x"}).status_code == 422  # no name
    assert live.post("/api/v1/runs", json={"name": "x", "run_id": "has space"}).status_code == 422
    assert live.post("/api/v1/runs", json={"name": "x", "pid": -1}).status_code == 422
    r = live.post("/api/v1/runs/live/stop", json={"status": "exploded"})
    assert r.status_code == 422
    r = live.post("/api/v1/runs/live/stop", json={"end": 1.0})
    assert r.status_code == 422 and "before the run started" in r.json()["detail"]
    assert live.get("/api/v1/runs/live").json()["status"] == "running"


def test_samples_are_downsampled_to_max_points(live):
    time.sleep(1.2)
    node = live.get("/healthz").json()["node"]
    full = live.get("/api/v1/runs/live/samples", params={"device": f"{node}/simgpu0", "max_points": 100000}).json()
    assert full["points"] == full["stored_points"] >= 10
    small = live.get("/api/v1/runs/live/samples", params={"device": f"{node}/simgpu0", "max_points": 4}).json()
    assert small["stored_points"] >= full["stored_points"]
    assert 2 <= small["points"] <= 4
    assert min(small["power_min_w"]) == pytest.approx(min(p for p in full["power_w"]))
    assert small["t"] == sorted(small["t"])
    r = live.get("/api/v1/runs/live/samples", params={"device": f"{node}/simgpu0", "max_points": 10**7})
    assert r.status_code == 422
    r = live.get("/api/v1/runs/live/samples", params={"device": f"{node}/gpu9"})
    assert r.status_code == 404 and "no device" in r.json()["detail"]
    r = live.get("/api/v1/runs/live/samples", params={"device": f"{node}/simgpu0", "start": 10, "end": 5})
    assert r.status_code == 422
