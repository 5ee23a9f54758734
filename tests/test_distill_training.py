"""Training behaviour on tiny models: distillation transfers what the teacher knows, early stopping, and the
best weights coming back at the end; and the comparison's runs, metrics and results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console

from tests.distill_fixtures import (
    RecordingFactory,
    RecordingTelemetry,
    make_tiny,
    model_folders,  # noqa: F401  (fixture)
)
from trainer.cli import build_parser
from trainer.distill import loop
from trainer.distill.checkpoints import checkpoint_dirs
from trainer.distill.commands import run_compare
from trainer.distill.evaluate import EvalResult, evaluate
from trainer.distill.loop import KDSettings, Trainee, TrainSettings, eval_loader, train
from trainer.distill.losses import make_connector
from trainer.distill.options import Options
from trainer.distill.precision import Precision

CPU = torch.device("cpu")
FP32 = Precision("fp32")


def _accuracy(model: Any, data: Any) -> float:
    return evaluate(model, eval_loader(data, 256, 0), CPU, FP32, data.num_labels).accuracy


def test_distilled_student_beats_an_untrained_one_on_held_out_data(tmp_path: Path) -> None:
    tiny = make_tiny(tmp_path, train=800, held_out=300)
    teacher = tiny.teacher()
    with RecordingTelemetry("teacher", {}, {}) as tc:
        train(Trainee(teacher, role="teacher"), tiny.data,
              TrainSettings(epochs=6, lr=3e-3, batch_size=32, eval_batch_size=256), tc, CPU, FP32,
              tmp_path / "teacher", pad_id=0)
    teacher_acc = _accuracy(teacher, tiny.data)
    untrained_acc = _accuracy(tiny.student(), tiny.data)

    student = tiny.student()
    connector = make_connector(student.config.hidden_size, teacher.config.hidden_size)
    # alpha = 0: no hard labels at all, so whatever the student learns comes from the teacher's logits and features.
    kd = KDSettings(alpha=0.0, temperature=2.0, beta=1.0, t_layer=-1, s_layer=-1, pool="mean")
    with RecordingTelemetry("student", {}, {}) as tc:
        result = train(Trainee(student, connector=connector), tiny.data,
                       TrainSettings(epochs=4, lr=1e-2, batch_size=32, eval_batch_size=256), tc, CPU, FP32,
                       tmp_path / "student", pad_id=0, teacher=teacher, kd=kd)
    student_acc = _accuracy(student, tiny.data)

    assert teacher_acc > 0.7, f"the teacher did not learn ({teacher_acc:.3f}); the test would prove nothing"
    assert student_acc > untrained_acc + 0.15, (student_acc, untrained_acc, teacher_acc)
    assert student_acc == pytest.approx(result.best.accuracy)
    assert result.last_losses["ce"] > 0 and result.last_losses["kd"] > 0 and result.last_losses["feat"] > 0


def test_early_stopping_and_the_best_weights_come_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny = make_tiny(tmp_path, train=64, held_out=16)
    scores = iter([0.6, 0.9, 0.7, 0.8, 0.5])
    monkeypatch.setattr(loop, "evaluate", lambda *a, **k: EvalResult(accuracy=next(scores), f1=0.5, samples=16))
    student = tiny.student()
    settings = TrainSettings(epochs=5, lr=1e-2, batch_size=16, eval_batch_size=16, patience=2, keep_checkpoints=5)
    with RecordingTelemetry("s", {}, {}) as tc:
        result = train(Trainee(student), tiny.data, settings, tc, CPU, FP32, tmp_path / "out", pad_id=0)

    # 0.6, 0.9 (best), 0.7, 0.8: two epochs without beating 0.9, so the fifth never runs.
    assert result.stopped_early and result.epochs_run == 4 and result.best_epoch == 2  # the second, as printed
    assert result.best.accuracy == 0.9 and tc.count("epoch") == 4
    kept = checkpoint_dirs(tmp_path / "out")
    assert len(kept) == 4
    best_state = type(student).from_pretrained(kept[1]).state_dict()
    last_state = type(student).from_pretrained(kept[3]).state_dict()
    now = student.state_dict()
    key = "classifier.weight"
    assert torch.equal(now[key], best_state[key]) and not torch.equal(now[key], last_state[key])


def _opts(*argv: str) -> Options:
    return Options.from_args(build_parser().parse_args(list(argv)))


def test_compare_measures_each_model_under_its_own_run(model_folders, tmp_path: Path,  # noqa: F811
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop, "MIN_INFERENCE_S", 0.0)
    opts = _opts("compare", "--teacher-name", str(model_folders.teacher), "--student-name",
                 str(model_folders.student), "--dataset", str(model_folders.csv), "--teacher-epochs", "1",
                 "--epochs", "1", "--lr", "1e-3", "--batch-size", "16", "--feat-beta", "0.5", "--t-layer", "2",
                 "--s-layer", "-1", "--output-dir", str(tmp_path / "out"), "--cpu-threads", "1")
    factory = RecordingFactory()
    with open(tmp_path / "stdout.txt", "w") as out:
        console = Console(file=out, width=100)
        outcomes = run_compare(opts, factory, console)

    assert [o.role for o in outcomes] == ["teacher", "baseline", "distilled"]
    teacher, baseline, distilled = (factory.by_role(r) for r in ("teacher", "baseline", "distilled"))
    for run in (teacher, baseline, distilled):
        assert run.stopped is not None and run.stopped["status"] == "completed"
        assert {"accuracy", "f1", "train_samples", "parameters"} <= run.stopped["metrics"].keys()
        assert run.count("inference") == 1 and run.count("epoch") == 1
    # The teacher's own training marks its forward as teacher_forward; the baseline never runs the teacher.
    assert "teacher_forward" in teacher.names() and "student_forward" not in teacher.names()
    assert "teacher_forward" not in baseline.names() and "student_forward" in baseline.names()
    assert {"teacher_forward", "student_forward"} <= distilled.names()
    assert distilled.config["kd"]["beta"] == 0.5 and distilled.config["kd"]["t_layer"] == 2
    assert baseline.config["kd"] is None
    assert teacher.stopped["metrics"]["parameters"] > distilled.stopped["metrics"]["parameters"]

    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["role"] for r in results["rows"]] == ["teacher", "baseline", "distilled"]
    assert results["rows"][2]["train_samples"] == outcomes[2].train.train_samples == 54  # 90% of the 60 CSV rows
    assert (tmp_path / "out" / "hparams.json").exists() and (tmp_path / "out" / "distilled" / "hparams.json").exists()
    printed = (tmp_path / "stdout.txt").read_text()
    assert "student KD" in printed and "Dashboard: http" in printed


def test_a_distilbert_student_learns_from_a_bert_teacher(tmp_path: Path) -> None:
    """The layout of the real pairing (BERT teacher, DistilBERT student): other config names, no token types."""
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    from trainer.distill.models import hidden_width, resolve_layer

    tiny = make_tiny(tmp_path, train=96, held_out=32)
    teacher = tiny.teacher()
    torch.manual_seed(0)
    student = DistilBertForSequenceClassification(DistilBertConfig(
        vocab_size=len(tiny.tokenizer), dim=16, n_layers=2, n_heads=2, hidden_dim=32, max_position_embeddings=32,
        num_labels=2))
    assert resolve_layer(-1, student, "--s-layer", "student") == 2 and hidden_width(student) == 16
    kd = KDSettings(alpha=0.5, temperature=2.0, beta=1.0, t_layer=resolve_layer(-2, teacher, "--t-layer", "teacher"),
                    s_layer=1, pool="mean", normalize=True)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    with RecordingTelemetry("s", {}, {}) as tc:
        result = train(Trainee(student, connector=make_connector(16, 32)), tiny.data,
                       TrainSettings(epochs=1, lr=1e-3, batch_size=16, eval_batch_size=32), tc, CPU, FP32,
                       tmp_path / "out", pad_id=0, teacher=teacher, kd=kd)
    assert result.steps == 6 and result.last_losses["feat"] > 0
    assert not torch.equal(before["distilbert.transformer.layer.0.attention.q_lin.weight"],
                           student.state_dict()["distilbert.transformer.layer.0.attention.q_lin.weight"])


def test_same_seed_same_weights(tmp_path: Path) -> None:
    tiny = make_tiny(tmp_path, train=64, held_out=16)
    states = []
    for run in range(2):
        torch.manual_seed(1000 + run)  # whatever the global generator's state, the seed decides
        student = tiny.student()
        with RecordingTelemetry("s", {}, {}) as tc:
            train(Trainee(student), tiny.data, TrainSettings(epochs=1, lr=1e-2, batch_size=16, eval_batch_size=16,
                                                             seed=5), tc, CPU, FP32, tmp_path / f"r{run}", pad_id=0)
        states.append(student.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
