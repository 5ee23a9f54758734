"""Shared pieces of the distillation tests: a recording stand-in for the telemetry client (same methods as
`trainer.client.TelemetryClient`), tiny models and data, and a CLI runner."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FEATURE_PHASES = {"epoch", "train_step", "data_load", "teacher_forward", "student_forward", "loss", "backward",
                  "optimizer_step", "eval", "checkpoint"}


@dataclass
class Marker:
    name: str
    start: float
    end: float
    step: int | None
    depth: int


@dataclass
class RecordingTelemetry:
    """Keeps every phase in memory with its nesting depth; `energy()` answers None (no daemon)."""
    name: str
    config: dict[str, Any]
    tags: dict[str, Any]
    markers: list[Marker] = field(default_factory=list)
    entered: bool = False
    stopped: dict[str, Any] | None = None
    _open: list[tuple[str, float, int | None]] = field(default_factory=list)

    run_id: str | None = "rec-1"
    url: str = "http://recording.invalid"

    def __enter__(self) -> RecordingTelemetry:
        self.entered = True
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if self.stopped is None:
            self.stop(status="failed" if exc_type else "completed")

    def begin(self, name: str, step: int | None = None) -> tuple[str, float, int | None, int]:
        assert self.entered, "phases outside the run"
        handle = (name, time.time(), step, len(self._open))
        self._open.append(handle[:3])
        return handle

    def end(self, handle: tuple[str, float, int | None, int]) -> None:
        name, start, step, depth = handle
        assert self._open and self._open[-1][0] == name, f"phase {name} closed out of order"
        self._open.pop()
        self.markers.append(Marker(name, start, time.time(), step, depth))

    @contextlib.contextmanager
    def phase(self, name: str, step: int | None = None) -> Iterator[None]:
        h = self.begin(name, step)
        try:
            yield
        finally:
            self.end(h)

    def phased(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
            def inner(*a: Any, **k: Any) -> Any:
                with self.phase(name):
                    return fn(*a, **k)
            return inner
        return wrap

    def mark(self, name: str) -> None:
        t = time.time()
        self.markers.append(Marker(name, t, t, None, len(self._open)))

    def stop(self, status: str = "completed", metrics: dict[str, Any] | None = None) -> None:
        self.stopped = {"status": status, "metrics": dict(metrics or {})}

    def flush(self, timeout: float = 5.0) -> bool:
        return True

    def energy(self) -> dict[str, Any] | None:
        return None

    def names(self) -> set[str]:
        return {m.name for m in self.markers}

    def count(self, name: str) -> int:
        return sum(1 for m in self.markers if m.name == name)


@dataclass
class RecordingFactory:
    runs: list[RecordingTelemetry] = field(default_factory=list)

    def __call__(self, name: str, config: dict[str, Any], tags: dict[str, Any]) -> RecordingTelemetry:
        tc = RecordingTelemetry(name=name, config=config, tags=tags)
        self.runs.append(tc)
        return tc

    def by_role(self, role: str) -> RecordingTelemetry:
        return next(r for r in self.runs if r.tags.get("role") == role)
