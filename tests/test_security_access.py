"""Access: loopback-only without a token, a bearer token on every route that holds data, CORS off by default,
and no secret in the daemon's output. Daemons bind loopback addresses only (127.0.0.2, ::1); the non-loopback
rule is exercised by asking for 0.0.0.0 and checking the daemon refuses before it binds anything."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from telemetry_service.api.auth import AccessError, is_loopback, needs_token, resolve_token
from telemetry_service.config import Settings
from tests.daemon_proc import ROOT, DaemonProcess

TOKEN = "tok-3f9c1e7a5b2d4c6e8f0a1b2c3d4e5f67"
NEAR_MISS = TOKEN[:-1] + "8"


def _serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "telemetry_service", "serve", "--port", "0", "--db", f"sqlite:///{tmp_path / 'l.db'}",
           *args]
    return subprocess.run(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("host,loopback", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("127.255.255.254", True), ("::1", True), ("[::1]", True),
    ("::ffff:127.0.0.1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("192.0.2.1", False), ("::ffff:10.0.0.1", False),
    ("fe80::1%lo", False), ("name.invalid", False),
])
def test_loopback_classification(host, loopback):
    assert is_loopback(host) is loopback


def test_which_requests_need_the_token():
    assert needs_token("POST", "/api/v1/runs", public_read=True)
    assert needs_token("GET", "/api/v1/runs", public_read=False)
    assert not needs_token("GET", "/api/v1/runs", public_read=True)
    assert needs_token("GET", "/metrics", public_read=False) and needs_token("GET", "/healthz", public_read=False)
    for path in ("/", "/static/app.js", "/docs", "/openapi.json"):
        assert not needs_token("GET", path, public_read=False)
    assert not needs_token("OPTIONS", "/api/v1/runs", public_read=False)


def test_token_sources_and_their_errors_never_echo_the_secret(tmp_path, monkeypatch):
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    f.chmod(0o600)
    assert resolve_token(None, f) == TOKEN
    assert resolve_token(TOKEN, None) == TOKEN
    for bad, fragment in [((TOKEN, f), "not both"), (("short-secret", None), "at least 16"),
                          (("has space " + TOKEN, None), "printable ASCII"), ((None, tmp_path / "missing"), "cannot read")]:
        with pytest.raises(AccessError, match=fragment) as info:
            resolve_token(*bad)
        assert TOKEN not in str(info.value) and "short-secret" not in str(info.value)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(AccessError, match="empty"):
        resolve_token(None, tmp_path / "empty")
    monkeypatch.setenv("TELEMETRY_TOKEN", TOKEN)
    settings = Settings()
    assert settings.token is not None and settings.token.get_secret_value() == TOKEN
    assert TOKEN not in repr(settings) and TOKEN not in str(settings.model_dump())


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_non_loopback_address_without_token_is_refused_before_binding(tmp_path, host):
    r = _serve(tmp_path, "--host", host)
    assert r.returncode == 2
    assert f"refusing to listen on {host}" in r.stderr and "token" in r.stderr
    assert not (tmp_path / "l.db").exists()  # nothing opened, nothing created


def test_bad_token_settings_refuse_to_start_without_printing_the_token(tmp_path):
    r = _serve(tmp_path, "--host", "0.0.0.0", env={"TELEMETRY_TOKEN": "sekrit-short"})
    assert r.returncode == 2 and "at least 16" in r.stderr
    assert "sekrit-short" not in r.stderr + r.stdout
    assert not (tmp_path / "l.db").exists()


def _fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def _every_operation(c: httpx.Client) -> list[tuple[str, str]]:
    spec = c.get("/openapi.json").json()
    return [(method.upper(), _fill(path)) for path, ops in spec["paths"].items() for method in ops]


def test_token_guards_every_route_that_holds_data(tmp_path):
    d = DaemonProcess(tmp_path, "--simulate-gpus", "1", "--token", TOKEN, "--log-level", "debug",
                      host="127.0.0.2", token=TOKEN).start()
    try:
        with httpx.Client(base_url=d.url, timeout=30.0) as anon, d.client() as c:
            operations = _every_operation(anon)  # the API's description is open
            assert len(operations) >= 12 and ("GET", "/healthz") in operations
            for method, path in operations:
                if path == "/healthz":  # liveness for probes without the token, nothing more
                    assert anon.get(path).json() == {"status": "ok"}
                    assert c.get(path).json()["sampler"]["ticks"] > 0
                    continue
                r = anon.request(method, path)
                assert r.status_code == 401, (method, path, r.status_code)
                assert "Authorization: Bearer" in r.json()["detail"]
                assert r.headers["www-authenticate"].startswith("Bearer")
                wrong = anon.request(method, path, headers={"Authorization": f"Bearer {NEAR_MISS}"})
                assert wrong.status_code == 401 and wrong.json()["detail"] == "wrong token"
                basic = anon.request(method, path, headers={"Authorization": f"Basic {TOKEN}"})
                assert basic.status_code == 401
            assert anon.get("/docs").status_code == 200
            assert c.get("/healthz").json()["status"] == "ok"
            assert c.get("/metrics").status_code == 200
            assert c.post("/api/v1/runs", json={"name": "guarded", "run_id": "g1"}).status_code == 201
            now = time.time()
            marker = [{"name": "step", "start": now - 0.1, "end": now}]
            assert anon.post("/api/v1/runs/g1/phases", json=marker).status_code == 401
            assert c.get("/api/v1/runs/g1/phases").json()["phases"] == []  # the refused write left nothing
            assert c.post("/api/v1/runs/g1/phases", json=marker).status_code == 202
            # CORS is off: a browser on another origin gets no permission to read the answer.
            r = c.get("/api/v1/runs", headers={"Origin": "https://evil.example"})
            assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
            pre = anon.options("/api/v1/runs", headers={"Origin": "https://evil.example",
                                                        "Access-Control-Request-Method": "POST"})
            assert "access-control-allow-origin" not in pre.headers
    finally:
        assert d.stop() == 0
    log = d.log()
    assert "token required for writes and reads" in log
    assert TOKEN[:-1] not in log  # neither the token nor the near miss that was sent


def test_token_file_public_read_and_a_cors_origin_on_ipv6_loopback(tmp_path):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("::1 is not configured")
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    f.chmod(0o600)
    origin = "https://dash.example"
    d = DaemonProcess(tmp_path, "--simulate-gpus", "1", "--public-read", host="::1",
                      env={"TELEMETRY_TOKEN_FILE": str(f), "TELEMETRY_CORS_ORIGIN": origin}).start()
    try:
        with httpx.Client(base_url=d.url, timeout=30.0) as anon:
            assert "sampler" in anon.get("/healthz").json()  # public reads: the details too
            assert anon.get("/api/v1/runs").status_code == 200
            assert anon.post("/api/v1/runs", json={"name": "x"}).status_code == 401
            ok = anon.post("/api/v1/runs", json={"name": "x", "run_id": "ipv6"}, headers={"Authorization": f"Bearer {TOKEN}"})
            assert ok.status_code == 201
            pre = anon.options("/api/v1/runs", headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                                        "Access-Control-Request-Headers": "authorization,content-type"})
            assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == origin
            other = anon.options("/api/v1/runs", headers={"Origin": "https://evil.example",
                                                          "Access-Control-Request-Method": "POST"})
            assert other.headers.get("access-control-allow-origin") != "https://evil.example"
            got = anon.get("/api/v1/runs/ipv6", headers={"Origin": origin})
            assert got.headers["access-control-allow-origin"] == origin
    finally:
        assert d.stop() == 0
    assert TOKEN not in d.log()
