"""A run shared by several processes (ranks, nodes): each is a member, and the run ends with its last member."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.client_fixtures import (  # noqa: F401 - fixtures
    make_client,
    phases_of,
    run_of,
    shared_daemon,
    spool_dir,
    wait_for,
)
from tests.daemon_proc import ROOT, DaemonProcess
from trainer.client import TelemetryClient

ClientFactory = Callable[..., TelemetryClient]

# One rank of a job: marks steps for `seconds`, stops, and prints what stop() and its stats said.
RANK = """
import json, sys, time
from trainer.client import TelemetryClient
url, spool, run_id, name, seconds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
tc = TelemetryClient(name=name, run_id=run_id, url=url, spool_dir=spool, flush_interval=0.05, sync_cuda=False,
                     tags={"rank": name})
tc.start()
print("started", flush=True)
n, t_end = 0, time.time() + seconds
while time.time() < t_end:
    with tc.phase("step", step=n):
        time.sleep(0.005)
    n += 1
if seconds > 60:  # the killed rank: never stops
    time.sleep(3600)
ok = tc.stop()
print(json.dumps({"ok": ok, "recorded": n, "sent": tc.stats.sent, "refused": tc.stats.refused}), flush=True)
"""


def _rank(url: str, spool: Path, run_id: str, name: str, seconds: float) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", RANK, url, str(spool), run_id, name, str(seconds)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_two_ranks_with_staggered_stops_keep_every_marker(shared_daemon: DaemonProcess, spool_dir: Path) -> None:
    """Rank 0 stops after 1 s, rank 1 runs on to 3 s: the run stays open for rank 1, every marker is stored."""
    url, run_id = shared_daemon.url, "staggered-ranks"
    early, late = _rank(url, spool_dir, run_id, "rank0", 1.0), _rank(url, spool_dir, run_id, "rank1", 3.0)
    first, second = _finish(early), _finish(late)
    assert first["ok"] and second["ok"] and first["refused"] == second["refused"] == 0
    assert len(phases_of(url, run_id)) == first["recorded"] + second["recorded"]
    run = run_of(url, run_id)
    assert run is not None and run["status"] == "completed"
    assert [m["status"] for m in run["members"]] == ["completed", "completed"]
    assert run["ended_at"] == max(m["ended_at"] for m in run["members"])
    assert run["ended_at"] - min(m["ended_at"] for m in run["members"]) > 1.0


def test_a_finished_run_id_is_refused_at_registration(shared_daemon: DaemonProcess, make_client: ClientFactory) -> None:
    with shared_daemon.client() as c:
        assert c.post("/api/v1/runs", json={"name": "once", "run_id": "finished-once", "pid": 999_990}).status_code == 201
        assert c.post("/api/v1/runs/finished-once/stop", json={"pid": 999_990}).json()["status"] == "completed"
        again = c.post("/api/v1/runs", json={"name": "twice", "run_id": "finished-once", "pid": 999_991})
        assert again.status_code == 409
        assert "finished-once" in again.json()["detail"] and "ended at" in again.json()["detail"]
        # The same process registering again is a retry, not a reuse.
        assert c.post("/api/v1/runs", json={"name": "once", "run_id": "finished-once", "pid": 999_990}).status_code == 200
    tc = make_client(url=shared_daemon.url, run_id="finished-once").start()
    tc.mark("lost")
    assert tc.stop(timeout=0.5) is False
    assert "ended at" in (tc.stats.refused_reason or "")
    assert len(phases_of(shared_daemon.url, "finished-once")) == 0


def test_a_later_registrant_joins_without_rewriting_the_run(shared_daemon: DaemonProcess) -> None:
    with shared_daemon.client() as c:
        first = {"name": "bert", "run_id": "joined", "pid": 999_980, "tags": {"team": "a"}, "config": {"lr": 1}}
        assert c.post("/api/v1/runs", json=first).json()["member"]["index"] == 0
        joined = c.post("/api/v1/runs", json={"name": "other", "run_id": "joined", "pid": 999_981,
                                              "tags": {"team": "b"}, "config": {"lr": 2}})
        assert joined.status_code == 200
        body = joined.json()
        stored = c.get("/api/v1/runs/joined").json()
        assert (body["name"], body["tags"], stored["config"]) == ("bert", {"team": "a"}, {"lr": 1})
        assert body["member"]["index"] == 1 and body["member"]["tags"] == {"team": "b"}
        assert any("joined run 'joined' as member 2" in w for w in body["warnings"])
        # One member failing fails the run, but only once every member has ended.
        assert c.post("/api/v1/runs/joined/stop", json={"pid": 999_980, "status": "failed"}).json()["status"] == "running"
        future = c.post("/api/v1/runs/joined/stop", json={"pid": 999_981, "end": time.time() + 3600})
        assert future.status_code == 422 and "future" in future.json()["detail"]
        ended = c.post("/api/v1/runs/joined/stop", json={"pid": 999_981}).json()
        assert ended["status"] == "failed" and [m["status"] for m in ended["members"]] == ["failed", "completed"]


def test_stop_reports_refused_markers_with_the_reason(shared_daemon: DaemonProcess, make_client: ClientFactory) -> None:
    with make_client(url=shared_daemon.url) as tc:
        tc.mark("ok", step=0)
        tc.queue.append(("before_the_run", 1.0, 2.0, None, None))  # the daemon refuses it: outside the run's time
    assert tc.stop() is False
    assert tc.stats.sent == 1 and tc.stats.refused == 1
    assert "outside the run's time" in (tc.stats.refused_reason or "")


def test_a_killed_client_is_ended_as_lost_and_shares_nothing_later(daemon_factory: Callable[..., DaemonProcess],
                                                                    spool_dir: Path) -> None:
    check_s = 0.5
    d = daemon_factory(env={"TELEMETRY_MEMBER_CHECK_S": str(check_s)})
    proc = _rank(d.url, spool_dir, "killed", "rank0", 1000.0)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
    wait_for(lambda: len(phases_of(d.url, "killed")) >= 20, timeout=30)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    killed_at = time.time()
    run = wait_for(lambda: (r := run_of(d.url, "killed")) and r["status"] != "running" and r, timeout=check_s + 5)
    assert time.time() - killed_at < check_s + 5
    last_marker = max(p["end"] for p in phases_of(d.url, "killed"))
    assert run["members"][0]["status"] == "lost" and run["status"] == "completed"
    assert run["ended_at"] == pytest.approx(last_marker) and run["ended_at"] <= killed_at
    with httpx.Client(base_url=d.url, timeout=60.0) as c:
        assert c.post("/api/v1/runs", json={"name": "after", "run_id": "after-kill"}).status_code == 201
        time.sleep(0.3)
        assert c.post("/api/v1/runs/after-kill/stop", json={}).status_code == 200
        report = c.get("/api/v1/runs/after-kill/energy").json()
    assert all("killed" not in runs for runs in report["shared_devices"].values())
