"""The schedule counts optimizer steps (batches ÷ accumulation, the last partial group included), and the loop
takes exactly that many, each in its own phase."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.distill_fixtures import RecordingTelemetry, tiny_data  # noqa: F401  (fixture)
from trainer.distill.checkpoints import BEST, checkpoint_dirs
from trainer.distill.loop import KDSettings, Trainee, TrainSettings, train
from trainer.distill.losses import make_connector
from trainer.distill.precision import Precision
from trainer.distill.schedule import linear_factor, steps_per_epoch, total_steps, warmup_linear_decay, warmup_steps


def test_step_counts_with_accumulation() -> None:
    assert steps_per_epoch(10, 1) == 10
    assert steps_per_epoch(10, 3) == 4  # 3 + 3 + 3 + 1
    assert steps_per_epoch(9, 3) == 3
    assert total_steps(10, 3, epochs=2) == 8
    assert warmup_steps(8, 0.25) == 2
    assert warmup_steps(8, 0.0) == 0
    with pytest.raises(ValueError):
        steps_per_epoch(10, 0)


def test_warmup_then_linear_decay_to_zero() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = warmup_linear_decay(opt, warmup=2, total=8)
    lrs = []
    for _ in range(8):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])
    assert sched.get_last_lr()[0] == 0.0
    assert linear_factor(100, 2, 8) == 0.0


def test_loop_takes_the_scheduled_steps_and_marks_every_phase(tiny_data, tmp_path: Path) -> None:  # noqa: F811
    teacher, student_factory, tokenizer, data = tiny_data
    student = student_factory()
    settings = TrainSettings(epochs=2, lr=1e-3, batch_size=8, eval_batch_size=64, accumulation=3, warmup_ratio=0.25,
                             keep_checkpoints=1, seed=0)
    batches = -(-len(data.train) // 8)
    expected_steps = total_steps(batches, 3, 2)
    tc = RecordingTelemetry("t", {}, {})
    connector = make_connector(student.config.hidden_size, teacher.config.hidden_size)
    with tc:
        result = train(Trainee(student, connector=connector), data, settings, tc, torch.device("cpu"),
                       Precision("fp32"), tmp_path, pad_id=0, teacher=teacher,
                       kd=KDSettings(alpha=0.5, temperature=2.0, beta=1.0, t_layer=2, s_layer=1, pool="mean"),
                       tokenizer=tokenizer)

    assert result.steps == result.total_steps == expected_steps
    assert tc.count("optimizer_step") == tc.count("train_step") == expected_steps
    for name in ("data_load", "teacher_forward", "student_forward", "loss", "backward"):
        assert tc.count(name) == 2 * batches, name
    assert tc.count("epoch") == tc.count("eval") == tc.count("checkpoint") == 2
    depth = {m.name: m.depth for m in tc.markers}
    assert depth["epoch"] == 0 and depth["train_step"] == 1 and depth["eval"] == 1 and depth["checkpoint"] == 1
    assert depth["data_load"] == depth["teacher_forward"] == depth["backward"] == depth["optimizer_step"] == 2

    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "lr" in r]
    assert len(steps) == expected_steps
    assert all({"loss", "ce", "kd", "feat"} <= r.keys() for r in steps)  # each component logged on its own
    assert steps[0]["lr"] == pytest.approx(1e-3 / warmup_steps(expected_steps, 0.25))
    assert steps[-1]["lr"] == pytest.approx(1e-3 / (expected_steps - warmup_steps(expected_steps, 0.25)))

    saved = json.loads((tmp_path / "hparams.json").read_text())
    assert saved["total_steps"] == expected_steps and saved["train"]["accumulation"] == 3
    assert saved["kd"]["beta"] == 1.0
    kept = checkpoint_dirs(tmp_path)
    assert [p.name for p in kept] == [f"checkpoint-{expected_steps}"]  # the last one only
    assert (tmp_path / BEST / "config.json").exists() and (kept[0] / "connector.pt").exists()
