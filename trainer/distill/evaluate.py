"""Held-out evaluation: accuracy and macro-F1 (pure functions of predictions), and the loop that produces them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from trainer.distill.precision import Precision


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    return float(np.mean(pred == gold)) if gold.size else float("nan")


def macro_f1(pred: np.ndarray, gold: np.ndarray, num_labels: int) -> float:
    """Unweighted mean of per-class F1 over all `num_labels` classes; a class never predicted nor present scores 0
    (so a model that ignores a class is not rewarded for it)."""
    scores = []
    for c in range(num_labels):
        tp = float(np.sum((pred == c) & (gold == c)))
        fp = float(np.sum((pred == c) & (gold != c)))
        fn = float(np.sum((pred != c) & (gold == c)))
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores)) if scores else float("nan")


@dataclass(frozen=True)
class EvalResult:
    accuracy: float
    f1: float
    samples: int

    def as_dict(self) -> dict[str, float | int]:
        return {"accuracy": self.accuracy, "f1": self.f1, "samples": self.samples}


@torch.no_grad()
def predict(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]], device: torch.device,
            precision: Precision) -> tuple[np.ndarray, np.ndarray]:
    was_training = model.training
    model.eval()
    preds, golds = [], []
    try:
        for batch in batches:
            with precision.autocast(device):
                logits = model(input_ids=batch["input_ids"].to(device),
                               attention_mask=batch["attention_mask"].to(device)).logits
            preds.append(logits.argmax(dim=-1).cpu().numpy())
            golds.append(batch["labels"].numpy())
    finally:
        model.train(was_training)
    if not preds:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(preds), np.concatenate(golds)


def evaluate(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]], device: torch.device,
             precision: Precision, num_labels: int) -> EvalResult:
    pred, gold = predict(model, batches, device, precision)
    return EvalResult(accuracy=accuracy(pred, gold), f1=macro_f1(pred, gold, num_labels), samples=int(gold.size))
