"""analyses.mechanism on hand-built clock and pizza circuits whose answers are known."""

import math

import pytest
import torch

from analyses import mechanism
from analyses.mechanism import (
    circularity, component_circularity, distance_irrelevance, grad_symmetricity, mechanism_position, sample_triples,
    transformer_logit_fn,
)
from interp.families import build_model
from tests.conftest import tiny_config

P, K = 31, 3
W = 2 * math.pi * K / P


def circle(radii=None):
    """``[P, 2]`` embedding on the circle of frequency K (radius ``radii[a]``)."""
    a = torch.arange(P, dtype=torch.float64)
    e = torch.stack([torch.cos(W * a), torch.sin(W * a)], dim=1)
    return e if radii is None else e * radii[:, None]


def out_dirs(scale=1.0):
    c = torch.arange(P, dtype=torch.float64)
    return torch.stack([torch.cos(scale * W * c), torch.sin(scale * W * c)], dim=1)  # [P, 2]


def clock(x_a, x_b):
    """Multiply the two circles as complex numbers, read off cos(w(a + b - c))."""
    z = torch.stack([x_a[:, 0] * x_b[:, 0] - x_a[:, 1] * x_b[:, 1], x_a[:, 0] * x_b[:, 1] + x_a[:, 1] * x_b[:, 0]], dim=1)
    return z @ out_dirs().T


def pizza(x_a, x_b):
    """Add the two circles, then square the projection on the half-angle direction of c:
    4 cos^2(w(a - b)/2) cos^2(w(a + b - c)/2)."""
    return ((x_a + x_b) @ out_dirs(0.5).T) ** 2


def all_logits(fn, emb):
    a, b = torch.meshgrid(torch.arange(P), torch.arange(P), indexing="ij")
    return fn(emb[a.flatten()], emb[b.flatten()]).reshape(P, P, P)


def correct_table(fn, emb):
    logits = all_logits(fn, emb)
    r = torch.arange(P)
    return logits[r[:, None], r[None, :], (r[:, None] + r[None, :]) % P]


@pytest.mark.parametrize("fn", [clock, pizza])
def test_the_constructions_add(fn):
    logits = all_logits(fn, circle())
    r = torch.arange(P)
    assert torch.equal(logits.argmax(-1), (r[:, None] + r[None, :]) % P)


def test_clock_gradients_are_rotated_by_a_minus_b():
    triples = sample_triples(P)
    a, b = triples[:, 0].double(), triples[:, 1].double()
    gs = grad_symmetricity(clock, circle(), triples)
    assert gs == pytest.approx(torch.cos(W * (a - b)).mean().item(), abs=1e-9)  # the cosine is cos(w(a - b))
    assert abs(gs) < 0.1


def test_pizza_gradients_are_equal():
    assert grad_symmetricity(pizza, circle(), sample_triples(P)) == pytest.approx(1.0, abs=1e-12)


def test_triples_are_fixed_by_the_seed():
    t = sample_triples(P)
    assert t.shape == (mechanism.N_TRIPLES, 3) and torch.equal(t, sample_triples(P))
    assert not torch.equal(t, sample_triples(P, seed=1)) and int(t.min()) == 0 and int(t.max()) == P - 1


def test_distance_irrelevance_of_clock_and_pizza():
    # pizza on unit circles: the correct logit is 4 cos^2(w(a - b)/2), a function of a - b only
    assert distance_irrelevance(correct_table(pizza, circle())) == pytest.approx(0.0, abs=1e-9)
    # clock on circles of random radii: the correct logit is r_a r_b, unrelated to a - b
    radii = 0.5 + torch.rand(P, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    table = correct_table(clock, circle(radii))
    assert torch.allclose(table, radii[:, None] * radii[None, :])
    assert distance_irrelevance(table) > 0.9


def test_distance_irrelevance_of_a_sum_of_known_parts():
    # l = f(a - b) + g(a + b): at a fixed difference a + b runs over every residue (p odd), so the std at
    # each difference is std(g) and the answer is std(g) / sqrt(var f + var g)
    g = torch.Generator().manual_seed(0)
    f_, g_ = torch.randn(P, generator=g, dtype=torch.float64), 0.5 * torch.randn(P, generator=g, dtype=torch.float64)
    r = torch.arange(P)
    table = f_[(r[:, None] - r[None, :]) % P] + g_[(r[:, None] + r[None, :]) % P]
    expected = g_.std(correction=0) / torch.sqrt(f_.var(correction=0) + g_.var(correction=0))
    assert distance_irrelevance(table) == pytest.approx(expected.item(), rel=1e-9)


def test_circularity_of_known_components():
    a = torch.arange(P, dtype=torch.float64)
    cs = lambda k: torch.cos(2 * math.pi * k * a / P)  # noqa: E731
    sn = lambda k: torch.sin(2 * math.pi * k * a / P)  # noqa: E731
    # four orthogonal columns of distinct norms (so PCA returns them): two pure circles, then two
    # components with 64% of their squared norm in their best frequency
    emb = torch.stack([4 * cs(1), 3 * sn(1), 2 * (0.8 * cs(2) + 0.6 * cs(5)), 1 * (0.6 * sn(2) + 0.8 * sn(7))], dim=1)
    emb = emb @ torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64))[0]
    assert component_circularity(emb[:, :1] @ torch.ones(1, 1, dtype=torch.float64)).shape == (1,)
    assert circularity(emb) == pytest.approx((1 + 1 + 0.64 + 0.64) / 4, abs=1e-9)
    assert circularity(torch.cat([2 * circle(), torch.stack([cs(4), sn(4)], 1)], dim=1)) == pytest.approx(1.0, abs=1e-12)


def test_positions_of_the_references_and_the_hand_built_circuits():
    pos = mechanism_position(mechanism.PIZZA_REFERENCE["grad_symmetricity"], mechanism.CLOCK_REFERENCE["distance_irrelevance"])
    assert pos["grad_symmetricity"] == pytest.approx(0) and pos["distance_irrelevance"] == pytest.approx(1)
    radii = 0.5 + torch.rand(P, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    clock_pos = mechanism_position(grad_symmetricity(clock, circle(radii), sample_triples(P)),
                                   distance_irrelevance(correct_table(clock, circle(radii))))
    pizza_pos = mechanism_position(grad_symmetricity(pizza, circle(), sample_triples(P)),
                                   distance_irrelevance(correct_table(pizza, circle())))
    assert min(clock_pos.values()) > 1 and max(pizza_pos.values()) < 0


def test_transformer_logit_fn_is_the_model_and_constant_attention_is_a_pizza():
    cfg = tiny_config()
    model = build_model(cfg)
    tokens = torch.tensor([[1, 2, cfg.eq_token], [5, 0, cfg.eq_token], [12, 12, cfg.eq_token]])
    fn = transformer_logit_fn(model, cfg.eq_token)
    with torch.no_grad():
        assert torch.allclose(fn(model.W_E[tokens[:, 0]], model.W_E[tokens[:, 1]]), model(tokens)[:, -1], atol=1e-6)
    emb = model.W_E[: cfg.p]
    # at initialisation the attention is almost uniform, so the model is nearly a pizza already; sharp
    # attention (large W_Q, W_K) makes the logits depend on E_a and E_b apart
    assert grad_symmetricity(fn, emb, sample_triples(cfg.p)) > 0.9
    with torch.no_grad():
        model.blocks[0].attn.W_Q.mul_(30)
        model.blocks[0].attn.W_K.mul_(30)
    assert grad_symmetricity(fn, emb, sample_triples(cfg.p)) < 0.9
    with torch.no_grad():
        model.blocks[0].attn.W_Q.zero_()  # constant attention: logits depend on E_a + E_b only
    assert grad_symmetricity(fn, emb, sample_triples(cfg.p)) == pytest.approx(1.0, abs=1e-5)
    assert all(p.grad is None for p in model.parameters())  # the measure leaves no gradients behind


def test_applies_only_to_addition_with_odd_p():
    assert mechanism.mechanism_applies("mod_add", 113) is None
    assert "mod_sub" in mechanism.mechanism_applies("mod_sub", 113)
    assert "odd" in mechanism.mechanism_applies("mod_add", 12)
