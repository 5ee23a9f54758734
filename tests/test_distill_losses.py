"""Each distillation loss against a hand computation, pooling with padding, the connector and layer indices."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainer.distill.errors import UsageError
from trainer.distill.losses import distill_loss, feature_mse, kd_kl, make_connector, pool, response_kd_loss
from trainer.distill.models import resolve_layer, tiny_bert


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# Row 0: teacher [0, 1], student [1, 0]; at T = 2 the two distributions are (q, p) and (p, q) with p = σ(0.5),
# so KL = p·ln(p/q) + q·ln(q/p) = (p − q)·0.5. Row 1: identical logits, KL = 0.
TEACHER = torch.tensor([[0.0, 1.0], [3.0, 3.0]])
STUDENT = torch.tensor([[1.0, 0.0], [3.0, 3.0]])
P = _sigmoid(0.5)
KL_ROW0 = (P - (1 - P)) * 0.5


def test_kd_kl_is_t_squared_times_batchmean_kl() -> None:
    got = kd_kl(STUDENT, TEACHER, temperature=2.0)
    # batchmean: the sum over the batch divided by the 2 rows (not by the 4 elements); times T² = 4.
    assert got.item() == pytest.approx(4.0 * KL_ROW0 / 2, rel=1e-6)
    assert kd_kl(TEACHER, TEACHER, temperature=3.0).item() == pytest.approx(0.0, abs=1e-7)


def test_kd_kl_direction_is_teacher_to_student() -> None:
    # KL(p_t ‖ p_s) and KL(p_s ‖ p_t) differ for asymmetric pairs; the loss is the former.
    s = torch.tensor([[2.0, 0.0, 0.0]])
    t = torch.tensor([[0.0, 1.0, 0.0]])
    p_s = torch.softmax(s, -1)[0].tolist()
    p_t = torch.softmax(t, -1)[0].tolist()
    forward = sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))
    assert kd_kl(s, t, temperature=1.0).item() == pytest.approx(forward, rel=1e-6)


def test_response_loss_mixes_ce_and_kd_with_alpha() -> None:
    labels = torch.tensor([0, 1])
    ce = (math.log(1 + math.exp(-1.0)) + math.log(2.0)) / 2  # row 0: −ln σ(1); row 1: −ln ½
    kd = 4.0 * KL_ROW0 / 2
    out = response_kd_loss(STUDENT, labels, TEACHER, alpha=0.25, temperature=2.0)
    assert out.ce.item() == pytest.approx(ce, rel=1e-6)
    assert out.kd.item() == pytest.approx(kd, rel=1e-6)
    assert out.total.item() == pytest.approx(0.25 * ce + 0.75 * kd, rel=1e-6)
    ce_only = response_kd_loss(STUDENT, labels, None, alpha=0.25, temperature=2.0)
    assert ce_only.total.item() == pytest.approx(ce, rel=1e-6) and ce_only.kd.item() == 0.0
    kd_only = response_kd_loss(STUDENT, labels, TEACHER, alpha=0.0, temperature=2.0)
    assert kd_only.total.item() == pytest.approx(kd, rel=1e-6)


def test_pooling_with_padding() -> None:
    hidden = torch.tensor([[[1.0, 1.0], [3.0, 5.0], [100.0, 100.0]],
                           [[2.0, 0.0], [4.0, 2.0], [6.0, 4.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert pool(hidden, mask, "cls").tolist() == [[1.0, 1.0], [2.0, 0.0]]
    # The padded position (100, 100) must not move the first row's mean.
    assert pool(hidden, mask, "mean").tolist() == [[2.0, 3.0], [4.0, 2.0]]
    with pytest.raises(ValueError):
        pool(hidden, mask, "max")  # type: ignore[arg-type]


def test_feature_mse_with_and_without_normalisation() -> None:
    s = torch.tensor([[[1.0, 2.0], [9.0, 9.0]]])
    t = torch.tensor([[[3.0, 0.0], [7.0, 7.0]]])
    mask = torch.tensor([[1, 0]])
    ident = nn.Identity()
    assert feature_mse(s, t, mask, ident, "cls", normalize=False).item() == pytest.approx(((1 - 3) ** 2 + 2 ** 2) / 2)
    # Unit vectors (1, 2)/√5 and (1, 0): squared distance 2 − 2/√5, over 2 dimensions.
    assert feature_mse(s, t, mask, ident, "cls", normalize=True).item() == pytest.approx(1 - 1 / math.sqrt(5))
    # Mean pooling over the one unmasked position equals cls here; the masked (9, 9) / (7, 7) must be ignored.
    assert feature_mse(s, t, mask, ident, "mean", normalize=False).item() == pytest.approx(4.0)


def test_connector_maps_student_width_to_teacher_width_and_learns() -> None:
    assert isinstance(make_connector(8, 8), nn.Identity)
    connector = make_connector(2, 3)
    assert isinstance(connector, nn.Linear)
    with torch.no_grad():
        connector.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        connector.bias.zero_()
    s = torch.tensor([[[1.0, 2.0]]])
    t = torch.tensor([[[1.0, 2.0, 5.0]]])
    loss = feature_mse(s, t, torch.ones(1, 1), connector, "cls", normalize=False)
    assert loss.item() == pytest.approx(4.0 / 3.0)  # projected (1, 2, 3) against (1, 2, 5)
    loss.backward()
    assert connector.weight.grad is not None and connector.weight.grad[2].abs().sum() > 0


def test_total_adds_beta_times_feature_loss() -> None:
    response = response_kd_loss(STUDENT, torch.tensor([0, 1]), TEACHER, alpha=0.5, temperature=2.0)
    feat = torch.tensor(0.8)
    total = distill_loss(response, feat, beta=2.5)
    assert total.total.item() == pytest.approx(response.total.item() + 2.0)
    assert total.components()["feat"] == pytest.approx(0.8)
    assert distill_loss(response, feat, beta=0.0).total.item() == pytest.approx(response.total.item())


def test_layer_indices_resolve_negative_and_reject_out_of_range() -> None:
    model = tiny_bert(50, layers=4, hidden=16, heads=2, num_labels=2, max_positions=16, seed=0)
    assert resolve_layer(-1, model, "--t-layer", "teacher") == 4
    assert resolve_layer(0, model, "--t-layer", "teacher") == 0
    assert resolve_layer(-5, model, "--t-layer", "teacher") == 0
    for bad in (5, -6):
        with pytest.raises(UsageError, match=r"--t-layer .* out of range.*-5\.\.4"):
            resolve_layer(bad, model, "--t-layer", "teacher")
