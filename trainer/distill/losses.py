"""Distillation objectives: response KD (Hinton et al.) and FitNets feature KD (Romero et al.), as pure functions.

Everything here is a function of tensors; the only state is the connector, a linear map trained with the student.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

Pool = Literal["cls", "mean"]


def kd_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """T² · KL(softmax(t/T) ‖ softmax(s/T)), averaged over the batch ("batchmean", the true KL per example).

    The T² factor keeps the soft-target gradients on the same scale as the hard-label ones when T changes.
    """
    t = temperature
    log_p_student = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * (t * t)


@dataclass(frozen=True)
class ResponseLoss:
    total: Tensor  # α·CE + (1−α)·T²·KL
    ce: Tensor
    kd: Tensor  # T²·KL, before the (1−α) weight


def response_kd_loss(student_logits: Tensor, labels: Tensor, teacher_logits: Tensor | None,
                     alpha: float, temperature: float) -> ResponseLoss:
    """α·CE(student, y) + (1−α)·T²·KL(softmax(t/T) ‖ softmax(s/T)); plain CE when there is no teacher."""
    ce = F.cross_entropy(student_logits.float(), labels)
    if teacher_logits is None or alpha >= 1.0:
        return ResponseLoss(total=ce, ce=ce, kd=ce.new_zeros(()))
    kd = kd_kl(student_logits, teacher_logits, temperature)
    return ResponseLoss(total=alpha * ce + (1.0 - alpha) * kd, ce=ce, kd=kd)


def pool(hidden: Tensor, attention_mask: Tensor, mode: Pool) -> Tensor:
    """One vector per sequence: the first ([CLS]) position, or the mean over the positions the mask keeps."""
    if mode == "cls":
        return hidden[:, 0]
    if mode == "mean":
        mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
        # A row with an all-zero mask has no tokens to average; clamping gives it a zero vector instead of NaN.
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    raise ValueError(f"unknown pooling {mode!r}; expected 'cls' or 'mean'")


def feature_mse(student_hidden: Tensor, teacher_hidden: Tensor, attention_mask: Tensor, connector: nn.Module,
                mode: Pool, normalize: bool) -> Tensor:
    """FitNets hint loss: MSE(connector(pool(student_h)), pool(teacher_h)), optionally on L2-normalised vectors.

    Pooling first and projecting after is the same as projecting every position for `cls`, and for `mean` too
    (the connector is affine and the mask weights sum to one), at a fraction of the cost.
    """
    s = connector(pool(student_hidden.float(), attention_mask, mode))
    t = pool(teacher_hidden.float(), attention_mask, mode)
    if normalize:
        s = F.normalize(s, p=2.0, dim=-1)
        t = F.normalize(t, p=2.0, dim=-1)
    return F.mse_loss(s, t)


def make_connector(student_width: int, teacher_width: int) -> nn.Module:
    """A learned linear map from the student's width to the teacher's; the identity when they already agree."""
    if student_width == teacher_width:
        return nn.Identity()
    return nn.Linear(student_width, teacher_width)


@dataclass(frozen=True)
class DistillLoss:
    total: Tensor
    ce: Tensor
    kd: Tensor
    feat: Tensor  # MSE before the β weight

    def components(self) -> dict[str, float]:
        return {"loss": float(self.total.detach()), "ce": float(self.ce.detach()), "kd": float(self.kd.detach()),
                "feat": float(self.feat.detach())}


def distill_loss(response: ResponseLoss, feat: Tensor | None, beta: float) -> DistillLoss:
    """The full objective: response KD plus β times the feature loss (β = 0: no feature term at all)."""
    if feat is None or beta == 0.0:
        return DistillLoss(total=response.total, ce=response.ce, kd=response.kd, feat=response.ce.new_zeros(()))
    return DistillLoss(total=response.total + beta * feat, ce=response.ce, kd=response.kd, feat=feat)
