"""The Slurm job template run as sbatch would run it, with SLURM_* set and no srun on PATH (its local fallback),
and the prolog/epilog pair: what needs no cluster. tests/test_slurm_real.py runs them on a real one."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.daemon_proc import free_port

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "deploy" / "slurm" / "joulemeter-job.sbatch"
WATTS = 120.0
# PATH for the job: this Python's scripts and the tools the scripts use, linked into a folder of their own so
# that an installed srun (or squeue, scancel) stays out of reach and the template takes its local fallback.
TOOLS = ("bash", "curl", "python3", "flock", "hostname", "date", "mkdir", "id", "sleep", "cat", "rm", "touch", "ls",
         "dirname", "readlink", "setsid", "logger", "env", "getent", "chown", "cut", "setpriv", "awk")


@pytest.fixture(scope="module")
def tool_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    bin_dir = tmp_path_factory.mktemp("bin")
    for tool in TOOLS:
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    return f"{Path(sys.executable).parent}:{bin_dir}"

WORKLOAD = ROOT / "tests" / "slurm_workload.py"


def _job_env(tmp: Path, port: int, path: str, seconds: float = 1.5, runs: int = 1, **extra: str) -> dict[str, str]:
    assert shutil.which("srun", path=path) is None, "this test is of the fallback without srun"
    trace = tmp / "trace.json"
    trace.write_text(json.dumps({"gpus": [{"trace": {"steps": [[1.0, WATTS]]}, "counter": True}]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TELEMETRY_", "JOULEMETER_", "TRAIN_"))}
    env.update({
        "PATH": path, "SLURM_JOB_ID": "4242", "SLURM_JOB_NUM_NODES": "1", "SLURM_SUBMIT_DIR": str(tmp),
        "TELEMETRY_PORT": str(port), "TELEMETRY_DB": f"sqlite:///{tmp / 'ledger.db'}", "TELEMETRY_NODE": "slurm-node",
        "TELEMETRY_SIMULATE_TRACE": str(trace), "TELEMETRY_SPOOL_DIR": str(tmp / "spool"), "JOULEMETER_DAEMON": f"{sys.executable} -m telemetry_service",
        "TRAIN_CMD": f"{sys.executable} {WORKLOAD} {runs} {seconds}",
    })
    env.update(extra)
    return env


def _run_template(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(TEMPLATE)], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _ledger(tmp: Path, sql: str) -> list[Any]:
    engine = create_engine(f"sqlite:///{tmp / 'ledger.db'}")
    with engine.connect() as conn:
        rows = conn.execute(text(sql)).all()
    engine.dispose()
    return rows


def test_template_starts_a_daemon_runs_the_trainer_and_stops_it_flushed(tmp_path: Path, tool_path: str) -> None:
    port = free_port()
    done = _run_template(_job_env(tmp_path, port, tool_path, runs=2), tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "starting a daemon for this job" in out and "marked 4242 " in out and "marked 4242.2 " in out
    assert not _answers(port), "the daemon the job started is still running"

    # Two runs of one job: a run each, listed together by the job's tag.
    logs = tmp_path / "joulemeter-4242"
    assert "ledger flushed" in next(logs.glob("daemon-*.log")).read_text()
    runs = {r["id"]: r for r in json.loads((logs / "runs.json").read_text())}
    assert set(runs) == {"4242", "4242.2"}
    for run in runs.values():
        assert run["status"] == "completed" and run["tags"]["slurm_job_id"] == "4242"
        assert run["totals"]["by_device"]["slurm-node/simgpu0"] == pytest.approx(WATTS * run["duration_s"], rel=0.05)

    # What the daemon wrote before it exited: every marker, and samples past the last run's end.
    (ended_at,), = _ledger(tmp_path, "SELECT ended_at FROM runs WHERE run_id = '4242.2'")
    (phases,), = _ledger(tmp_path, "SELECT count(*) FROM phases")
    assert phases >= 2 * 1.5 / 0.2 - 2
    (newest,), = _ledger(tmp_path, "SELECT max(s.t) FROM samples s JOIN devices d ON d.id = s.device_id "
                                   "WHERE d.key = 'simgpu0'")
    assert newest > ended_at
    sessions = _ledger(tmp_path, "SELECT stopped_at, last_sample_at FROM sampler_sessions")
    assert len(sessions) == 1 and sessions[0][0] is not None, "the daemon was not stopped cleanly (no flush)"
    assert sessions[0][1] == pytest.approx(newest)


def test_template_leaves_a_running_daemon_alone_and_names_array_tasks(tmp_path: Path, tool_path: str,
                                                                       daemon_factory) -> None:
    port = free_port()
    trace = {"gpus": [{"trace": {"steps": [[1.0, WATTS]]}, "counter": True}]}
    node_daemon = daemon_factory("--node", "node-wide", port=port, trace=trace)
    env = _job_env(tmp_path, port, tool_path, seconds=0.5, SLURM_JOB_ID="4300", SLURM_ARRAY_JOB_ID="4297",
                   SLURM_ARRAY_TASK_ID="3", TELEMETRY_DB=f"sqlite:///{tmp_path / 'job-ledger.db'}")
    done = _run_template(env, tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "already answers" in out and "starting a daemon" not in out
    assert node_daemon.proc is not None and node_daemon.proc.poll() is None, "the job stopped a daemon it did not start"
    with node_daemon.client() as c:
        run = c.get("/api/v1/runs/4297_3").json()
    assert run["status"] == "completed" and run["metrics"] == {"accuracy": 0.5}
    assert [m["node"] for m in run["members"]] == ["node-wide"]
    assert not (tmp_path / "job-ledger.db").exists()  # no daemon of the job's own was started


def test_sigterm_to_the_job_stops_the_trainer_and_flushes_the_daemon(tmp_path: Path, tool_path: str) -> None:
    port = free_port()
    env = _job_env(tmp_path, port, tool_path, seconds=60)
    job = subprocess.Popen(["bash", str(TEMPLATE)], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 60
        while not _ledger_has_run(tmp_path):
            assert time.time() < deadline and job.poll() is None, "the job never registered its run"
            time.sleep(0.2)
        job.send_signal(signal.SIGTERM)  # what Slurm sends at the time limit (--signal=B:TERM@120) or on scancel
        out, _ = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 143, out
    assert "received TERM" in out
    assert not _answers(port)
    assert _ledger(tmp_path, "SELECT status FROM runs WHERE run_id = '4242'") == [("failed",)]
    sessions = _ledger(tmp_path, "SELECT stopped_at FROM sampler_sessions")
    assert len(sessions) == 1 and sessions[0][0] is not None


def _ledger_has_run(tmp: Path) -> bool:
    if not (tmp / "ledger.db").exists():
        return False
    try:
        return bool(_ledger(tmp, "SELECT 1 FROM runs WHERE run_id = '4242'"))
    except Exception:  # the daemon is still creating the schema
        return False


PROLOG = ROOT / "deploy" / "slurm" / "prolog.sh"
EPILOG = ROOT / "deploy" / "slurm" / "epilog.sh"


def _hook(script: Path, job: str, env: dict[str, str]) -> str:
    done = subprocess.run(["bash", str(script)], env={**env, "SLURM_JOB_ID": job}, capture_output=True, text=True,
                          timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr  # a failing prolog or epilog would drain the node
    return done.stdout + done.stderr


def _hook_env(tmp: Path, port: int, path: str) -> dict[str, str]:
    env = _job_env(tmp, port, path)
    env.update({"JOULEMETER_LAUNCH": "direct", "JOULEMETER_RUN_DIR": str(tmp / "run"),
                "JOULEMETER_LOG": str(tmp / "log" / "daemon.log"), "JOULEMETER_ENV_FILE": str(tmp / "none.env")})
    return env


def test_prolog_and_epilog_keep_one_daemon_while_jobs_run(tmp_path: Path, tool_path: str) -> None:
    port = free_port()
    env = _hook_env(tmp_path, port, tool_path)
    _hook(PROLOG, "1", env)
    assert _answers(port)
    pid = (tmp_path / "run" / "started").read_text().strip()
    _hook(PROLOG, "2", env)  # a second job on the node: the same daemon
    assert (tmp_path / "run" / "started").read_text().strip() == pid
    _hook(EPILOG, "1", env)
    assert _answers(port), "the daemon stopped while job 2 still runs"
    _hook(EPILOG, "2", env)
    assert not _answers(port) and not (tmp_path / "run" / "started").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid), 0)
    sessions = _ledger(tmp_path, "SELECT stopped_at FROM sampler_sessions")
    assert len(sessions) == 1 and sessions[0][0] is not None, "stopped without a flush"


def test_prolog_and_epilog_leave_a_daemon_they_did_not_start(tmp_path: Path, tool_path: str, daemon_factory) -> None:
    port = free_port()
    node_daemon = daemon_factory(port=port, db=f"sqlite:///{tmp_path / 'node-wide.db'}")
    env = _hook_env(tmp_path, port, tool_path)
    _hook(PROLOG, "7", env)
    assert not (tmp_path / "run" / "started").exists()
    _hook(EPILOG, "7", env)
    assert node_daemon.proc is not None and node_daemon.proc.poll() is None
    assert not (tmp_path / "ledger.db").exists()


def test_array_example_gives_each_task_its_own_command(tmp_path: Path, tool_path: str) -> None:
    probe = tmp_path / "probe.sh"
    probe.write_text('echo "cmd=$TRAIN_CMD"\n')
    env = {"PATH": tool_path, "SLURM_ARRAY_JOB_ID": "4297", "SLURM_ARRAY_TASK_ID": "3", "SLURM_JOB_ID": "4300",
           "JOULEMETER_TEMPLATE": str(probe)}
    done = subprocess.run(["bash", str(ROOT / "deploy" / "slurm" / "joulemeter-array.sbatch")], env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "cmd=python -m trainer distill --demo --lr 1e-2 --seed 0 --output-dir runs/demo-lr-1e-2"


@pytest.mark.parametrize("script", sorted((ROOT / "deploy").rglob("*.sh")) + sorted((ROOT / "deploy").rglob("*.sbatch")),
                         ids=lambda p: p.name)
def test_shell_scripts_parse(script: Path) -> None:
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    if script.suffix == ".sbatch" or script.name in {"prolog.sh", "epilog.sh"}:
        assert os.access(script, os.X_OK), f"{script.name} is not executable"
        assert script.read_text().startswith("#!/bin/bash\n")
