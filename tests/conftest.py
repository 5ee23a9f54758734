from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_proc import DaemonProcess


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Starts real daemon processes on loopback; each is stopped with SIGTERM at the end of the test."""
    started: list[DaemonProcess] = []

    def make(*args: str, **kwargs: Any) -> DaemonProcess:
        d = DaemonProcess(tmp_path, *args, **kwargs).start()
        started.append(d)
        return d

    yield make
    for d in started:
        d.stop()
