"""`report`, `export` and `?format=csv` against a real daemon whose simulated GPU draws a constant 200 W."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time

import pytest

from tests.daemon_proc import ROOT

POWER_W = 200.0
TRACE = {"gpus": [{"trace": {"steps": [[1.0, POWER_W]], "anchor": 0.0}, "counter": True}]}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished run: epoch [0, 2] holding train_step [0, 0.8] and [1, 1.8], then eval [2, 2.5] (from t0)."""
    from tests.daemon_proc import DaemonProcess

    tmp = tmp_path_factory.mktemp("export")
    (tmp / "grid.csv").write_text("unix_time,gco2e_per_kwh\n0,250\n")
    d = DaemonProcess(tmp, "--carbon-intensity-file", str(tmp / "grid.csv"), trace=TRACE).start()
    with d.client() as c:
        t0 = time.time() + 0.5
        assert c.post("/api/v1/runs", json={"name": "export", "run_id": "exp-1", "started_at": t0 - 0.2}).status_code == 201
        phases = [{"name": "epoch", "start": t0, "end": t0 + 2.0},
                  {"name": "train_step", "start": t0, "end": t0 + 0.8, "step": 0},
                  {"name": "train_step", "start": t0 + 1.0, "end": t0 + 1.8, "step": 1, "attrs": {"lr": 0.1}},
                  {"name": "eval", "start": t0 + 2.0, "end": t0 + 2.5}]
        time.sleep(max(0.0, t0 + 2.8 - time.time()))
        assert c.post("/api/v1/runs/exp-1/phases", json=phases).json() == {"accepted": 4}
        c.post("/api/v1/runs/exp-1/stop", json={"end": t0 + 2.6})
        energy = c.get("/api/v1/runs/exp-1/energy").json()
    yield d, energy
    d.stop()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "telemetry_service", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False, env={"PYTHONPATH": str(ROOT), "COLUMNS": "200", "PATH": ""})


def _gpu_j(energy: dict, name: str) -> float:
    row = next(p for p in energy["phases"] if p["name"] == name)
    return next(v for k, v in row["by_device"].items() if k.endswith("simgpu0"))


def test_the_gpu_figures_are_the_known_ones(run):
    _, energy = run
    for name, seconds in (("epoch", 2.0), ("train_step", 1.6), ("eval", 0.5)):
        # ~100 ms counter updates: a 0.8 s interval is located to a few per cent
        assert _gpu_j(energy, name) == pytest.approx(POWER_W * seconds, rel=0.05), name


def test_every_energy_figure_has_its_carbon(run):
    _, energy = run
    assert energy["carbon"]["configured"] is True and energy["carbon"]["source"].startswith("file ")
    for fig in (energy["total"], *energy["phases"]):
        assert fig["co2e_g"] == pytest.approx(fig["energy_j"] / 3.6e6 * 250)


def test_report_prints_the_nested_table(run):
    d, _ = run
    out = _cli("report", "exp-1", "--url", d.url)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    epoch = next(i for i, l in enumerate(lines) if " epoch " in l)
    assert "└ train_step" in lines[epoch + 1] and "simulated" in lines[epoch]
    assert any(" eval " in l and "└" not in l for l in lines)
    assert "total (node)" in out.stdout and "±" in lines[epoch] and "gCO2e" in lines[epoch]
    assert "carbon: file " in out.stdout


def test_report_reads_a_ledger_directly(run):
    d, _ = run
    out = _cli("report", "exp-1", "--db", d.db)
    assert out.returncode == 0, out.stderr
    assert "└ train_step" in out.stdout


def test_report_of_an_unknown_run_or_absent_daemon_says_so(run):
    d, _ = run
    out = _cli("report", "nope", "--url", d.url)
    assert out.returncode == 2 and "404" in out.stderr and "no run with id 'nope'" in out.stderr
    out = _cli("report", "exp-1", "--url", "http://127.0.0.1:9")
    assert out.returncode == 2 and out.stderr.startswith("error: cannot reach the daemon") and "Traceback" not in out.stderr


def test_export_energy_csv_matches_the_answer_and_the_api(run, tmp_path):
    d, energy = run
    out = tmp_path / "energy.csv"
    assert _cli("export", "exp-1", "--url", d.url, "--format", "csv", "--out", str(out)).returncode == 0
    rows = {r["name"]: r for r in csv.DictReader(io.StringIO(out.read_text()))}
    assert set(rows) == {"epoch", "train_step", "eval"}
    for p in energy["phases"]:
        assert float(rows[p["name"]]["energy_j"]) == pytest.approx(p["energy_j"])
        assert float(rows[p["name"]]["energy_j"]) >= _gpu_j(energy, p["name"])  # the GPU's, plus the CPU's
        assert float(rows[p["name"]]["co2e_g"]) == pytest.approx(p["co2e_g"])
    assert rows["train_step"]["count"] == "2" and rows["eval"]["simulated"] == "True"
    with d.client() as c:
        r = c.get("/api/v1/runs/exp-1/energy", params={"format": "csv"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        assert r.text == out.read_text()
        assert c.get("/api/v1/runs/exp-1/energy", params={"format": "xml"}).status_code == 422
        assert c.get("/api/v1/runs/nope/energy", params={"format": "csv"}).status_code == 404


def test_export_phases_both_ways(run):
    d, _ = run
    out = _cli("export", "exp-1", "--url", d.url, "--what", "phases", "--format", "jsonl")
    rows = [json.loads(l) for l in out.stdout.splitlines()]
    assert [r["name"] for r in rows].count("train_step") == 2
    step = next(r for r in rows if r["step"] == 1)
    assert step["attrs"] == {"lr": 0.1} and step["duration_s"] == pytest.approx(0.8)
    with d.client() as c:
        r = c.get("/api/v1/runs/exp-1/phases", params={"format": "csv"})
    table = list(csv.DictReader(io.StringIO(r.text)))
    assert len(table) == 4 and json.loads(next(t for t in table if t["step"] == "1")["attrs"]) == {"lr": 0.1}


def test_export_samples_integrate_to_the_known_power(run):
    d, energy = run
    out = _cli("export", "exp-1", "--url", d.url, "--what", "samples")
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    gpu = [r for r in rows if r["device"].endswith("simgpu0") and r["power_w"]]
    assert len(gpu) > 10 and all(float(r["power_w"]) == pytest.approx(POWER_W) for r in gpu)
    device = next(k for k in energy["total"]["by_device"] if k.endswith("simgpu0"))
    with d.client() as c:
        r = c.get("/api/v1/runs/exp-1/samples", params={"device": device, "format": "csv"})
    api_rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [x["t"] for x in api_rows] == [x["t"] for x in rows if x["device"] == device]
