"""The comparison's arithmetic from the daemon's energy answers, and the tables printed from it."""

from __future__ import annotations

import io
import math
from typing import Any

import pytest
from rich.console import Console

from trainer.distill.compare import Outcome, summarise
from trainer.distill.evaluate import EvalResult
from trainer.distill.loop import TrainResult
from trainer.distill.report import comparison_table, joules_pm, phase_table


def _energy(epoch_j: float, inference_j: float, method: str = "counter") -> dict[str, Any]:
    phases = [{"name": "inference", "count": 3, "duration_s": 1.5, "energy_j": inference_j, "avg_power_w": 4.0,
               "method": method, "short": False, "complete": True},
              {"name": "teacher_forward", "count": 40, "duration_s": 2.0, "energy_j": epoch_j / 4,
               "avg_power_w": 50.0, "method": method, "short": True, "complete": True},
              {"name": "epoch", "count": 2, "duration_s": 10.0, "energy_j": epoch_j, "avg_power_w": 30.0,
               "method": method, "short": False, "complete": True},
              {"name": "custom", "count": 1, "duration_s": 0.5, "energy_j": 1.0, "avg_power_w": 2.0,
               "method": method, "short": False, "complete": False}]
    return {"total": {"energy_j": epoch_j + inference_j + 1.0, "duration_s": 12.0, "avg_power_w": 30.0,
                      "method": method}, "phases": phases, "simulated": False}


def _uncertain(energy: dict[str, Any], rel: float) -> dict[str, Any]:
    """The answer with a standard uncertainty of `rel` of each figure, as the daemon gives it."""
    for row in energy["phases"]:
        row.update(uncertainty_j=rel * row["energy_j"], extrapolated_j=0.0)
    energy["total"].update(uncertainty_j=rel * energy["total"]["energy_j"], complete=True)
    return energy


def _outcome(role: str, epoch_j: float, inference_j: float, trained: bool = True,
             method: str = "counter") -> Outcome:
    train = TrainResult(steps=10, total_steps=10, warmup_steps=1, epochs_run=2, train_samples=500,
                        stopped_early=False, best_epoch=1, best=EvalResult(0.9, 0.9, 1000)) if trained else None
    return Outcome(role=role, model=f"m-{role}", parameters=1_000_000 if role == "teacher" else 250_000,  # type: ignore[arg-type]
                   eval=EvalResult(accuracy=0.9, f1=0.89, samples=1000), inference_passes=3, train=train,
                   run_id=f"run-{role}", energy=_energy(epoch_j, inference_j, method))


def test_rows_divide_phase_energy_by_what_was_done() -> None:
    rows = summarise([_outcome("teacher", 400.0, 12.0), _outcome("baseline", 100.0, 3.0),
                      _outcome("distilled", 200.0, 3.0)])
    teacher, baseline, distilled = rows
    assert teacher["train_energy_j"] == 400.0 and teacher["train_j_per_sample"] == pytest.approx(400 / 500)
    # 3 passes over 1000 held-out examples: 12 J per 3000 inferences.
    assert teacher["inference_j_per_1k"] == pytest.approx(4.0)
    assert baseline["total_with_teacher_j"] is None
    assert distilled["total_with_teacher_j"] == pytest.approx(600.0)  # its own 200 J plus the teacher's 400 J
    assert distilled["train_method"] == "counter" and distilled["inference_method"] == "counter"


def test_an_untrained_teacher_has_no_training_energy() -> None:
    rows = summarise([_outcome("teacher", 400.0, 12.0, trained=False), _outcome("distilled", 200.0, 3.0)])
    assert rows[0]["train_energy_j"] is None and rows[0]["train_j_per_sample"] is None
    assert rows[1]["total_with_teacher_j"] is None
    assert summarise([_outcome("distilled", 1.0, 1.0)])[0]["inference_j_per_1k"] == pytest.approx(1 / 3)


def _render(table: Any) -> str:
    console = Console(file=io.StringIO(), width=80)
    console.print(table)
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_phase_table_nests_known_phases_and_flags_short_and_partial() -> None:
    text = _render(phase_table(_energy(100.0, 5.0), "Energy per phase"))
    lines = [line for line in text.splitlines() if line.strip()]
    names = [line.split()[0] for line in lines[3:7]]
    assert names == ["epoch", "teacher_forward", "inference", "custom"]
    assert "    teacher_forward" in text  # indented under epoch (and train_step)
    assert "short" in next(line for line in lines if "teacher_forward" in line)
    assert "partial" in next(line for line in lines if "custom" in line)
    assert max(len(line) for line in text.splitlines()) <= 80


def test_comparison_table_names_the_methods_per_model_only_when_they_differ() -> None:
    same = _render(comparison_table(summarise([_outcome("teacher", 4.0, 1.0), _outcome("distilled", 2.0, 1.0)])))
    assert "Energy method: counter." in " ".join(same.split())
    mixed = summarise([_outcome("teacher", 4.0, 1.0, method="estimated"), _outcome("distilled", 2.0, 1.0)])
    text = " ".join(_render(comparison_table(mixed)).split())
    assert "teacher estimated / estimated; student KD counter / counter" in text
    assert "1.0M" in text and "250k" in text and "0.9000" in text


def test_comparison_uses_the_run_share_where_the_daemon_gives_one_and_says_so() -> None:
    shared = _outcome("distilled", 200.0, 3.0)
    assert shared.energy is not None
    for row in shared.energy["phases"]:
        row["run_share_j"] = row["energy_j"] / 2
    rows = summarise([_outcome("teacher", 400.0, 12.0), shared])
    assert rows[1]["train_energy_j"] == 100.0 and rows[1]["attribution"] == "run-share"
    assert rows[0]["train_energy_j"] == 400.0 and rows[0]["attribution"] == "node"
    text = " ".join(_render(comparison_table(rows)).split())
    assert "Energy attributed: teacher node; student KD run-share" in text
    only_shared = " ".join(_render(comparison_table(summarise([shared]))).split())
    assert "Energy attributed: run share (its processes' share of the CPU energy above idle" in only_shared


def test_figures_carry_their_uncertainty_to_its_decimal_place() -> None:
    assert joules_pm(929.585, 38.9) == "930\n± 39"
    assert joules_pm(1116.98, 46.78) == "1,117\n± 47"
    assert joules_pm(412.34, 1.83) == "412.3\n± 1.8"
    assert joules_pm(412.0, 150.0) == "410\n± 150"
    assert joules_pm(481.27855, 1e-7) == "481.279\n± <0.001"  # six significant figures at most
    assert joules_pm(480.0, 0.0) == "480.0\n± 0"
    assert joules_pm(5.0, None) == "5" and joules_pm(None, 1.0) == "–"


def test_phase_table_shows_each_uncertainty_and_footnotes_partial_and_simulated_figures() -> None:
    energy = _uncertain(_energy(100.0, 5.0), 0.07)
    energy["phases"][0]["extrapolated_j"] = 0.5  # 10 % of inference's 5 J
    energy["simulated"] = True
    text = _render(phase_table(energy, "Energy per phase"))
    lines = text.splitlines()
    epoch = next(i for i, line in enumerate(lines) if line.split()[:1] == ["epoch"])
    assert "100.0" in lines[epoch] and lines[epoch + 1].split() == ["±", "7.0"]
    assert "extrap." in next(line for line in lines if "inference" in line)
    run = next(i for i, line in enumerate(lines) if line.split()[:1] == ["run"])
    assert "106.0" in lines[run] and lines[run + 1].split() == ["±", "7.4"]
    caption = " ".join(text.split())
    assert "±: standard uncertainty." in caption
    assert "Partial: some figures leave out time the samples do not cover." in caption  # `custom` is partial
    assert "SIMULATED devices: these figures show the method, they are not measurements." in caption
    assert max(len(line) for line in lines) <= 80

    whole = _uncertain(_energy(100.0, 5.0), 0.07)
    whole["phases"] = [r for r in whole["phases"] if r["name"] != "custom"]
    caption = " ".join(_render(phase_table(whole, "Energy per phase")).split())
    assert "Partial:" not in caption and "SIMULATED" not in caption
    assert "±" not in _render(phase_table(_energy(100.0, 5.0), "Energy per phase"))  # none given, none claimed


def test_comparison_carries_each_figures_own_uncertainty() -> None:
    teacher = _outcome("teacher", 400.0, 12.0)
    distilled = _outcome("distilled", 200.0, 3.0)
    for o in (teacher, distilled):
        assert o.energy is not None
        _uncertain(o.energy, 0.05)
    rows = summarise([teacher, distilled])
    assert rows[0]["train_uncertainty_j"] == pytest.approx(20.0)
    assert rows[0]["inference_uncertainty_per_1k"] == pytest.approx(0.6 / 3000 * 1000)  # scaled with the figure
    assert rows[1]["total_with_teacher_uncertainty_j"] == pytest.approx(math.hypot(10.0, 20.0))  # two runs: independent
    assert rows[0]["complete"] and rows[1]["complete"]
    lines = _render(comparison_table(rows)).splitlines()
    t = next(i for i, line in enumerate(lines) if line.startswith(" teacher"))
    assert lines[t + 1].split() == ["±", "20", "±", "0.20"]  # train J, then J/1k inf.; no +teacher J for it
    assert max(len(line) for line in lines) <= 80

    # The run share of the distilled student, with its own uncertainty.
    assert distilled.energy is not None
    for row in distilled.energy["phases"]:
        row["run_share_j"] = row["energy_j"] / 2
        row["run_share_uncertainty_j"] = row["uncertainty_j"] / 2
    distilled.energy["phases"][2]["complete"] = False  # its epoch
    distilled.energy["simulated"] = True
    rows = summarise([teacher, distilled])
    assert rows[1]["train_uncertainty_j"] == pytest.approx(5.0)
    assert rows[1]["total_with_teacher_uncertainty_j"] == pytest.approx(math.hypot(5.0, 20.0))
    assert not rows[1]["complete"]
    text = _render(comparison_table(rows))
    lines = text.splitlines()
    s = next(i for i, line in enumerate(lines) if line.startswith(" student KD"))
    assert "±" in lines[s + 1]
    caption = " ".join(text.split())
    assert "Energy attributed: teacher node; student KD run-share" in caption  # the attribution footnote stays
    assert "Partial: some figures" in caption and "SIMULATED devices" in caption
    assert max(len(line) for line in lines) <= 80
