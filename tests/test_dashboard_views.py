"""The dashboard in headless Chromium against a real daemon holding two measured runs on simulated GPUs."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from playwright.sync_api import Page, Route, expect

from tests.daemon_proc import DaemonProcess
from tests.dashboard_fixtures import (HIGH_W, LOW_W, STEP_S, SeededLedger, browser, page, parse_quantity,
                                      parse_uncertainty, screenshot, seeded)

__all__ = ["browser", "page", "seeded"]  # fixtures used below


def api(seeded: SeededLedger, path: str) -> dict:
    r = httpx.get(f"{seeded.daemon.url}/api/v1/{path}", timeout=30)
    r.raise_for_status()
    return r.json()


def test_runs_page_lists_the_runs_with_their_energy(page: Page, seeded: SeededLedger) -> None:
    page.goto(f"{seeded.daemon.url}/#/runs")
    rows = page.locator(".runs-table tbody tr")
    expect(rows).to_have_count(2)
    runs = {r["id"]: r for r in api(seeded, "runs")}
    for run_id in ("teacher-1", "student-1"):
        row = page.locator(f"tr[data-run-id='{run_id}']")
        expect(row.locator(".run-link")).to_have_text(runs[run_id]["name"])
        expect(row.locator(".status")).to_have_text("completed")
        cell, totals = row.locator("td[data-energy-j]"), runs[run_id]["totals"]
        assert float(cell.get_attribute("data-energy-j")) == totals["energy_j"]
        # The figure to the decimal place of its uncertainty, which is printed beside it.
        assert float(cell.get_attribute("data-uncertainty")) == totals["uncertainty_j"]
        assert parse_quantity(cell.inner_text()) == pytest.approx(totals["energy_j"], rel=1e-3,
                                                                  abs=totals["uncertainty_j"] / 10)
        assert parse_uncertainty(cell.inner_text()) == pytest.approx(totals["uncertainty_j"], rel=0.05, abs=1e-3)
        assert "kWh" in cell.inner_text()
    screenshot(page, "runs")

    page.fill("input[name=name]", "student")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-run-id", "student-1")
    assert "name=student" in page.url
    page.fill("input[name=name]", "")
    page.fill("input[name=tag]", "role:teacher")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-run-id", "teacher-1")
    page.fill("input[name=tag]", "")
    page.select_option("select[name=status]", "failed")
    expect(page.locator("[data-state=empty] h2")).to_have_text("No runs match these filters")


def test_run_page_draws_phase_bands_and_shows_the_api_energy_per_phase(page: Page, seeded: SeededLedger) -> None:
    energy = api(seeded, "runs/teacher-1/energy")
    page.goto(f"{seeded.daemon.url}/#/run/teacher-1")
    expect(page.locator(".charts")).to_have_attribute("data-state", "ready")
    expect(page.locator("#phase-energy tbody tr[data-phase='epoch']")).to_be_visible()

    # The run's share by default; the node figure one click away (the rest of this test reads the node figure).
    section, toggle = page.locator("#phase-energy"), page.locator(".basis-toggle")
    expect(section).to_have_attribute("data-attribution", "run-share")
    assert energy["run_share"]["attribution"] == "run-share"
    for p in energy["phases"]:
        cell = page.locator(f"#phase-energy tbody tr[data-phase='{p['name']}'] td[data-field='energy_j']")
        assert float(cell.get_attribute("data-value")) == pytest.approx(p["run_share_j"])
        assert parse_uncertainty(cell.inner_text()) == pytest.approx(p["run_share_uncertainty_j"], rel=0.05, abs=1e-3)
    shown = page.locator("td[data-field='total_energy_j']")
    assert float(shown.get_attribute("data-value")) == pytest.approx(energy["run_share"]["energy_j"])
    assert parse_uncertainty(shown.inner_text()) == pytest.approx(energy["run_share"]["uncertainty_j"], rel=0.05,
                                                                  abs=1e-3)
    expect(page.locator(".stat[data-stat='energy'] .stat-value")).to_have_text(shown.inner_text())
    expect(page.locator(".stat[data-stat='energy'] .stat-sub .badge")).to_have_text(
        "complete" if energy["total"]["complete"] else "incomplete")
    toggle.click()
    expect(section).to_have_attribute("data-attribution", "node")
    expect(toggle).to_have_text("Show the run's share")

    # One chart per device the run owns (2 GPUs, the CPU), each with the innermost phases as bands behind the
    # power: two "low" and two "high" intervals; the enclosing epoch has a lane in the timeline, not a band.
    gpu0, gpu1 = f"{seeded.node}/simgpu0", f"{seeded.node}/simgpu1"
    charts = page.locator(".device-chart")
    expect(charts).to_have_count(3)
    for did in (gpu0, gpu1):
        chart = page.locator(f".device-chart[data-device='{did}']")
        expect(chart).to_have_attribute("data-source", "simulated")
        expect(chart.locator(".badge-simulated")).to_have_text("SIMULATED")
        canvas = chart.locator(".chart-canvas")
        expect(canvas).to_have_attribute("data-bands", "4")
        assert int(canvas.get_attribute("data-points")) > 10
        assert chart.locator("canvas").count() >= 1
    timeline = page.locator(".timeline")
    expect(timeline).to_have_attribute("data-phases", "5")
    expect(timeline).to_have_attribute("data-lanes", "3")
    expect(page.locator(".phase-legend .chip")).to_have_count(3)
    expect(page.locator("[data-simulated]").first).to_be_visible()

    # Provenance: counter on the GPU that has one, integrated power on the one without, estimate/measured CPU.
    prov = page.locator(".provenance-table")
    expect(prov.locator(f"tr[data-device='{gpu0}']")).to_have_attribute("data-method", "counter")
    expect(prov.locator(f"tr[data-device='{gpu1}']")).to_have_attribute("data-method", "integrated")
    expect(prov.locator(f"tr[data-device='{gpu1}'] .badge-simulated")).to_be_visible()
    for d in energy["devices"]:
        row = prov.locator(f"tr[data-device='{d['id']}']")
        expect(row).to_have_attribute("data-simulated", "true" if d["simulated"] else "false")
        cell = row.locator("td[data-field='energy_j']")
        assert float(cell.get_attribute("data-uncertainty")) == d["uncertainty_j"]
        assert "±" in cell.inner_text()
        tq = row.locator("td[data-field='timing_quality']")
        expect(tq).to_have_text("—" if d["timing_quality"] is None else f"{100 * d['timing_quality']:.0f} %")
        expect(row.locator("td[data-field='resolution_s']")).to_contain_text("ms")
        expect(row.locator("td[data-field='complete']")).to_have_text("complete" if d["complete"] else "incomplete")
        expect(row.locator("td[data-field='holes']")).to_have_text(str(len(d["holes"])))

    # Known answers first (the markers sent and the square wave played), then the page against the API. The
    # energy's accuracy is the daemon's own tests' business; here the 100 W and 300 W halves must show apart.
    by_name = {p["name"]: p for p in energy["phases"]}
    assert {n: (p["count"], p["duration_s"]) for n, p in by_name.items()} == {
        "epoch": (1, pytest.approx(4 * STEP_S)), "low": (2, pytest.approx(2 * STEP_S)), "high": (2, pytest.approx(2 * STEP_S))}
    for did in (gpu0, gpu1):
        assert by_name["high"]["by_device"][did] > 2 * by_name["low"]["by_device"][did] > 0
        assert by_name["epoch"]["by_device"][did] == pytest.approx(2 * STEP_S * (LOW_W + HIGH_W), rel=0.1)
    total = energy["total"]["energy_j"]
    for p in energy["phases"]:
        row = page.locator(f"#phase-energy tbody tr[data-phase='{p['name']}']")
        value = {f: row.locator(f"td[data-field='{f}']") for f in ("count", "duration_s", "energy_j", "avg_power_w", "share", "method")}
        assert int(value["count"].get_attribute("data-value")) == p["count"]
        assert float(value["duration_s"].get_attribute("data-value")) == p["duration_s"]
        assert float(value["energy_j"].get_attribute("data-value")) == p["energy_j"]
        assert float(value["avg_power_w"].get_attribute("data-value")) == p["avg_power_w"]
        assert float(value["share"].get_attribute("data-value")) == pytest.approx(p["energy_j"] / total)
        assert value["method"].get_attribute("data-value") == p["method"]
        u = p["uncertainty_j"]
        assert float(value["energy_j"].get_attribute("data-uncertainty")) == u
        assert parse_quantity(value["energy_j"].inner_text()) == pytest.approx(p["energy_j"], rel=1e-3, abs=u / 10)
        assert parse_uncertainty(value["energy_j"].inner_text()) == pytest.approx(u, rel=0.05, abs=1e-3)
        # Provenance: timing quality where a counter times the boundaries, SIMULATED GPUs behind every row here.
        expect(value["method"].locator(".timing")).to_have_text(f"timing {100 * p['timing_quality']:.0f} %")
        expect(value["method"].locator(".badge-simulated")).to_have_text("simulated")
        less = u / p["energy_j"] > 0.05
        expect(row).to_have_attribute("data-less-certain", "true" if less else "false")
        assert parse_quantity(value["avg_power_w"].inner_text()) == pytest.approx(p["avg_power_w"], rel=1e-3)
        assert value["share"].inner_text().strip() == f"{100 * p['energy_j'] / total:.1f} %"
    shown_total = page.locator("td[data-field='total_energy_j']")
    assert float(shown_total.get_attribute("data-value")) == total
    expect(page.locator(".stat[data-stat='energy'] .stat-value")).to_have_text(shown_total.inner_text())
    expect(page.locator(".metric[data-metric='accuracy'] .metric-v")).to_have_text("0.913")
    screenshot(page, "run")


def test_a_less_certain_figure_is_marked_and_says_why(page: Page, seeded: SeededLedger) -> None:
    """The answer as a run with a poorly timed, partly extrapolated phase and a hole would give it (the
    simulated devices time every boundary): the page marks that row and says why, and only that row."""
    gpu0 = f"{seeded.node}/simgpu0"

    def degraded(route: Route) -> None:
        response = route.fetch()
        answer = response.json()
        answer["run_share"] = None  # the node figure, with its uncertainty, is shown first
        for p in answer["phases"]:
            p["run_share_j"] = None
            p["uncertainty_j"] = 0.01 * p["energy_j"]
        low = next(p for p in answer["phases"] if p["name"] == "low")
        low.update(uncertainty_j=0.2 * low["energy_j"], uncertainty_by_device={gpu0: 0.2 * low["energy_j"]},
                   timing_quality=0.25, extrapolated_j=0.05 * low["energy_j"], complete=False, short=True)
        answer["total"]["complete"] = False
        dev = next(d for d in answer["devices"] if d["id"] == gpu0)
        dev.update(complete=False, holes=[{"start": low["duration_s"], "end": low["duration_s"] + 0.1}] * 2)
        route.fulfill(response=response, body=json.dumps(answer))

    page.route("**/api/v1/runs/teacher-1/energy", degraded)
    page.goto(f"{seeded.daemon.url}/#/run/teacher-1")
    low = page.locator("#phase-energy tbody tr[data-phase='low']")
    expect(low).to_have_attribute("data-less-certain", "true")
    expect(low).to_have_class("less-certain")
    why = low.get_attribute("title")
    assert why is not None and "20.0 % of the figure" in why
    for reason in ("simgpu0 (± ", "low timing quality: 25 %", "5.0 % extrapolated",
                   "shorter than the stored data resolves", "not fully covered"):
        assert reason in why, (reason, why)
    prov = low.locator("td[data-field='method'] .badge")
    assert prov.all_inner_texts()[:1] == ["less certain"]
    assert {"incomplete", "extrapolated", "short", "simulated"} <= set(prov.all_inner_texts())
    expect(low.locator(".timing")).to_have_text("timing 25 %")
    for name in ("epoch", "high"):
        row = page.locator(f"#phase-energy tbody tr[data-phase='{name}']")
        expect(row).to_have_attribute("data-less-certain", "false")
        assert "less certain" not in row.inner_text() and "extrapolated" not in row.inner_text()
    expect(page.locator(".stat[data-stat='energy'] .stat-sub .badge-warn")).to_have_text("incomplete")
    device = page.locator(f".provenance-table tr[data-device='{gpu0}']")
    expect(device.locator("td[data-field='complete']")).to_have_text("incomplete")
    expect(device.locator("td[data-field='holes']")).to_have_text("2")
    screenshot(page, "run-less-certain")


def test_zoom_asks_the_daemon_for_the_window_it_shows(page: Page, seeded: SeededLedger) -> None:
    page.goto(f"{seeded.daemon.url}/#/run/teacher-1")
    expect(page.locator(".charts")).to_have_attribute("data-state", "ready")
    gpu0 = f"{seeded.node}/simgpu0"
    canvas = page.locator(f".device-chart[data-device='{gpu0}'] .chart-canvas")
    whole = int(canvas.get_attribute("data-points"))
    box = page.locator(f".device-chart[data-device='{gpu0}'] .u-over").bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2

    def for_gpu0(response) -> bool:  # type: ignore[no-untyped-def]
        return "/samples" in response.url and f"device={gpu0.replace('/', '%2F')}" in response.url

    with page.expect_response(for_gpu0) as answer:
        page.mouse.move(box["x"] + box["width"] * 0.35, y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.6, y, steps=4)
        page.mouse.up()
    response = answer.value
    q = {k: v[0] for k, v in parse_qs(urlparse(response.url).query).items()}
    run = api(seeded, "runs/teacher-1")
    start, end = float(q["start"]), float(q["end"])
    assert run["started_at"] < start < end < run["ended_at"]
    assert (end - start) < 0.4 * (run["ended_at"] - run["started_at"])
    assert int(q["max_points"]) >= 300
    body = response.json()
    expect(page.locator(".charts")).to_have_attribute("data-zoomed", "true")
    expect(canvas).to_have_attribute("data-points", str(body["points"]))
    assert 0 < body["points"] < whole
    expect(page.locator(".range-text")).to_contain_text("Zoomed")
    screenshot(page, "run-zoomed")

    page.click("text=Reset zoom")
    expect(page.locator(".charts")).to_have_attribute("data-zoomed", "false")
    expect(canvas).to_have_attribute("data-points", str(whole))


def test_compare_view_shows_both_runs_metrics_and_the_scatter(page: Page, seeded: SeededLedger) -> None:
    page.goto(f"{seeded.daemon.url}/#/compare?ids=teacher-1,student-1")
    table = page.locator(".compare-table")
    expect(table.locator("th.run-col")).to_have_count(2)
    for run_id in ("teacher-1", "student-1"):
        run = api(seeded, f"runs/{run_id}")
        expect(table.locator(f"th.run-col[data-run-id='{run_id}']")).to_be_visible()
        col = 1 if run_id == "teacher-1" else 2
        for key, want in run["metrics"].items():
            expect(table.locator(f"tr[data-row='metric:{key}'] td").nth(col - 1)).to_have_text(str(want))
        energy_cell = table.locator("tr[data-row='energy'] td").nth(col - 1)
        assert float(energy_cell.get_attribute("data-value")) == run["totals"]["energy_j"]
        assert float(energy_cell.get_attribute("data-uncertainty")) == run["totals"]["uncertainty_j"]
        want_u = run["totals"]["uncertainty_j"]
        assert parse_uncertainty(energy_cell.inner_text()) == pytest.approx(want_u, rel=0.05, abs=1e-3)
        low = api(seeded, f"runs/{run_id}/energy")["phases"]
        low_cell = table.locator("tr[data-row='phase:low'] td").nth(col - 1)
        want = next(p["uncertainty_j"] for p in low if p["name"] == "low")
        assert parse_uncertainty(low_cell.inner_text()) == pytest.approx(want, rel=0.05, abs=1e-3)
    expect(page.locator(".scatter .pt")).to_have_count(2)
    expect(page.locator(".metric-select")).to_have_value("accuracy")
    page.select_option(".metric-select", "f1")
    assert "metric=f1" in page.url
    expect(page.locator(".scatter")).to_have_attribute("aria-label", "energy versus f1")
    screenshot(page, "compare")


def test_node_view_shows_the_simulated_gpus_as_simulated(page: Page, seeded: SeededLedger) -> None:
    page.goto(f"{seeded.daemon.url}/#/node")
    cards = page.locator(".device-card[data-kind='gpu']")
    expect(cards).to_have_count(2)
    for i in range(2):
        card = cards.nth(i)
        expect(card.locator(".badge-simulated")).to_have_text("SIMULATED")
        watts = parse_quantity(card.locator("[data-field='power']").inner_text())
        assert watts in (LOW_W, HIGH_W)
        expect(card.locator(".meter").first).to_contain_text("%")
        expect(card.locator("[data-field='temp']")).to_contain_text("°C")
    expect(page.locator(".callout-sim")).to_contain_text("simulated")
    expect(page.locator(".sensors-table tr[data-sensor='simulated']")).to_be_visible()
    expect(page.locator(".spark svg").first).to_be_visible(timeout=15_000)
    screenshot(page, "node")


def test_unknown_run_says_not_found(page: Page, seeded: SeededLedger) -> None:
    page.goto(f"{seeded.daemon.url}/#/run/no-such-run")
    state = page.locator("[data-state=error]")
    expect(state.locator("h2")).to_have_text("Run not found")
    expect(state).to_contain_text("no-such-run")
    expect(state.locator("a[href='#/runs']")).to_be_visible()
    screenshot(page, "run-not-found")

    page.goto(f"{seeded.daemon.url}/#/compare?ids=teacher-1,no-such-run")
    expect(page.locator(".callout-warn[role=alert]")).to_contain_text("no-such-run")
    expect(page.locator(".compare-table th.run-col")).to_have_count(1)


def test_a_guarded_daemon_asks_for_its_token_once_and_gets_it_from_then_on(page: Page, tmp_path) -> None:
    token = "s3cret-dashboard-token"
    daemon = DaemonProcess(tmp_path, "--token", token, host="127.0.0.2", token=token).start()
    try:
        with daemon.client() as c:
            assert c.post("/api/v1/runs", json={"name": "guarded run", "run_id": "guarded"}).status_code == 201
        sent: list[str | None] = []
        page.on("request", lambda r: sent.append(r.headers.get("authorization")) if "/api/v1/" in r.url else None)
        page.goto(f"{daemon.url}/#/runs")
        dialog = page.locator("#token-dialog")
        expect(dialog).to_be_visible()
        page.fill("#token-input", token)
        page.click("#token-dialog button[value=save]")
        expect(page.locator(".runs-table tbody tr")).to_have_count(1)
        expect(page.locator(".runs-table")).to_contain_text("guarded run")
        assert page.evaluate("localStorage.getItem('joulemeter.token')") == token
        assert sent[0] is None and f"Bearer {token}" in sent
        screenshot(page, "runs-with-token")
    finally:
        daemon.stop()


def test_samples_fields_narrow_the_columns_without_changing_them(seeded: SeededLedger) -> None:
    """The charts ask only for power; what they get is what the full answer holds, bucketed the same way."""
    device = f"{seeded.node}/simgpu0"
    for max_points in (5, 2000):  # bucketed in the database, and raw
        full = api(seeded, f"runs/teacher-1/samples?device={device}&max_points={max_points}")
        narrow = api(seeded, f"runs/teacher-1/samples?device={device}&max_points={max_points}"
                             "&fields=power_w,power_min_w,power_max_w")
        columns = {"t", "power_w", "power_min_w", "power_max_w"}
        assert set(narrow) - set(full) == set() and columns <= set(narrow)
        assert not ({"energy_j", "util_pct", "temp_c"} & set(narrow))
        for c in columns:
            assert narrow[c] == full[c]
        assert narrow["points"] == full["points"] and narrow["stored_points"] == full["stored_points"]
    assert full["points"] > 5 and narrow["points"] == len(narrow["t"])
    bad = httpx.get(f"{seeded.daemon.url}/api/v1/runs/teacher-1/samples", params={"device": device, "fields": "power_w,volts"})
    assert bad.status_code == 422 and "volts" in bad.json()["detail"]


def test_listening_socket_names_tcp_so_responses_are_not_held_back() -> None:
    """asyncio turns Nagle off only on sockets created as IPPROTO_TCP; with it on, each response after the
    first on a kept-alive connection (every page's API calls) waited for a delayed ACK, about 40 ms."""
    import socket

    from telemetry_service.cli import _bind

    sock = _bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
