"""Headless Chromium (Debian's package, driven by Playwright) against a daemon on loopback, for dashboard tests."""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.daemon_proc import ROOT, DaemonProcess

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = ROOT / "test-artifacts"
VIEWPORT = {"width": 1400, "height": 900}

# A square wave the simulated GPUs play: 0.5 s at 100 W, 0.5 s at 300 W, from the anchor on.
STEP_S = 0.5
LOW_W, HIGH_W = 100.0, 300.0


def launch(playwright: Any) -> Browser:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: install Debian's chromium package"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context per test; a JavaScript error on the page fails the test."""
    context = browser.new_context(viewport=VIEWPORT)
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def screenshot(pg: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    pg.screenshot(path=str(path), full_page=True)
    return path


def trace_spec(anchor: float, gpus: int = 2) -> dict[str, Any]:
    trace = {"steps": [[STEP_S, LOW_W], [STEP_S, HIGH_W]], "anchor": anchor}
    return {"gpus": [{"trace": trace, "counter": i == 0} for i in range(gpus)]}


QUANTITY = re.compile(r"\s*(-?[\d.,]+(?:e-?\d+)?)\s*(?:±\s*<?([\d.,]+)\s*)?([kMGTmµ]?)([JW])")
SCALE = {"": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "m": 1e-3, "µ": 1e-6}


def parse_quantity(text: str) -> float:
    """'1.234 kJ' -> 1234.0, '625.6 W' -> 625.6, '1.117 ± 0.047 kJ' -> 1117.0: reads back what the dashboard
    printed."""
    m = QUANTITY.match(text)
    assert m, f"not a quantity: {text!r}"
    return float(m.group(1).replace(",", "")) * SCALE[m.group(3)]


def parse_uncertainty(text: str) -> float:
    """'1.117 ± 0.047 kJ' -> 47.0: the uncertainty printed beside a figure, in the figure's unit."""
    m = QUANTITY.match(text)
    assert m and m.group(2), f"no uncertainty in: {text!r}"
    return float(m.group(2).replace(",", "")) * SCALE[m.group(3)]


@dataclass
class SeededLedger:
    daemon: DaemonProcess
    node: str
    anchor: float
    teacher: str = "teacher-1"
    student: str = "student-1"


def wait_until(t: float) -> None:
    time.sleep(max(0.0, t - time.time()))


def next_cycle(trace_anchor: float, after: float) -> float:
    """The first start of a low step of the (cyclic) trace at or after `after`."""
    period = 2 * STEP_S
    return trace_anchor + math.ceil((after - trace_anchor) / period) * period


def seed_two_runs(daemon: DaemonProcess, trace_anchor: float) -> SeededLedger:
    """A teacher run (an epoch holding two low/high cycles) and a student run (one cycle), both stopped with
    metrics, on simulated GPUs whose power is known exactly."""
    # The runs start once the daemon samples (its start-up time varies), on a cycle boundary of the trace.
    anchor = next_cycle(trace_anchor, time.time() + 0.5)
    with daemon.client() as c:
        node = c.get("/healthz").json()["node"]
        assert c.post("/api/v1/runs", json={"name": "bert-base teacher", "run_id": "teacher-1", "started_at": anchor - 0.2,
                                            "pid": os.getpid(),  # so it has a run share (this process, sleeping)
                                            "tags": {"model": "bert-base", "role": "teacher"}}).status_code == 201
        wait_until(anchor + 4 * STEP_S + 0.3)
        phases = [{"name": "epoch", "start": anchor, "end": anchor + 4 * STEP_S, "step": 0}]
        for k in range(2):
            base = anchor + 2 * k * STEP_S
            phases += [{"name": "low", "start": base, "end": base + STEP_S, "step": k},
                       {"name": "high", "start": base + STEP_S, "end": base + 2 * STEP_S, "step": k}]
        assert c.post("/api/v1/runs/teacher-1/phases", json=phases).json() == {"accepted": 5}
        c.post("/api/v1/runs/teacher-1/stop", json={"end": anchor + 4 * STEP_S + 0.2,
                                                     "metrics": {"accuracy": 0.913, "f1": 0.902}}).raise_for_status()

        s0 = anchor + 4 * STEP_S + 0.3
        assert c.post("/api/v1/runs", json={"name": "distilbert student", "run_id": "student-1", "started_at": s0,
                                            "tags": {"model": "distilbert", "role": "student"}}).status_code == 201
        a = anchor + 6 * STEP_S
        wait_until(a + 2 * STEP_S + 0.3)
        c.post("/api/v1/runs/student-1/phases", json=[
            {"name": "low", "start": a, "end": a + STEP_S, "step": 0},
            {"name": "high", "start": a + STEP_S, "end": a + 2 * STEP_S, "step": 0}]).raise_for_status()
        c.post("/api/v1/runs/student-1/stop", json={"end": a + 2 * STEP_S + 0.2,
                                                     "metrics": {"accuracy": 0.897, "f1": 0.884}}).raise_for_status()
    return SeededLedger(daemon=daemon, node=node, anchor=anchor)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeededLedger]:
    """One daemon with two measured runs, shared by the read-only tests of a module (the runs take real time)."""
    trace_anchor = float(math.ceil(time.time()))
    daemon = DaemonProcess(tmp_path_factory.mktemp("dashboard"), trace=trace_spec(trace_anchor)).start()
    try:
        yield seed_two_runs(daemon, trace_anchor)
    finally:
        daemon.stop()
