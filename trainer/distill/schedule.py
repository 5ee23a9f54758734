"""The learning-rate schedule, counted in optimizer steps: one step per `accumulation` batches, the last partial
group of an epoch included (it still ends in an optimizer step)."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def steps_per_epoch(batches: int, accumulation: int) -> int:
    if accumulation < 1:
        raise ValueError(f"accumulation must be at least 1, got {accumulation}")
    return math.ceil(batches / accumulation)


def total_steps(batches: int, accumulation: int, epochs: int) -> int:
    return steps_per_epoch(batches, accumulation) * epochs


def warmup_steps(total: int, ratio: float) -> int:
    return math.ceil(total * ratio)


def linear_factor(step: int, warmup: int, total: int) -> float:
    """Multiplier of the peak rate before optimizer step `step` (0-based): ramps up over `warmup` steps from
    1/warmup, then falls linearly to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def warmup_linear_decay(optimizer: Optimizer, warmup: int, total: int) -> LambdaLR:
    return LambdaLR(optimizer, lambda step: linear_factor(step, warmup, total))
