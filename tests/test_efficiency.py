"""The per-circuit split of weights and logits, on a model assembled by hand with known answers."""

import math

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from analyses import efficiency, fourier
from interp.families import build_model
from tests.conftest import tiny_config

P = 7
KEYS = [1, 3]  # the Fourier circuit's frequencies
MEM_FREQ = 2  # the memoriser's embedding uses only this (non-key) frequency
PAIRS = [((3 * c + 1) % P, (c - (3 * c + 1)) % P) for c in range(P)]  # memorised: one pair per class c
N_GEN = len(KEYS) * P * P  # one Fourier neuron per key frequency and phase pair (n1, n2)
D_MLP = N_GEN + len(PAIRS)
# residual stream layout
E_GEN, E_MEM, POS, H0, H1, U_GEN, U_MEM = 0, 4, 6, 9, 15, 21, 25
D_MODEL, D_HEAD = 32, 6
# scales, so that no norm is 1 by accident
R_E, G_IN, S_OUT, T_U = (1.5, 0.8), 0.7, (1.1, 0.6), (0.9, 1.3)
R_M, V_OUT, U_MEM_SCALE = 1.2, 2.0, 1.3
DELTA = (1 - math.cos(2 * math.pi / P)) / 2  # the memoriser's margin: its neurons fire on one pair only


def _w(k):
    return 2 * math.pi * k / P


def hand_built_model():
    """A Fourier-multiplication circuit on ``KEYS`` plus a lookup-table memoriser on ``PAIRS``.

    Attention is shared: head 0 attends (1/2, 1/4, 1/4) to (a, b, =) by position, head 1 uniformly;
    both copy the token embedding, so a neuron can read E[a] (4 h0 - 3 h1) and E[b] (-4 h0 + 6 h1)
    apart. Fourier neuron (k, n1, n2): ``relu(cos(w(a - n1)) + cos(w(b - n2)))`` writing
    ``cos(w(c - n1 - n2))``; summed over all phase pairs that is exactly ``G_k cos(w(a + b - c))``
    (a discrete convolution). Memoriser neuron j: ``relu(cos(w_m(a - a_j)) + cos(w_m(b - b_j)) - 2 + DELTA)``,
    non-zero on ``(a_j, b_j)`` only, writing the non-key, non-constant part of the one-hot of its class.

    Returns:
        ``(model, gen, mem, shared, expected_gen_logits, expected_mem_logits, gen_mask)``: the pieces
        are ``{parameter name: tensor}`` that sum to the model's parameters.
    """
    cfg = HookedTransformerConfig(n_layers=1, n_heads=2, d_model=D_MODEL, d_head=D_HEAD, d_mlp=D_MLP, act_fn="relu",
                                  normalization_type=None, d_vocab=P + 1, d_vocab_out=P, n_ctx=3, dtype=torch.float64)
    model = HookedTransformer(cfg)
    params = dict(model.named_parameters())
    gen = {n: torch.zeros_like(t) for n, t in params.items()}
    mem = {n: torch.zeros_like(t) for n, t in params.items()}
    shared = {n: torch.zeros_like(t) for n, t in params.items()}
    x = torch.arange(P, dtype=torch.float64)
    c = torch.arange(P, dtype=torch.float64)

    # shared attention: positions one-hot in POS..POS+2; head 0 scores (ln 2, 0, 0), head 1 all 0
    for j in range(3):
        shared["pos_embed.W_pos"][j, POS + j] = 1.0
    shared["blocks.0.attn.W_Q"][0, POS + 2, 0] = 1.0
    shared["blocks.0.attn.W_K"][0, POS, 0] = math.log(2) * math.sqrt(D_HEAD)
    for h, out in ((0, H0), (1, H1)):
        for d in range(D_HEAD):
            shared["blocks.0.attn.W_V"][h, d, d] = 1.0
            shared["blocks.0.attn.W_O"][h, d, out + d] = 1.0

    def read(col, dims, a_dir, b_dir, into):
        """Neuron ``col`` reads E[a] . a_dir + E[b] . b_dir from the embedding dims ``dims``."""
        for i, d in enumerate(dims):
            into["blocks.0.mlp.W_in"][H0 + d, col] += 4 * a_dir[i] - 4 * b_dir[i]
            into["blocks.0.mlp.W_in"][H1 + d, col] += -3 * a_dir[i] + 6 * b_dir[i]

    # C_gen
    expected_gen = torch.zeros(P * P, P, dtype=torch.float64)
    a, b = torch.arange(P).repeat_interleave(P).double(), torch.arange(P).repeat(P).double()
    col = 0
    for i, k in enumerate(KEYS):
        w, dims = _w(k), (E_GEN + 2 * i, E_GEN + 2 * i + 1)
        gen["embed.W_E"][:P, dims[0]] = R_E[i] * torch.cos(w * x)
        gen["embed.W_E"][:P, dims[1]] = R_E[i] * torch.sin(w * x)
        gen["unembed.W_U"][U_GEN + 2 * i] = T_U[i] * torch.cos(w * c)
        gen["unembed.W_U"][U_GEN + 2 * i + 1] = T_U[i] * torch.sin(w * c)
        for n1 in range(P):
            for n2 in range(P):
                read(col, dims, G_IN * torch.tensor([math.cos(w * n1), math.sin(w * n1)], dtype=torch.float64),
                     G_IN * torch.tensor([math.cos(w * n2), math.sin(w * n2)], dtype=torch.float64), gen)
                gen["blocks.0.mlp.W_out"][col, U_GEN + 2 * i] = S_OUT[i] * math.cos(w * (n1 + n2))
                gen["blocks.0.mlp.W_out"][col, U_GEN + 2 * i + 1] = S_OUT[i] * math.sin(w * (n1 + n2))
                col += 1
        G = torch.relu(torch.cos(w * x)[:, None] + torch.cos(w * x)[None, :])
        G_hat = (G * torch.cos(w * (x[:, None] + x[None, :]))).sum().item()
        amplitude = R_E[i] * G_IN * S_OUT[i] * T_U[i] * G_hat
        expected_gen += amplitude * torch.cos(w * (a[:, None] + b[:, None] - c[None]))

    # C_mem
    w = _w(MEM_FREQ)
    mem["embed.W_E"][:P, E_MEM] = R_M * torch.cos(w * x)
    mem["embed.W_E"][:P, E_MEM + 1] = R_M * torch.sin(w * x)
    _, P_other, _ = efficiency.residue_projectors(P, KEYS)
    expected_mem = torch.zeros(P * P, P, dtype=torch.float64)
    for j, (aj, bj) in enumerate(PAIRS):
        col = N_GEN + j
        y = (aj + bj) % P
        read(col, (E_MEM, E_MEM + 1), torch.tensor([math.cos(w * aj), math.sin(w * aj)], dtype=torch.float64),
             torch.tensor([math.cos(w * bj), math.sin(w * bj)], dtype=torch.float64), mem)
        mem["blocks.0.mlp.b_in"][col] = -(2 - DELTA) * R_M
        mem["blocks.0.mlp.W_out"][col, U_MEM + y] = V_OUT
        mem["unembed.W_U"][U_MEM + y] = U_MEM_SCALE * P_other[y]
        expected_mem[aj * P + bj] = DELTA * R_M * V_OUT * U_MEM_SCALE * P_other[y]

    with torch.no_grad():
        for n, t in params.items():
            t.copy_(gen[n] + mem[n] + shared[n])
    mask = torch.arange(D_MLP) < N_GEN
    return model, gen, mem, shared, expected_gen, expected_mem, mask


def _norm(pieces):
    return math.sqrt(sum(t.pow(2).sum().item() for t in pieces.values()))


@pytest.fixture(scope="module")
def built():
    return hand_built_model()


def all_logits(model):
    a, b = torch.arange(P).repeat_interleave(P), torch.arange(P).repeat(P)
    tokens = torch.stack([a, b, torch.full_like(a, P)], dim=1)
    with torch.no_grad():
        return model(tokens)[:, -1], (a + b) % P


def test_clustering_finds_the_circuits_neurons(built):
    model, *_, mask = built
    acts = fourier.mlp_activations(model, P, P)
    clusters = fourier.cluster_neurons(acts)
    assert clusters.key_frequencies == KEYS
    assert torch.equal(clusters.freq > 0, mask)
    assert torch.equal(efficiency.gen_neurons(acts, KEYS), mask)
    assert efficiency.key_frequency_fraction(acts, KEYS)[~mask].max() < 0.5  # the lookup neurons are nowhere near
    cmem = torch.nonzero(~mask).flatten().tolist()
    assert torch.equal(efficiency.gen_neuron_mask(D_MLP, cmem), mask)


def test_a_neuron_mixing_key_frequencies_is_cgen():
    x = torch.arange(P, dtype=torch.float64)
    a, b = x[:, None], x[None, :]
    mixed = torch.cos(_w(1) * (a + b)) + torch.cos(_w(3) * (a - b))  # half its variance in each of 1 and 3
    other = torch.cos(_w(1) * (a + b)) + 0.9 * torch.cos(_w(2) * (a + b))
    acts = torch.stack([mixed, other, torch.zeros(P, P, dtype=torch.float64)], dim=-1)
    frac = efficiency.key_frequency_fraction(acts, KEYS)
    assert frac[0] == pytest.approx(1.0, abs=1e-12) and frac[1] == pytest.approx(1 / 1.81, rel=1e-9) and frac[2] == 0
    assert efficiency.gen_neurons(acts, KEYS).tolist() == [True, False, False]
    assert fourier.cluster_neurons(acts).freq.tolist() == [0, 0, 0]  # no single frequency holds 85 %


def test_hand_built_model_splits_back_into_its_norms(built):
    model, gen, mem, shared, _, _, mask = built
    norms = efficiency.circuit_param_norms(model, KEYS, mask)
    assert norms["cgen_param_norm"] == pytest.approx(_norm(gen), rel=1e-12)
    assert norms["cmem_param_norm"] == pytest.approx(_norm(mem), rel=1e-12)
    assert norms["shared_param_norm"] == pytest.approx(_norm(shared), rel=1e-12)
    # the memoriser's threshold (its neurons' bias) is its own; C_gen has no bias
    assert norms["cmem_param_norm"] > _norm({k: v for k, v in mem.items() if k != "blocks.0.mlp.b_in"})


def test_hand_built_model_splits_back_into_its_logits(built):
    model, gen, mem, _, expected_gen, expected_mem, mask = built
    logits, labels = all_logits(model)
    assert torch.allclose(logits, expected_gen + expected_mem, rtol=0, atol=1e-12)  # the model is what it claims
    dirs = fourier.directions(P, KEYS)
    lg_gen, lg_mem = efficiency.split_logits(logits, dirs)
    assert torch.allclose(lg_gen, expected_gen, rtol=0, atol=1e-12) and torch.allclose(lg_mem, expected_mem, rtol=0, atol=1e-12)
    # correct-class logits on a subset with 3 of the 7 memorised pairs
    memorised = [a * P + b for a, b in PAIRS]
    idx = torch.tensor(memorised[:3] + [i for i in range(P * P) if i not in memorised][:9])
    out = efficiency.circuit_logits(logits, labels, dirs, idx)
    cgen = expected_gen[0, 0].item()  # sum_k G_k cos(0), the same on every input; its mean over classes is 0
    cmem = 3 / 12 * DELTA * R_M * V_OUT * U_MEM_SCALE * (1 - (2 * len(KEYS) + 1) / P)
    assert out["cgen_logit"] == pytest.approx(cgen, rel=1e-10) and out["cmem_logit"] == pytest.approx(cmem, rel=1e-10)
    assert cgen > 0 and cmem > 0
    assert efficiency.efficiency(out["cgen_logit"], efficiency.circuit_param_norms(model, KEYS, mask)["cgen_param_norm"]) == \
        pytest.approx(cgen / _norm(gen), rel=1e-10)


def test_split_is_orthogonal_and_complete_in_float64():
    # a random model with random (non-zero) biases: every parameter is counted once, parts orthogonal
    model = build_model(tiny_config(freeze_biases=False))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, t in model.named_parameters():
            t.copy_(torch.randn(t.shape, generator=g))
    p, keys = model.cfg.d_vocab_out, [2, 5]
    mask = torch.rand(model.cfg.d_mlp, generator=g) < 0.4
    split = efficiency.split_parameters(model, keys, mask)
    norms = split.norms()
    total = sum((t.detach().double() ** 2).sum().item() for t in model.parameters())
    assert sum(v ** 2 for v in norms.values()) == pytest.approx(total, rel=1e-12)
    # shared: attention, W_pos, the '=' row, b_out, and the constant (mean over tokens / classes) components
    sq = {n: (t.detach().double() ** 2).sum().item() for n, t in model.named_parameters()}
    W_E, W_U, b_U = model.W_E.detach().double(), model.W_U.detach().double(), model.b_U.detach().double()
    constant = p * ((W_E[:p].mean(0) ** 2).sum() + (W_U.mean(1) ** 2).sum() + b_U.mean() ** 2).item()
    shared = sum(v for n, v in sq.items() if "attn" in n or n in ("pos_embed.W_pos", "blocks.0.mlp.b_out")) \
        + (W_E[p:] ** 2).sum().item() + constant
    assert norms["shared_param_norm"] ** 2 == pytest.approx(shared, rel=1e-12)
    attributed = total - shared
    assert norms["cgen_param_norm"] ** 2 + norms["cmem_param_norm"] ** 2 == pytest.approx(attributed, rel=1e-12)
    params = dict(model.named_parameters())
    for name, axis in (("embed.W_E", 0), ("unembed.W_U", 1), ("unembed.b_U", 0)):  # split along the token / class axis
        pieces = [split.gen[name], split.mem[name], split.shared[name]]
        whole = params[name].detach().double().movedim(axis, 0)[:p].reshape(p, -1)
        assert torch.allclose(sum(pieces), whole, atol=1e-12)
        for i in range(3):
            for j in range(i + 1, 3):
                assert abs((pieces[i] * pieces[j]).sum().item()) < 1e-9 * total
        assert split.gen[name].dtype == torch.float64
    # the C_gen part of W_E has only key-frequency components over the tokens
    spectrum = fourier.frequency_norms(fourier.embedding_fourier_norms(split.gen["embed.W_E"], p))
    assert set(torch.nonzero(spectrum > 1e-9).flatten().add(1).tolist()) == set(keys)
    assert efficiency.gen_neuron_mask(4, [1, 3]).tolist() == [True, False, True, False]
    per_neuron = efficiency.neuron_norms(model)
    mlp = ("blocks.0.mlp.W_in", "blocks.0.mlp.b_in", "blocks.0.mlp.W_out")
    assert per_neuron[mask].pow(2).sum().item() == pytest.approx(sum(split.gen[n].pow(2).sum().item() for n in mlp), rel=1e-12)
    assert per_neuron[~mask].pow(2).sum().item() == pytest.approx(sum(split.mem[n].pow(2).sum().item() for n in mlp), rel=1e-12)


def test_split_refuses_what_it_does_not_define():
    model = build_model(tiny_config())
    with pytest.raises(ValueError, match="gen_neurons"):
        efficiency.split_parameters(model, [1], torch.ones(3, dtype=torch.bool))
    assert math.isnan(efficiency.efficiency(1.0, 0.0))


def test_more_efficient_from_is_the_last_crossing():
    steps = [0, 10, 20, 30, 40, 50]
    nan = math.nan
    # early noise (step 0) does not count; C_gen ahead for good from step 30
    assert efficiency.more_efficient_from(steps, [1, 0, 0, 2, 3, 4], [0, 1, 1, 1, 1, 1]) == 30
    assert efficiency.more_efficient_from(steps, [1] * 6, [0] * 6) == 0
    assert efficiency.more_efficient_from(steps, [0, 0, 2, 2, 2, 0], [1] * 6) is None  # behind at the end
    assert efficiency.more_efficient_from(steps, [nan, 2, 2, nan, 2, 2], [1] * 6) == 40  # NaN is not ahead
    assert efficiency.more_efficient_from([], [], []) is None
