"""Crash safety of a real daemon process: SIGKILL loses at most the last unwritten batch and the run goes on
after a restart with the hole reported; SIGTERM/SIGINT write everything and exit 0; a damaged or locked ledger
is refused at start and left untouched; a second daemon on the same ledger or port exits without harm."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from telemetry_service.store.db import open_ledger
from tests.daemon_proc import ROOT, DaemonProcess

# The sampler writes every 0.5 s (flush_interval); a kill loses what was read since the last write.
MAX_LOSS_S = 1.0
COUNTER_W, POWER_ONLY_W = 200.0, 150.0
# A driver loaded an hour ago: the simulated counter then runs on across daemon lives, as real hardware's does.
DRIVER_LOADED_AT = time.time() - 3600.0
TRACE = {"gpus": [
    {"trace": {"steps": [[1.0, COUNTER_W]]}, "counter_phase_s": 0.03, "driver_loaded_at": DRIVER_LOADED_AT},
    {"trace": {"steps": [[1.0, POWER_ONLY_W]]}, "counter": False},
]}


def _db_path(d: DaemonProcess) -> Path:
    return Path(d.db.removeprefix("sqlite:///"))


def _read(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Reads the ledger beside (or after) the daemon, without writing to it."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as conn:
        return conn.execute(sql, args).fetchall()


def _last_sample_times(path: Path) -> dict[str, float]:
    return dict(_read(path, "SELECT d.key, max(s.t) FROM samples s JOIN devices d ON d.id = s.device_id GROUP BY d.key"))


def _phases(c, run_id: str, name: str, n: int, t_end: float) -> list[dict[str, float]]:
    batch = [{"name": name, "start": t_end - 0.01 * (n - i), "end": t_end - 0.01 * (n - i) + 0.005} for i in range(n)]
    r = c.post(f"/api/v1/runs/{run_id}/phases", json=batch)
    assert r.status_code == 202, r.text
    return batch


def test_sigkill_loses_at_most_the_last_batch_and_the_run_goes_on(tmp_path):
    d1 = DaemonProcess(tmp_path, trace=TRACE).start()
    with d1.client() as c:
        run = c.post("/api/v1/runs", json={"name": "survivor", "run_id": "crash-1"}).json()
        _phases(c, "crash-1", "before", 20, time.time())
        time.sleep(2.0)
    killed_at = time.time()
    d1.proc.send_signal(signal.SIGKILL)
    d1.proc.wait(timeout=10)
    d1.stop()
    path = _db_path(d1)
    assert _read(path, "PRAGMA quick_check") == [("ok",)]
    last = _last_sample_times(path)
    for key in ("simgpu0", "simgpu1"):
        assert killed_at - last[key] <= MAX_LOSS_S, (key, killed_at - last[key])
    (life,) = _read(path, "SELECT last_sample_at, stopped_at FROM sampler_sessions")
    assert life[1] is None and killed_at - life[0] <= MAX_LOSS_S  # no clean stop recorded: the hole is visible

    time.sleep(1.5)  # the daemon stays down a while
    d2 = DaemonProcess(tmp_path, trace=TRACE, db=d1.db).start()
    restarted_at = time.time()
    try:
        with d2.client() as c:
            _phases(c, "crash-1", "after", 20, time.time())
            time.sleep(1.5)
            across = {"name": "across", "start": killed_at - 1.0, "end": restarted_at + 1.0}
            assert c.post("/api/v1/runs/crash-1/phases", json=[across]).status_code == 202
            stopped = c.post("/api/v1/runs/crash-1/stop", json={}).json()
            energy = c.get("/api/v1/runs/crash-1/energy").json()
            chart = c.get("/api/v1/runs/crash-1/samples",
                          params={"device": f"{run['members'][0]['node']}/simgpu0"}).json()
    finally:
        assert d2.stop() == 0
    phases = {p["name"]: p for p in energy["phases"]}
    assert {name: p["count"] for name, p in phases.items()} == {"before": 20, "after": 20, "across": 1}
    (down,) = energy["downtime"]
    assert down["clean_stop"] is False and down["start"] == pytest.approx(life[0])
    assert chart["downtime"] == [down]  # a chart of the run's samples is told where to break its line
    assert down["start"] <= killed_at < down["end"] and down["duration_s"] > 1.5
    node = run["members"][0]["node"]
    gaps = {g["device"]: g for g in energy["gaps"]}
    counter_gap, power_gap = gaps[f"{node}/simgpu0"], gaps[f"{node}/simgpu1"]
    assert counter_gap["daemon_down"] and counter_gap["energy"].startswith("exact")
    assert power_gap["daemon_down"] and power_gap["energy"].startswith("none")
    for gap in (counter_gap, power_gap):
        assert gap["start"] <= killed_at and gap["end"] >= down["end"] - 0.5
    # Constant power: the counter ran on, so a phase across the hole costs power x duration; without a counter,
    # the hole itself gets no energy, and the figures say they are incomplete.
    width = across["end"] - across["start"]
    hole = power_gap["end"] - power_gap["start"]
    assert phases["across"]["by_device"][f"{node}/simgpu0"] == pytest.approx(COUNTER_W * width, rel=1e-3)
    assert phases["across"]["by_device"][f"{node}/simgpu1"] == pytest.approx(POWER_ONLY_W * (width - hole), rel=1e-3)
    assert phases["across"]["complete"] is False and phases["before"]["complete"] is True
    duration = stopped["ended_at"] - stopped["started_at"]
    by_device = energy["total"]["by_device"]
    assert by_device[f"{node}/simgpu0"] == pytest.approx(COUNTER_W * duration, rel=1e-2)
    assert by_device[f"{node}/simgpu1"] == pytest.approx(POWER_ONLY_W * (duration - hole), rel=1e-2)
    assert energy["total"]["complete"] is False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_and_sigint_write_everything_and_exit_0(tmp_path, sig):
    d = DaemonProcess(tmp_path, "--simulate-gpus", "1").start()
    with d.client() as c:
        c.post("/api/v1/runs", json={"name": "bye", "run_id": "bye"})
        _phases(c, "bye", "step", 50, time.time())
        time.sleep(1.0)
    signalled = time.time()
    assert d.stop(sig) == 0
    log = d.log()
    assert "stopped; ledger flushed" in log and "Traceback" not in log
    path = _db_path(d)
    (life,) = _read(path, "SELECT last_sample_at, stopped_at FROM sampler_sessions")
    assert life[1] is not None and life[1] >= signalled
    # Sampling went on until the shutdown and every reading made it to the ledger.
    assert _last_sample_times(path)["simgpu0"] >= signalled - 0.3
    assert life[0] == pytest.approx(max(_last_sample_times(path).values()))
    assert _read(path, "SELECT count(*) FROM phases") == [(50,)]


def _serve(tmp_path: Path, db: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "telemetry_service", "serve", "--port", "0", "--db", f"sqlite:///{db}", *args]
    return subprocess.run(cmd, cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True, timeout=timeout)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _real_ledger(path: Path) -> None:
    """A ledger with a few thousand rows, written by the daemon's own store code, cleanly closed."""
    engine, sessions = open_ledger(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO nodes (name, first_seen, last_started) VALUES ('n', 1, 1)")
        conn.exec_driver_sql("INSERT INTO devices (node_id, key, kind, name, source, energy_counter, present) "
                             "VALUES (1, 'gpu0', 'gpu', 'x', 'nvml', 1, 1)")
        conn.exec_driver_sql("INSERT INTO samples (device_id, t, power_w, energy_j) VALUES " +
                             ",".join(f"(1, {1.7e9 + i * 0.1}, 300.0, {i * 30.0})" for i in range(5000)))
    engine.dispose()


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(64 * 1024))


def _truncated(path: Path) -> None:
    _real_ledger(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _overwritten_page(path: Path) -> None:
    _real_ledger(path)
    data = bytearray(path.read_bytes())
    page = 4096
    data[3 * page: 4 * page] = os.urandom(page)
    path.write_bytes(bytes(data))


def _emptied(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize("damage,fragment", [
    (_garbage, "not a database"), (_truncated, "damaged"), (_overwritten_page, "damaged"), (_emptied, "empty"),
], ids=["garbage", "truncated", "overwritten-page", "emptied"])
def test_a_damaged_ledger_is_refused_and_left_as_it_was(tmp_path, damage, fragment):
    db = tmp_path / "ledger.db"
    damage(db)
    before = _digest(db)
    r = _serve(tmp_path, db)
    assert r.returncode == 2, r.stderr
    assert "error:" in r.stderr and fragment in r.stderr and str(db) in r.stderr
    assert "Traceback" not in r.stderr
    assert _digest(db) == before


@pytest.mark.parametrize("lock", ["PRAGMA locking_mode=EXCLUSIVE; BEGIN EXCLUSIVE", "BEGIN IMMEDIATE"],
                         ids=["exclusive", "write-lock"])
def test_a_ledger_locked_by_another_process_is_refused(tmp_path, lock):
    db = tmp_path / "ledger.db"
    _real_ledger(db)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time\n"
         f"c = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
         f"[c.execute(s) for s in {lock!r}.split('; ')]\n"
         "print('locked', flush=True); time.sleep(120)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        before = _digest(db)
        r = _serve(tmp_path, db)
        assert r.returncode == 2, r.stderr
        assert "locked" in r.stderr and str(db) in r.stderr and "Traceback" not in r.stderr, r.stderr
    finally:
        holder.kill()
        holder.wait()
    assert _digest(db) == before


def test_a_second_daemon_on_the_same_ledger_or_port_exits_and_harms_nothing(tmp_path):
    d1 = DaemonProcess(tmp_path, "--simulate-gpus", "1").start()
    try:
        path = _db_path(d1)
        with d1.client() as c:
            c.post("/api/v1/runs", json={"name": "first", "run_id": "first"})
            _phases(c, "first", "step", 10, time.time())
        same_ledger = _serve(tmp_path, path, "--simulate-gpus", "1")
        assert same_ledger.returncode != 0
        assert f"in use by another daemon (pid {d1.proc.pid})" in same_ledger.stderr
        alias = tmp_path / "alias.db"  # the same ledger under another name
        alias.symlink_to(path)
        through_link = _serve(tmp_path, alias, "--simulate-gpus", "1")
        assert through_link.returncode != 0 and "in use by another daemon" in through_link.stderr
        other_db = tmp_path / "other.db"
        same_port = subprocess.run(
            [sys.executable, "-m", "telemetry_service", "serve", "--port", str(d1.port), "--db", f"sqlite:///{other_db}"],
            cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert same_port.returncode != 0 and f"cannot listen on 127.0.0.1:{d1.port}" in same_port.stderr
        assert not other_db.exists()
        with d1.client() as c:  # the first daemon goes on as before
            samples_before = _read(path, "SELECT count(*) FROM samples")[0][0]
            _phases(c, "first", "later", 10, time.time())
            time.sleep(1.0)
            assert c.get("/healthz").json()["status"] == "ok"
            assert len(c.get("/api/v1/runs/first/phases").json()["phases"]) == 20
        assert _read(path, "SELECT count(*) FROM samples")[0][0] > samples_before
        assert _read(path, "PRAGMA quick_check") == [("ok",)]
        assert _read(path, "SELECT count(*) FROM sampler_sessions") == [(1,)]
    finally:
        assert d1.stop() == 0
