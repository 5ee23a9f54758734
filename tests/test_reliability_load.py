"""Short versions of bench/load.py: client processes posting markers while 8 simulated GPUs are sampled at
0.1 s; every marker is stored exactly once, also when acknowledged batches are sent again and when the daemon
is SIGKILLed and restarted in the middle (the clients retry, as the client library does). Correctness only: the
figures (throughput, latency, sampler gaps) belong to the full benchmark."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.daemon_proc import ROOT


def _load(*args: str) -> dict:
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "load.py"), "--json", *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_every_marker_is_stored_once_under_load():
    r = _load("--clients", "4", "--seconds", "5", "--repost", "0.2")
    assert r["sent"] == 4 * 5 * 1000 and r["stored"] == r["sent"] and r["exactly_once"]
    assert r["reposts"] > 0 and r["daemon_exit"] == 0
    assert r["worst_sample_gap_s"] < float("inf")  # every GPU kept being sampled


def test_markers_retried_through_a_daemon_kill_and_restart_are_stored_once():
    r = _load("--clients", "4", "--seconds", "6", "--kill-at", "2.5", "--down-s", "1.5", "--repost", "0.2")
    assert r["killed"] and r["retries"] > 0
    assert r["sent"] == 4 * 6 * 1000 and r["stored"] == r["sent"] and r["exactly_once"]
