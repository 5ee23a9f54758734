"""Everything a distillation or comparison needs, loaded and checked before any run is registered: a bad
argument fails here, in seconds, with nothing half-recorded in the ledger."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from trainer.distill import data as data_mod
from trainer.distill.data import TokenizedData
from trainer.distill.errors import UsageError
from trainer.distill.loop import KDSettings, TrainSettings
from trainer.distill.models import (
    check_tokenizers_agree,
    check_vocab_fits,
    count_parameters,
    load_classifier,
    load_tokenizer,
    resolve_layer,
    tiny_bert,
)
from trainer.distill.options import Options
from trainer.distill.precision import Precision, pick_device, pick_precision

# The demo's models: BERT encoders small enough to train in seconds on two CPU cores. The widths differ, so the
# FitNets connector (a learned 64 → 128 linear map) is part of what the demo trains.
DEMO_TEACHER = {"layers": 4, "hidden": 128, "heads": 4}
DEMO_STUDENT = {"layers": 2, "hidden": 64, "heads": 2}
DEMO_VOCAB = 1000


@dataclass
class Job:
    opts: Options
    tokenizer: PreTrainedTokenizerBase
    data: TokenizedData
    teacher: PreTrainedModel
    make_student: Callable[[], PreTrainedModel]
    teacher_label: str
    student_label: str
    device: torch.device
    precision: Precision
    student_train: TrainSettings
    teacher_train: TrainSettings | None
    kd: KDSettings
    output_dir: Path
    comparison_id: str = field(default_factory=lambda: time.strftime("%Y%m%d-%H%M%S"))

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0)

    @property
    def run_prefix(self) -> str:
        return self.opts.run_name or ("demo" if self.opts.demo else f"{self.student_label}<-{self.teacher_label}")

    def hparams(self) -> dict[str, Any]:
        """All settings, as given and as resolved (device, precision, layer indices, data sizes)."""
        return {"options": self.opts.as_dict(), "teacher": self.teacher_label, "student": self.student_label,
                "device": str(self.device), "precision": self.precision.name, "data": self.data.meta(),
                "kd": {**self.kd.__dict__}, "student_train": {**self.student_train.__dict__},
                "teacher_train": None if self.teacher_train is None else {**self.teacher_train.__dict__},
                "teacher_parameters": count_parameters(self.teacher), "comparison_id": self.comparison_id}


def _train_settings(opts: Options, epochs: int, lr: float) -> TrainSettings:
    return TrainSettings(epochs=epochs, lr=lr, batch_size=opts.batch_size, eval_batch_size=opts.eval_batch_size,
                         accumulation=opts.grad_accum, weight_decay=opts.weight_decay, warmup_ratio=opts.warmup_ratio,
                         max_grad_norm=opts.max_grad_norm, patience=opts.patience,
                         keep_checkpoints=opts.keep_checkpoints, seed=opts.seed)


def _demo_parts(opts: Options, output_dir: Path) -> tuple[PreTrainedTokenizerBase, TokenizedData, PreTrainedModel,
                                                          Callable[[], PreTrainedModel], str, str]:
    text = data_mod.synthetic_text(opts.max_train_samples, opts.max_eval_samples, opts.seed)
    tokenizer = data_mod.build_wordpiece_tokenizer(list(text.train["text"]), output_dir / "tokenizer",
                                                   vocab_size=DEMO_VOCAB)
    data = data_mod.tokenize(text, tokenizer, opts.max_length)
    vocab = len(tokenizer)
    positions = max(opts.max_length, 8)
    teacher = tiny_bert(vocab, num_labels=data.num_labels, max_positions=positions, seed=opts.seed, **DEMO_TEACHER)

    def make_student() -> PreTrainedModel:
        return tiny_bert(vocab, num_labels=data.num_labels, max_positions=positions, seed=opts.seed + 1,
                         **DEMO_STUDENT)

    t, s = DEMO_TEACHER, DEMO_STUDENT
    return (tokenizer, data, teacher, make_student, f"bert-{t['layers']}L-{t['hidden']}H",
            f"bert-{s['layers']}L-{s['hidden']}H")


def _real_parts(opts: Options) -> tuple[PreTrainedTokenizerBase, TokenizedData, PreTrainedModel,
                                        Callable[[], PreTrainedModel], str, str]:
    assert opts.teacher_name and opts.student_name and opts.dataset
    teacher_tok = load_tokenizer(opts.teacher_name)
    student_tok = load_tokenizer(opts.student_name)
    check_tokenizers_agree(teacher_tok, student_tok)
    data = data_mod.load_data(opts.dataset, teacher_tok, opts.max_length, opts.train_split, opts.eval_split,
                              opts.max_train_samples, opts.max_eval_samples, opts.seed)
    teacher, trained_head = load_classifier(opts.teacher_name, data.num_labels, "teacher")
    if not trained_head and opts.teacher_epochs == 0:
        raise UsageError(f"the teacher {opts.teacher_name!r} has no trained classification head (it is a bare "
                         "encoder), so its predictions would be random; fine-tune it first with --teacher-epochs N, "
                         "or pass a fine-tuned checkpoint")
    student_name = opts.student_name

    def make_student() -> PreTrainedModel:
        # Seeded, so the baseline and the distilled student start from the same classification head.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(opts.seed + 1)
            return load_classifier(student_name, data.num_labels, "student")[0]

    return (teacher_tok, data, teacher, make_student, _short(opts.teacher_name), _short(opts.student_name))


def _short(name: str) -> str:
    return Path(name.rstrip("/")).name or name


def prepare(opts: Options) -> Job:
    device = pick_device(opts.device)
    precision = pick_precision(opts.precision, device)  # type: ignore[arg-type]
    if device.type == "cpu" and opts.cpu_threads:
        torch.set_num_threads(opts.cpu_threads)
    output_dir = Path(opts.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if opts.demo:
        tokenizer, data, teacher, make_student, t_label, s_label = _demo_parts(opts, output_dir)
    else:
        tokenizer, data, teacher, make_student, t_label, s_label = _real_parts(opts)
    if len(data.train) == 0 or len(data.eval) == 0:
        raise UsageError(f"the data set has {len(data.train)} training and {len(data.eval)} held-out examples; "
                         "both splits need at least one")
    probe = make_student()
    check_vocab_fits(teacher, tokenizer, "teacher")
    check_vocab_fits(probe, tokenizer, "student")
    kd = KDSettings(alpha=opts.kd_alpha, temperature=opts.kd_T, beta=opts.feat_beta,
                    t_layer=resolve_layer(opts.t_layer, teacher, "--t-layer", "teacher"),
                    s_layer=resolve_layer(opts.s_layer, probe, "--s-layer", "student"),
                    pool=opts.feat_pool, normalize=opts.feat_normalize)  # type: ignore[arg-type]
    teacher_train = (_train_settings(opts, opts.teacher_epochs, opts.teacher_lr or opts.lr)
                     if opts.teacher_epochs > 0 else None)
    del probe
    return Job(opts=opts, tokenizer=tokenizer, data=data, teacher=teacher, make_student=make_student,
               teacher_label=t_label, student_label=s_label, device=device, precision=precision,
               student_train=_train_settings(opts, opts.epochs, opts.lr), teacher_train=teacher_train, kd=kd,
               output_dir=output_dir)
