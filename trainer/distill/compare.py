"""Training and measuring each model of a comparison under its own run: the teacher (evaluated, and trained
first when it is not yet fine-tuned), a baseline student (CE only) and the distilled student."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import PreTrainedModel

from trainer.distill.evaluate import EvalResult
from trainer.distill.job import Job
from trainer.distill.loop import Trainee, TrainResult, measure_inference, train
from trainer.distill.losses import make_connector
from trainer.distill.models import count_parameters, hidden_width
from trainer.distill.telemetry import TelemetryFactory

Role = Literal["teacher", "baseline", "distilled"]
ROLE_TITLES: dict[str, str] = {"teacher": "teacher", "baseline": "student, CE only", "distilled": "student, distilled"}


@dataclass
class Outcome:
    role: Role
    model: str
    parameters: int
    eval: EvalResult
    inference_passes: int
    train: TrainResult | None
    run_id: str | None
    energy: dict[str, Any] | None


def _measured(job: Job, role: Role, model: PreTrainedModel, factory: TelemetryFactory,
              trainee: Trainee | None, teacher: PreTrainedModel | None) -> Outcome:
    """One run: optional training, then the held-out `inference` passes; stopped with the model's own metrics,
    then asked for its energy."""
    label = job.teacher_label if role == "teacher" else job.student_label
    distilling = role == "distilled"
    config = {**job.hparams(), "role": role}
    if not distilling:
        config["kd"] = None
    tags = {"role": role, "comparison": job.comparison_id, "model": label, "dataset": job.data.source,
            "method": "kd" if distilling else "ce"}
    settings = job.teacher_train if role == "teacher" else job.student_train
    tc = factory(f"{job.run_prefix}/{role}", config, tags)
    result: TrainResult | None = None
    with tc:
        if trainee is not None and settings is not None:
            result = train(trainee, job.data, settings, tc, job.device, job.precision, job.output_dir / role,
                           job.pad_id, teacher=teacher, kd=job.kd if distilling else None, tokenizer=job.tokenizer,
                           desc=role)
        final, passes = measure_inference(model, job.data, job.opts.eval_batch_size, tc, job.device, job.precision,
                                          job.pad_id)
        params = count_parameters(model)
        metrics: dict[str, Any] = {"accuracy": final.accuracy, "f1": final.f1, "eval_samples": final.samples,
                                   "inference_passes": passes, "parameters": params,
                                   "train_samples": result.train_samples if result else 0}
        if result is not None:
            metrics.update({"epochs": result.epochs_run, "steps": result.steps, "best_epoch": result.best_epoch,
                            **{f"final_{k}": v for k, v in result.last_losses.items()}})
        # The ledger takes finite numbers only; a diverged loss is reported by its absence, not as NaN.
        tc.stop(status="completed", metrics={k: v for k, v in metrics.items()
                                             if not (isinstance(v, float) and not math.isfinite(v))})
    return Outcome(role=role, model=label, parameters=params, eval=final, inference_passes=passes, train=result,
                   run_id=tc.run_id, energy=tc.energy())


def teacher_outcome(job: Job, factory: TelemetryFactory) -> Outcome:
    trainee = Trainee(job.teacher, role="teacher") if job.teacher_train is not None else None
    return _measured(job, "teacher", job.teacher, factory, trainee, None)


def baseline_outcome(job: Job, factory: TelemetryFactory) -> Outcome:
    student = job.make_student()
    return _measured(job, "baseline", student, factory, Trainee(student), None)


def distilled_outcome(job: Job, factory: TelemetryFactory) -> Outcome:
    student = job.make_student()
    connector = None
    if job.kd.beta > 0:
        # Seeded on its own: the global generator's state here depends on how many evaluation passes ran before.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(job.opts.seed + 2)
            connector = make_connector(hidden_width(student), hidden_width(job.teacher))
    # The connector is trained with the student but is not part of the deployed model, so not in its parameters.
    trainee = Trainee(student, role="student", connector=connector)
    return _measured(job, "distilled", student, factory, trainee, job.teacher)


@dataclass
class Figure:
    """One phase's energy as the comparison uses it, with how far to trust it."""
    energy_j: float | None = None
    method: str | None = None
    uncertainty_j: float | None = None  # standard uncertainty; None where the daemon gives none
    complete: bool = True


def phase_energy(energy: dict[str, Any] | None, name: str) -> Figure:
    """Energy (J) of all intervals of phase `name` in a run, and the method behind it: the run's own share
    where the daemon gives one (an unrelated process on the node must not move the comparison), else the
    node figure, each with its own uncertainty."""
    for row in (energy or {}).get("phases", []):
        if row["name"] == name:
            value = row.get("run_share_j")
            if value is None:
                return Figure(row.get("energy_j"), row.get("method"), row.get("uncertainty_j"),
                              row.get("complete") is not False)
            return Figure(value, row.get("method"), row.get("run_share_uncertainty_j"), row.get("complete") is not False)
    return Figure()


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def attribution(energy: dict[str, Any] | None) -> str:
    """Which figure phase_energy gives for this run: "run-share" or "node"."""
    rows = (energy or {}).get("phases", [])
    return "run-share" if rows and all(r.get("run_share_j") is not None for r in rows) else "node"


def summarise(outcomes: list[Outcome]) -> list[dict[str, Any]]:
    """One row per model: quality, size and energy. Training energy is what the `epoch` phases cost (training,
    per-epoch eval and checkpoints; model loading is not counted); a distilled student's total adds the
    teacher's training done for it here."""
    teacher_train = next((phase_energy(o.energy, "epoch") for o in outcomes
                          if o.role == "teacher" and o.train is not None), Figure())
    rows = []
    for o in outcomes:
        train = phase_energy(o.energy, "epoch") if o.train is not None else Figure()
        inf = phase_energy(o.energy, "inference")
        inferences = o.eval.samples * o.inference_passes
        samples = o.train.train_samples if o.train is not None else 0
        per_1k = 1000 / inferences if inferences else None
        row: dict[str, Any] = {
            "role": o.role, "title": ROLE_TITLES[o.role], "model": o.model, "run_id": o.run_id,
            "accuracy": o.eval.accuracy, "f1": o.eval.f1, "parameters": o.parameters,
            "train_samples": samples, "train_energy_j": train.energy_j, "train_method": train.method,
            "train_uncertainty_j": train.uncertainty_j,
            "train_j_per_sample": train.energy_j / samples if train.energy_j is not None and samples else None,
            "inference_j_per_1k": _scaled(inf.energy_j, per_1k) if per_1k else None,
            "inference_uncertainty_per_1k": _scaled(inf.uncertainty_j, per_1k) if per_1k else None,
            "inference_method": inf.method, "eval_samples": o.eval.samples, "inference_passes": o.inference_passes,
            "total_with_teacher_j": None, "total_with_teacher_uncertainty_j": None,
            "complete": train.complete and inf.complete,
            "simulated": bool((o.energy or {}).get("simulated", False)), "attribution": attribution(o.energy),
        }
        if o.role == "distilled" and train.energy_j is not None and teacher_train.energy_j is not None:
            row["total_with_teacher_j"] = train.energy_j + teacher_train.energy_j
            if train.uncertainty_j is not None and teacher_train.uncertainty_j is not None:  # two runs: independent
                row["total_with_teacher_uncertainty_j"] = math.hypot(train.uncertainty_j, teacher_train.uncertainty_j)
            row["complete"] = row["complete"] and teacher_train.complete
        rows.append(row)
    return rows


def write_results(path: Path, job: Job, outcomes: list[Outcome], rows: list[dict[str, Any]], url: str) -> None:
    path.write_text(json.dumps({
        "comparison_id": job.comparison_id, "daemon": url, "dataset": job.data.meta(),
        "device": str(job.device), "precision": job.precision.name, "rows": rows,
        "runs": {o.role: {"run_id": o.run_id, "energy": o.energy,
                          "history": o.train.history if o.train else []} for o in outcomes},
    }, indent=2, default=str))
