"""The client's parts that need no daemon: environment discovery, payload coercion, the recorder, the spool."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.client_fixtures import make_client, offline_url, spool_dir  # noqa: F401 - fixtures
from trainer.client import TelemetryClient
from trainer.client.buffer import Recorder
from trainer.client.environment import daemon_url, device_order, job_run_id, job_tags, visible_devices
from trainer.client.payload import jsonable, marker_body
from trainer.client.spool import SpoolWriter, abandoned, claim, parse


def test_run_id_from_slurm_job_and_array_task() -> None:
    assert job_run_id({}) is None
    assert job_run_id({"SLURM_JOB_ID": "4242"}) == "4242"
    # An array task has its own SLURM_JOB_ID, but is named by the array job and the task index.
    assert job_run_id({"SLURM_JOB_ID": "4250", "SLURM_ARRAY_JOB_ID": "4242", "SLURM_ARRAY_TASK_ID": "7"}) == "4242_7"
    assert job_run_id({"TORCHELASTIC_RUN_ID": "none"}) is None
    assert job_run_id({"TORCHELASTIC_RUN_ID": "abc123"}) == "abc123"


def test_slurm_tags() -> None:
    env = {"SLURM_JOB_ID": "4250", "SLURM_ARRAY_JOB_ID": "4242", "SLURM_ARRAY_TASK_ID": "7", "SLURM_PROCID": "3",
           "SLURM_LOCALID": "1", "SLURM_NODELIST": "gpu[01-02]", "HOME": "/root"}
    assert job_tags(env) == {"slurm_job_id": "4250", "slurm_array_job_id": "4242", "slurm_array_task_id": "7",
                             "slurm_procid": "3", "slurm_localid": "1", "slurm_nodelist": "gpu[01-02]"}


def test_visible_devices_and_order() -> None:
    assert visible_devices({}) is None  # unset: every GPU
    assert visible_devices({"CUDA_VISIBLE_DEVICES": ""}) == []  # set but empty: none
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "2, 0"}) == ["2", "0"]
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "GPU-8f3a,GPU-11"}) == ["GPU-8f3a", "GPU-11"]
    assert device_order({"CUDA_DEVICE_ORDER": "pci_bus_id"}) == "PCI_BUS_ID"
    assert device_order({"CUDA_DEVICE_ORDER": "bogus"}) is None  # the daemon would refuse the registration
    assert daemon_url(None, {"TELEMETRY_URL": "http://node7:9000/"}) == "http://node7:9000"
    assert daemon_url("http://a:1", {"TELEMETRY_URL": "http://b:2"}) == "http://a:1"
    assert daemon_url(None, {}) == "http://127.0.0.1:8765"


def test_marker_body_coerces_what_the_daemon_would_refuse() -> None:
    body = marker_body(("fwd", 10.0, 11.0, np.int64(3), {"loss": float("nan"), "lr": np.float32(0.5), "x": [1]}))
    assert body == {"name": "fwd", "start": 10.0, "end": 11.0, "step": 3,
                    "attrs": {"loss": "nan", "lr": 0.5, "x": "[1]"}}
    assert json.dumps(body)
    assert marker_body(("  ", 1.0, 2.0, None, None)) is None
    assert marker_body(("a", math.inf, 2.0, None, None)) is None
    assert marker_body(("a", 2.0, 1.0, -1, None)) == {"name": "a", "start": 2.0, "end": 2.0, "attrs": {"step": -1}}


def test_config_made_json() -> None:
    from dataclasses import dataclass

    @dataclass
    class H:
        lr: float
        path: Path

    cfg = jsonable({"h": H(1e-4, Path("/data")), "n": np.int32(4), "t": (1, 2), "bad": float("inf")})
    assert cfg == {"h": {"lr": 1e-4, "path": "/data"}, "n": 4, "t": [1, 2], "bad": "inf"}


def test_recorder_phases_nest_and_timestamps_increase() -> None:
    rec = Recorder(sync_cuda=True)  # torch may be imported in this process, but CUDA is not initialised
    with rec.phase("epoch", step=0):
        with rec.phase("step", step=0, lr=0.1):
            rec.mark("tick")
        h = rec.begin("eval")
        rec.end(h, acc=0.5)
    with pytest.raises(KeyError), rec.phase("boom"):
        raise KeyError("x")

    @rec.phased("decorated", kind="f")
    def f(x: int) -> int:
        return x + 1

    @rec.phased
    def g() -> None:
        pass

    assert f(1) == 2
    g()
    markers = list(rec.queue)
    names = [m[0] for m in markers]
    assert names == ["tick", "step", "eval", "epoch", "boom", "decorated", "g"]
    by = {m[0]: m for m in markers}
    assert by["epoch"][1] < by["step"][1] < by["tick"][1] == by["tick"][2] < by["step"][2] < by["eval"][1]
    assert by["eval"][2] < by["epoch"][2]
    assert by["step"][3:] == (0, {"lr": 0.1})
    assert by["eval"][4] == {"acc": 0.5}
    assert by["boom"][4] == {"error": "KeyError"}
    assert by["decorated"][4] == {"kind": "f"}
    instants = [t for m in markers for t in m[1:3]]
    assert len(set(instants)) == len(instants) - 1  # only the instant marker repeats its own time


def test_recorder_wakes_the_sender_at_a_full_batch() -> None:
    rec = Recorder(max_batch=3)
    rec.mark("a")
    rec.mark("b")
    assert not rec.wake.is_set()
    with rec.phase("c"):
        pass
    assert rec.wake.is_set()


def test_cuda_sync_only_when_cuda_is_initialised(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    class FakeCuda:
        initialised = False

        def is_initialized(self) -> bool:
            return self.initialised

        def synchronize(self) -> None:
            calls.append(1)

    class FakeTorch:
        cuda = FakeCuda()

    monkeypatch.setitem(sys.modules, "torch", FakeTorch())
    rec = Recorder(sync_cuda=True)
    rec.mark("before")
    assert calls == []
    FakeTorch.cuda.initialised = True
    with rec.phase("after"):
        pass
    assert calls == [1, 1]  # before each boundary's timestamp
    Recorder(sync_cuda=False).mark("off")
    assert calls == [1, 1]


def test_spool_file_is_locked_while_written_and_survives_a_torn_line(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path, "run-1", "hostA", 123)
    header = {"url": "http://x:1", "host": "hostA", "registration": {"name": "n", "run_id": "run-1"}}
    writer.append({"kind": "phases", "phases": [{"name": "a", "start": 1.0, "end": 2.0}]}, header, 1)
    assert claim(writer.path) is None  # its writer is alive
    assert list(abandoned(tmp_path, "hostA", "http://x:1")) == []
    kept = writer.close()
    assert kept == writer.path
    with open(kept, "a") as f:
        f.write('{"kind": "phases", "pha')  # the writer died mid-line
    assert [c.path for c in abandoned(tmp_path, "hostB", "http://x:1")] == []  # another node's file
    assert [c.path for c in abandoned(tmp_path, "hostA", "http://y:2")] == []  # another daemon's file
    claimed = claim(kept)
    assert claimed is not None
    assert claim(kept) is None  # one replayer at a time
    contents = claimed.contents
    assert contents.markers == 1 and contents.bad_lines == 1 and contents.stop is None
    assert contents.header["registration"]["run_id"] == "run-1"
    claimed.remove()
    claimed.release()
    assert not kept.exists()


def test_spool_writer_removes_an_emptied_file(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path, "r", "h", 1)
    writer.append({"kind": "stop", "body": {"status": "completed", "end": 2.0}}, {"registration": {}})
    assert parse(writer.path.read_text().splitlines()).stop == {"status": "completed", "end": 2.0}
    writer.clear()
    assert writer.close() is None
    assert not writer.path.exists()


def test_offline_client_spools_and_markers_after_stop_go_nowhere(make_client: Callable[..., TelemetryClient],
                                                                 offline_url: str) -> None:
    tc = make_client(url=offline_url, config=[1, 2], register_timeout=1.0).start()
    assert tc.registration()["config"] == {"config": [1, 2]}  # the daemon takes a JSON object only
    tc.mark("a")
    assert tc.flush(timeout=0.5) is False  # spooled, not sent
    assert tc.stop() is False
    assert tc.stop(status="failed") is False and tc.status == "completed"  # the first stop counts
    tc.mark("late")
    assert len(tc.queue) == 0
    assert tc.spool_path is not None and tc.spool_path.exists()
    with pytest.raises(ValueError):
        TelemetryClient("x", run_id="has space")


def test_run_id_from_the_job_script_wins_over_slurm(monkeypatch: pytest.MonkeyPatch,
                                                    make_client: Callable[..., TelemetryClient], offline_url: str) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    monkeypatch.setenv("TELEMETRY_RUN_ID", "777_3")
    assert make_client(url=offline_url).run_id == "777_3"
    monkeypatch.delenv("TELEMETRY_RUN_ID")
    assert make_client(url=offline_url).run_id == "777"
    assert make_client(url=offline_url, run_id="given").run_id == "given"
