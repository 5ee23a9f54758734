"""Fixtures and functions for the telemetry client's tests: clients with a private spool folder, quick batching."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.daemon_proc import DaemonProcess, free_port
from trainer.client import TelemetryClient


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def phases_of(url: str, run_id: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{url}/api/v1/runs/{run_id}/phases", params={"limit": 100_000}, timeout=30.0)
    answer.raise_for_status()
    assert not answer.json()["truncated"]
    return list(answer.json()["phases"])


def run_of(url: str, run_id: str) -> dict[str, Any] | None:
    answer = httpx.get(f"{url}/api/v1/runs/{run_id}", timeout=30.0)
    return answer.json() if answer.status_code == 200 else None


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def offline_url() -> str:
    """A loopback address where nothing listens (yet)."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def make_client(spool_dir: Path) -> Iterator[Callable[..., TelemetryClient]]:
    """TelemetryClients that batch quickly and spool into the test's own folder; stopped at the end if still running."""
    made: list[TelemetryClient] = []

    def make(name: str = "test-run", **kwargs: Any) -> TelemetryClient:
        kwargs.setdefault("spool_dir", spool_dir)
        kwargs.setdefault("flush_interval", 0.05)
        kwargs.setdefault("sync_cuda", False)
        client = TelemetryClient(name, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.stop(timeout=0.0)


@pytest.fixture(scope="session")
def shared_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """One daemon for the client tests that neither kill it nor need it absent (each uses runs of its own)."""
    daemon = DaemonProcess(tmp_path_factory.mktemp("shared-daemon")).start()
    yield daemon
    daemon.stop()
