"""The energy-by-phase table of `python -m telemetry_service report`, drawn with rich.

Phases nest by real containment, as the dashboard's phase tree does (dashboards/web/js/views/phase_tree.js):
a name is the child of the innermost other name whose intervals cover most of its time. A depth sort cannot
tell siblings from parents (eval is not inside inference because both sit at depth 0).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

Interval = tuple[float, float]


def union(intervals: Sequence[Interval]) -> list[Interval]:
    """Sorted, disjoint pieces covering the intervals."""
    out: list[list[float]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def covered_fraction(intervals: Sequence[Interval], pieces: Sequence[Interval]) -> float:
    """The fraction of the intervals' time inside `pieces`. Instants (marks) count by whether they fall inside,
    so a name made only of marks nests too."""
    starts = [p[0] for p in pieces]
    covered = total = 0.0
    inside = 0
    for a, b in intervals:
        total += b - a
        k = bisect.bisect_right(starts, a) - 1
        if k >= 0 and b <= pieces[k][1]:
            inside += 1
        for j in range(max(k, 0), len(pieces)):
            if pieces[j][0] >= b:
                break
            covered += max(0.0, min(b, pieces[j][1]) - max(a, pieces[j][0]))
    if total > 0:
        return covered / total
    return inside / max(len(intervals), 1)


def phase_tree(by_name: Mapping[str, Sequence[Interval]]) -> dict[str, str | None]:
    """Each name's parent (None for the outermost). A container must last longer in all than what it holds,
    which also keeps the tree free of cycles."""
    span = {n: sum(b - a for a, b in iv) for n, iv in by_name.items()}
    pieces = {n: union(iv) for n, iv in by_name.items()}
    parent: dict[str, str | None] = {}
    for child, intervals in by_name.items():
        best: str | None = None
        for other in by_name:
            if other == child or not span[other] > span[child]:
                continue
            if covered_fraction(intervals, pieces[other]) <= 0.5:
                continue
            if best is None or span[other] < span[best]:
                best = other  # the innermost container
        parent[child] = best
    return parent


def tree_order(rows: Sequence[dict[str, Any]], parent: Mapping[str, str | None],
               figure: Callable[[dict[str, Any]], float]) -> list[tuple[dict[str, Any], int]]:
    """Rows depth-first: each parent, then its children, largest figure first. Names the intervals do not know
    come as roots."""
    known = {r["name"] for r in rows}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for r in rows:
        p = parent.get(r["name"])
        children.setdefault(p if p in known else None, []).append(r)
    out: list[tuple[dict[str, Any], int]] = []

    def walk(key: str | None, depth: int) -> None:
        for r in sorted(children.get(key, []), key=figure, reverse=True):
            out.append((r, depth))
            walk(r["name"], depth + 1)

    walk(None, 0)
    return out


def intervals_by_name(phases: Sequence[Mapping[str, Any]]) -> dict[str, list[Interval]]:
    """The /phases listing grouped by name."""
    out: dict[str, list[Interval]] = {}
    for p in phases:
        out.setdefault(p["name"], []).append((float(p["start"]), float(p["end"])))
    return out


def joules(value: float | None, err: float | None = None) -> str:
    if value is None:
        return "-"
    scale, unit = next(((s, u) for s, u in ((1e6, "MJ"), (1e3, "kJ")) if abs(value) >= s), (1.0, "J"))
    text = f"{value / scale:,.3g} {unit}" if scale > 1 else f"{value:,.1f} J"
    if err is not None:
        text += f" ± {err / scale:,.2g}" if scale > 1 else f" ± {err:,.2g}"
    return text


def flags(row: Mapping[str, Any], simulated: bool) -> str:
    out = []
    if not row.get("complete", True):
        out.append("incomplete")
    if row.get("short"):
        out.append("short")
    if (row.get("extrapolated_j") or 0) > 0:
        out.append("extrapolated")
    if simulated:
        out.append("simulated")
    return ", ".join(out)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def carbon_text(row: Mapping[str, Any]) -> str:
    co2 = row.get("co2e_g")
    return "" if co2 is None else f"{co2:,.3g} gCO2e"


def build_table(answer: Mapping[str, Any], phases: Sequence[Mapping[str, Any]]) -> Table:
    """The table: one row per phase name in containment order, then the run total."""
    simulated = bool(answer.get("simulated"))
    carbon = answer.get("carbon") or {}
    run = answer.get("run") or {}
    table = Table(title=f"Energy of run {run.get('id', '?')} ({run.get('name') or 'unnamed'})", title_justify="left")
    for col, justify in (("phase", "left"), ("count", "right"), ("time", "right"), ("energy", "right"),
                         ("method", "left"), ("timing", "right"), ("run share", "right"), ("flags", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    if carbon.get("configured"):
        table.add_column("CO2e", justify="right")
    parent = phase_tree(intervals_by_name(phases))
    for row, depth in tree_order(answer.get("phases") or [], parent, lambda r: r.get("energy_j") or 0.0):
        cells = ["  " * depth + ("└ " if depth else "") + row["name"], str(row.get("count", "")),
                 f"{row.get('duration_s') or 0:,.1f} s", joules(row.get("energy_j"), row.get("uncertainty_j")),
                 row.get("method") or "-", _percent(row.get("timing_quality")),
                 joules(row.get("run_share_j"), row.get("run_share_uncertainty_j")), flags(row, simulated)]
        table.add_row(*cells, *([carbon_text(row)] if carbon.get("configured") else []))
    total = answer.get("total") or {}
    share = answer.get("run_share") or {}
    table.add_section()
    cells = ["total (node)", "", f"{total.get('duration_s') or 0:,.1f} s",
             joules(total.get("energy_j"), total.get("uncertainty_j")), total.get("method") or "-",
             _percent(total.get("timing_quality")), joules(share.get("energy_j"), share.get("uncertainty_j")),
             flags(total, simulated)]
    table.add_row(*[Text(c, style="bold") for c in cells],
                  *([Text(carbon_text(total), style="bold")] if carbon.get("configured") else []))
    return table


def print_report(answer: Mapping[str, Any], phases: Sequence[Mapping[str, Any]], console: Console) -> None:
    console.print(build_table(answer, phases))
    carbon = answer.get("carbon")
    if carbon:
        console.print(f"carbon: {carbon.get('source') or carbon.get('note')}")
    console.print("energy: node figure (every device the run uses) ± standard uncertainty; run share: the run's "
                  "own processes' share of it")
    for note in answer.get("notes") or []:
        console.print(f"note: {note.get('device', 'run')}: {note.get('note')}", style="dim")
