"""The pure analysers, on synthetic tensors with known answers."""

import math

import pytest
import torch

from analyses import efficiency, fourier, progress_measures
from interp.families import build_model
from interp.losses import loss_fn
from tests.conftest import tiny_config

P = 13
PLANTED = [3, 5]


def grid(p=P):
    a = torch.arange(p).repeat_interleave(p).double()
    b = torch.arange(p).repeat(p).double()
    return a, b


def planted_logits(p=P, freqs=PLANTED, sign=+1, scale=(4.0, 2.5)):
    """``sum_k alpha_k cos(w_k(a + sign*b - c))`` over the row-major p^2 grid: ``[p * p, p]``."""
    a, b = grid(p)
    c = torch.arange(p).double()
    return sum(s * torch.cos(2 * math.pi * k / p * (a[:, None] + sign * b[:, None] - c[None])) for k, s in zip(freqs, scale))


def labels(p=P, sign=+1):
    a, b = grid(p)
    return ((a + sign * b) % p).long()


# ---- basis and directions ------------------------------------------------------------------------
@pytest.mark.parametrize("p", [2, 7, 8, 13, 59])
def test_basis_is_orthonormal(p):
    B = fourier.fourier_basis(p)
    assert B.shape == (p, p)
    assert torch.allclose(B @ B.T, torch.eye(p, dtype=B.dtype), atol=1e-12)
    assert len(fourier.basis_labels(p)) == p


def test_basis_order_const_cos_sin():
    B, x = fourier.fourier_basis(P), torch.arange(P).double()
    assert torch.allclose(B[0], torch.full((P,), 1 / math.sqrt(P), dtype=torch.float64))
    for k in (1, 4, 6):
        w = 2 * math.pi * k / P
        assert torch.allclose(B[fourier.cos_row(k)], torch.cos(w * x) * math.sqrt(2 / P), atol=1e-12)
        assert torch.allclose(B[fourier.sin_row(k)], torch.sin(w * x) * math.sqrt(2 / P), atol=1e-12)
    assert fourier.basis_labels(P)[:4] == ["const", "cos 1", "sin 1", "cos 2"]


def test_transforms_invert_and_find_a_planted_component():
    x = torch.randn(P, 4, dtype=torch.float64)
    B = fourier.fourier_basis(P)
    assert torch.allclose(B.T @ fourier.fourier_1d(x), x, atol=1e-12)
    # the function cos(w3 a) * sin(w5 b), in unit basis rows, is a single 2-D coefficient
    f = torch.outer(B[fourier.cos_row(3)], B[fourier.sin_row(5)])
    F = fourier.fourier_2d(f)
    expected = torch.zeros(P, P, dtype=torch.float64)
    expected[fourier.cos_row(3), fourier.sin_row(5)] = 1
    assert torch.allclose(F, expected, atol=1e-12)


@pytest.mark.parametrize("sign", [+1, -1])
def test_directions_are_the_normalised_cos_sin_of_a_plus_minus_b(sign):
    a, b = grid()
    D = fourier.directions(P, list(range(1, P // 2 + 1)), sign)
    assert torch.allclose(D @ D.T, torch.eye(D.shape[0], dtype=D.dtype), atol=1e-12)
    assert D.sum(dim=1).abs().max() < 1e-12  # orthogonal to the constant
    w = 2 * math.pi * 4 / P
    i = 2 * (4 - 1)
    norm = P / math.sqrt(2)
    assert torch.allclose(D[i], torch.cos(w * (a + sign * b)) / norm, atol=1e-12)
    assert torch.allclose(D[i + 1], torch.sin(w * (a + sign * b)) / norm, atol=1e-12)


# ---- key frequencies -------------------------------------------------------------------------------
def test_planted_embedding_gives_the_planted_frequencies():
    B = fourier.fourier_basis(P)
    g = torch.Generator().manual_seed(0)
    rows = [fourier.cos_row(3), fourier.sin_row(3), fourier.cos_row(5), fourier.sin_row(5)]
    W_E = B[rows].T @ torch.randn(len(rows), 16, generator=g, dtype=torch.float64)  # [p, d_model]
    W_E = torch.cat([W_E, torch.randn(1, 16, generator=g, dtype=torch.float64)])  # the '=' row is ignored
    norms = fourier.frequency_norms(fourier.embedding_fourier_norms(W_E, P))
    assert norms.shape == (P // 2,)
    assert set(torch.nonzero(norms > 1e-9).flatten().add(1).tolist()) == set(PLANTED)
    assert fourier.embedding_key_frequencies(W_E, P) == PLANTED


def test_block_fraction_of_planted_grids():
    B = fourier.fourier_basis(P)
    g = torch.Generator().manual_seed(5)
    wave = B[fourier.cos_row(3)][:, None] * B[fourier.sin_row(3)][None] + 0.5 * B[fourier.cos_row(5)][:, None]  # over (a, b)
    noise = torch.randn(P, P, generator=g, dtype=torch.float64)
    grids = torch.stack([wave + 7.0, noise, torch.full((P, P), 2.0, dtype=torch.float64)])
    out = fourier.block_fraction(grids, [3, 5])
    assert out[0] == pytest.approx(1.0, abs=1e-12)  # all of it in the blocks of 3 and 5 (the constant is removed)
    # cos 5 (a), constant over b, is 0.5 sqrt(P) times the unit component (cos 5) x (const): squared 0.25 P, the product 1
    assert fourier.block_fraction(wave, [3]) == pytest.approx(1 / (1 + 0.25 * P), rel=1e-12)
    centred = noise - noise.mean()
    spec = fourier.fourier_2d(centred).pow(2)
    rows = [0, fourier.cos_row(3), fourier.sin_row(3), fourier.cos_row(5), fourier.sin_row(5)]
    assert out[1] == pytest.approx((spec[rows][:, rows].sum() / spec.sum()).item(), rel=1e-10)
    assert out[2] == 0.0


def test_unembed_norms_of_a_planted_W_L():
    B = fourier.fourier_basis(P)
    W_L = torch.randn(20, 1, dtype=torch.float64) * B[fourier.sin_row(5)]  # every neuron writes sin 5 to the logits
    norms = fourier.unembed_fourier_norms(W_L)
    assert torch.nonzero(norms > 1e-9).flatten().tolist() == [fourier.sin_row(5)]


def test_neuron_clustering_finds_the_planted_frequencies():
    B = fourier.fourier_basis(P)
    g = torch.Generator().manual_seed(1)
    neurons, truth = [], []
    for k in (3, 3, 3, 5, 5, 5, 6):  # neurons of the form f(a) g(b) + h(a) + j(b) at one frequency (a 3x3 block)
        blk = [0, fourier.cos_row(k), fourier.sin_row(k)]
        coef = torch.randn(3, 3, generator=g, dtype=torch.float64)
        neurons.append(B[blk].T @ coef @ B[blk] + 2.0)
        truth.append(k)
    for _ in range(2):  # noise neurons spread over every frequency, a dead neuron and a constant one
        neurons.append(torch.randn(P, P, generator=g, dtype=torch.float64))
    neurons.append(torch.zeros(P, P, dtype=torch.float64))
    neurons.append(torch.full((P, P), 0.3, dtype=torch.float64))
    acts = torch.stack(neurons, dim=-1)
    clusters = fourier.cluster_neurons(acts)  # 11 neurons: a key frequency needs 2 of them
    assert clusters.min_neurons == fourier.min_cluster_neurons(11) == 2
    assert clusters.key_frequencies == PLANTED  # the lone neuron of frequency 6 does not make 6 key
    assert clusters.freq.tolist() == [3, 3, 3, 5, 5, 5, 0, 0, 0, 0, 0]
    assert clusters.small_clusters == {6: [6]} and clusters.in_small_clusters == [6]
    assert clusters.unclustered == [7, 8] and clusters.dead == [9, 10]
    assert torch.allclose(clusters.frac_explained[:7], torch.ones(7, dtype=torch.float64))
    assert clusters.frac_explained[9:].tolist() == [0.0, 0.0]
    assert clusters.neurons_per_frequency() == {3: 3, 5: 3}
    # without the minimum cluster size the lone neuron would add a key frequency
    assert fourier.cluster_neurons(acts, min_neurons=1).key_frequencies == [3, 5, 6]
    assert fourier.cluster_neurons(acts, min_neurons=4).key_frequencies == []
    fracs = fourier.neuron_frequency_fractions(acts)
    assert fracs.shape == (P // 2, 11) and torch.all(fracs[:, :9].sum(0) <= 1 + 1e-12)


def test_min_cluster_neurons_is_one_percent_of_the_mlp():
    assert [fourier.min_cluster_neurons(d) for d in (11, 64, 256, 512, 1000)] == [2, 2, 3, 5, 10]


def test_mlp_activations_are_the_hook_post_at_the_equals_position():
    cfg = tiny_config()
    model = build_model(cfg)
    acts = fourier.mlp_activations(model, cfg.p, cfg.eq_token)
    assert acts.shape == (cfg.p, cfg.p, cfg.d_mlp)
    tokens = torch.tensor([[4, 7, cfg.eq_token]])
    _, cache = model.run_with_cache(tokens)
    assert torch.allclose(acts[4, 7], cache["blocks.0.mlp.hook_post"][0, -1])


def test_fourier_applies_only_to_sums_and_differences_mod_odd_p():
    assert fourier.fourier_applies("mod_add", 113) is None and fourier.fourier_applies("mod_sub", 59) is None
    assert "mod_mul" in fourier.fourier_applies("mod_mul", 13)
    assert fourier.fourier_applies("mod_add", 12) is not None


# ---- restricted / excluded loss -------------------------------------------------------------------
@pytest.mark.parametrize("sign", [+1, -1])
def test_planted_logits_restricted_loss_equals_full_loss(sign):
    logits, y = planted_logits(sign=sign), labels(sign=sign)
    dirs = fourier.directions(P, PLANTED, sign)
    test_idx = torch.arange(0, P * P, 3)
    assert torch.allclose(progress_measures.restricted_logits(logits, dirs), logits, atol=1e-12)
    full = loss_fn(logits[test_idx], y[test_idx]).item()
    assert progress_measures.restricted_loss(logits, y, dirs, test_idx) == pytest.approx(full, rel=1e-10)
    # nothing is left once the key frequencies are removed: uniform logits, loss log p
    assert progress_measures.excluded_logits(logits, dirs).abs().max() < 1e-12
    assert progress_measures.excluded_loss(logits, y, dirs, test_idx) == pytest.approx(math.log(P), rel=1e-10)
    assert progress_measures.ideal_logit_cosine(logits, PLANTED, sign) == pytest.approx(1.0, abs=1e-12)
    # the wrong directions (a - b for a sum, and vice versa) capture nothing
    assert progress_measures.ideal_logit_cosine(logits, PLANTED, -sign) == pytest.approx(0.0, abs=1e-12)


def test_restricted_logits_keep_the_per_class_mean():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(P * P, P, generator=g, dtype=torch.float64) + torch.arange(P).double()
    dirs = fourier.directions(P, PLANTED)
    r = progress_measures.restricted_logits(logits, dirs)
    assert torch.allclose(r.mean(dim=0), logits.mean(dim=0), atol=1e-12)
    assert torch.allclose(r - r.mean(dim=0), progress_measures.project(logits, dirs), atol=1e-12)
    idx = torch.tensor([5, 0, 100])
    assert torch.allclose(progress_measures.restricted_logits(logits, dirs, idx), r[idx], atol=1e-12)
    assert torch.allclose(progress_measures.excluded_logits(logits, dirs, idx), (logits - progress_measures.project(logits, dirs))[idx], atol=1e-12)


def test_excluded_loss_per_frequency():
    logits, y = 3 * planted_logits(), labels()
    idx = torch.arange(P * P)
    per = progress_measures.excluded_loss_per_frequency(logits, y, idx)
    full = loss_fn(logits, y).item()
    for k in range(1, P // 2 + 1):
        if k in PLANTED:
            assert per[k - 1] > full + 0.1  # removing a key frequency hurts
        else:
            assert per[k - 1] == pytest.approx(full, rel=1e-10)  # removing another one changes nothing
    only = progress_measures.excluded_loss_per_frequency(logits, y, idx, freqs=[5, 3])
    assert torch.allclose(only, per[[4, 2]])


def test_ideal_logit_cosine_is_the_best_least_squares_fit():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(P * P, P, generator=g, dtype=torch.float64)
    a, b = grid()
    c = torch.arange(P).double()
    terms = torch.stack([torch.cos(2 * math.pi * k / P * (a[:, None] + b[:, None] - c[None])).flatten() for k in PLANTED])
    centred = (logits - logits.mean(dim=1, keepdim=True)).flatten()
    fit = terms.T @ torch.linalg.lstsq(terms.T, centred[:, None]).solution.flatten()
    expected = torch.nn.functional.cosine_similarity(fit, centred, dim=0).item()
    assert progress_measures.ideal_logit_cosine(logits, PLANTED) == pytest.approx(expected, rel=1e-10)
    assert progress_measures.ideal_logit_cosine(logits, []) == 0.0


# ---- weights, Gini ----------------------------------------------------------------------------------
def test_gini_of_one_hot_and_uniform():
    for n in (2, 5, 113):
        one_hot = torch.zeros(n)
        one_hot[n // 2] = 3.0
        assert progress_measures.gini(one_hot) == pytest.approx(1 - 1 / n, abs=1e-12)
        assert progress_measures.gini(torch.full((n,), 0.7)) == pytest.approx(0.0, abs=1e-12)
    x = torch.rand(50, dtype=torch.float64)
    assert progress_measures.gini(x) == pytest.approx(progress_measures.gini(10 * x[torch.randperm(50)]), abs=1e-12)


def test_sum_of_squared_weights_and_parameter_norm():
    model = build_model(tiny_config())
    expected = sum(float((p.detach().double() ** 2).sum()) for p in model.parameters())
    assert progress_measures.sum_squared_weights(model) == pytest.approx(expected, rel=1e-12)
    assert efficiency.parameter_norm(model) == pytest.approx(math.sqrt(expected), rel=1e-12)


# ---- C_gen / C_mem ----------------------------------------------------------------------------------
def test_cgen_plus_cmem_is_the_full_logits():
    g = torch.Generator().manual_seed(4)
    logits = planted_logits() + 0.5 * torch.randn(P * P, P, generator=g, dtype=torch.float64)
    y, dirs = labels(), fourier.directions(P, PLANTED)
    gen, mem = efficiency.split_logits(logits, dirs)
    assert torch.allclose(gen + mem, logits, atol=1e-12)
    assert (gen * mem).sum().abs() < 1e-9  # orthogonal parts
    train = torch.randperm(P * P, generator=g)[:60]
    out = efficiency.circuit_logits(logits, y, dirs, train)
    full = efficiency.centred_correct_logit(logits[train], y[train]).mean().item()
    assert out["correct_logit"] == pytest.approx(full, rel=1e-12)
    assert out["cgen_logit"] + out["cmem_logit"] == pytest.approx(full, rel=1e-10)
    assert out["cgen_logit"] == pytest.approx(efficiency.centred_correct_logit(gen[train], y[train]).mean().item(), rel=1e-10)
    gc, lc = gen - gen.mean(1, keepdim=True), logits - logits.mean(1, keepdim=True)
    assert out["cgen_frac"] == pytest.approx((gc.pow(2).sum() / lc.pow(2).sum()).item(), rel=1e-10)


def test_planted_logits_are_all_cgen():
    logits, y = planted_logits(), labels()
    out = efficiency.circuit_logits(logits, y, fourier.directions(P, PLANTED), torch.arange(P * P))
    assert out["cmem_logit"] == pytest.approx(0.0, abs=1e-10) and out["cgen_frac"] == pytest.approx(1.0, abs=1e-12)
    # the planted logits peak at the correct class: cos(0) = 1, mean over classes 0
    assert out["cgen_logit"] == pytest.approx(4.0 + 2.5, rel=1e-10)
