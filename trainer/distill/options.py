"""The command line's settings after parsing: one dataclass, with the demo's defaults where the user gave none."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields
from typing import Any

# Defaults that differ between real runs (pre-trained models, real text) and the demo (tiny models trained from
# random initialisation on short synthetic reviews). The argparse default of each is None.
REAL_DEFAULTS: dict[str, Any] = {"epochs": 3, "teacher_epochs": 0, "lr": 5e-5, "max_length": 128, "batch_size": 32,
                                 "feat_beta": 0.0, "max_train_samples": None, "max_eval_samples": None,
                                 "patience": 0, "cpu_threads": None,
                                 "teacher_lr": None}
# The demo's models are so small that a second intra-op thread mostly adds synchronisation, and on a busy
# machine spinning threads that wait for each other slow it down many times over: one thread.
DEMO_DEFAULTS: dict[str, Any] = {"epochs": 6, "teacher_epochs": 6, "lr": 1e-3, "max_length": 32, "batch_size": 32,
                                 "feat_beta": 1.0, "max_train_samples": 2000, "max_eval_samples": 1000,
                                 "patience": 2, "cpu_threads": 1,
                                 "teacher_lr": 5e-4}


@dataclass(frozen=True)
class Options:
    command: str
    demo: bool
    teacher_name: str | None
    student_name: str | None
    dataset: str | None
    train_split: str
    eval_split: str
    max_train_samples: int | None
    max_eval_samples: int | None
    max_length: int
    epochs: int
    teacher_epochs: int
    lr: float
    teacher_lr: float | None
    batch_size: int
    eval_batch_size: int
    grad_accum: int
    weight_decay: float
    warmup_ratio: float
    max_grad_norm: float
    patience: int
    keep_checkpoints: int
    seed: int
    device: str
    cpu_threads: int | None
    precision: str
    kd_T: float
    kd_alpha: float
    feat_beta: float
    t_layer: int
    s_layer: int
    feat_pool: str
    feat_normalize: bool
    output_dir: str
    run_name: str | None
    telemetry_url: str | None
    simulate_gpus: int
    keep_daemon: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Options:
        values = {f.name: getattr(args, f.name) for f in fields(cls)}
        defaults = DEMO_DEFAULTS if args.demo else REAL_DEFAULTS
        for key, default in defaults.items():
            if values[key] is None:
                values[key] = default
        if values["output_dir"] is None:
            values["output_dir"] = "runs/demo" if args.demo else f"runs/{args.command}"
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
