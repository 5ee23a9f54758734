"""A run's share of a GPU it shares with other runs, by its processes' SM use: the math against hand-computed
answers, the simulated binding's per-process utilisation, and the NVML sensor's SM-seconds read through it."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pynvml
import pytest

from telemetry_service.gpu_share import growth, sm_share, steps
from telemetry_service.process_share import Cumulative
from telemetry_service.sensors.nvml import NvmlSensor
from telemetry_service.sensors.simulated import GpuProcess, SimulatedGpu, SimulatedNvml, StepTrace
from telemetry_service.sensors.simulated.binding import PROCESS_SAMPLE_US
from tests.daemon_proc import DaemonProcess


def _sm(*points: tuple[float, float]) -> Cumulative:
    return Cumulative.of([t for t, _ in points], [v for _, v in points])


# Two steps: in the first only the run uses the SMs (half of them), in the second only another process does.
RUN = _sm((0.0, 0.0), (1.0, 0.5), (2.0, 0.5), (3.0, 0.5))
OTHER = _sm((0.0, 0.0), (1.0, 0.0), (2.0, 0.5), (3.0, 0.5))


def _energy(*per_step_j: float) -> Cumulative:
    return Cumulative.of(np.arange(len(per_step_j) + 1.0), np.concatenate([[0.0], np.cumsum(per_step_j)]))


# --- the math -----------------------------------------------------------------------------------------------
def test_intervals_are_cut_into_steps_of_at_most_a_second() -> None:
    a, b = steps([0.0, 10.0, 5.0], [2.5, 11.0, 5.0])  # the empty interval adds nothing
    assert a.tolist() == [0.0, 1.0, 2.0, 10.0] and b.tolist() == [1.0, 2.0, 2.5, 11.0]


def test_growth_sums_series_on_their_own_instants() -> None:
    assert growth([RUN, OTHER], np.array([0.5, 1.0]), np.array([1.0, 2.0])).tolist() == [0.25, 0.5]


def test_a_constant_split_is_the_share_whatever_the_power() -> None:
    run = _sm((0.0, 0.0), (4.0, 2.8))  # 70 % of the SMs
    other = _sm((0.0, 0.0), (4.0, 1.2))  # 30 %
    share = sm_share([run], [run, other], _energy(100.0, 300.0, 50.0, 400.0), 20.0, [0.0], [4.0])
    assert share is not None
    assert (share.value, share.low, share.high) == pytest.approx((0.7, 0.7, 0.7))


def test_each_step_counts_by_the_active_energy_drawn_in_it() -> None:
    # Step 1 all the run's, step 2 all the other's: active energy 300 J and 100 J, so 300 / 400 is the run's;
    # the ratio of the summed SM-seconds (0.5) is the low end of the range.
    share = sm_share([RUN], [RUN, OTHER], _energy(300.0, 100.0), 0.0, [0.0], [2.0])
    assert share is not None
    assert (share.value, share.low, share.high) == pytest.approx((0.75, 0.5, 0.75))


def test_idle_draw_is_taken_off_each_step_before_weighting() -> None:
    # 120 J and 40 J over 20 W idle: 100 J and 20 J active, 100 / 120 the run's.
    share = sm_share([RUN], [RUN, OTHER], _energy(120.0, 40.0), 20.0, [0.0], [2.0])
    assert share is not None and share.value == pytest.approx(100.0 / 120.0)


def test_a_step_without_sm_use_follows_the_others_split() -> None:
    # The third step draws 1000 J with no process on the SMs: it changes nothing.
    share = sm_share([RUN], [RUN, OTHER], _energy(300.0, 100.0, 1000.0), 0.0, [0.0], [3.0])
    assert share is not None and share.value == pytest.approx(0.75)


def test_without_power_on_record_the_steps_count_alike() -> None:
    share = sm_share([RUN], [RUN, OTHER], Cumulative.of([], []), 0.0, [0.0], [2.0])
    assert share is not None and share.value == pytest.approx(0.5)


def test_more_than_all_is_clipped_and_no_sm_use_has_no_share() -> None:
    # The run's samples out of step with the others' can make its part look larger than the whole.
    share = sm_share([_sm((0.0, 0.0), (2.0, 1.0))], [_sm((0.0, 0.0), (2.0, 0.5))], _energy(300.0, 100.0), 0.0,
                     [0.0], [2.0])
    assert share is not None and share.value == 1.0
    idle = _sm((0.0, 0.0), (2.0, 0.0))
    assert sm_share([idle], [idle], _energy(300.0, 100.0), 0.0, [0.0], [2.0]) is None
    assert sm_share([], [], _energy(300.0, 100.0), 0.0, [0.0], [2.0]) is None


# --- the simulated binding and the NVML sensor ---------------------------------------------------------------
class _Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def time(self) -> float:
        return self.t


T0 = 1_800_000_000.0
HALF_BUSY = StepTrace(steps=((10.0, 350.0),))  # 350 W of a 700 W limit: the SMs busy half the time


def _binding(clock: _Clock, processes: tuple[GpuProcess, ...]) -> SimulatedNvml:
    nvml = SimulatedNvml([SimulatedGpu(trace=HALF_BUSY, driver_loaded_at=T0 - 100.0, processes=processes)],
                         now=clock.time)
    nvml.nvmlInit()
    return nvml


def test_process_utilisation_follows_pynvml_and_the_spec_shares() -> None:
    clock = _Clock(T0)
    plain = _binding(clock, ())
    h = plain.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_NotFound):  # no processes: no samples, as before processes were simulated
        plain.nvmlDeviceGetProcessUtilization(h, 0)
    assert plain.nvmlDeviceGetComputeRunningProcesses(h) == []

    nvml = _binding(clock, (GpuProcess(101, 0.7), GpuProcess(202, 0.3, end=T0 - 0.5)))
    since = int((T0 - 1.0) * 1e6)
    samples = nvml.nvmlDeviceGetProcessUtilization(h, since)
    assert all(isinstance(s, pynvml.c_nvmlProcessUtilizationSample_t) and s.timeStamp > since for s in samples)
    instants = 1_000_000 // PROCESS_SAMPLE_US
    assert [s.smUtil for s in samples if s.pid == 101] == [35] * instants
    assert [s.smUtil for s in samples if s.pid == 202] == [15] * (instants // 2)  # it ended half a second ago
    assert [p.pid for p in nvml.nvmlDeviceGetComputeRunningProcesses(h)] == [101]
    with pytest.raises(pynvml.NVMLError_NotFound):  # nothing newer than the newest sample seen
        nvml.nvmlDeviceGetProcessUtilization(h, max(s.timeStamp for s in samples))


def test_the_sensor_accumulates_each_process_sm_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock(T0)
    monkeypatch.setattr("telemetry_service.sensors.nvml.time", clock)
    sensor = NvmlSensor(_binding(clock, (GpuProcess(101, 0.7), GpuProcess(202, 0.3))), source="simulated",
                        track_counter=False)
    assert sensor.read()[0].process_sm_s == {101: 0.0, 202: 0.0}  # the first read is the baseline
    clock.t = T0 + 2.0
    # Two seconds with the SMs half busy: 0.7 of it is 0.7 SM-seconds, 0.3 of it 0.3.
    assert sensor.read()[0].process_sm_s == pytest.approx({101: 0.7, 202: 0.3})
    clock.t = T0 + 2.5  # between the slow reads: the last figures held
    assert sensor.read()[0].process_sm_s == pytest.approx({101: 0.7, 202: 0.3})


def test_a_gpu_without_per_process_utilisation_has_none(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock(T0)
    monkeypatch.setattr("telemetry_service.sensors.nvml.time", clock)
    nvml = _binding(clock, (GpuProcess(101, 0.7),))

    def unsupported(handle: object, since: int) -> list[object]:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    monkeypatch.setattr(nvml, "nvmlDeviceGetProcessUtilization", unsupported)
    reading = NvmlSensor(nvml, source="simulated", track_counter=False).read()[0]
    assert reading.process_sm_s is None and reading.processes == {101: 2**30}


# --- a real daemon --------------------------------------------------------------------------------------------
SPAN_S = 6.0


def _run(c: object, run_id: str, pid: int, t0: float) -> None:
    c.post("/api/v1/runs", json={"name": run_id, "run_id": run_id, "pid": pid,  # type: ignore[attr-defined]
                                 "started_at": t0}).raise_for_status()


def _finish(c: object, run_id: str, t0: float, t1: float) -> dict:
    c.post(f"/api/v1/runs/{run_id}/phases",  # type: ignore[attr-defined]
           json=[{"name": "work", "start": t0, "end": t1}]).raise_for_status()
    c.post(f"/api/v1/runs/{run_id}/stop", json={"end": t1}).raise_for_status()  # type: ignore[attr-defined]
    return c.get(f"/api/v1/runs/{run_id}/energy").json()  # type: ignore[attr-defined]


def _two_runs(daemon_factory: Callable[..., DaemonProcess], tmp_path: Path,
              shares: tuple[float, float] | None) -> tuple[dict, dict]:
    """Two runs over the same span, each one process on the one simulated GPU, using the given shares of its
    SMs (None: the GPU lists no processes)."""
    sleepers = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(2)]
    try:
        big, small = (p.pid for p in sleepers)
        # Idle seconds between busy ones, so the GPU's idle draw is seen.
        gpu: dict = {"trace": {"steps": [[1.0, 60.0], [2.0, 460.0]], "anchor": 0.0}, "counter": True}
        if shares is not None:
            gpu["processes"] = [{"pid": big, "sm_share": shares[0]}, {"pid": small, "sm_share": shares[1]}]
        d = daemon_factory(trace={"gpus": [gpu]}, env={"TELEMETRY_RAPL_ROOT": str(tmp_path / "no-rapl")})
        with d.client() as c:
            time.sleep(1.5)  # a first per-process reading of the GPU, so the runs' first seconds count
            t0 = time.time()
            _run(c, "big", big, t0)
            _run(c, "small", small, t0)
            time.sleep(SPAN_S + 1.0)
            t1 = t0 + SPAN_S
            return _finish(c, "big", t0, t1), _finish(c, "small", t0, t1)
    finally:
        for p in sleepers:
            p.kill()
            p.wait()


def test_two_runs_on_one_gpu_split_its_active_energy_by_sm_use(
        daemon_factory: Callable[..., DaemonProcess], tmp_path: Path) -> None:
    a, b = _two_runs(daemon_factory, tmp_path, (0.7, 0.3))
    dev = next(k for k in a["total"]["by_device"] if k.endswith("gpu0"))  # a simulated GPU is simgpuN
    assert a["shared_devices"][dev] == ["small"] and b["shared_devices"][dev] == ["big"]
    idle = a["run_share"]["idle_w"][dev]["power_w"]
    assert 0 < idle < 460.0
    active = a["total"]["by_device"][dev] - idle * SPAN_S
    assert active > 0
    mine, theirs = a["run_share"]["by_device"][dev], b["run_share"]["by_device"][dev]
    assert mine + theirs == pytest.approx(active, rel=0.02)
    assert mine / (mine + theirs) == pytest.approx(0.7, abs=0.03)
    for answer in (a, b):
        assert answer["run_share"]["methods"][dev] == "gpu-sm-share"
        assert answer["run_share"]["idle_policy"] == "excluded"
        assert not [n for n in answer["notes"] if n.get("device") == dev]
    assert a["run_share"]["gpu_sm_share"][dev] == pytest.approx(0.7, abs=0.03)
    # The phase spans the run: most of its share is the GPU's (the processes only sleep on the CPU).
    phase_a, phase_b = a["phases"][0]["run_share_j"], b["phases"][0]["run_share_j"]
    assert phase_a / (phase_a + phase_b) == pytest.approx(0.7, abs=0.05)


def test_a_shared_gpu_without_per_process_use_counts_whole_for_each_run_and_says_so(
        daemon_factory: Callable[..., DaemonProcess], tmp_path: Path) -> None:
    a, b = _two_runs(daemon_factory, tmp_path, None)
    dev = next(k for k in a["total"]["by_device"] if k.endswith("gpu0"))
    for answer in (a, b):
        assert answer["shared_devices"][dev]
        assert answer["run_share"]["by_device"][dev] == answer["total"]["by_device"][dev]
        assert answer["run_share"]["methods"][dev] == "whole" and dev not in answer["run_share"]["gpu_sm_share"]
        assert [n for n in answer["notes"] if n.get("device") == dev and "counted whole" in n["note"]]
