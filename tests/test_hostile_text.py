"""Text the ledger cannot store (lone surrogates, NUL) anywhere in a request, secrets in a config, and errors that
must not outlive their request: against a real daemon process, and the client's side of it."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.client_fixtures import make_client, offline_url, spool_dir  # noqa: F401 - fixtures
from tests.daemon_proc import DaemonProcess, free_port

NOW = time.time()
TABLES = ("runs", "run_members", "phases")
BAD_TEXT = {"surrogate": "\ud800", "surrogate escape": "caf\udce9", "NUL": "a\x00b"}


def _counts(path: Path) -> dict[str, Any]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY id").fetchall() for t in TABLES}


def _body(value: Any) -> bytes:
    # json.dumps escapes what UTF-8 cannot carry (\ud800), as a hostile client would send it.
    return json.dumps(value).encode("ascii")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonProcess, Path]]:
    d = DaemonProcess(tmp_path_factory.mktemp("hostile"), "--simulate-gpus", "1").start()
    with d.client() as c:
        assert c.post("/api/v1/runs", json={"name": "live", "run_id": "live", "tags": {"t": 1}}).status_code == 201
    yield d, Path(d.db.removeprefix("sqlite:///"))
    d.stop()


def _places(bad: str) -> list[tuple[str, Any, list[Any]]]:
    """(path, body, the JSON path the 422 must name) for every free-text field of every request body."""
    phase = {"name": "step", "start": NOW, "end": NOW + 0.001}
    run = "/api/v1/runs"
    return [
        (run, {"name": bad}, ["body", "name"]),
        (run, {"name": "x", "host": bad}, ["body", "host"]),
        (run, {"name": "x", "run_id": bad}, ["body", "run_id"]),
        (run, {"name": "x", "visible_devices": ["0", bad]}, ["body", "visible_devices", 1]),
        (run, {"name": "x", "tags": {"k": bad}}, ["body", "tags", "k"]),
        (run, {"name": "x", "tags": {bad: 1}}, ["body", "tags", None]),
        (run, {"name": "x", "config": {"a": {"b": [1, {"c": bad}]}}}, ["body", "config", "a", "b", 1, "c"]),
        (run, {"name": "x", "config": {"a": {bad: 1}}}, ["body", "config", "a", None]),
        (f"{run}/live/phases", [phase, {**phase, "name": bad}], ["body", 1, "name"]),
        (f"{run}/live/phases", [{**phase, "attrs": {"k": bad}}], ["body", 0, "attrs", "k"]),
        (f"{run}/live/phases", [{**phase, "attrs": {bad: 1}}], ["body", 0, "attrs", None]),
        (f"{run}/live/stop", {"metrics": {"acc": bad}}, ["body", "metrics", "acc"]),
        (f"{run}/live/stop", {"metrics": {bad: 0.5}}, ["body", "metrics", None]),
    ]


@pytest.mark.parametrize("kind", sorted(BAD_TEXT))
def test_unstorable_text_anywhere_is_refused_naming_its_field_and_stores_nothing(daemon, kind):
    d, db = daemon
    with d.client() as c:
        for path, body, loc in _places(BAD_TEXT[kind]):
            before = _counts(db)
            r = c.post(path, content=_body(body), headers={"content-type": "application/json"})
            assert r.status_code == 422, (path, body, r.text)
            named = [e["loc"] for e in r.json()["detail"]]
            # A key's place is named by the key itself, escaped so the answer can carry it.
            assert any(len(n) == len(loc) and all(w is None or w == g for w, g in zip(loc, n)) for n in named), \
                (body, named)
            assert _counts(db) == before, body
            # The same keep-alive connection answers the next request.
            assert c.get("/api/v1/runs/live").status_code == 200


def test_unstorable_text_in_the_path_or_query_is_refused(daemon):
    d, _ = daemon
    with d.client() as c:
        r = c.get("/api/v1/runs", params={"name": "a\x00b"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "name"]
        r = c.get("/api/v1/runs/a%00b")
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "run_id"]


@pytest.mark.parametrize("query", ["start=nan", "end=inf", "start=-Infinity"])
def test_non_finite_query_instants_are_refused(daemon, query):
    d, _ = daemon
    with d.client() as c:
        for path in ("/api/v1/runs/live/phases", "/api/v1/runs/live/samples?device=simgpu0&"):
            r = c.get(f"{path}{'&' if '?' in path and not path.endswith('&') else '' if '?' in path else '?'}{query}")
            assert r.status_code == 422 and "finite" in r.text, (path, r.text)


def test_a_refused_registration_retried_then_fixed_makes_one_run(daemon):
    d, db = daemon
    bad = {"name": "retried", "run_id": "retried-1", "tags": {"path": "/data/caf\udce9.bin"}}
    with d.client() as c:
        for _ in range(3):
            r = c.post("/api/v1/runs", content=_body(bad), headers={"content-type": "application/json"})
            assert r.status_code == 422
        good = {**bad, "tags": {"path": "/data/caf\\xe9.bin"}}
        assert c.post("/api/v1/runs", json=good).status_code == 201
        assert c.post("/api/v1/runs", json=good).status_code == 200
        listed = c.get("/api/v1/runs", params={"name": "retried"}).json()
    assert [r["id"] for r in listed] == ["retried-1"]
    assert [r[1] for r in _counts(db)["runs"]].count("retried-1") == 1


def test_text_an_older_daemon_stored_is_served_escaped(daemon):
    d, db = daemon
    with d.client() as c:
        assert c.post("/api/v1/runs", json={"name": "old", "run_id": "old-1"}).status_code == 201
    with sqlite3.connect(db, timeout=10) as conn:  # what the older daemon let in
        conn.execute("UPDATE runs SET tags = ? WHERE run_id = 'old-1'", ('{"k": "\\ud800", "\\udce9": 1}',))
    with d.client() as c:
        assert c.get("/api/v1/runs/old-1").json()["tags"] == {"k": "\\ud800", "\\udce9": 1}
        assert "old-1" in [r["id"] for r in c.get("/api/v1/runs").json()]


def test_secrets_in_a_config_are_never_stored(daemon):
    d, db = daemon
    config = {"hub_token": "hf_SECRET1", "HF_TOKEN": "hf_SECRET2", "optim": {"wandb_api_key": "SECRET3",
              "db-Password": "SECRET4"}, "client_secret": ["SECRET5"], "lr": 0.1, "push_to_hub_token": None,
              "include_tokens_per_second": True}
    with d.client() as c:
        registered = c.post("/api/v1/runs", json={"name": "secret", "run_id": "secret-1", "config": config}).json()
        run = c.get("/api/v1/runs/secret-1").json()
        listed = c.get("/api/v1/runs").text
    assert "config" not in registered  # a registration's answer does not echo the config, nor does the list
    assert '"config"' not in listed
    assert run["config"] == {"hub_token": "[redacted]", "HF_TOKEN": "[redacted]",
                             "optim": {"wandb_api_key": "[redacted]", "db-Password": "[redacted]"},
                             "client_secret": "[redacted]", "lr": 0.1, "push_to_hub_token": None,
                             "include_tokens_per_second": True}
    stored = repr(_counts(db)["runs"])
    assert "SECRET" not in stored and "SECRET" not in listed


def _local(response: httpx.Response) -> Any:
    return response.extensions["network_stream"].get_extra_info("client_addr")


def test_an_unexpected_error_is_a_500_that_keeps_the_connection(tmp_path, monkeypatch):
    import uvicorn

    from telemetry_service.api import context
    from telemetry_service.api.app import create_app
    from telemetry_service.config import Settings
    from telemetry_service.daemon import Daemon

    def broken(*_: Any) -> dict[str, Any]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(context, "run_energy", broken)
    port = free_port()
    daemon = Daemon(Settings(db=f"sqlite:///{tmp_path}/ledger.db", interval=0.2, node="n", port=port,
                             log_level="warning"))
    daemon.start()
    server = uvicorn.Server(uvicorn.Config(create_app(daemon), host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            deadline = time.time() + 20
            while time.time() < deadline and not server.started:
                time.sleep(0.05)
            assert c.post("/api/v1/runs", json={"name": "x", "run_id": "r"}).status_code == 201
            failed = c.get("/api/v1/runs/r/energy")
            assert failed.status_code == 500 and "internal error" in failed.json()["detail"]
            after = c.get("/api/v1/devices")
            assert after.status_code == 200
            # The same connection (the same local port) carried both: the server did not close it.
            assert _local(after) == _local(failed)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        daemon.close()


# --- the client's side --------------------------------------------------------------------------------------------
NON_UTF8 = os.fsdecode(b"/data/caf\xe9.bin")  # a file name that is not UTF-8, as Python hands it over
SHOWN = "/data/caf\\xe9.bin"


def test_a_non_utf8_file_name_and_secrets_in_a_config_through_the_client(daemon, make_client):
    d, _ = daemon
    tc = make_client(url=d.url, config={"data": NON_UTF8, NON_UTF8: 1, "HF_TOKEN": "hf_SECRET", "n\x00ul": "x"},
                     tags={"file": NON_UTF8}).start()
    tc.mark("load", path=NON_UTF8)
    tc.mark(NON_UTF8)
    assert tc.stop(metrics={"file": NON_UTF8}) is True
    with d.client() as c:
        run = c.get(f"/api/v1/runs/{tc.run_id}").json()
        listed = c.get("/api/v1/runs").text  # what the dashboard's runs list gets
        phases = c.get(f"/api/v1/runs/{tc.run_id}/phases").json()["phases"]
    assert run["config"] == {"data": SHOWN, SHOWN: 1, "HF_TOKEN": "[redacted]", "n\\x00ul": "x"}
    assert run["tags"]["file"] == SHOWN and run["metrics"] == {"file": SHOWN}
    assert {p["name"] for p in phases} == {"load", SHOWN} and phases[0]["attrs"] == {"path": SHOWN}
    assert "hf_SECRET" not in listed and tc.stats.unnamed == 0 and tc._sender is not None
    assert tc._sender.rejected == 0


def test_replay_sends_a_spool_with_a_non_utf8_config(daemon, make_client, offline_url, spool_dir):
    d, _ = daemon
    tc = make_client(url=offline_url, config={"data": NON_UTF8, "wandb_api_key": "SECRET"}, spool_after=0.0,
                     register_timeout=0.5).start()
    tc.mark(NON_UTF8)
    assert tc.stop(timeout=0.0) is False
    spooled = tc.spool_path
    assert spooled is not None and "SECRET" not in spooled.read_text()
    _replay(spooled, d.url)
    with d.client() as c:
        run = c.get(f"/api/v1/runs/{tc.run_id}").json()
        names = [p["name"] for p in c.get(f"/api/v1/runs/{tc.run_id}/phases").json()["phases"]]
    assert run["config"] == {"data": SHOWN, "wandb_api_key": "[redacted]"} and names == [SHOWN]


def test_replay_sends_a_spool_an_older_client_wrote_with_raw_text(daemon, tmp_path):
    d, _ = daemon
    registration = {"name": NON_UTF8, "run_id": "older-1", "started_at": NOW - 5, "host": "h",
                    "config": {"path": NON_UTF8, "hub_token": "hf_OLD"}, "tags": {NON_UTF8: "\ud800"}}
    lines = [{"kind": "run", "v": 1, "url": d.url, "host": "h", "registration": registration},
             {"kind": "phases", "phases": [{"name": NON_UTF8, "start": NOW - 4, "end": NOW - 3,
                                            "attrs": {"k": "a\x00b"}}]},
             {"kind": "stop", "body": {"status": "completed", "end": NOW - 1, "metrics": {"m": NON_UTF8}}}]
    spooled = tmp_path / "older-1.h.1.abcd.jsonl"
    spooled.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    _replay(spooled, d.url)
    with d.client() as c:
        run = c.get("/api/v1/runs/older-1").json()
        phase = c.get("/api/v1/runs/older-1/phases").json()["phases"][0]
    assert run["name"] == SHOWN and run["config"] == {"path": SHOWN, "hub_token": "[redacted]"}
    assert run["tags"] == {SHOWN: "\\ud800"} and run["metrics"] == {"m": SHOWN} and run["status"] == "completed"
    assert phase["name"] == SHOWN and phase["attrs"] == {"k": "a\\x00b"}


def _replay(path: Path, url: str) -> None:
    done = subprocess.run([sys.executable, "-m", "trainer.client", "replay", str(path), "--url", url],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and not path.exists()
