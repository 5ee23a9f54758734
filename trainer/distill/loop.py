"""The training loop: one model trained with CE or distilled from a frozen teacher, every phase marked.

Phases (the names the daemon attributes energy to), nested as
    epoch ⊃ train_step ⊃ {data_load, teacher_forward, <role>_forward, loss, backward}ˣᵏ + optimizer_step
    epoch ⊃ eval, checkpoint
where k is the gradient accumulation and <role> is `student` (or `teacher` while the teacher is fine-tuned).
`epoch` carries the epoch index as its step; every other phase the optimizer step it belongs to.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase, set_seed

from trainer.distill import checkpoints
from trainer.distill.data import TokenizedData, pad_collate
from trainer.distill.evaluate import EvalResult, evaluate
from trainer.distill.losses import DistillLoss, Pool, distill_loss, feature_mse, response_kd_loss
from trainer.distill.precision import Precision
from trainer.distill.schedule import total_steps, warmup_linear_decay, warmup_steps
from trainer.distill.telemetry import Telemetry

LOG_FILE = "train_log.jsonl"


@dataclass(frozen=True)
class TrainSettings:
    epochs: int
    lr: float
    batch_size: int
    eval_batch_size: int
    accumulation: int = 1
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0  # 0 turns clipping off
    patience: int = 0  # epochs without a better eval accuracy before stopping; 0 turns early stopping off
    keep_checkpoints: int = 2
    seed: int = 0


@dataclass(frozen=True)
class KDSettings:
    """Response KD (alpha, temperature) and FitNets feature KD (beta > 0) between resolved hidden-state indices."""
    alpha: float = 0.5
    temperature: float = 2.0
    beta: float = 0.0
    t_layer: int = -1
    s_layer: int = -1
    pool: Pool = "cls"
    normalize: bool = False


@dataclass
class TrainResult:
    steps: int
    total_steps: int
    warmup_steps: int
    epochs_run: int
    train_samples: int  # examples seen, over all epochs
    stopped_early: bool
    best_epoch: int  # counted from 1, as the console counts epochs
    best: EvalResult
    history: list[dict[str, Any]] = field(default_factory=list)
    last_losses: dict[str, float] = field(default_factory=dict)


@dataclass
class Trainee:
    """What is trained: the model, its role (names the forward phase) and, for feature KD, the connector."""
    model: PreTrainedModel
    role: str = "student"
    connector: nn.Module | None = None

    def parameters(self) -> list[nn.Parameter]:
        params = list(self.model.parameters())
        if self.connector is not None:
            params += list(self.connector.parameters())
        return params


def _param_groups(trainee: Trainee, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases and LayerNorm weights (as in BERT), decay on everything else."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    modules: list[nn.Module] = [trainee.model] + ([trainee.connector] if trainee.connector is not None else [])
    for module in modules:
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _loaders(data: TokenizedData, settings: TrainSettings, pad_id: int) -> tuple[DataLoader, DataLoader]:
    collate = pad_collate(pad_id)
    train = DataLoader(data.train, batch_size=settings.batch_size, shuffle=True, collate_fn=collate,
                       generator=torch.Generator().manual_seed(settings.seed))
    held_out = DataLoader(data.eval, batch_size=settings.eval_batch_size, shuffle=False, collate_fn=collate)
    return train, held_out


def eval_loader(data: TokenizedData, batch_size: int, pad_id: int) -> DataLoader:
    return DataLoader(data.eval, batch_size=batch_size, shuffle=False, collate_fn=pad_collate(pad_id))


@dataclass(frozen=True)
class _Teacher:
    """The frozen teacher of a distillation and what to take from it."""
    model: PreTrainedModel
    kd: KDSettings
    want_hidden: bool  # feature KD is on: both models return their hidden states


@dataclass
class _Run:
    """What one training shares between its steps."""
    trainee: Trainee
    tc: Telemetry
    device: torch.device
    precision: Precision
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    settings: TrainSettings
    teacher: _Teacher | None

    def micro_batch(self, batches: Iterator[dict[str, Tensor]], step: int, group: int) -> tuple[DistillLoss, int]:
        """One batch: load, forward (teacher, then the trainee), loss, backward; each a phase of its own."""
        tc, device = self.tc, self.device
        with tc.phase("data_load", step=step):
            batch = next(batches)
            ids = batch["input_ids"].to(device, non_blocking=True)
            mask = batch["attention_mask"].to(device, non_blocking=True)
            labels = batch["labels"].to(device, non_blocking=True)
        teacher = self.teacher
        hidden = teacher is not None and teacher.want_hidden
        with self.precision.autocast(device):
            t_out = None
            if teacher is not None:
                with tc.phase("teacher_forward", step=step), torch.no_grad():
                    t_out = teacher.model(input_ids=ids, attention_mask=mask, output_hidden_states=hidden)
            with tc.phase(f"{self.trainee.role}_forward", step=step):
                s_out = self.trainee.model(input_ids=ids, attention_mask=mask, output_hidden_states=hidden)
            with tc.phase("loss", step=step):
                if teacher is None or t_out is None:
                    loss = distill_loss(response_kd_loss(s_out.logits, labels, None, 1.0, 1.0), None, 0.0)
                else:
                    kd = teacher.kd
                    response = response_kd_loss(s_out.logits, labels, t_out.logits, kd.alpha, kd.temperature)
                    feat = None
                    if hidden and self.trainee.connector is not None:
                        feat = feature_mse(s_out.hidden_states[kd.s_layer], t_out.hidden_states[kd.t_layer], mask,
                                           self.trainee.connector, kd.pool, kd.normalize)
                    loss = distill_loss(response, feat, kd.beta)
        with tc.phase("backward", step=step):
            scaled = loss.total / group  # the mean over the group's batches, as one large batch would give
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        return loss, int(labels.shape[0])

    def optimizer_step(self, step: int) -> float:
        """Unscale, clip, step, advance the schedule; returns the learning rate the step used."""
        with self.tc.phase("optimizer_step", step=step):
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            if self.settings.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(self.trainee.parameters(), self.settings.max_grad_norm)
            lr = float(self.scheduler.get_last_lr()[0])
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return lr


def train(trainee: Trainee, data: TokenizedData, settings: TrainSettings, tc: Telemetry, device: torch.device,
          precision: Precision, output_dir: Path, pad_id: int, teacher: PreTrainedModel | None = None,
          kd: KDSettings | None = None, tokenizer: PreTrainedTokenizerBase | None = None,
          desc: str = "train") -> TrainResult:
    """Trains `trainee` in place and leaves it holding its best weights (by eval accuracy). With a teacher and
    KD settings it distils; without, it trains on the labels alone (cross-entropy)."""
    set_seed(settings.seed)
    output_dir.mkdir(parents=True, exist_ok=True)
    checkpoints.clear(output_dir)
    model = trainee.model.to(device)  # type: ignore[arg-type]
    connector = trainee.connector.to(device) if trainee.connector is not None else None
    frozen: _Teacher | None = None
    if teacher is not None and kd is not None:
        teacher.to(device).eval()  # type: ignore[arg-type]
        teacher.requires_grad_(False)
        frozen = _Teacher(teacher, kd, want_hidden=kd.beta > 0.0 and connector is not None)
    train_loader, held_out = _loaders(data, settings, pad_id)
    n_batches = len(train_loader)
    total = total_steps(n_batches, settings.accumulation, settings.epochs)
    warmup = warmup_steps(total, settings.warmup_ratio)
    optimizer = torch.optim.AdamW(_param_groups(trainee, settings.weight_decay), lr=settings.lr)
    run = _Run(trainee, tc, device, precision, optimizer, warmup_linear_decay(optimizer, warmup, total),
               precision.scaler(device), settings, frozen)
    (output_dir / "hparams.json").write_text(json.dumps(
        {"role": trainee.role, "train": asdict(settings), "kd": asdict(kd) if frozen is not None and kd else None,
         "total_steps": total, "warmup_steps": warmup, "batches_per_epoch": n_batches,
         "device": str(device), "precision": precision.name}, indent=2))
    shown = ("loss", "ce", "kd", "feat") if frozen is not None else ("loss", "ce")

    step = samples = epochs_run = bad_epochs = 0
    best: EvalResult | None = None
    best_epoch = -1
    history: list[dict[str, Any]] = []
    last: dict[str, float] = {}
    stopped_early = False
    with (output_dir / LOG_FILE).open("w") as log:
        for epoch in range(settings.epochs):
            epoch_handle = tc.begin("epoch", step=epoch)
            model.train()
            if connector is not None:
                connector.train()
            batches = iter(train_loader)
            remaining = n_batches
            started = time.perf_counter()
            epoch_samples = 0
            bar = tqdm(total=n_batches, desc=f"{desc} epoch {epoch + 1}/{settings.epochs}", unit="batch",
                       leave=False, dynamic_ncols=True, disable=None)  # None: a bar only on a terminal
            while remaining:
                group = min(settings.accumulation, remaining)
                sums = dict.fromkeys(shown, 0.0)
                with tc.phase("train_step", step=step):
                    for _ in range(group):
                        loss, n = run.micro_batch(batches, step, group)
                        components = loss.components()
                        for k in shown:
                            sums[k] += components[k] / group
                        epoch_samples += n
                    lr = run.optimizer_step(step)
                remaining -= group
                rate = epoch_samples / max(time.perf_counter() - started, 1e-9)
                last = sums
                log.write(json.dumps({"epoch": epoch, "step": step, "lr": lr, **last, "samples_per_s": rate}) + "\n")
                bar.set_postfix({**{k: f"{v:.3f}" for k, v in last.items()}, "samples/s": f"{rate:.0f}"}, refresh=False)
                bar.update(group)
                step += 1
            bar.close()
            samples += epoch_samples
            epochs_run += 1

            with tc.phase("eval", step=step):
                result = evaluate(model, held_out, device, precision, data.num_labels)
            improved = best is None or result.accuracy > best.accuracy
            entry = {"epoch": epoch, "step": step, "eval_accuracy": result.accuracy, "eval_f1": result.f1,
                     "train_loss": last.get("loss", math.nan)}
            history.append(entry)
            log.write(json.dumps(entry) + "\n")
            log.flush()
            with tc.phase("checkpoint", step=step):
                state = {"epoch": epoch, "step": step, "eval": result.as_dict(), "losses": last}
                checkpoints.save_rotating(output_dir, step, settings.keep_checkpoints, model, connector, tokenizer,
                                          state)
                if improved:
                    checkpoints.save(output_dir / checkpoints.BEST, model, connector, tokenizer, state)
            tc.end(epoch_handle)
            tqdm.write(f"{desc} epoch {epoch + 1}: loss {last.get('loss', math.nan):.4f}  "
                       f"eval accuracy {result.accuracy:.4f}  macro-F1 {result.f1:.4f}")
            if improved:
                best, best_epoch, bad_epochs = result, epoch, 0
            else:
                bad_epochs += 1
                if settings.patience and bad_epochs >= settings.patience:
                    stopped_early = True
                    tqdm.write(f"{desc}: no better eval accuracy for {bad_epochs} epoch(s); stopping early")
                    break

    assert best is not None, "at least one epoch runs"
    if best_epoch != epochs_run - 1:
        checkpoints.load_weights(output_dir / checkpoints.BEST, model, connector)
    return TrainResult(steps=step, total_steps=total, warmup_steps=warmup, epochs_run=epochs_run,
                       train_samples=samples, stopped_early=stopped_early, best_epoch=best_epoch + 1, best=best,
                       history=history, last_losses=last)


# The final held-out pass is repeated until it has lasted this long: a single pass of a small model can be shorter
# than a few sensor updates, and the energy per inference would then rest on one or two readings.
MIN_INFERENCE_S = 2.0
MAX_INFERENCE_PASSES = 50


def measure_inference(model: PreTrainedModel, data: TokenizedData, batch_size: int, tc: Telemetry,
                      device: torch.device, precision: Precision, pad_id: int) -> tuple[EvalResult, int]:
    """The final held-out evaluation, each pass in a phase of its own (`inference`): the model's accuracy, and
    from the daemon its energy per inference. Returns the result and the number of passes."""
    loader = eval_loader(data, batch_size, pad_id)
    model.to(device)  # type: ignore[arg-type]
    began = time.perf_counter()
    passes = 0
    result: EvalResult | None = None
    while result is None or (time.perf_counter() - began < MIN_INFERENCE_S and passes < MAX_INFERENCE_PASSES):
        with tc.phase("inference", step=passes):
            current = evaluate(model, loader, device, precision, data.num_labels)
        result = result or current
        passes += 1
    return result, passes
