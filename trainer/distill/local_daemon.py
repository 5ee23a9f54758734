"""The demo's daemon: the one already answering at the URL, or one started here (and stopped again at the end)."""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from trainer.distill.errors import UsageError

START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class DaemonHandle:
    url: str
    started: bool  # by us, so ours to stop
    log_path: Path | None = None
    pid: int | None = None  # set when it is left running


def answers(url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _loopback_host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        local = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = False
    if parts.scheme != "http" or not local:
        raise UsageError(f"no telemetry daemon answers at {url}, and one can only be started here for a loopback "
                         "http:// address; start it there with `python -m telemetry_service serve`")
    return host, parts.port or 80


def ledger_url(folder: Path) -> str:
    """The ledger a daemon the demo starts writes to."""
    return f"sqlite:///{(folder / 'telemetry.db').resolve()}"


@contextlib.contextmanager
def ensure_daemon(url: str, folder: Path, simulate_gpus: int = 0, keep: bool = False) -> Iterator[DaemonHandle]:
    """Yields a daemon answering at `url`. If none does, starts `python -m telemetry_service serve` there with a
    ledger in `folder` (and `simulate_gpus` simulated GPUs), and stops it with SIGTERM on the way out, unless
    `keep` (it then runs on in its own session, so the dashboard stays up after the demo)."""
    if answers(url):
        yield DaemonHandle(url=url, started=False)
        return
    host, port = _loopback_host_port(url)
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / "daemon.log"
    cmd = [sys.executable, "-m", "telemetry_service", "serve", "--host", host, "--port", str(port),
           "--db", ledger_url(folder)]
    if simulate_gpus:
        cmd += ["--simulate-gpus", str(simulate_gpus)]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=keep)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not answers(url, timeout=1.0):
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
                raise RuntimeError(f"the telemetry daemon exited with {proc.returncode}: " + " | ".join(tail))
            if time.monotonic() > deadline:
                raise RuntimeError(f"the telemetry daemon did not answer at {url} within {START_TIMEOUT_S:.0f} s; "
                                   f"see {log_path}")
            time.sleep(0.2)
        yield DaemonHandle(url=url, started=True, log_path=log_path, pid=proc.pid if keep else None)
    finally:
        if proc.poll() is None and not keep:
            proc.send_signal(signal.SIGTERM)  # the daemon writes every sample it has read before it exits
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
