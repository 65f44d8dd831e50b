"""analyses.groups: groups, their irreps (checked by the representation axioms and Schur orthogonality),
the Z_p case against analyses.fourier, and a hand-built circuit in discrete-log coordinates."""

import math

import pytest
import torch

from analyses import efficiency, fourier, groups, progress_measures
from interp.families import build_model
from interp.losses import loss_fn
from tests.conftest import tiny_config

GROUPS = {
    "Z7": lambda: groups.cyclic(7), "Z12": lambda: groups.cyclic(12), "S3": lambda: groups.symmetric(3),
    "S4": lambda: groups.symmetric(4), "S5": lambda: groups.symmetric(5), "D5": lambda: groups.dihedral(5),
    "D6": lambda: groups.dihedral(6), "A5": lambda: groups.alternating(5),
}


def conjugacy_classes(G: groups.Group) -> int:
    seen, count = set(), 0
    for g in range(G.order):
        if g not in seen:
            seen |= set(G.table[G.table[:, g], G.inverse].tolist())
            count += 1
    return count


@pytest.mark.parametrize("name", list(GROUPS))
def test_irreps_are_orthogonal_representations(name):
    G = GROUPS[name]()
    G.check()
    irr = groups.irreps(G)
    assert irr[0].name.startswith("trivial") and irr[0].dim == 1
    for rho in irr:
        M = rho.matrices
        assert torch.allclose(M[G.table], M[:, None] @ M[None, :], atol=1e-9), rho.name  # rho(gh) = rho(g) rho(h)
        assert torch.allclose(M @ M.transpose(1, 2), torch.eye(rho.dim, dtype=M.dtype).expand_as(M), atol=1e-9)
    B, owner = groups.isotypic_basis(irr)
    assert torch.allclose(B @ B.T, torch.eye(G.order, dtype=B.dtype), atol=1e-9)
    # Schur: characters of different real irreps are orthogonal; <chi, chi> = 1 (real type, dim^2 functions)
    # or 2 (a complex pair as one real irrep, dim^2 / 2 functions)
    chi = torch.stack([r.character for r in irr])
    gram = chi @ chi.T / G.order
    n_funcs = torch.bincount(owner, minlength=len(irr)).double()
    dims = torch.tensor([r.dim for r in irr], dtype=torch.float64)
    assert torch.allclose(gram, torch.diag(dims**2 / n_funcs), atol=1e-9)
    # as many complex irreps as conjugacy classes: a real irrep of complex type counts twice
    assert int((dims**2 / n_funcs).sum().round()) == conjugacy_classes(G)


def test_known_irrep_dimensions_and_names():
    dims = lambda G: [r.dim for r in groups.irreps(G)]  # noqa: E731
    assert dims(groups.symmetric(4)) == [1, 3, 2, 3, 1]
    assert dims(groups.symmetric(5)) == [1, 4, 5, 6, 5, 4, 1]
    assert sorted(dims(groups.alternating(5))) == [1, 3, 3, 4, 5]
    names = [r.name for r in groups.irreps(groups.symmetric(5))]
    assert names[1] == "standard [4,1]" and names[-1] == "sign [1,1,1,1,1]" and names[-2] == "sign⊗standard [2,1,1,1]"
    sign = groups.irreps(groups.symmetric(4))[-1].character
    S4 = groups.symmetric(4)
    assert sign.tolist() == [(-1.0) ** groups.parity(g) for g in S4.elements]
    # the standard irrep's character is (number of fixed points) - 1
    std = groups.irreps(S4)[1].character
    assert torch.allclose(std, torch.tensor([sum(g[i] == i for i in range(4)) - 1.0 for g in S4.elements], dtype=torch.float64))


def test_symmetric_order_and_composition():
    S4 = groups.symmetric(4)
    assert S4.labels[:3] == ["0123", "0132", "0213"] and S4.labels[-1] == "3210" and S4.identity == 0
    g, h = S4.elements.index((1, 0, 2, 3)), S4.elements.index((0, 2, 1, 3))
    # (g·h)(x) = g(h(x)): h sends 1 -> 2, g fixes 2, so g·h sends 1 -> 2
    assert S4.elements[int(S4.table[g, h])] == (1, 2, 0, 3)
    assert len(S4.subgroup([g, h])) == 6


@pytest.mark.parametrize("p,root", [(7, 3), (13, 2), (59, 2), (97, 5), (113, 3)])
def test_primitive_root_and_log(p, root):
    g, log = groups.discrete_log(p)
    assert g == root  # the smallest primitive roots, from tables
    assert log[0] == -1 and sorted(log[1:].tolist()) == list(range(p - 1))
    for a in range(1, p):
        assert pow(g, int(log[a]), p) == a
    with pytest.raises(groups.GroupError, match="prime"):
        groups.primitive_root(15)


def test_unknown_irrep_is_a_clear_error():
    view = groups.group_view(groups.symmetric(4))
    assert view.irrep_index("standard") == 1 and view.irrep_index("[2,2]") == 2
    with pytest.raises(groups.GroupError, match="S4 has no irrep 'standard5'.*trivial"):
        view.irrep_index("standard5")


# ---- Z_p: the generic analyser is the Fourier one ------------------------------------------------------
P, KEYS = 13, [3, 5]


@pytest.mark.parametrize("sign", [+1, -1])
def test_cyclic_group_equals_fourier(sign):
    torch.manual_seed(0)
    view = groups.cyclic_view(P, sign)
    B, owner = groups.isotypic_basis(view.irreps)
    m = len(view.irreps)
    assert [r.name for r in view.irreps][1:] == [f"freq {k}" for k in range(1, 7)]
    # the isotypic projectors are the key-frequency projectors, and the directions span the same space
    P_key, P_other, P_const = efficiency.residue_projectors(P, KEYS)
    assert torch.allclose(groups.projector(B, owner, KEYS), P_key, atol=1e-12)
    assert torch.allclose(groups.projector(B, owner, [0]), P_const, atol=1e-12)
    d_g = groups.directions(view.group, B, owner, KEYS, sign)
    d_f = fourier.directions(P, KEYS, sign)
    assert torch.allclose(d_g.T @ d_g, d_f.T @ d_f, atol=1e-12)
    # restricted and excluded loss, C_gen logit split, ideal-logit similarity
    logits = torch.randn(P * P, P, dtype=torch.float64) + 3 * fourier.directions(P, [3], sign).T @ torch.randn(2, P, dtype=torch.float64)
    a = torch.arange(P).repeat_interleave(P)
    b = torch.arange(P).repeat(P)
    y = (a + sign * b) % P
    assert torch.equal(view.labels(), y)
    idx = torch.randperm(P * P)[:80]
    assert progress_measures.restricted_loss(logits, y, d_g, idx) == pytest.approx(progress_measures.restricted_loss(logits, y, d_f, idx), abs=1e-10)
    assert progress_measures.excluded_loss(logits, y, d_g, idx) == pytest.approx(progress_measures.excluded_loss(logits, y, d_f, idx), abs=1e-10)
    cg, cf = efficiency.circuit_logits(logits, y, d_g, idx), efficiency.circuit_logits(logits, y, d_f, idx)
    assert cg == pytest.approx(cf, abs=1e-10)
    assert groups.ideal_logit_cosine(logits, view.group, view.irreps, KEYS, sign) == pytest.approx(
        progress_measures.ideal_logit_cosine(logits, KEYS, sign), abs=1e-10)
    # neuron spectra, embedding fractions
    acts = torch.randn(P, P, 20, dtype=torch.float64)
    fg, vg = groups.neuron_spectrum(acts, B, owner, m)
    ff, vf = fourier.neuron_spectrum(acts)
    assert torch.allclose(fg, ff, atol=1e-12) and torch.allclose(vg, vf, atol=1e-9)
    W = torch.randn(P, 8, dtype=torch.float64)
    frac = groups.fractions_1d(W, B, owner, m)
    norms = fourier.embedding_fourier_norms(W, P)
    assert torch.allclose(frac[1:], fourier.frequency_norms(norms) ** 2 / W.pow(2).sum(), atol=1e-12)
    assert progress_measures.gini((B @ W).norm(dim=-1)) == pytest.approx(progress_measures.gini(norms), abs=1e-12)


def test_cyclic_parameter_split_equals_fourier():
    model = build_model(tiny_config(p=P))
    view = groups.cyclic_view(P)
    B, owner = groups.isotypic_basis(view.irreps)
    gen = torch.arange(model.cfg.d_mlp) % 3 == 0
    ng = groups.split_parameters(model, view, B, owner, KEYS, gen).norms()
    nf = efficiency.split_parameters(model, KEYS, gen).norms()
    assert ng == pytest.approx(nf, rel=1e-10)


# ---- a hand-built circuit in log coordinates --------------------------------------------------------
LOG_KEYS = [5, 6]  # frequency 6 of Z_12 is the Nyquist one: (-1)^i, the Legendre symbol mod 13


def log_circuit(p=13, keys=LOG_KEYS, sign=+1, scale=15.0):
    """Logits of ``a * b`` (or ``a / b``) mod p built from ``cos(w_k(i +- j - l))`` in log coordinates, over the
    dataset's row-major inputs (zero rows: class 0 wins), and a neuron grid with 4 neurons per key frequency."""
    n = p - 1
    g, log = groups.discrete_log(p)
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    keep = (b != 0) if sign < 0 else torch.ones_like(a, dtype=torch.bool)
    a, b = a[keep], b[keep]
    i, j = log[a].double(), log[b].double()
    lc = log.double()  # log of each class (-1 for class 0)
    logits = torch.zeros(len(a), p, dtype=torch.float64)
    for k in keys:
        logits += scale * torch.cos(2 * math.pi * k / n * (i[:, None] + sign * j[:, None] - lc[None]))
    zero = (a == 0) | (b == 0)
    logits[:, 0] = torch.where(zero, 2 * scale * len(keys), -scale * len(keys))
    labels = (a * b) % p if sign > 0 else (a * torch.tensor([pow(int(x), -1, p) if x else 0 for x in range(p)])[b]) % p
    ii = torch.arange(n).double()
    acts = []
    for k in keys:
        for phase in range(4):
            acts.append(1 + torch.cos(2 * math.pi * k / n * (ii[:, None] + sign * ii[None]) + phase))
    return logits, labels, torch.stack(acts, -1), torch.stack([a, b], 1)


@pytest.mark.parametrize("sign", [+1, -1])
def test_log_circuit_known_key_frequencies(sign):
    p = 13
    view = groups.log_view(p, sign)
    assert view.generator == 2 and view.group.order == 12 and "zero has no logarithm" in view.note
    logits, labels, acts, inputs = log_circuit(p, sign=sign)
    assert (logits.argmax(1) == labels).all()  # the built circuit is right on every input
    B, owner = groups.isotypic_basis(view.irreps)
    pos = view.grid_positions(inputs[:, 0], inputs[:, 1])
    row_of_grid = torch.full((144,), -1, dtype=torch.long)
    row_of_grid[pos[pos >= 0]] = torch.nonzero(pos >= 0).flatten()
    assert (row_of_grid >= 0).all()
    lg, y = logits[row_of_grid], view.labels()
    assert torch.equal(labels[row_of_grid], y)
    # clustering finds the planted frequencies (a neuron cos(w_k(i +- j) + phase) has all its variance in block k)
    clusters = fourier.assign_clusters(*groups.neuron_spectrum(acts, B, owner, len(view.irreps)), min_neurons=2)
    assert clusters.key_frequencies == LOG_KEYS
    # restricted loss on the key frequencies is the loss of the circuit; excluding them leaves chance or worse
    idx = torch.arange(144)
    d_key = groups.directions(view.group, B, owner, LOG_KEYS, sign)
    assert progress_measures.restricted_loss(lg, y, d_key, idx) == pytest.approx(loss_fn(lg, y).item(), abs=1e-9)
    assert progress_measures.restricted_loss(lg, y, d_key, idx) < 0.01
    assert progress_measures.excluded_loss(lg, y, d_key, idx) > math.log(p - 1)
    d_other = groups.directions(view.group, B, owner, [1, 3], sign)
    assert progress_measures.restricted_loss(lg, y, d_other, idx) > 1.0
    assert groups.ideal_logit_cosine(lg[:, view.classes], view.group, view.irreps, LOG_KEYS, sign) == pytest.approx(1.0, abs=1e-9)
    split = efficiency.circuit_logits(lg, y, d_key, idx)
    # C_mem holds only class 0's constant logit -scale * len(keys), which enters the centring as +that / p
    assert split["cmem_logit"] == pytest.approx(15.0 * len(LOG_KEYS) / p, abs=1e-9) and split["cgen_logit"] > 10


# ---- cosets in the unembedding ------------------------------------------------------------------------
def test_directions_fixed_by_a_subgroup_cluster_into_its_cosets():
    from analyses import cosets

    S5 = groups.symmetric(5)
    std = groups.irreps(S5)[1].matrices
    H = S5.subgroup([S5.elements.index((1, 0, 2, 3, 4)), S5.elements.index((0, 1, 3, 2, 4))])  # <(0 1), (2 3)>
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(4, dtype=torch.float64, generator=gen)
    v = sum(std[h] @ w for h in H)  # fixed by exactly H
    A = torch.randn(4, 16, dtype=torch.float64, generator=gen)
    U = torch.stack([(std[c] @ v) @ A for c in range(120)])  # u_c = A^T rho(c) v: equal on the left cosets cH
    cuts = cosets.coset_structure(S5, U)
    assert 30 in [c.k for c in cuts]
    cut = next(c for c in cuts if c.k == 30)
    for coarser in cuts:  # coarser cuts of the same tree are cosets of subgroups that contain H
        assert set(H) <= set(coarser.subgroup)
    assert cut.side == "left" and cut.subgroup == H and len(H) == 4 and not cut.normal
    assert len(cut.conjugates) == 15 and tuple(H) in cut.conjugates  # the 15 conjugates of <(0 1), (2 3)> in S5
    assert cut.within == pytest.approx(1.0) and cut.between < 0.2
    assert sorted(S5.subgroup(cut.generators)) == H
    assert "30 clusters of 4 classes = left cosets" in cosets.describe(S5, cut)
    # the same directions transposed to u_c = A^T rho(c)^-1 v are equal on the right cosets Hc
    U_right = torch.stack([(std[c].T @ v) @ A for c in range(120)])
    right = {c.k: c for c in cosets.coset_structure(S5, U_right)}
    assert right[30].side == "right" and right[30].subgroup == H
    # random directions are no coset partition
    assert cosets.coset_structure(S5, torch.randn(120, 16, dtype=torch.float64, generator=gen)) == []
