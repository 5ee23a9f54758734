"""The `report` table: phases nested by containment of their intervals, figures and flags in the rows."""

from __future__ import annotations

from rich.console import Console

from telemetry_service.report_table import (
    build_table,
    covered_fraction,
    phase_tree,
    tree_order,
    union,
)


def test_union_merges_overlapping_intervals():
    assert union([(3, 4), (0, 1), (0.5, 2)]) == [(0, 2), (3, 4)]


def test_covered_fraction_counts_time_and_marks():
    assert covered_fraction([(0, 2)], [(1, 3)]) == 0.5
    assert covered_fraction([(1, 1), (5, 5)], [(0, 2)]) == 0.5  # instants: one of two falls inside


def test_children_nest_in_the_innermost_container_and_siblings_stay_apart():
    by_name = {
        "epoch": [(0, 10), (10, 20)],
        "train_step": [(0, 4), (5, 9), (10, 14)],
        "forward": [(0, 1), (5, 6), (10, 11)],
        "eval": [(20, 22)],
        "inference": [(22, 30)],  # longer than eval, but holds none of it
        "checkpoint": [(9.5, 9.5)],  # a mark, inside epoch only
    }
    parent = phase_tree(by_name)
    assert parent == {"epoch": None, "train_step": "epoch", "forward": "train_step", "eval": None,
                      "inference": None, "checkpoint": "epoch"}


def test_a_name_mostly_outside_another_is_not_its_child():
    assert phase_tree({"a": [(0, 10)], "b": [(8, 12)]}) == {"a": None, "b": None}


def test_tree_order_walks_parents_then_children_by_energy():
    rows = [{"name": n, "energy_j": e} for n, e in (("forward", 5), ("epoch", 100), ("eval", 10),
                                                     ("backward", 9), ("train_step", 50), ("ghost", 1))]
    parent = {"epoch": None, "train_step": "epoch", "forward": "train_step", "backward": "train_step",
              "eval": None}
    order = [(r["name"], d) for r, d in tree_order(rows, parent, lambda r: r["energy_j"])]
    assert order == [("epoch", 0), ("train_step", 1), ("backward", 2), ("forward", 2), ("eval", 0), ("ghost", 0)]


def _answer() -> dict:
    phase = {"count": 2, "duration_s": 4.0, "method": "counter", "timing_quality": 1.0, "complete": True,
             "short": False, "extrapolated_j": 0.0, "run_share_j": 300.0, "run_share_uncertainty_j": 2.0}
    return {
        "run": {"id": "r1", "name": "bert"},
        "phases": [{**phase, "name": "train_step", "energy_j": 800.0, "uncertainty_j": 4.0, "short": True},
                   {**phase, "name": "epoch", "energy_j": 1234.5, "uncertainty_j": 5.0, "complete": False}],
        "total": {"energy_j": 2500.0, "uncertainty_j": 6.0, "duration_s": 10.0, "method": "counter",
                  "complete": True},
        "run_share": {"energy_j": 900.0, "uncertainty_j": 3.0},
        "simulated": True, "notes": [],
    }


def test_table_shows_figures_nesting_and_flags():
    phases = [{"name": "epoch", "start": 0, "end": 5}, {"name": "train_step", "start": 1, "end": 3}]
    console = Console(record=True, width=200)
    console.print(build_table(_answer(), phases))
    text = console.export_text()
    lines = text.splitlines()
    epoch = next(i for i, l in enumerate(lines) if " epoch " in l)
    step = next(i for i, l in enumerate(lines) if "└ train_step" in l)
    assert step == epoch + 1
    assert "1.23 kJ ± 0.005" in lines[epoch] and "incomplete, simulated" in lines[epoch]
    assert "800.0 J ± 4" in lines[step] and "short, simulated" in lines[step] and "300.0 J ± 2" in lines[step]
    assert "total (node)" in text and "2.5 kJ ± 0.006" in text and "900.0 J ± 3" in text
