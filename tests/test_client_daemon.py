"""The client against the real daemon process on loopback: nothing lost, nothing twice, runs kept apart."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.client_fixtures import (  # noqa: F401 - fixtures
    make_client, offline_url, phases_of, run_of, shared_daemon, spool_dir, wait_for)
from tests.daemon_proc import ROOT, DaemonProcess
from trainer.client import TelemetryClient

DaemonFactory = Callable[..., DaemonProcess]
ClientFactory = Callable[..., TelemetryClient]


def test_ten_thousand_phases_arrive_exactly_once(shared_daemon: DaemonProcess, make_client: ClientFactory,
                                                 spool_dir: Path) -> None:
    daemon = shared_daemon
    tc = make_client("bert-to-distilbert", url=daemon.url, config={"lr": 5e-5, "layers": 6}, tags={"method": "kd"})
    with tc:
        assert tc.connected
        for step in range(10_000):
            with tc.phase("train_step", step=step, shard=step % 4):
                pass
        tc.stop(metrics={"accuracy": 0.91})
    assert tc.stats.sent == 10_000 and tc.stats.spooled == 0

    phases = phases_of(daemon.url, tc.run_id)
    assert len(phases) == 10_000
    assert sorted(p["step"] for p in phases) == list(range(10_000))
    assert {p["attrs"]["shard"] for p in phases} == {0, 1, 2, 3}
    assert all(p["start"] <= p["end"] for p in phases)
    energy = httpx.get(f"{daemon.url}/api/v1/runs/{tc.run_id}/energy", timeout=30).json()
    assert [(p["name"], p["count"]) for p in energy["phases"]] == [("train_step", 10_000)]
    run = run_of(daemon.url, tc.run_id)
    assert run is not None
    assert run["status"] == "completed" and run["metrics"] == {"accuracy": 0.91}
    assert run["config"] == {"lr": 5e-5, "layers": 6} and run["tags"]["method"] == "kd"
    assert run["started_at"] <= min(p["start"] for p in phases)
    assert run["ended_at"] >= max(p["end"] for p in phases)
    assert tc.energy()["run"]["id"] == tc.run_id
    assert tc.run_share_energy()["attribution"] == "run-share"  # type: ignore[index]
    assert not list(spool_dir.glob("*.jsonl")) if spool_dir.exists() else True


def test_daemon_killed_and_restarted_mid_run_loses_nothing(daemon_factory: DaemonFactory, make_client: ClientFactory,
                                                           spool_dir: Path) -> None:
    daemon = daemon_factory()
    tc = make_client(url=daemon.url, spool_after=0.3)
    restarted: list[DaemonProcess] = []

    def restart() -> None:
        restarted.append(daemon_factory(port=daemon.port))  # same port, same ledger

    n = 0
    with tc:
        for _ in range(300):
            with tc.phase("step", step=n):
                n += 1
        assert tc.flush(timeout=10)
        daemon.stop(signal.SIGKILL)
        worker = threading.Thread(target=restart)
        worker.start()
        while worker.is_alive():  # training goes on while the daemon is away and starting again
            with tc.phase("step", step=n):
                time.sleep(0.002)
                n += 1
        worker.join()
        for _ in range(300):
            with tc.phase("step", step=n):
                n += 1
    assert restarted, "the daemon did not come back"
    assert tc.stats.spooled > 0  # the outage outlasted spool_after: the spool was used, then replayed
    assert tc.status == "completed"
    phases = phases_of(daemon.url, tc.run_id)
    assert Counter(p["step"] for p in phases) == Counter(range(n))
    run = run_of(daemon.url, tc.run_id)
    assert run is not None and run["status"] == "completed"
    assert not tc.spool_path.exists()


def test_client_started_before_the_daemon_registers_once_it_is_up(daemon_factory: DaemonFactory,
                                                                  make_client: ClientFactory, offline_url: str) -> None:
    tc = make_client(url=offline_url, spool_after=0.2, register_timeout=0.5).start()
    assert not tc.connected
    for step in range(200):
        tc.mark("before", step=step)
    time.sleep(0.5)  # long enough that these markers are spooled
    daemon = daemon_factory(port=int(offline_url.rsplit(":", 1)[1]))
    for step in range(200):
        tc.mark("after", step=step)
    assert tc.flush(timeout=15)
    assert tc.connected
    assert tc.stop(status="failed") is True
    phases = phases_of(daemon.url, tc.run_id)
    assert Counter(p["name"] for p in phases) == {"before": 200, "after": 200}
    run = run_of(daemon.url, tc.run_id)
    assert run is not None and run["status"] == "failed"
    assert run["started_at"] == pytest.approx(tc.started_at)  # the run's real start, not its registration
    assert run["started_at"] <= min(p["start"] for p in phases)


TWO_CLIENTS = """
import sys
from trainer.client import TelemetryClient
url, label, spool = sys.argv[1], sys.argv[2], sys.argv[3]
with TelemetryClient(name=label, url=url, spool_dir=spool, flush_interval=0.05) as tc:
    print(tc.run_id, flush=True)
    for step in range(2000):
        with tc.phase(label + "_step", step=step):
            pass
"""


def test_two_client_processes_keep_their_runs_apart(shared_daemon: DaemonProcess, spool_dir: Path) -> None:
    daemon = shared_daemon
    procs = {label: subprocess.Popen([sys.executable, "-c", TWO_CLIENTS, daemon.url, label, str(spool_dir)],
                                     cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for label in ("alpha", "beta")}
    run_ids = {}
    for label, proc in procs.items():
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        run_ids[label] = out.split()[0]
    assert run_ids["alpha"] != run_ids["beta"]
    for label, run_id in run_ids.items():
        phases = phases_of(daemon.url, run_id)
        assert Counter(p["name"] for p in phases) == {f"{label}_step": 2000}
        run = run_of(daemon.url, run_id)
        assert run is not None and run["name"] == label and run["status"] == "completed"
        assert [m["pid"] for m in run["members"]] == [procs[label].pid]


def test_no_daemon_warns_once_spools_and_replay_cli_sends_later(shared_daemon: DaemonProcess,
                                                               make_client: ClientFactory, offline_url: str,
                                                               spool_dir: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="trainer.client")
    started = time.monotonic()
    with make_client("offline", url=offline_url, register_timeout=1.0) as tc:
        for step in range(500):
            with tc.phase("fwd", step=step):
                pass
        tc.mark("saved")
    assert time.monotonic() - started < 8  # a daemon never seen gets one last try, not the full stop_timeout
    warnings = [r for r in caplog.records if r.name == "trainer.client" and r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "no telemetry daemon answers" in warnings[0].getMessage()
    files = list(spool_dir.glob("*.jsonl"))
    assert files == [tc.spool_path]
    lines = [json.loads(line) for line in files[0].read_text().splitlines()]
    assert lines[0]["kind"] == "run" and lines[0]["registration"]["run_id"] == tc.run_id
    assert sum(len(r["phases"]) for r in lines if r["kind"] == "phases") == 501
    assert lines[-1] == {"kind": "stop", "body": {"status": "completed", "end": lines[-1]["body"]["end"],
                                                  "metrics": {}}}

    daemon = shared_daemon
    copy = spool_dir.parent / "copy.jsonl"
    copy.write_bytes(files[0].read_bytes())
    replay = subprocess.run([sys.executable, "-m", "trainer.client", "replay", str(files[0]), "--url", daemon.url],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert replay.returncode == 0, replay.stderr
    assert "501 marker(s) sent" in replay.stdout
    phases = phases_of(daemon.url, tc.run_id)
    assert Counter(p["name"] for p in phases) == {"fwd": 500, "saved": 1}
    run = run_of(daemon.url, tc.run_id)
    assert run is not None and run["status"] == "completed" and run["name"] == "offline"
    assert not files[0].exists()
    # The same file replayed again (a replay cut short and run again) stores nothing twice.
    again = subprocess.run([sys.executable, "-m", "trainer.client", "replay", str(copy), "--url", daemon.url],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert Counter(p["name"] for p in phases_of(daemon.url, tc.run_id)) == {"fwd": 500, "saved": 1}
    assert run_of(daemon.url, tc.run_id)["status"] == "completed"  # type: ignore[index]


CRASHING_CLIENT = """
import os, signal, sys
from trainer.client import TelemetryClient
tc = TelemetryClient(name="crashed", url=sys.argv[1], spool_dir=sys.argv[2], register_timeout=0.5).start()
for step in range(50):
    with tc.phase("step", step=step):
        pass
tc.flush(timeout=0)  # the daemon was never seen: one try, then into the spool
print(tc.run_id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_next_client_start_replays_a_dead_process_spool(daemon_factory: DaemonFactory, make_client: ClientFactory,
                                                        offline_url: str, spool_dir: Path) -> None:
    crashed = subprocess.run([sys.executable, "-c", CRASHING_CLIENT, offline_url, str(spool_dir)], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    dead_run = crashed.stdout.split()[0]
    assert len(list(spool_dir.glob("*.jsonl"))) == 1

    daemon = daemon_factory(port=int(offline_url.rsplit(":", 1)[1]))
    with make_client("next", url=daemon.url):
        wait_for(lambda: not list(spool_dir.glob("*.jsonl")) or None, timeout=20)
    phases = phases_of(daemon.url, dead_run)
    assert sorted(p["step"] for p in phases) == list(range(50))
    run = run_of(daemon.url, dead_run)
    assert run is not None and run["name"] == "crashed"
    assert run["status"] == "failed"  # it never stopped its run: it died
    assert run["ended_at"] >= max(p["end"] for p in phases)


def test_slurm_job_id_is_the_run_id_and_a_later_program_of_the_job_gets_its_own(
        shared_daemon: DaemonProcess, make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    daemon = shared_daemon
    monkeypatch.setenv("SLURM_JOB_ID", "77001")
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[01-02]")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with make_client("teacher-eval", url=daemon.url) as first:
        first.mark("a")
    with make_client("distill", url=daemon.url) as second:
        second.mark("b")
    assert first.run_id == "77001" and second.run_id == "77001.2"
    run = run_of(daemon.url, "77001")
    assert run is not None and run["name"] == "teacher-eval"
    assert run["tags"] == {"slurm_job_id": "77001", "slurm_procid": "0", "slurm_nodelist": "gpu[01-02]"}
    assert first.registration()["visible_devices"] == []  # CUDA_VISIBLE_DEVICES set and empty: no GPU
    assert [p["name"] for p in phases_of(daemon.url, "77001.2")] == ["b"]
    # A caller's explicit run_id is always joined: that is how ranks and nodes share one run.
    with make_client("rank1", url=daemon.url, run_id="77001.2") as rank:
        rank.mark("c")
    assert rank.run_id == "77001.2"


def test_a_refused_marker_does_not_take_its_batch_with_it(shared_daemon: DaemonProcess,
                                                          make_client: ClientFactory) -> None:
    daemon = shared_daemon
    with make_client(url=daemon.url) as tc:
        for step in range(100):
            tc.mark("ok", step=step)
        tc.queue.append(("before_the_run", 1.0, 2.0, None, None))  # outside the run's time: the daemon says 422
        for step in range(100, 200):
            tc.mark("ok", step=step)
    # The refused marker is counted apart from the sent ones, with the daemon's reason, and the stop says so.
    assert tc.stats.sent == 200 and tc.stats.refused == 1 and tc._sender is not None and tc._sender.rejected == 1
    assert "outside the run's time" in (tc.stats.refused_reason or "")
    assert tc.stop() is False
    assert sorted(p["step"] for p in phases_of(daemon.url, tc.run_id)) == list(range(200))


SCANCELLED = """
import sys, time
from trainer.client import TelemetryClient
n = 0
try:
    with TelemetryClient(name="scancelled", url=sys.argv[1], spool_dir=sys.argv[2], flush_interval=0.05) as tc:
        print(tc.run_id, flush=True)
        while True:
            with tc.phase("step", step=n):
                n += 1
                time.sleep(0.001)
finally:
    print(n, flush=True)
"""


def test_sigterm_stops_the_run_as_failed_with_every_marker(shared_daemon: DaemonProcess, spool_dir: Path) -> None:
    """Slurm's scancel and time limit send SIGTERM: the run ends as failed, its markers flushed."""
    proc = subprocess.Popen([sys.executable, "-c", SCANCELLED, shared_daemon.url, str(spool_dir)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    wait_for(lambda: len(phases_of(shared_daemon.url, run_id)) >= 100, timeout=30)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    recorded = int(out.split()[-1])
    steps = sorted(p["step"] for p in phases_of(shared_daemon.url, run_id))
    assert steps == list(range(len(steps)))  # none lost, none twice
    assert abs(len(steps) - recorded) <= 1  # the signal may land between a phase's count and its record
    run = run_of(shared_daemon.url, run_id)
    assert run is not None and run["status"] == "failed"


def test_the_client_sends_the_token_a_guarded_daemon_asks_for(tmp_path: Path, make_client: Callable[..., TelemetryClient],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    token = "s3cret-token-for-the-client-test"
    d = DaemonProcess(tmp_path, "--token", token, host="127.0.0.2", token=token).start()
    try:
        (tmp_path / "token").write_text(token + "\n")
        monkeypatch.setenv("TELEMETRY_TOKEN_FILE", str(tmp_path / "token"))
        with make_client(url=d.url, run_id="guarded-run") as tc:
            with tc.phase("step", step=0):
                pass
        stored = httpx.get(f"{d.url}/api/v1/runs/guarded-run/phases", headers=d.headers, timeout=30).json()
        assert [p["name"] for p in stored["phases"]] == ["step"]
        assert httpx.get(f"{d.url}/api/v1/runs/guarded-run", timeout=30).status_code == 401
    finally:
        d.stop()
