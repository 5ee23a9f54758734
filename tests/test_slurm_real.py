"""The Slurm job template on a real one-node cluster (scripts/slurm-localhost.sh): a job of two runs, an array of
two tasks sharing the node, a plain scancel, and a time limit with --signal. After each, every run is stopped,
every marker the trainer recorded is in the ledger, and every daemon the job started logged its flush.

Where no cluster can be started (not root, no packages), these tests fail in CI (CI=true) and skip elsewhere."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.daemon_proc import free_port

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "deploy" / "slurm" / "joulemeter-job.sbatch"
CLUSTER = ROOT / "scripts" / "slurm-localhost.sh"
WORKLOAD = ROOT / "tests" / "slurm_workload.py"

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def cluster() -> None:
    why = ""
    if os.geteuid() != 0:
        why = "needs root to start slurmctld and slurmd"
    else:
        done = subprocess.run([str(CLUSTER)], capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            why = f"{CLUSTER.name} failed: {done.stderr.strip()[-2000:]}"
    if why:
        message = f"no Slurm cluster on localhost: {why}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


def _sh(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=30).stdout


class Job:
    """One sbatch of the template from its own folder, with its own daemon port and SQLite ledger."""

    def __init__(self, tmp: Path, *sbatch: str, runs: int = 1, seconds: float = 3, train_cmd: str = "") -> None:
        self.tmp, self.port = tmp, free_port()
        trace = tmp / "trace.json"
        trace.write_text(json.dumps({"gpus": [{"trace": {"steps": [[1.0, 100.0]]}, "counter": True}]}))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TELEMETRY_", "JOULEMETER_"))}
        env.update({
            "PYTHONPATH": str(ROOT), "TELEMETRY_PORT": str(self.port), "TELEMETRY_DB": f"sqlite:///{tmp / 'ledger.db'}",
            "TELEMETRY_SIMULATE_TRACE": str(trace), "TELEMETRY_SPOOL_DIR": str(tmp / "spool"),
            "JOULEMETER_DAEMON": f"{sys.executable} -m telemetry_service",
            "TRAIN_CMD": train_cmd or f"{sys.executable} {WORKLOAD} {runs} {seconds}",
        })
        # --time within the partition's MaxTime (the template asks for 2 hours); a later --time wins
        out = subprocess.run(["sbatch", "--parsable", "--output=slurm-%A_%a.out", "--time=3", *sbatch, str(TEMPLATE)],
                             cwd=tmp,
                             env=env, capture_output=True, text=True, check=True, timeout=30).stdout
        self.id = out.strip().split(";")[0]

    def states(self) -> list[str]:
        return _sh("squeue", "--noheader", "--array", f"--jobs={self.id}", "--format=%T").split()

    def wait_running(self, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while not self.ledger("SELECT run_id FROM runs") if (self.tmp / "ledger.db").exists() else True:
            assert time.time() < deadline, f"job {self.id} registered no run within {timeout} s"
            time.sleep(0.5)

    def wait_gone(self, timeout: float = 180) -> None:
        deadline = time.time() + timeout
        while self.states():
            if time.time() > deadline:
                subprocess.run(["scancel", self.id], timeout=30)
                pytest.fail(f"job {self.id} still queued or running after {timeout} s: {self.states()}")
            time.sleep(1)

    def output(self) -> str:
        return "".join(p.read_text() for p in sorted(self.tmp.glob("slurm-*.out")))

    def ledger(self, sql: str) -> list[Any]:
        engine = create_engine(f"sqlite:///{self.tmp / 'ledger.db'}")
        try:
            with engine.connect() as conn:
                return list(conn.execute(text(sql)).all())
        except Exception:  # the daemon is still creating the schema
            return []
        finally:
            engine.dispose()

    def check_everything_stopped_and_stored(self, status: str) -> dict[str, int]:
        """Every run ended with `status`, holds every phase the trainer marked, and each daemon flushed."""
        out = self.output()
        marked = {m[0]: int(m[1]) for m in re.findall(r"^marked (\S+) (\d+)$", out, re.M)}
        assert marked, out
        runs = dict(self.ledger("SELECT run_id, status FROM runs"))
        assert runs == {run: status for run in marked}, out
        stored = dict(self.ledger("SELECT r.run_id, count(p.id) FROM runs r LEFT JOIN phases p ON p.run_pk = r.id "
                                  "GROUP BY r.run_id"))
        assert stored == marked, out
        logs = [p.read_text() for p in self.tmp.glob("joulemeter-*/daemon-*.log")]
        starts = out.count("starting a daemon for this job")
        assert starts >= 1 and sum(log.count("ledger flushed") for log in logs) == starts, (out, logs)
        sessions = self.ledger("SELECT stopped_at FROM sampler_sessions")
        assert len(sessions) == starts and all(s[0] is not None for s in sessions), sessions
        return marked


@pytest.fixture
def job_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    # The job's processes run as root in this folder, which sbatch reads from its own working directory.
    yield tmp_path_factory.mktemp("slurm-job")


def test_a_job_of_two_runs_ends_with_both_stopped_and_the_daemon_flushed(cluster: None, job_dir: Path) -> None:
    job = Job(job_dir, runs=2, seconds=3)
    job.wait_gone()
    marked = job.check_everything_stopped_and_stored("completed")
    assert set(marked) == {job.id, f"{job.id}.2"}
    runs = json.loads(next(job_dir.glob("joulemeter-*/runs.json")).read_text())
    assert {r["id"] for r in runs} == set(marked) and {r["tags"]["slurm_job_id"] for r in runs} == {job.id}


def test_two_array_tasks_on_one_node_share_a_daemon_safely(cluster: None, job_dir: Path) -> None:
    # Task 1 outlives task 0: whichever runs the daemon, task 1 keeps a daemon until its own end.
    job = Job(job_dir, "--array=0-1", train_cmd=f"{sys.executable} {WORKLOAD} 1 $((3 + 5 * SLURM_ARRAY_TASK_ID))")
    job.wait_gone()
    marked = job.check_everything_stopped_and_stored("completed")
    assert set(marked) == {f"{job.id}_0", f"{job.id}_1"}


def test_scancel_stops_the_run_and_flushes_the_daemon(cluster: None, job_dir: Path) -> None:
    job = Job(job_dir, seconds=120)
    job.wait_running()
    time.sleep(2)
    subprocess.run(["scancel", job.id], check=True, timeout=30)
    job.wait_gone()
    job.check_everything_stopped_and_stored("failed")


def test_the_time_limit_signal_stops_the_run_before_the_kill(cluster: None, job_dir: Path) -> None:
    # SIGTERM 45 s before a 1-minute limit; slurmctld checks limits about every 30 s, so it comes 15 to 45 s in.
    job = Job(job_dir, "--time=1", "--signal=B:TERM@45", seconds=120)
    job.wait_gone(timeout=150)
    assert "received TERM" in job.output()
    job.check_everything_stopped_and_stored("failed")
