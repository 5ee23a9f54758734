"""The figures of the accuracy matrix: the sensor models measured, each tool's error per phase name against the
exact integral, whether our stated uncertainty covered it, and the worst of the repeats per cell."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import harness
from accuracy_peers import Window
from accuracy_workload import Marker, Scenario
from telemetry_service.sensors.simulated import PROFILES, SensorProfile

# Sensor models beyond PROFILES, combined here rather than added to the simulator's list.
EXTRA_SENSORS = {"jitter-drops-100ms": replace(PROFILES["jitter-100ms"], name="jitter-drops-100ms", drop=0.03)}
SENSORS: dict[str, SensorProfile] = {**PROFILES, **EXTRA_SENSORS}
# ideal-100ms first: Zeus probes GPU 0 for the power fields of every GPU.
DEFAULT_SENSORS = ("ideal-100ms", "ideal-10ms", "ideal-20ms", "ideal-50ms", "ideal-200ms", "drift-100ms",
                   "jitter-drops-100ms", "latency-100ms", "part-time-100ms", "average-power", "no-counter")
TOOLS = ("ours", "zeus", "codecarbon", "naive")
COVER_K = 2.0  # the stated uncertainty covers an error within COVER_K standard uncertainties

Truth = Callable[[int, float, float], float]  # (gpu, t0, t1) -> joules


def rel_err(estimate: float, truth: float) -> float:
    return (estimate - truth) / truth if truth else math.nan


def covered(estimate: float, truth: float, uncertainty: float | None) -> bool | None:
    """Whether |error| <= COVER_K x the stated standard uncertainty; None where none was stated."""
    if uncertainty is None or not math.isfinite(estimate):
        return None
    return abs(estimate - truth) <= COVER_K * uncertainty


def by_name(windows: Iterable[Window], truth: Truth) -> dict[tuple[str, str, int], tuple[float, float]]:
    """Per (scenario, phase name, GPU): the exact energy over the instants the tool was called at, summed over
    the phases of that name, and the energy it reported for them."""
    acc: dict[tuple[str, str, int], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for w in windows:
        a = acc[(w.scenario, w.name, w.gpu)]
        a[0] += truth(w.gpu, w.t0, w.t1)
        a[1] += w.energy_j
    return {k: (v[0], v[1]) for k, v in acc.items()}


def base_record(tool: str, sc: Scenario, name: str, sensor: str, truth: float, est: float) -> dict[str, Any]:
    return {"tool": tool, "run": sc.id, "sensor": sensor, "length": sc.length, "host": sc.host, "repeat": sc.repeat,
            "kind": sc.kind, "name": name, "truth_j": truth, "energy_j": est, "rel_err": rel_err(est, truth)}


def peer_records(tool: str, windows: list[Window], scenarios: dict[str, Scenario], sensors: list[str],
                 truth: Truth) -> list[dict[str, Any]]:
    return [base_record(tool, scenarios[sid], name, sensors[gpu], t, e)
            for (sid, name, gpu), (t, e) in by_name(windows, truth).items()]


def ours_records(markers: list[Marker], answers: dict[str, Any], scenarios: dict[str, Scenario], sensors: list[str],
                 truth: Truth, sensed: Truth, node: str) -> list[dict[str, Any]]:
    """Our answer per (run, phase name, device), against the exact integral over our markers and against what a
    perfect reader of that sensor could know; with the uncertainty, timing quality and method it stated."""
    out = []
    windows = [Window(m.scenario, m.name, gpu, m.t0, m.t1, 0.0) for m in markers for gpu in range(len(sensors))]
    exact, seen = by_name(windows, truth), by_name(windows, sensed)
    for (sid, name, gpu), (t, _) in exact.items():
        answer = answers[sid]
        dev = f"{node}/simgpu{gpu}"
        phase = next((p for p in answer["phases"] if p["name"] == name), {})
        device = next((d for d in answer.get("devices", []) if d["id"] == dev), {})
        est = float(phase.get("by_device", {}).get(dev, math.nan))
        unc = phase.get("uncertainty_by_device", {}).get(dev)
        s = seen[(sid, name, gpu)][0]
        out.append({**base_record("ours", scenarios[sid], name, sensors[gpu], t, est),
                    "sensor_truth_j": s, "rel_err_sensor": rel_err(est, s), "uncertainty_j": unc,
                    "covered": covered(est, t, unc), "covered_sensor": covered(est, s, unc),
                    "timing_quality": device.get("timing_quality"), "method": phase.get("methods", {}).get(dev),
                    "complete": phase.get("complete"), "extrapolated_j_all_devices": phase.get("extrapolated_j"),
                    # sampling gaps the answer reports on this device over the run: a stalled sampler
                    "gaps_s": sum(g["duration_s"] for g in answer.get("gaps", []) if g["device"] == dev)})
    return out


def cells(records: list[dict[str, Any]]) -> dict[tuple[str, float, str, str], dict[str, Any]]:
    """Per (sensor, length, host, tool): the worst |relative error| of each repeat (over every phase name of the
    three traces), the worst of those, and for ours how often the stated uncertainty covered the error."""
    groups: dict[tuple[str, float, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(r["sensor"], r["length"], r["host"], r["tool"])].append(r)
    out = {}
    for key, rs in groups.items():
        per_repeat: dict[int, float] = defaultdict(float)
        for r in rs:  # nan (no figure) counts as the worst
            e = abs(r["rel_err"])
            per_repeat[r["repeat"]] = math.inf if not math.isfinite(e) else max(per_repeat[r["repeat"]], e)
        cell: dict[str, Any] = {"worst": max(per_repeat.values()), "per_repeat": dict(sorted(per_repeat.items())),
                                "worst_name": max(rs, key=lambda r: _abs_or_inf(r["rel_err"]))["name"]}
        if key[3] == "ours":
            cell.update(ours_cell(rs))
        out[key] = cell
    return out


def _abs_or_inf(x: float) -> float:
    return abs(x) if math.isfinite(x) else math.inf


def ours_cell(rs: list[dict[str, Any]]) -> dict[str, Any]:
    cov = [r["covered"] for r in rs if r["covered"] is not None]
    tq = [r["timing_quality"] for r in rs if r["timing_quality"] is not None]
    return {"worst_sensor": max(_abs_or_inf(r["rel_err_sensor"]) for r in rs),
            "covered": sum(cov), "judged": len(cov),
            "timing_quality_min": min(tq) if tq else None,
            "gaps_s_max": max(r.get("gaps_s", 0.0) for r in rs),
            "methods": sorted({str(r["method"]) for r in rs})}


def fmt_pct(x: float) -> str:
    return "no figure" if math.isinf(x) else harness.pct(x)


def matrix_table(cs: dict[tuple[str, float, str, str], dict[str, Any]], sensors: list[str], length: float,
                 hosts: list[str], skipped: dict[str, dict[str, str]]) -> str:
    """One length: a row per sensor model and host; ours (against the truth and the sensor), coverage, timing
    quality, and each peer's worst, or why it did not run."""
    body = []
    for sensor in sensors:
        for host in hosts:
            ours = cs.get((sensor, length, host, "ours"))
            if ours is None:
                continue
            row = [sensor, host, len(ours["per_repeat"]), fmt_pct(ours["worst"]),
                   fmt_pct(ours["worst_sensor"]) if sensor.startswith("part-time") else "=",
                   f"{ours['covered']}/{ours['judged']}",
                   "–" if ours["timing_quality_min"] is None else f"{ours['timing_quality_min']:.2f}",
                   f"{ours['gaps_s_max']:.1f} s" if ours["gaps_s_max"] else "none"]
            for tool in TOOLS[1:]:
                c = cs.get((sensor, length, host, tool))
                row.append(fmt_pct(c["worst"]) if c else ("not run" if sensor in skipped.get(tool, {}) else "n/a"))
            row.append(", ".join(ours["methods"]))
            body.append(row)
    return harness.table(["sensor", "host", "repeats", "ours worst", "ours vs sensor", "covered (≤2σ)",
                          "timing q. min", "gaps (max)", "Zeus", "CodeCarbon", "naive", "our method"], body,
                         title=f"Phases of {length:g} s — worst |relative error| per phase name over the repeats")


def skipped_notes(skipped: dict[str, dict[str, str]]) -> str:
    lines = [f"- {tool}, {sensor}: {why}" for tool, by in skipped.items() for sensor, why in sorted(by.items())]
    return "Peers not run:\n" + "\n".join(lines) if lines else ""


def target_for(sensor: str, length: float) -> float | None:
    """The product's bound on the worst error per phase name, where it sets one."""
    p = SENSORS[sensor]
    if not p.counter:
        return None
    if p.power_mode == "average":
        return 0.01 if length >= 1.0 else None
    return 0.005 if length >= 1.0 else 0.05


def verdicts(cs: dict[tuple[str, float, str, str], dict[str, Any]]) -> list[list[str]]:
    """Per (sensor, length, host): ours against the bound, against the best peer, and loaded against quiet."""
    rows = []
    for (sensor, length, host, tool), c in sorted(cs.items()):
        if tool != "ours":
            continue
        bound = target_for(sensor, length)
        peers = [cs[k]["worst"] for k in cs if k[:3] == (sensor, length, host) and k[3] != "ours"]
        quiet = cs.get((sensor, length, "quiet", "ours"))
        ratio = c["worst"] / quiet["worst"] if quiet and quiet["worst"] else math.inf
        rows.append([sensor, f"{length:g} s", host, fmt_pct(c["worst"]),
                     "–" if bound is None else ("met" if c["worst"] <= bound else
                                                f"**missed** (≤ {harness.pct(bound, 1)})"),
                     "–" if not peers else ("met" if c["worst"] <= min(peers) else
                                            f"**missed** (best peer {fmt_pct(min(peers))})"),
                     "–" if host != "loaded" or quiet is None else
                     ("met" if ratio <= 1.5 else f"**missed** ({ratio:.1f}x)")])
    return rows


def verdict_table(cs: dict[tuple[str, float, str, str], dict[str, Any]]) -> str:
    return harness.table(["sensor", "length", "host", "ours worst", "bound", "vs best peer", "loaded ≤ 1.5x quiet"],
                         verdicts(cs), title="Against the targets")
