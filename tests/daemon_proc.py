"""Runs the daemon as a real process on loopback for tests, and stops it as a user would (SIGTERM)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class DaemonProcess:
    def __init__(self, tmp: Path, *args: str, db: str | None = None, port: int | None = None,
                 trace: dict[str, Any] | None = None, env: dict[str, str] | None = None, host: str | None = None,
                 token: str | None = None, launcher: list[str] | None = None) -> None:
        """`host` is passed as --host (and the daemon is reached there); `token` is sent with every request of
        `client()` and the readiness poll; `launcher` replaces `-m telemetry_service` in the command."""
        self.tmp = tmp
        self.host = host
        self.port = port or free_port(host or "127.0.0.1")
        self.db = db or f"sqlite:///{tmp / 'ledger.db'}"
        shown = host or "127.0.0.1"
        self.url = f"http://[{shown}]:{self.port}" if ":" in shown else f"http://{shown}:{self.port}"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.launcher = launcher or ["-m", "telemetry_service"]
        self.args = list(args) + (["--host", host] if host else [])
        if trace is not None:
            path = tmp / f"trace-{self.port}.json"
            path.write_text(json.dumps(trace))
            self.args += ["--simulate-trace", str(path)]
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.log_path = tmp / f"daemon-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> DaemonProcess:
        cmd = [sys.executable, *self.launcher, "serve", "--port", str(self.port), "--db", self.db, *self.args]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", headers=self.headers, timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"daemon did not answer within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=30.0)
