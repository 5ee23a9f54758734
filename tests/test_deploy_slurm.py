"""The Slurm job template, run end to end as sbatch would run it, with SLURM_* set and srun absent (its local
fallback): it starts a daemon where none answers, runs the trainer with the job's run id, and stops only the
daemon it started, after that daemon has written everything."""

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
# PATH for the job: this Python's scripts and the system's, where no srun is installed.
PATH = f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"

# A stand-in for the trainer: registers with the run id the template gives it, marks two phases, stops.
TRAIN = """
import os, sys, time, httpx
url, run_id = os.environ["TELEMETRY_URL"], os.environ["TELEMETRY_RUN_ID"]
with httpx.Client(base_url=url, timeout=30) as c:
    t0 = time.time()
    r = c.post("/api/v1/runs", json={"name": "slurm-template", "run_id": run_id, "pid": os.getpid(), "started_at": t0,
                                     "tags": {"slurm_job_id": run_id}})
    assert r.status_code in (200, 201), r.text
    time.sleep(float(sys.argv[1]))
    t1 = time.time()
    phases = [{"name": "forward", "start": t0, "end": (t0 + t1) / 2}, {"name": "backward", "start": (t0 + t1) / 2, "end": t1}]
    assert c.post(f"/api/v1/runs/{run_id}/phases", json=phases).json() == {"accepted": 2}
    assert c.post(f"/api/v1/runs/{run_id}/stop", json={"end": t1, "metrics": {"accuracy": 0.5}}).status_code == 200
print("trained", run_id)
"""


def _job_env(tmp: Path, port: int, seconds: float = 1.5, **extra: str) -> dict[str, str]:
    assert shutil.which("srun", path=PATH) is None, "this test is of the fallback without srun"
    trace = tmp / "trace.json"
    trace.write_text(json.dumps({"gpus": [{"trace": {"steps": [[1.0, WATTS]]}, "counter": True}]}))
    (tmp / "train.py").write_text(TRAIN)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TELEMETRY_", "JOULEMETER_", "TRAIN_"))}
    env.update({
        "PATH": PATH, "SLURM_JOB_ID": "4242", "SLURM_JOB_NUM_NODES": "1", "SLURM_SUBMIT_DIR": str(tmp),
        "TELEMETRY_PORT": str(port), "TELEMETRY_DB": f"sqlite:///{tmp / 'ledger.db'}", "TELEMETRY_NODE": "slurm-node",
        "TELEMETRY_SIMULATE_TRACE": str(trace), "JOULEMETER_DAEMON": f"{sys.executable} -m telemetry_service",
        "TRAIN_CMD": f"{sys.executable} {tmp / 'train.py'} {seconds}",
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


def test_template_starts_a_daemon_runs_the_trainer_and_stops_it_flushed(tmp_path: Path) -> None:
    port = free_port()
    done = _run_template(_job_env(tmp_path, port), tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "starting a daemon for this job" in out and "trained 4242" in out
    assert not _answers(port), "the daemon the job started is still running"

    logs = tmp_path / "joulemeter-4242"
    assert list(logs.glob("daemon-*.log")), list(logs.iterdir())
    summary = json.loads((logs / "run.json").read_text())
    assert summary["id"] == "4242" and summary["status"] == "completed"
    assert summary["totals"]["by_device"]["slurm-node/simgpu0"] == pytest.approx(WATTS * summary["duration_s"], rel=0.05)

    # What the daemon wrote before it exited: the run, both phases, and samples past the run's end.
    (run_pk, ended_at), = _ledger(tmp_path, "SELECT id, ended_at FROM runs WHERE run_id = '4242'")
    phases = _ledger(tmp_path, f"SELECT name FROM phases WHERE run_pk = {run_pk} ORDER BY start")
    assert [p[0] for p in phases] == ["forward", "backward"]
    (newest,), = _ledger(tmp_path, "SELECT max(s.t) FROM samples s JOIN devices d ON d.id = s.device_id "
                                   "WHERE d.key = 'simgpu0'")
    assert newest > ended_at
    sessions = _ledger(tmp_path, "SELECT stopped_at, last_sample_at FROM sampler_sessions")
    assert len(sessions) == 1 and sessions[0][0] is not None, "the daemon was not stopped cleanly (no flush)"
    assert sessions[0][1] == pytest.approx(newest)


def test_template_leaves_a_running_daemon_alone_and_names_array_tasks(tmp_path: Path, daemon_factory) -> None:
    port = free_port()
    trace = {"gpus": [{"trace": {"steps": [[1.0, WATTS]]}, "counter": True}]}
    node_daemon = daemon_factory("--node", "node-wide", port=port, trace=trace)
    env = _job_env(tmp_path, port, seconds=0.5, SLURM_JOB_ID="4300", SLURM_ARRAY_JOB_ID="4297",
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


def test_sigterm_to_the_job_stops_the_trainer_and_flushes_the_daemon(tmp_path: Path) -> None:
    port = free_port()
    env = _job_env(tmp_path, port, seconds=60)
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


def _hook_env(tmp: Path, port: int) -> dict[str, str]:
    env = _job_env(tmp, port)
    env.update({"JOULEMETER_LAUNCH": "direct", "JOULEMETER_RUN_DIR": str(tmp / "run"),
                "JOULEMETER_LOG": str(tmp / "log" / "daemon.log"), "JOULEMETER_ENV_FILE": str(tmp / "none.env")})
    return env


def test_prolog_and_epilog_keep_one_daemon_while_jobs_run(tmp_path: Path) -> None:
    port = free_port()
    env = _hook_env(tmp_path, port)
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


def test_prolog_and_epilog_leave_a_daemon_they_did_not_start(tmp_path: Path, daemon_factory) -> None:
    port = free_port()
    node_daemon = daemon_factory(port=port, db=f"sqlite:///{tmp_path / 'node-wide.db'}")
    env = _hook_env(tmp_path, port)
    _hook(PROLOG, "7", env)
    assert not (tmp_path / "run" / "started").exists()
    _hook(EPILOG, "7", env)
    assert node_daemon.proc is not None and node_daemon.proc.poll() is None
    assert not (tmp_path / "ledger.db").exists()


def test_array_example_gives_each_task_its_own_command_and_run_id(tmp_path: Path) -> None:
    probe = tmp_path / "probe.sh"
    probe.write_text('echo "cmd=$TRAIN_CMD"\n')
    env = {"PATH": PATH, "SLURM_ARRAY_JOB_ID": "4297", "SLURM_ARRAY_TASK_ID": "3", "SLURM_JOB_ID": "4300",
           "JOULEMETER_TEMPLATE": str(probe)}
    done = subprocess.run(["bash", str(ROOT / "deploy" / "slurm" / "joulemeter-array.sbatch")], env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "cmd=python -m trainer distill --lr 2e-4 --seed 0"


@pytest.mark.parametrize("script", sorted((ROOT / "deploy").rglob("*.sh")) + sorted((ROOT / "deploy").rglob("*.sbatch")),
                         ids=lambda p: p.name)
def test_shell_scripts_parse(script: Path) -> None:
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    if script.suffix == ".sbatch" or script.name in {"prolog.sh", "epilog.sh"}:
        assert os.access(script, os.X_OK), f"{script.name} is not executable"
        assert script.read_text().startswith("#!/bin/bash\n")


FAKE_SRUN = """#!/bin/bash
# Stands in for srun on a one-node allocation: records its arguments (one file per step, since steps run at
# once and a long line appended by two of them could interleave), then runs the task here.
printf '%q ' "$@" > "$(mktemp "$FAKE_SRUN_LOG/step.XXXXXX")"
while [[ $# -gt 0 && $1 == --* ]]; do shift; done
exec "$@"
"""


def test_with_srun_the_daemon_and_the_trainer_run_as_steps(tmp_path: Path) -> None:
    """The srun path's plumbing (functions shipped to the node's shell, the variables they need, stopping the
    daemon step), with a stand-in srun that runs each step's single task on this machine."""
    port = free_port()
    env = _job_env(tmp_path, port, seconds=0.5)
    fake = tmp_path / "bin" / "srun"
    fake.parent.mkdir()
    fake.write_text(FAKE_SRUN)
    fake.chmod(0o755)
    (tmp_path / "srun-steps").mkdir()
    env.update({"PATH": f"{fake.parent}:{env['PATH']}", "FAKE_SRUN_LOG": str(tmp_path / "srun-steps")})
    done = _run_template(env, tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "starting a daemon for this job" in out and "trained 4242" in out
    assert not _answers(port)
    steps = [f.read_text() for f in (tmp_path / "srun-steps").iterdir()]
    assert len(steps) == 3, steps
    # the daemon step runs in the background, so it may log after the wait step
    (daemon_step,) = [s for s in steps if "--job-name=joulemeter-daemon " in s]
    (wait_step,) = [s for s in steps if "--job-name=joulemeter-wait " in s]
    (train_step,) = [s for s in steps if s.startswith("bash -c ")]
    for step in (daemon_step, wait_step):
        assert step.startswith("--overlap --nodes=1 --ntasks-per-node=1 "), step
    assert daemon_step.rstrip().endswith("; jm_node_daemon'") and wait_step.rstrip().endswith("; jm_node_wait'")
    assert "train.py" in train_step
    sessions = _ledger(tmp_path, "SELECT stopped_at FROM sampler_sessions")
    assert len(sessions) == 1 and sessions[0][0] is not None, "the daemon step was not stopped cleanly"
