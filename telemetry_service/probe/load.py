"""A GPU load of known shape while the probe polls: idle stretches and torch matmul bursts of set lengths.

It runs in a process of its own: in a thread, its Python loop would hold the GIL for up to the 5 ms switch
interval and stall the 1 ms polling it is there to be seen by.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from telemetry_service.probe.trace_file import LoadSpan

LEAD_IDLE_S = 2.0
BURSTS_S = (0.005, 0.02, 0.05, 0.2, 1.0)
GAP_S = 0.5  # several counter periods of idle between bursts, so each burst's energy stands apart
MATMUL_N = 4096  # ~0.2 ms per bf16 matmul on a recent GPU: fine enough steps to end a 5 ms burst on time
READY_TIMEOUT_S = 180.0


class LoadError(RuntimeError):
    """The load process could not start (no CUDA, torch missing, out of memory) or did not report back."""


class Waitable(Protocol):
    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...


def schedule() -> Iterator[tuple[str, float]]:
    """(kind, seconds) forever: a lead idle stretch, then each burst length followed by idle."""
    while True:
        yield "idle", LEAD_IDLE_S
        for seconds in BURSTS_S:
            yield "matmul", seconds
            yield "idle", GAP_S


def run_schedule(burst: Callable[[float], tuple[float, float]], stop: Waitable) -> list[LoadSpan]:
    """Runs the schedule until `stop` is set; `burst(seconds)` keeps the GPU busy and returns its (start, end)."""
    spans: list[LoadSpan] = []
    for kind, seconds in schedule():
        if stop.is_set():
            break
        if kind == "matmul":
            start, end = burst(seconds)
        else:
            start = time.time()
            stop.wait(seconds)
            end = time.time()
        spans.append(LoadSpan(start=start, end=end, kind=kind))
    return spans


def _torch_burst() -> Callable[[float], tuple[float, float]]:
    import torch

    a, b = (torch.randn(MATMUL_N, MATMUL_N, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    c = torch.empty_like(a)

    def burst(seconds: float) -> tuple[float, float]:
        # Synchronised at both ends, so the recorded span is when the GPU was busy, not when work was queued.
        torch.cuda.synchronize()
        start = time.time()
        while time.time() - start < seconds:
            torch.matmul(a, b, out=c)
            torch.cuda.synchronize()
        return start, time.time()

    burst(0.2)  # warm-up: kernels chosen and clocks raised before the schedule starts
    return burst


def _child(go: Any, stop: Any, results: Any) -> None:
    try:
        burst = _torch_burst()
    except Exception as exc:  # reported to the parent, which fails the probe with it
        results.put(f"{type(exc).__name__}: {exc}")
        return
    results.put("ready")
    go.wait()
    results.put([(s.start, s.end, s.kind) for s in run_schedule(burst, stop)])


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


class GpuLoad:
    """The load process: `start()` waits until it is warm, `go()` starts the schedule, `finish()` its spans."""

    def __init__(self) -> None:
        ctx = mp.get_context("spawn")  # CUDA cannot be used in a forked child
        self._go, self._stop, self._results = ctx.Event(), ctx.Event(), ctx.Queue()
        self._process = ctx.Process(target=_child, args=(self._go, self._stop, self._results), daemon=True)

    def _message(self, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return self._results.get(timeout=0.5)
            except queue.Empty:
                if not self._process.is_alive():
                    raise LoadError(f"the load process exited with status {self._process.exitcode}") from None
        raise LoadError(f"the load process did not answer within {timeout:g} s")

    def start(self) -> None:
        self._process.start()
        message = self._message(READY_TIMEOUT_S)
        if message != "ready":
            self._process.join(5)
            raise LoadError(f"GPU load cannot run: {message}")

    def go(self) -> None:
        self._go.set()

    def finish(self) -> list[LoadSpan]:
        self._stop.set()
        spans = self._message(30.0)
        self._process.join(10)
        return [LoadSpan(start=a, end=b, kind=k) for a, b, k in spans]

    def close(self) -> None:
        if self._process.is_alive():
            self._stop.set()
            self._go.set()
            self._process.join(10)
