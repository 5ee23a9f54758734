"""The dashboard reads a distillation comparison right: phases nest by containment, a distilled student carries
its teacher's training, energy is set against the work done, and the pages hold together at 420 px."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from playwright.sync_api import Page, Route, expect

from tests.daemon_proc import DaemonProcess
from tests.dashboard_fixtures import browser, page, screenshot, trace_spec, wait_until

__all__ = ["browser", "page"]  # fixtures used below

RUN_S = 1.4
METRICS = {"train_samples": 64, "eval_samples": 32, "inference_passes": 2}
# Where each phase of the trainer's loop sits (what loop.py marks), as the page must nest it.
PARENT = {"epoch": "", "train_step": "epoch", "teacher_forward": "train_step", "student_forward": "train_step",
          "log": "train_step", "eval": "epoch", "checkpoint": "epoch", "inference": ""}


@dataclass
class Comparison:
    daemon: DaemonProcess
    ids: dict[str, str]


def loop_phases(a: float, role: str) -> list[dict]:
    """One epoch of two train steps (forward passes inside), an eval and a checkpoint, then the held-out
    inference; a log mark (an instant) in the first step, as the Hugging Face callback sends."""
    out = [{"name": "epoch", "start": a, "end": a + 1.0, "step": 0}]
    for k in range(2):
        s = a + 0.4 * k
        out.append({"name": "train_step", "start": s, "end": s + 0.4, "step": k})
        if role == "distilled":
            out.append({"name": "teacher_forward", "start": s + 0.02, "end": s + 0.12, "step": k})
        out.append({"name": "student_forward" if role != "teacher" else "teacher_forward",
                    "start": s + 0.14, "end": s + 0.3, "step": k})
    out += [{"name": "log", "start": a + 0.35, "end": a + 0.35, "step": 0},
            {"name": "eval", "start": a + 0.8, "end": a + 0.92, "step": 0},
            {"name": "checkpoint", "start": a + 0.92, "end": a + 1.0, "step": 0},
            {"name": "inference", "start": a + 1.0, "end": a + 1.3, "step": 0}]
    return out


@pytest.fixture(scope="module")
def comparison(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Comparison]:
    """Teacher, baseline and distilled runs of one comparison, tagged as `trainer distill` tags them."""
    daemon = DaemonProcess(tmp_path_factory.mktemp("compare"), trace=trace_spec(float(math.ceil(time.time())))).start()
    t0 = time.time() + 0.3
    wait_until(t0 + 3 * (RUN_S + 0.1) + 0.5)
    ids = {}
    try:
        with daemon.client() as c:
            for i, (role, acc) in enumerate((("teacher", 0.91), ("baseline", 0.86), ("distilled", 0.89))):
                a = t0 + i * (RUN_S + 0.1)
                run_id = ids[role] = f"cmp-{role}"
                assert c.post("/api/v1/runs", json={
                    "name": f"demo {role}", "run_id": run_id, "started_at": a - 0.05,
                    "tags": {"role": role, "comparison": "cmp-1", "method": "kd" if role == "distilled" else "ce"}},
                ).status_code == 201
                c.post(f"/api/v1/runs/{run_id}/phases", json=loop_phases(a, role)).raise_for_status()
                c.post(f"/api/v1/runs/{run_id}/stop", json={"end": a + RUN_S, "metrics": {"accuracy": acc, **METRICS}},
                       ).raise_for_status()
        yield Comparison(daemon, ids)
    finally:
        daemon.stop()


def api(cmp: Comparison, path: str) -> dict:
    r = httpx.get(f"{cmp.daemon.url}/api/v1/{path}", timeout=30)
    r.raise_for_status()
    return r.json()


def phase(energy: dict, name: str) -> dict:
    return next(p for p in energy["phases"] if p["name"] == name)


def test_energy_by_phase_nests_by_containment(page: Page, comparison: Comparison) -> None:
    page.goto(f"{comparison.daemon.url}/#/run/{comparison.ids['distilled']}")
    rows = page.locator("#phase-energy tbody tr[data-depth]")
    expect(rows).to_have_count(len(PARENT))
    got = page.eval_on_selector_all("#phase-energy tbody tr[data-depth]",
                                    "rs => rs.map(r => [r.dataset.phase, r.dataset.parent, Number(r.dataset.depth)])")
    assert {name: parent for name, parent, _ in got} == PARENT
    # Depth-first: each row's parent is the nearest row above it one level out.
    for i, (name, parent, depth) in enumerate(got):
        above = [n for n, _, d in got[:i] if d == depth - 1]
        assert (above[-1] if depth else "") == parent, (name, got)
    screenshot(page, "reads-right-phase-tree")


def test_kwh_and_energy_read_alike(page: Page, comparison: Comparison) -> None:
    page.goto(f"{comparison.daemon.url}/#/run/{comparison.ids['distilled']}")
    cells = page.locator("#phase-energy td[data-field='kwh']")
    expect(cells).to_have_count(len(PARENT))
    for text in cells.all_inner_texts():
        assert re.fullmatch(r"(\d(\.\d+)? × 10⁻[⁰¹²³⁴⁵⁶⁷⁸⁹]+|[\d.,]+) kWh", text.strip()), text
        assert "e-" not in text and "0.000" not in text


def test_compare_adds_the_teachers_training_and_divides_by_the_work(page: Page, comparison: Comparison) -> None:
    ids = comparison.ids
    # The teacher is not picked: the page finds it by the comparison tag.
    page.goto(f"{comparison.daemon.url}/#/compare?ids={ids['distilled']},{ids['baseline']}")
    teacher = api(comparison, f"runs/{ids['teacher']}/energy")
    distilled = api(comparison, f"runs/{ids['distilled']}/energy")
    teacher_train = phase(teacher, "epoch")["energy_j"]
    note = page.locator(f"li[data-teacher-of='{ids['distilled']}']")
    expect(note).to_have_attribute("data-teacher-id", ids["teacher"])
    box = page.locator("input[name=with-teacher]")
    expect(box).to_be_checked()
    cell = page.locator("tr[data-row='energy'] td").nth(0)
    own = distilled["total"]["energy_j"]
    assert float(cell.get_attribute("data-value")) == pytest.approx(own + teacher_train)
    assert float(cell.get_attribute("data-own")) == own
    per_sample = page.locator("tr[data-row='per-sample'] td").nth(0)
    want = (phase(distilled, "epoch")["energy_j"] + teacher_train) / METRICS["train_samples"]
    assert float(per_sample.get_attribute("data-value")) == pytest.approx(want)
    per_1k = page.locator("tr[data-row='per-1k'] td").nth(0)
    inferences = METRICS["eval_samples"] * METRICS["inference_passes"]
    assert float(per_1k.get_attribute("data-value")) == pytest.approx(phase(distilled, "inference")["energy_j"] * 1000 / inferences)
    # The reference of the relative row is the run tagged baseline, not the first column.
    relative = page.locator("tr[data-row='relative']")
    expect(relative.locator("td").nth(1)).to_have_text("reference")
    expect(relative.locator(".ref-select")).to_have_value(ids["baseline"])
    screenshot(page, "reads-right-compare")

    box.uncheck()
    assert "teacher=0" in page.url
    cell = page.locator("tr[data-row='energy'] td").nth(0)
    assert float(cell.get_attribute("data-value")) == own
    page.select_option(".x-select", "per_sample")
    expect(page.locator(".scatter")).to_contain_text("training energy per sample")
    expect(page.locator(".scatter .pt")).to_have_count(2)


def test_runs_list_marks_estimated_energy(page: Page, comparison: Comparison) -> None:
    def estimated(route: Route) -> None:
        response = route.fetch()
        runs = response.json()
        for r in runs:
            r["totals"]["method"] = "estimated" if r["id"] == comparison.ids["teacher"] else "counter"
        route.fulfill(response=response, body=json.dumps(runs))

    page.route("**/api/v1/runs?*", estimated)
    page.goto(f"{comparison.daemon.url}/#/runs")
    teacher = page.locator(f"tr[data-run-id='{comparison.ids['teacher']}']")
    expect(teacher.locator(".badge-estimate")).to_have_text("estimated")
    expect(page.locator(".runs-table .badge-estimate")).to_have_count(1)


def test_node_view_names_only_the_devices_there_are(page: Page, comparison: Comparison) -> None:
    def cpu_only(route: Route) -> None:
        response = route.fetch()
        devices = [d for d in response.json() if d["kind"] in ("cpu", "host")]
        for d in devices:
            if d["kind"] == "cpu":
                d.update(source="estimate", energy_counter=False)
        route.fulfill(response=response, body=json.dumps(devices))

    page.route("**/api/v1/devices", cpu_only)
    page.goto(f"{comparison.daemon.url}/#/node")
    notice = page.locator("[data-state=empty]", has_text="No GPU on this node")
    expect(notice).to_contain_text("measured on the CPU (estimated) only")
    expect(notice).not_to_contain_text("DRAM")
    energy = page.locator(".device-card[data-kind='cpu'] [data-field='integrated']")
    expect(energy).to_contain_text("integrated from estimated power")
    screenshot(page, "reads-right-node-cpu-only")


def test_live_chart_drops_its_no_samples_note_when_samples_arrive(page: Page, comparison: Comparison) -> None:
    blank = {"on": True}

    def maybe_blank(route: Route) -> None:
        response = route.fetch()
        body = response.json()
        if blank["on"]:
            for k, v in body.items():
                if isinstance(v, list):
                    body[k] = []
            body.update(points=0, stored_points=0)
        route.fulfill(response=response, body=json.dumps(body))

    with comparison.daemon.client() as c:
        assert c.post("/api/v1/runs", json={"name": "just started", "run_id": "live-empty"}).status_code == 201
        try:
            page.route("**/samples?*", maybe_blank)
            page.goto(f"{comparison.daemon.url}/#/run/live-empty")
            expect(page.locator(".charts")).to_have_attribute("data-live", "true")
            expect(page.locator(".chart-empty").first).to_be_visible()
            blank["on"] = False
            expect(page.locator(".chart-empty")).to_have_count(0, timeout=10_000)
            assert all(int(n) > 0 for n in page.eval_on_selector_all(
                ".device-chart .chart-canvas", "els => els.map(e => e.dataset.points)"))
        finally:
            c.post("/api/v1/runs/live-empty/stop", json={}).raise_for_status()


@pytest.mark.parametrize("view", ["runs", "run", "compare", "node"])
def test_pages_fit_420_px(page: Page, comparison: Comparison, view: str) -> None:
    page.set_viewport_size({"width": 420, "height": 860})
    ids = comparison.ids
    target = {"runs": "#/runs", "run": f"#/run/{ids['distilled']}", "node": "#/node",
              "compare": f"#/compare?ids={ids['teacher']},{ids['baseline']},{ids['distilled']}"}[view]
    page.goto(f"{comparison.daemon.url}/{target}")
    ready = {"runs": ".runs-table", "run": "#phase-energy table", "compare": ".compare-table", "node": ".device-card"}[view]
    expect(page.locator(ready).first).to_be_visible()
    page.wait_for_timeout(300)
    assert page.evaluate("document.documentElement.scrollWidth") <= 420
    for sel in (".brand", ".nav a[data-route=node]", "#conn", "#token-button"):
        box = page.locator(sel).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 420, (sel, box)
    screenshot(page, f"reads-right-420-{view}")
