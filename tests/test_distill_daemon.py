"""With the real daemon as a process on loopback: the demo's daemon handling, and (through the real telemetry
client) every phase of a distillation arriving at the daemon under its name, with the run's own metrics."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from tests.daemon_proc import free_port
from tests.distill_fixtures import REQUIRED_PHASES, model_folders  # noqa: F401  (fixture)
from trainer.cli import build_parser
from trainer.distill import loop
from trainer.distill.local_daemon import answers, ensure_daemon
from trainer.distill.options import Options

def test_demo_starts_a_daemon_only_when_none_answers_and_stops_only_its_own(tmp_path: Path, daemon_factory) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert not answers(url)
    with ensure_daemon(url, tmp_path / "own") as handle:
        assert handle.started and answers(url)
        health = httpx.get(f"{url}/healthz", timeout=5).json()
        assert health["simulated_gpus"] == 0  # real sensors unless asked: on a CPU machine, the labelled estimate
        assert (tmp_path / "own" / "telemetry.db").exists()
    assert not answers(url)  # stopped on the way out

    running = daemon_factory()
    with ensure_daemon(running.url, tmp_path / "unused", simulate_gpus=1) as handle:
        assert not handle.started
    assert answers(running.url) and not (tmp_path / "unused" / "telemetry.db").exists()


def test_a_kept_daemon_runs_on_after_the_demo(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with ensure_daemon(url, tmp_path, keep=True) as handle:
        assert handle.started and handle.pid is not None
    try:
        assert answers(url)  # the dashboard stays up
    finally:
        os.kill(handle.pid, signal.SIGTERM)
        deadline = time.time() + 20
        while answers(url, timeout=0.5) and time.time() < deadline:
            time.sleep(0.2)
    assert not answers(url)


def test_demo_daemon_with_simulated_gpus(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with ensure_daemon(url, tmp_path, simulate_gpus=1) as handle:
        assert handle.started
        devices = httpx.get(f"{url}/api/v1/devices", timeout=5).json()
        assert [d["source"] for d in devices if d["kind"] == "gpu"] == ["simulated"]


def test_phases_and_metrics_arrive_at_the_daemon(model_folders, daemon_factory, tmp_path: Path,  # noqa: F811
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer.distill.commands import run_distill

    monkeypatch.setattr(loop, "MIN_INFERENCE_S", 0.0)
    daemon = daemon_factory()
    argv = ["distill", "--teacher-name", str(model_folders.teacher), "--student-name", str(model_folders.student),
            "--dataset", str(model_folders.csv), "--epochs", "2", "--batch-size", "16", "--grad-accum", "2",
            "--lr", "1e-3", "--feat-beta", "1", "--output-dir", str(tmp_path / "out"), "--cpu-threads", "1",
            "--telemetry-url", daemon.url, "--run-name", "phase-check"]
    opts = Options.from_args(build_parser().parse_args(argv))
    with open(tmp_path / "stdout.txt", "w") as out:
        console = Console(file=out, width=100)
        [outcome] = run_distill(opts, console=console)

    with daemon.client() as http:
        run = http.get(f"/api/v1/runs/{outcome.run_id}").json()
        assert run["name"] == "phase-check/distilled" and run["status"] == "completed"
        assert run["metrics"]["accuracy"] == pytest.approx(outcome.eval.accuracy)
        assert run["metrics"]["train_samples"] == 2 * 54 and run["tags"]["role"] == "distilled"
        assert run["config"]["kd"]["beta"] == 1.0
        phases = http.get(f"/api/v1/runs/{outcome.run_id}/phases").json()["phases"]
        names = {p["name"] for p in phases}
        assert REQUIRED_PHASES | {"inference"} <= names
        counts = {n: sum(1 for p in phases if p["name"] == n) for n in names}
        # 54 examples in batches of 16: 4 batches, 2 optimizer steps per epoch.
        assert counts["epoch"] == 2 and counts["optimizer_step"] == counts["train_step"] == 4
        assert counts["data_load"] == counts["teacher_forward"] == counts["backward"] == 8
        energy = http.get(f"/api/v1/runs/{outcome.run_id}/energy").json()
    rows = {r["name"]: r for r in energy["phases"]}
    assert rows["epoch"]["count"] == 2 and rows["epoch"]["method"] is not None
    assert outcome.energy is not None and {r["name"] for r in outcome.energy["phases"]} == set(rows)
    printed = (tmp_path / "stdout.txt").read_text()
    assert "teacher_forward" in printed and f"Dashboard: {daemon.url}/" in printed
