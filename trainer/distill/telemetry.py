"""What the trainer needs from the telemetry client, as a protocol, and the factory that opens real runs."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

DEFAULT_URL = "http://127.0.0.1:8765"


class Telemetry(Protocol):
    """The subset of `trainer.client.TelemetryClient` the trainer uses."""

    @property
    def run_id(self) -> str | None: ...

    @property
    def url(self) -> str: ...

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: object) -> Any: ...

    def phase(self, name: str, step: int | None = None) -> AbstractContextManager[Any]: ...

    def begin(self, name: str, step: int | None = None) -> Any: ...

    def end(self, handle: Any) -> Any: ...

    def stop(self, status: str = "completed", metrics: dict[str, Any] | None = None) -> Any: ...

    def flush(self, timeout: float = 5.0) -> bool: ...

    def energy(self) -> dict[str, Any] | None: ...


# name, config (hyper-parameters), tags -> an unopened run
TelemetryFactory = Callable[[str, dict[str, Any], dict[str, Any]], Telemetry]


def daemon_url(url: str | None) -> str:
    return (url or os.environ.get("TELEMETRY_URL") or DEFAULT_URL).rstrip("/")


def client_factory(url: str | None) -> TelemetryFactory:
    """Runs registered with the daemon at `url` through `trainer.client.TelemetryClient`."""
    from trainer.client import TelemetryClient

    resolved = daemon_url(url)

    def make(name: str, config: dict[str, Any], tags: dict[str, Any]) -> Telemetry:
        return TelemetryClient(name=name, config=config, url=resolved, tags=tags)

    return make
