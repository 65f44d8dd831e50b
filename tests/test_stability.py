"""analyses.stability on hand-made logits whose float32 behaviour is known."""

import math

import pytest
import torch
import torch.nn.functional as F

from analyses.stability import margins, stability_measures


def test_margins_by_hand():
    logits = torch.tensor([[3.0, 1.0, 0.5], [0.0, 2.0, -1.0], [5.0, 5.0, 4.0]])
    labels = torch.tensor([0, 0, 1])
    assert margins(logits, labels).tolist() == [2.0, -2.0, 0.0]


def test_collapse_and_zero_loss_at_known_margins():
    # 4 classes; every other class sits `m` below the correct one. 1 + 3 e^-m rounds to 1 in float32
    # once 3 e^-m < 2^-24, i.e. m > 24 ln 2 + ln 3 = 17.7; at m = 10 nothing collapses, at m = 30 everything.
    def rows(m, label):
        r = torch.zeros(4)
        r[label] = m
        return r

    logits = torch.stack([rows(10.0, 0), rows(30.0, 1), rows(30.0, 2), rows(33.0, 3), rows(-1.0, 0)])
    labels = torch.tensor([0, 1, 2, 3, 0])
    out = stability_measures(logits, labels)
    assert out["softmax_collapse_frac"] == 3 / 5
    assert out["zero_loss_frac"] == 3 / 5
    assert out["min_train_margin"] == -1.0
    # the float64 loss of the collapsed rows is 3 e^-30 > 0, float32's exactly 0: the difference is minus
    # the float64 losses those rows lose, within float32's rounding of the other two rows
    x = logits.double()
    per64 = F.cross_entropy(x, labels, reduction="none")
    per32 = F.cross_entropy(logits, labels, reduction="none").double()
    assert per32[1:4].eq(0).all() and (per64[1:4] > 0).all()
    assert out["loss_f32_minus_f64"] == pytest.approx(F.cross_entropy(logits, labels, reduction="none").mean().item() - per64.mean().item(), rel=1e-9, abs=1e-15)
    assert abs(out["loss_f32_minus_f64"]) < 1e-6


def test_collapse_threshold_is_where_float32_rounds():
    # one rival class at margin m: collapse exactly where float32(1 + e^-m) == 1
    ms = torch.linspace(14.0, 20.0, 61)
    logits = torch.stack([torch.stack([m, torch.tensor(0.0)]) for m in ms])
    labels = torch.zeros(len(ms), dtype=torch.long)
    expected = sum(1 for m in ms.tolist() if torch.tensor(1.0) + torch.tensor(math.exp(-m)) == 1.0) / len(ms)
    assert 0 < expected < 1
    assert stability_measures(logits, labels)["softmax_collapse_frac"] == expected


def test_loss_difference_of_uncollapsed_logits_is_float32_rounding():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 13, generator=g)
    labels = torch.randint(0, 13, (500,), generator=g)
    out = stability_measures(logits, labels)
    assert out["softmax_collapse_frac"] == 0 and out["zero_loss_frac"] == 0
    assert abs(out["loss_f32_minus_f64"]) < 1e-6


# ---- collapse counted as Prieto et al.'s code counts it (issue 24, item 6) ----------------------------------
def _row(p, top, margin=40.0):
    """Logits of p classes: all 0 except class ``top`` at ``margin``."""
    r = torch.zeros(p)
    r[top] = margin
    return r


def test_collapse_is_the_float32_sum_of_exps_equal_to_1_whatever_the_argmax():
    # p = 113. Row 0: correct class 40 above the rest: 1 + 112 e^-40 is 1 in float32 (collapsed, loss 0).
    # Row 1: correct class 10 above the rest: 1 + 112 e^-10 > 1 (not collapsed). Row 2: a WRONG class (0) 40
    # above the rest, label 1: the sum is again exactly 1, so it has collapsed (its float32 probability of the
    # label is exactly 0 and its loss is 40, not 0). The old rule (softmax of the label == 1) missed row 2.
    p = 113
    logits = torch.stack([_row(p, 0), _row(p, 0, margin=10.0), _row(p, 0)])
    labels = torch.tensor([0, 0, 1])
    sums = torch.exp(logits - logits.amax(-1, keepdim=True)).sum(-1)
    assert sums.tolist()[0] == 1.0 and sums.tolist()[1] > 1.0 and sums.tolist()[2] == 1.0  # the hand-built premise
    out = stability_measures(logits, labels)
    assert out["softmax_collapse_frac"] == 2 / 3
    assert out["zero_loss_frac"] == 1 / 3  # only the correctly answered collapsed row has loss exactly 0
    assert F.cross_entropy(logits, labels, reduction="none")[2].item() == pytest.approx(40.0)


def test_a_zero_float32_loss_still_has_a_gradient_that_adam_eps_1e25_turns_into_full_steps():
    # The correct class 25 above the 112 others: float32 loss exactly 0, yet the wrong-class gradient entries
    # are e^-25 / n ~ 1e-11, not 0 (only the label's entry is exactly 0).
    p = 113
    z = _row(p, 0, margin=25.0)[None].requires_grad_()
    loss = F.cross_entropy(z, torch.tensor([0]))
    loss.backward()
    assert loss.item() == 0.0
    g = z.grad[0]
    assert g[0].item() == 0.0 and torch.allclose(g[1:], torch.full((p - 1,), math.exp(-25.0)), rtol=1e-5)
    assert 1e-12 < g[1].item() < 1e-10
    # one Adam step on these logits: with eps 1e-25 every wrong logit moves by the full learning rate; with 1e-8, by ~0.1 % of it
    for eps, moved in ((1e-25, 1.0), (1e-8, math.exp(-25.0) / (math.exp(-25.0) + 1e-8))):
        w = z.detach().clone().requires_grad_()
        w.grad = g[None].clone()
        torch.optim.Adam([w], lr=1.0, eps=eps).step()
        assert (z.detach() - w.detach())[0, 1:].tolist() == pytest.approx([moved] * (p - 1), rel=1e-4)
