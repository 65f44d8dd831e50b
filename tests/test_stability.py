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
