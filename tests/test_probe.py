"""The NVML probe: recording against the simulated binding, the analysis against hand-made traces with known
answers, bad trace files, the CLI and the device-check script end to end."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from telemetry_service.cli import main
from telemetry_service.probe import load as load_module
from telemetry_service.probe.analyse import (analyse, counter_edges, counter_lag, counter_timing, cumulative_j,
                                            monotone_counter_j)
from telemetry_service.probe.record import record
from telemetry_service.probe.simulated import PROFILES, SimulatedGpu, SimulatedNvml, StepTrace, simulated_binding
from telemetry_service.probe.trace_file import (FORMAT, GpuReads, GpuTrace, LoadSpan, Trace, TraceFileError,
                                                read_trace, to_json, write_trace)

ROOT = Path(__file__).resolve().parents[1]
START = 1.7e9


def watts(t: np.ndarray) -> np.ndarray:
    return 150.0 + 100.0 * np.sin(2 * np.pi * (t - START) / 3.0)


def joules(t: np.ndarray) -> np.ndarray:
    """Exact integral of `watts` from START."""
    return 150.0 * (t - START) - 100.0 * 3.0 / (2 * np.pi) * (np.cos(2 * np.pi * (t - START) / 3.0) - 1.0)


def hand_made(period: float, seconds: float = 20.0, poll: float = 0.001, jitter: float = 0.0, drop: float = 0.0,
              scale: float = 1.0, lag: float = 0.0, refresh: float | None = None, seed: int = 1) -> Trace:
    """A trace whose counter updates on a known grid (with Gaussian jitter and a known share of dropped
    updates), reporting `scale` x the energy up to `lag` before each update; power is a known sine."""
    rng = np.random.default_rng(seed)
    grid = START + 0.37 * period + period * np.arange(int(seconds / period))
    updates = np.sort(grid + rng.normal(0.0, jitter, len(grid)))
    dropped = rng.choice(np.arange(1, len(grid) - 1), size=int(round(drop * len(grid))), replace=False)
    updates = np.delete(updates, dropped)
    t0 = START + poll * np.arange(int(seconds / poll))
    read = t0 + 10e-6
    last = np.searchsorted(updates, read, side="right") - 1
    counter = np.floor(scale * joules(np.where(last >= 0, updates[np.maximum(last, 0)] - lag, START)) * 1000.0)
    stamp = read if refresh is None else START + refresh * np.floor((read - START) / refresh)
    reads = GpuReads(t0=t0, t1=t0 + 20e-6, counter_mj=counter, power_instant_mw=np.round(watts(stamp) * 1000.0),
                     power_instant_ts_us=np.round(stamp * 1e6),
                     power_usage_mw=np.round((joules(read) - joules(read - 1.0)) * 1000.0))
    gpu = GpuTrace(index=0, name="hand-made", uuid="GPU-test", architecture=9, reads=reads)
    spans = [LoadSpan(START, START + 5.0, "idle"), LoadSpan(START + 5.0, START + 5.05, "matmul"),
             LoadSpan(START + 5.05, START + seconds, "idle")]
    return Trace(host="test", driver="test", started_at=START, gpus=[gpu], load=spans)


@pytest.mark.parametrize("period", [0.01, 0.1, 0.2])
def test_period_of_a_clean_grid(period: float) -> None:
    c = analyse(hand_made(period)).gpus[0].counter
    assert c is not None and c.resolved
    assert c.period_s == pytest.approx(period, rel=1e-3)
    assert c.dropped == 0 and c.extra_edges == 0
    assert c.jitter_std_s < 0.0004 and c.location_uncertainty_s == pytest.approx(0.00051, abs=2e-5)


def test_jitter_is_measured_against_the_grid() -> None:
    c = analyse(hand_made(0.1, seconds=60.0, jitter=0.002)).gpus[0].counter
    assert c is not None
    assert c.period_s == pytest.approx(0.1, rel=1e-3)
    # 2 ms of jitter plus the 1 ms polls' own spread (1/sqrt(12) ms)
    assert c.jitter_std_s == pytest.approx(np.hypot(0.002, 0.001 / np.sqrt(12)), rel=0.15)
    assert 0.004 < c.jitter_max_s < 0.01


def test_dropped_updates_are_counted() -> None:
    trace = hand_made(0.1, seconds=60.0, drop=0.05)
    c = analyse(trace).gpus[0].counter
    assert c is not None
    assert c.period_s == pytest.approx(0.1, rel=1e-3)
    assert c.dropped == 30 and c.dropped_share == pytest.approx(30 / 599, rel=1e-6)
    assert c.jitter_std_s < 0.0004


def test_polling_slower_than_the_counter_is_flagged() -> None:
    report = analyse(hand_made(0.01, poll=0.02)).gpus[0]
    assert report.counter is not None and not report.counter.resolved
    assert any("too coarse" in n for n in report.notes)


def test_edges_bracket_each_update() -> None:
    t0 = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    edges = counter_edges(t0, t0 + 0.1, np.array([5.0, 5.0, 7.0, np.nan, 9.0]))
    assert edges.lo.tolist() == [1.0, 2.0] and edges.hi.tolist() == [2.1, 4.1] and edges.after.tolist() == [2, 4]
    assert counter_timing(edges) is None


@pytest.mark.parametrize("scale", [1.0, 1.05])
def test_counter_against_integrated_power(scale: float) -> None:
    gpu = analyse(hand_made(0.1, scale=scale)).gpus[0]
    whole, *spans = gpu.energy
    assert whole.label == "whole trace" and whole.ratio == pytest.approx(scale, rel=2e-4)
    assert whole.integral_j == pytest.approx(joules(np.array(whole.end)) - joules(np.array(whole.start)), rel=1e-5)
    assert [s.kind for s in spans] == ["idle", "matmul", "idle"]
    assert all(s.ratio == pytest.approx(scale, rel=2e-3) for s in spans)
    burst = spans[1]
    assert burst.start <= START + 5.0 and burst.end >= START + 5.05 and burst.end - burst.start < 0.25
    assert gpu.counter_lag_s == pytest.approx(0.0, abs=0.0015)


def test_counter_lag_is_found() -> None:
    assert analyse(hand_made(0.1, lag=0.02)).gpus[0].counter_lag_s == pytest.approx(0.02, abs=0.0015)


def test_counter_lag_needs_power_that_varies() -> None:
    r = hand_made(0.1).gpus[0].reads
    edges = counter_edges(r.t0, r.t1, r.counter_mj)  # type: ignore[arg-type]
    t = r.t0[::10]
    steady = np.full(len(t), 100.0)
    counter_j = 100.0 * (r.t0 - START)
    assert counter_lag(edges, counter_j, t, cumulative_j(t, steady), 0.1) is None
    assert monotone_counter_j(np.array([1000.0, np.nan, 3000.0, 500.0, 1500.0])).tolist() == [0, 0, 2, 2, 3]


def test_power_fields() -> None:
    gpu = analyse(hand_made(0.1, refresh=0.02)).gpus[0]
    assert gpu.instant is not None and not gpu.instant.tracks_reads and gpu.instant.unix_clock
    assert gpu.instant.refresh_period_s == pytest.approx(0.02, rel=1e-3)
    assert gpu.instant.age_s == pytest.approx(0.01, abs=0.001)
    assert gpu.usage is not None and gpu.usage.best_window_s == 1.0 and gpu.usage.verdict == "1 s moving average"
    trace = hand_made(0.1)
    r = trace.gpus[0].reads
    r.power_usage_mw = r.power_instant_mw
    usage = analyse(trace).gpus[0].usage
    assert usage is not None and usage.verdict == "instant" and analyse(trace).gpus[0].instant.tracks_reads  # type: ignore[union-attr]


def test_recorder_on_the_simulated_binding(tmp_path: Path) -> None:
    trace = record(simulated_binding(1), 2.0, 0.001, "simulated")
    assert trace.host == "simulated" and trace.driver == "simulated" and len(trace.gpus) == 1
    gpu = trace.gpus[0]
    assert "simulated" in gpu.name.lower() and gpu.architecture is not None
    r = gpu.reads
    n = len(r.t0)
    assert 1000 < n <= 2001
    for series in (r.t1, r.counter_mj, r.power_instant_mw, r.power_instant_ts_us, r.power_usage_mw):
        assert series is not None and len(series) == n
    assert np.all(np.diff(r.counter_mj) >= 0) and np.all(r.t1 >= r.t0)  # type: ignore[arg-type]
    assert [s.kind for s in trace.load] == ["idle"]
    assert {"nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetFieldValues"} <= set(trace.call_cost_us)
    assert trace.call_cost_us["nvmlDeviceGetTotalEnergyConsumption"].n == n
    timing = counter_timing(counter_edges(r.t0, r.t1, r.counter_mj))  # type: ignore[arg-type]
    assert timing is not None and timing.median_spacing_s == pytest.approx(0.1, rel=0.02)
    path = tmp_path / "t.json.gz"
    write_trace(trace, path)
    assert to_json(read_trace(path)) == to_json(trace)


def test_recorder_without_counter_or_instant_power() -> None:
    gpus = [SimulatedGpu(trace=StepTrace(steps=((1.0, 100.0),)), profile=PROFILES["no-counter"]),
            SimulatedGpu(trace=StepTrace(steps=((1.0, 100.0),)), profile=PROFILES["average-power"], index=1)]
    trace = record(SimulatedNvml(gpus), 0.3, 0.002, "simulated")
    first, second = (g.reads for g in trace.gpus)
    assert first.counter_mj is None and first.power_instant_mw is not None
    assert second.counter_mj is not None and second.power_instant_mw is None and second.power_instant_ts_us is None
    notes = [n for g in analyse(trace).gpus for n in g.notes]
    assert any("no energy counter" in n for n in notes) and any("no instant power" in n for n in notes)


def _write_gz(path: Path, text: str) -> Path:
    with gzip.open(path, "wt") as out:
        out.write(text)
    return path


def test_bad_trace_files_say_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = to_json(hand_made(0.1, seconds=1.0))
    bad_length = json.loads(json.dumps(good))
    bad_length["gpus"][0]["reads"]["counter_mj"].pop()
    bad_value = json.loads(json.dumps(good))
    bad_value["gpus"][0]["reads"]["power_usage_mw"][3] = "12"
    cases = {
        "missing.json.gz": (None, "no such file"),
        "plain.json.gz": ("plain", "not a readable gzip file"),
        "notjson.json.gz": ("gz", "not JSON"),
        "format.json.gz": ({**good, "format": "other/1"}, "format is 'other/1'"),
        "nogpus.json.gz": ({k: v for k, v in good.items() if k != "gpus"}, "missing 'gpus'"),
        "length.json.gz": (bad_length, "gpus[0].reads.counter_mj: 999 values where t0 has 1000"),
        "value.json.gz": (bad_value, "power_usage_mw: holds something that is not a number"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        if content == "plain":
            path.write_text("{}")
        elif content == "gz":
            _write_gz(path, "{not json")
        elif content is not None:
            _write_gz(path, json.dumps(content))
        with pytest.raises(TraceFileError, match=message.replace("[", r"\[").replace("]", r"\]")):
            read_trace(path)
    assert main(["probe-report", str(tmp_path / "plain.json.gz")]) == 2
    assert "not a readable gzip file" in capsys.readouterr().err


def test_cli_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "probe.json.gz"
    assert main(["probe", "--simulate-gpus", "1", "--seconds", "2", "--out", str(out)]) == 0
    with gzip.open(out, "rt") as src:
        doc = json.load(src)
    assert doc["format"] == FORMAT and doc["host"] == "simulated" and doc["load"][0]["kind"] == "idle"
    capsys.readouterr()
    assert main(["probe-report", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    gpu = report["gpus"][0]
    assert gpu["counter"]["median_spacing_s"] == pytest.approx(0.1, rel=0.02)
    assert gpu["energy"][0]["ratio"] == pytest.approx(1.0, rel=0.02)
    assert "nvmlDeviceGetTotalEnergyConsumption" in report["call_cost_us"]
    assert main(["probe-report", str(out)]) == 0
    assert "counter update period" in capsys.readouterr().out


def test_load_schedule_alternates_and_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load_module, "LEAD_IDLE_S", 0.02)
    monkeypatch.setattr(load_module, "GAP_S", 0.01)
    monkeypatch.setattr(load_module, "BURSTS_S", (0.005, 0.02))

    def burst(seconds: float) -> tuple[float, float]:
        start = time.time()
        time.sleep(seconds)
        return start, time.time()

    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    spans = load_module.run_schedule(burst, stop)
    assert [s.kind for s in spans[:5]] == ["idle", "matmul", "idle", "matmul", "idle"]
    assert spans[1].end - spans[1].start == pytest.approx(0.005, abs=0.004)
    assert all(a.end <= b.start + 1e-3 for a, b in zip(spans, spans[1:]))


def test_device_check_script_on_the_simulator(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path), "PROBE_SIMULATE": "1", "PROBE_SECONDS": "3",
           "PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(["bash", "scripts/device_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "== " in done.stdout and "probe-report" in done.stdout
    report = json.loads((tmp_path / "probe-report.json").read_text())
    assert report["host"] == "simulated"
    assert report["gpus"][0]["counter"]["median_spacing_s"] == pytest.approx(0.1, rel=0.02)


@pytest.mark.skipif(load_module.cuda_available(), reason="needs a machine where torch sees no CUDA")
def test_load_without_cuda_fails_with_its_reason() -> None:
    load = load_module.GpuLoad()
    try:
        with pytest.raises(load_module.LoadError, match="GPU load cannot run: .*"):
            load.start()
    finally:
        load.close()
