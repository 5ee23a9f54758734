"""The dashboard while a run is going (it follows without reloading) and when the daemon goes away."""

from __future__ import annotations

import time

from playwright.sync_api import Page, expect

from tests.dashboard_fixtures import browser, page, screenshot

__all__ = ["browser", "page"]  # fixtures used below


def points(page: Page) -> list[int]:
    return page.eval_on_selector_all(".device-chart .chart-canvas", "els => els.map(e => Number(e.dataset.points))")


def test_live_view_adds_points_and_phases_while_the_run_is_active(daemon_factory, page: Page) -> None:
    d = daemon_factory("--simulate-gpus", "1")
    with d.client() as c:
        t0 = time.time()
        assert c.post("/api/v1/runs", json={"name": "live distillation", "run_id": "live-1", "started_at": t0}).status_code == 201
        page.goto(f"{d.url}/#/runs")
        expect(page.locator("tr[data-run-id='live-1'] .status")).to_have_text("running")
        expect(page.locator(".live-note")).to_be_visible()
        # The list follows too: a run registered now shows up without a reload.
        assert c.post("/api/v1/runs", json={"name": "second job", "run_id": "live-2"}).status_code == 201
        expect(page.locator("tr[data-run-id='live-2']")).to_be_visible(timeout=10_000)

        page.goto(f"{d.url}/#/run/live-1")
        charts = page.locator(".charts")
        expect(charts).to_have_attribute("data-state", "ready")
        expect(charts).to_have_attribute("data-live", "true")
        page.evaluate("window.__sameDocument = true")
        before = points(page)
        assert before and all(n >= 0 for n in before)

        now = time.time()
        assert c.post("/api/v1/runs/live-1/phases", json=[
            {"name": "train_step", "start": now - 0.4, "end": now - 0.2, "step": 0},
            {"name": "train_step", "start": now - 0.2, "end": now, "step": 1}]).json() == {"accepted": 2}
        page.wait_for_function(
            "before => [...document.querySelectorAll('.device-chart .chart-canvas')]"
            ".every((e, i) => Number(e.dataset.points) >= before[i] + 5)", arg=before, timeout=15_000)
        expect(page.locator(".timeline")).to_have_attribute("data-phases", "2", timeout=10_000)
        assert page.evaluate("window.__sameDocument") is True  # grew in place: no reload
        screenshot(page, "run-live")

        c.post("/api/v1/runs/live-1/stop", json={"metrics": {"accuracy": 0.5}}).raise_for_status()
        expect(charts).to_have_attribute("data-live", "false", timeout=15_000)
        expect(page.locator("h1 .status")).to_have_text("completed")
        expect(page.locator(".stat[data-stat='energy'] .stat-label")).to_have_text("Energy")
        c.post("/api/v1/runs/live-2/stop", json={}).raise_for_status()


def test_no_gpu_node_and_unreachable_daemon_are_said_plainly(daemon_factory, page: Page) -> None:
    d = daemon_factory()
    with d.client() as c:
        health = c.get("/healthz").json()
    page.goto(f"{d.url}/#/runs")
    expect(page.locator("[data-state=empty] h2")).to_have_text("No runs yet")
    page.goto(f"{d.url}/#/node")
    expect(page.locator(".device-card").first).to_be_visible()
    no_gpu = page.locator("[data-state=empty] h2", has_text="No GPU on this node")
    if health["gpus"] == 0:  # a node with real GPUs lists them instead
        expect(no_gpu).to_be_visible()
        screenshot(page, "node-no-gpu")
    else:
        expect(no_gpu).to_have_count(0)

    d.stop()
    page.evaluate("location.hash = '#/runs'")
    error = page.locator("[data-state=error]")
    expect(error.locator("h2")).to_have_text("Daemon unreachable")
    expect(page.locator("#banner")).to_be_visible()
    expect(page.locator("#conn")).to_have_attribute("data-state", "down")
    screenshot(page, "daemon-unreachable")
