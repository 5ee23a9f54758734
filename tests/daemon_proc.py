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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DaemonProcess:
    def __init__(self, tmp: Path, *args: str, db: str | None = None, port: int | None = None,
                 trace: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.port = port or free_port()
        self.db = db or f"sqlite:///{tmp / 'ledger.db'}"
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = list(args)
        if trace is not None:
            path = tmp / f"trace-{self.port}.json"
            path.write_text(json.dumps(trace))
            self.args += ["--simulate-trace", str(path)]
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.log_path = tmp / f"daemon-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> DaemonProcess:
        cmd = [sys.executable, "-m", "telemetry_service", "serve", "--port", str(self.port), "--db", self.db,
               *self.args]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
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
        return httpx.Client(base_url=self.url, timeout=30.0)
