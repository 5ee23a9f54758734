"""What every benchmark shares: the machine and versions it ran on, JSON output, markdown tables, and the
daemon run either in this process (on a binding shared with other tools) or as a real subprocess."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import importlib.util
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"


# --- where and with what ---------------------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
                    "load_avg_1m_at_start": os.getloadavg()[0]},
        "versions": {"python": platform.python_version(), "joulemeter": version("joulemeter"),
                     "zeus": version("zeus"), "codecarbon": version("codecarbon"), "torch": version("torch"),
                     "numpy": version("numpy"), "sqlalchemy": version("sqlalchemy"), "fastapi": version("fastapi")},
        "code": {"telemetry_service": _origin("telemetry_service"), "trainer": _origin("trainer")},
        "command": " ".join([Path(sys.executable).relative_to(ROOT).as_posix() if sys.executable.startswith(str(ROOT))
                             else sys.executable, *sys.argv]),
    }


def _origin(module: str) -> str | None:
    """Where a package is imported from (a benchmark can be pointed at another checkout with PYTHONPATH)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).resolve().parents[1]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        rev = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=5).stdout.strip()
        if rev:
            return f"{path} @ {rev}"
    return str(path)


def write_json(name: str, data: dict[str, Any]) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps({"environment": environment(), **data}, indent=1, default=_jsonable))
    return path


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x)}")


# --- figures --------------------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> str:
    """A markdown table (readable in a terminal, pasteable into RESULTS.md)."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    if title:
        lines += [f"### {title}", ""]
    lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths)) + " |")
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells[1:]:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
    return "\n".join(lines)


def pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.{digits}f} %"


def us(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e6:.1f} µs"


def quantiles(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    return {"n": int(a.size), "median": float(np.median(a)), "p99": float(np.percentile(a, 99)),
            "mean": float(a.mean()), "max": float(a.max())}


# --- the daemon -------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"daemon at {url} did not answer within {timeout} s")


@contextlib.contextmanager
def in_process_daemon(sensors: Any, interval: float = 0.1, node: str = "bench",
                      db_dir: Path | None = None) -> Iterator[tuple[str, Any]]:
    """Our daemon on the given sensor set, served by uvicorn from a thread on a loopback port; yields (url, daemon)."""
    import uvicorn

    from telemetry_service.api.app import create_app
    from telemetry_service.config import Settings
    from telemetry_service.daemon import Daemon

    with tempfile.TemporaryDirectory(dir=db_dir) as tmp:
        port = free_port()
        settings = Settings(db=f"sqlite:///{tmp}/ledger.db", interval=interval, node=node, port=port,
                            log_level="warning")
        daemon = Daemon(settings, sensors=sensors)
        daemon.start()
        server = uvicorn.Server(uvicorn.Config(create_app(daemon), host="127.0.0.1", port=port, log_level="warning",
                                               access_log=False))
        thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url)
            yield url, daemon
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            daemon.close()


class DaemonProcess:
    """The real daemon (`python -m telemetry_service serve`) as a subprocess on a loopback port, stopped with SIGTERM."""

    def __init__(self, *args: str, tmp: Path, db: str | None = None, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = db or f"sqlite:///{tmp / f'ledger-{self.port}.db'}"
        self.log_path = tmp / f"daemon-{self.port}.log"
        self.cmd = [sys.executable, "-m", "telemetry_service", "serve", "--port", str(self.port), "--db", self.db,
                    "--log-level", "warning", *args]
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> DaemonProcess:
        self._log = open(self.log_path, "ab")
        # Not from the repository root: `-m` would put it first on sys.path, before PYTHONPATH, and a benchmark
        # pointed at another checkout (PYTHONPATH=...) would then run this one's daemon.
        self.proc = subprocess.Popen(self.cmd, cwd=self.log_path.parent, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        try:
            wait_healthy(self.url, proc=self.proc)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{self.log_path.read_text(errors='replace')}") from exc
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def client(self, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)
