"""Fourier analysis over Z_p: the basis, 1-D/2-D transforms, weight Fourier norms, key frequencies.

Conventions:

- Basis over Z_p: ``p`` orthonormal rows, in the order const, cos 1, sin 1, cos 2, sin 2, ...
  (cos before sin; the TransformerLens demo puts sin first). Row 0 is ``1/sqrt(p)``; frequency
  ``k`` (``w = 2 pi k / p``) has its cosine in row ``2k - 1`` and its sine in row ``2k``. For an
  even ``p`` the last row is the Nyquist cosine ``cos(pi x)``; the frequency-level functions below
  need an odd ``p`` (every task with a prime modulus) and say so otherwise.
- Frequencies are ``k = 1 .. (p - 1) // 2``; per-frequency tensors are indexed by ``k - 1``.
- Inputs over Z_p x Z_p are flattened row-major, ``index = a * p + b`` (the order of
  ``interp.tasks.all_pairs``).
- Sum (``sign = +1``, ``a + b``) and difference (``sign = -1``, ``a - b``) directions over the p^2
  inputs are built from the unit cos/sin rows ``c, s`` of the basis:
  ``cos(w(a+b)) = (c(x)c - s(x)s)/sqrt 2``, ``sin(w(a+b)) = (s(x)c + c(x)s)/sqrt 2``,
  ``cos(w(a-b)) = (c(x)c + s(x)s)/sqrt 2``, ``sin(w(a-b)) = (s(x)c - c(x)s)/sqrt 2``; each has unit
  norm and they are mutually orthogonal and orthogonal to the constant.

Key frequencies (Nanda et al. 2023) are found by clustering the MLP neurons: take each neuron's
activation at the ``=`` position over all p^2 inputs, centre it, and transform it over ``(a, b)``;
a neuron belongs to frequency ``k`` if the 3x3 block ``{const, cos k, sin k}^2`` holds at least
85% of its variance. A frequency is *key* if at least ``min_cluster_neurons(d_mlp)`` neurons belong
to it (1% of the MLP, at least 2): one neuron that happens to pass the threshold does not make a
frequency part of the circuit. Neurons with no variance at all (a ReLU that never fires, or fires
the same on every input) are *dead* and counted apart from the *unclustered* ones, whose best
frequency explains less than the threshold. A quicker check: frequencies whose embedding Fourier
norm exceeds a quarter of the largest (``embedding_key_frequencies``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

# Tasks whose labels are a function of a + b or a - b mod p: the sign of b in the directions.
DIRECTION_SIGN: dict[str, int] = {"mod_add": +1, "mod_sub": -1}


def fourier_applies(task: str, p: int) -> str | None:
    """``None`` when the Fourier-over-Z_p analysers apply to ``task`` mod ``p``, else the reason why not."""
    if task not in DIRECTION_SIGN:
        return (f"the Fourier analysers do not apply to {task}: its labels are not a function of a + b or a - b "
                f"mod p, so there are no key-frequency directions to measure")
    if p % 2 == 0 or p < 3:
        return f"the Fourier analysers need an odd modulus p >= 3 (p = {p})"
    return None


def n_frequencies(p: int) -> int:
    """Number of non-constant frequencies, ``(p - 1) // 2``."""
    return (p - 1) // 2


def cos_row(k: int) -> int:
    """Row of ``cos(2 pi k x / p)`` in the basis."""
    return 2 * k - 1


def sin_row(k: int) -> int:
    """Row of ``sin(2 pi k x / p)`` in the basis."""
    return 2 * k


def fourier_basis(p: int, dtype: torch.dtype = torch.float64) -> Float[Tensor, "p p"]:
    """Orthonormal Fourier basis of functions on Z_p, one basis vector per row.

    Args:
        p: the modulus.
        dtype: dtype of the result.
    Returns:
        ``[p, p]`` with rows const, cos 1, sin 1, cos 2, sin 2, ... (plus the Nyquist cos if p is even).
    """
    x = torch.arange(p, dtype=torch.float64)
    rows = [torch.ones(p, dtype=torch.float64)]
    for k in range(1, p // 2 + 1):
        rows.append(torch.cos(2 * math.pi * k * x / p))
        if 2 * k != p:
            rows.append(torch.sin(2 * math.pi * k * x / p))
    basis = torch.stack(rows)
    return (basis / basis.norm(dim=1, keepdim=True)).to(dtype)


def basis_labels(p: int) -> list[str]:
    """Names of the basis rows: ``["const", "cos 1", "sin 1", ...]``."""
    labels = ["const"]
    for k in range(1, p // 2 + 1):
        labels.append(f"cos {k}")
        if 2 * k != p:
            labels.append(f"sin {k}")
    return labels


def fourier_1d(x: Float[Tensor, "p *rest"]) -> Float[Tensor, "p *rest"]:
    """Fourier coefficients along the first axis: ``B @ x``.

    Args:
        x: a function of one residue (first axis), for any number of trailing axes.
    Returns:
        the coefficients in the basis order of ``fourier_basis``, same shape as ``x``.
    """
    basis = fourier_basis(x.shape[0], x.dtype)
    return torch.einsum("ia,a...->i...", basis, x)


def fourier_2d(x: Float[Tensor, "p p *rest"]) -> Float[Tensor, "p p *rest"]:
    """Fourier coefficients along the first two axes: ``B @ x @ B.T`` for each trailing index.

    Args:
        x: a function of ``(a, b)`` (first two axes), for any number of trailing axes.
    Returns:
        ``out[i, j]`` is the coefficient of basis row ``i`` over ``a`` times row ``j`` over ``b``.
    """
    basis = fourier_basis(x.shape[0], x.dtype)
    p, rest = x.shape[0], x.shape[2:]
    y = (basis @ x.reshape(p, -1)).reshape(p, p, -1)  # over a, then over b: two products (a three-way einsum was 40x slower)
    return torch.einsum("jb,ibn->ijn", basis, y).reshape(p, p, *rest)


def neuron_logit_map(model: HookedTransformer) -> Float[Tensor, "d_mlp d_vocab_out"]:
    """``W_L = W_out @ W_U``: how each MLP neuron writes to the logits."""
    return model.blocks[0].mlp.W_out @ model.W_U


def embedding_fourier_norms(W_E: Float[Tensor, "d_vocab d_model"], p: int) -> Float[Tensor, "p"]:
    """Norm over ``d_model`` of each Fourier component of the residue embeddings ``W_E[:p]``.

    Args:
        W_E: the token embedding (the ``=`` row, beyond ``p``, is ignored).
        p: the modulus.
    Returns:
        ``[p]`` norms, one per basis row (const, cos 1, sin 1, ...).
    """
    return fourier_1d(W_E[:p].detach().to(torch.float64)).norm(dim=-1)


def unembed_fourier_norms(W_L: Float[Tensor, "d_mlp p"]) -> Float[Tensor, "p"]:
    """Norm over neurons of each Fourier component of ``W_L`` along its output (logit) axis.

    Args:
        W_L: the neuron-to-logit map ``W_out @ W_U``.
    Returns:
        ``[p]`` norms, one per basis row.
    """
    return fourier_1d(W_L.detach().T.to(torch.float64)).norm(dim=-1)


def frequency_norms(basis_norms: Float[Tensor, "p"]) -> Float[Tensor, "n_freq"]:
    """Combine the cos and sin norms of each frequency: ``sqrt(cos_k^2 + sin_k^2)`` for ``k = 1..(p-1)//2``.

    Args:
        basis_norms: ``[p]`` norms per basis row (odd ``p``).
    Returns:
        ``[(p - 1) // 2]`` norms, index ``k - 1`` for frequency ``k``.
    """
    p = basis_norms.shape[0]
    n = n_frequencies(p)
    return basis_norms[1 : 2 * n + 1].reshape(n, 2).norm(dim=-1)


def block_fraction(grid: Float[Tensor, "*batch p p"], freqs: list[int]) -> Float[Tensor, "*batch"]:
    """Fraction of the centred variance of a function over ``(a, b)`` in the 2-D Fourier components
    ``{const, cos k, sin k : k in freqs}`` over ``a`` times the same over ``b``.

    Args:
        grid: ``[..., p, p]`` values indexed ``[..., a, b]`` (for example an attention weight per head).
        freqs: the frequencies (the key frequencies).
    Returns:
        ``[...]`` fractions in ``[0, 1]`` (0 for a constant grid).
    """
    x = grid.to(torch.float64)
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    p = x.shape[-1]
    basis = fourier_basis(p)
    spec = torch.einsum("ia,jb,...ab->...ij", basis, basis, x).pow(2)
    rows = [0] + [r for k in freqs for r in (cos_row(k), sin_row(k))]
    kept = spec[..., rows, :][..., :, rows].sum(dim=(-2, -1))
    return kept / spec.sum(dim=(-2, -1)).clamp_min(torch.finfo(torch.float64).tiny)


def embedding_key_frequencies(W_E: Float[Tensor, "d_vocab d_model"], p: int, rel_threshold: float = 0.25) -> list[int]:
    """The quick check of Nanda et al.: frequencies whose embedding Fourier norm exceeds ``max / 4``.

    Args:
        W_E: the token embedding.
        p: the (odd) modulus.
        rel_threshold: fraction of the largest frequency norm a key frequency must exceed.
    Returns:
        sorted frequencies ``k`` (1-based).
    """
    norms = frequency_norms(embedding_fourier_norms(W_E, p))
    return [k + 1 for k in torch.nonzero(norms > rel_threshold * norms.max()).flatten().tolist()]


def directions(p: int, freqs: list[int], sign: int = +1, dtype: torch.dtype = torch.float64) -> Float[Tensor, "m p_sq"]:
    """Unit directions ``cos(w(a + sign*b))`` and ``sin(w(a + sign*b))`` over the p^2 inputs.

    Args:
        p: the (odd) modulus.
        freqs: frequencies ``k`` (``w = 2 pi k / p``).
        sign: ``+1`` for sums (``mod_add``), ``-1`` for differences (``mod_sub``).
        dtype: dtype of the result.
    Returns:
        ``[2 * len(freqs), p * p]``: rows cos k, sin k for each ``k`` in order, flattened row-major
        over ``(a, b)``; orthonormal.
    """
    basis = fourier_basis(p, dtype)
    rows = []
    for k in freqs:
        c, s = basis[cos_row(k)], basis[sin_row(k)]
        rows.append((torch.outer(c, c) - sign * torch.outer(s, s)) / math.sqrt(2))
        rows.append((torch.outer(s, c) + sign * torch.outer(c, s)) / math.sqrt(2))
    if not rows:
        return torch.zeros(0, p * p, dtype=dtype)
    return torch.stack(rows).reshape(len(rows), p * p)


# ---- key frequencies by neuron clustering ---------------------------------------------------
CLUSTER_THRESHOLD = 0.85  # fraction of a neuron's variance its frequency's 3x3 block must explain
DEAD_VARIANCE = 1e-12  # a neuron whose centred sum of squares is at most this times the largest one's is dead


def min_cluster_neurons(d_mlp: int) -> int:
    """Fewest neurons a frequency needs to be key: 1% of the MLP, at least 2 (5 of 512, 3 of 256)."""
    return max(2, round(0.01 * d_mlp))


@dataclass(frozen=True)
class NeuronClusters:
    """Neurons clustered by frequency (see the module docstring); every neuron is in exactly one of
    ``freq > 0`` (a key frequency's cluster), ``unclustered``, ``dead`` or ``in_small_clusters``.

    Attributes:
        freq: ``[d_mlp]`` key frequency each neuron is assigned to, 0 for every other neuron.
        frac_explained: ``[d_mlp]`` fraction of the neuron's centred variance in its best frequency's
            3x3 block (0 for a dead neuron).
        key_frequencies: the sorted frequencies with at least ``min_neurons`` neurons.
        unclustered: indices of the live neurons whose best block explains less than ``threshold``.
        dead: indices of the neurons without variance over the inputs.
        small_clusters: ``{k: neurons}`` of the frequencies that passed the threshold for fewer than
            ``min_neurons`` neurons (not key).
        threshold, min_neurons: the rule used.
    """

    freq: Int[Tensor, "d_mlp"]
    frac_explained: Float[Tensor, "d_mlp"]
    key_frequencies: list[int]
    unclustered: list[int]
    dead: list[int] = field(default_factory=list)
    small_clusters: dict[int, list[int]] = field(default_factory=dict)
    threshold: float = CLUSTER_THRESHOLD
    min_neurons: int = 1

    def neurons_per_frequency(self) -> dict[int, int]:
        """``{k: number of neurons assigned to k}`` for the key frequencies."""
        return {k: int((self.freq == k).sum()) for k in self.key_frequencies}

    @property
    def in_small_clusters(self) -> list[int]:
        """Indices of the neurons that passed the threshold for a frequency that is not key."""
        return sorted(i for ids in self.small_clusters.values() for i in ids)


def mlp_activations(model: HookedTransformer, p: int, eq_token: int) -> Float[Tensor, "p p d_mlp"]:
    """MLP activations ``blocks.0.mlp.hook_post`` at the ``=`` position for every pair ``(a, b)``.

    Args:
        model: the HookedTransformer.
        p: the modulus.
        eq_token: token id of ``=``.
    Returns:
        ``[p, p, d_mlp]``, indexed ``[a, b]``.
    """
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    tokens = torch.stack([a, b, torch.full_like(a, eq_token)], dim=1)
    name = "blocks.0.mlp.hook_post"
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=name)
    return cache[name][:, -1].reshape(p, p, -1)


def neuron_spectrum(acts: Float[Tensor, "p p d_mlp"]) -> tuple[Float[Tensor, "n_freq d_mlp"], Float[Tensor, "d_mlp"]]:
    """Each neuron's fraction of centred variance per frequency block, and its centred sum of squares.

    Activations are centred over all ``(a, b)`` first, which removes exactly the (const, const)
    Fourier component; the block ``{const, cos k, sin k}^2`` includes that entry, but it is zero, so
    the fraction is the same with or without it. The denominator is the centred sum of squares
    (all p^2 components).

    Args:
        acts: ``[p, p, d_mlp]`` activations over ``(a, b)`` (odd ``p``).
    Returns:
        ``([(p - 1) // 2, d_mlp] fractions, index k - 1 for frequency k; zero for a dead neuron``,
        ``[d_mlp] centred sums of squares)``.
    """
    p = acts.shape[0]
    acts = acts.to(torch.float64)
    acts = acts - acts.mean(dim=(0, 1), keepdim=True)
    power = fourier_2d(acts).pow(2)  # [p, p, d_mlp]
    total = power.sum(dim=(0, 1))
    fracs = []
    for k in range(1, n_frequencies(p) + 1):
        rows = [0, cos_row(k), sin_row(k)]
        fracs.append(power[rows][:, rows].sum(dim=(0, 1)))
    return torch.stack(fracs) / total.clamp_min(torch.finfo(torch.float64).tiny), total


def neuron_frequency_fractions(acts: Float[Tensor, "p p d_mlp"]) -> Float[Tensor, "n_freq d_mlp"]:
    """Fraction of each neuron's centred variance in the 3x3 block ``{const, cos k, sin k}^2`` of each frequency.

    Args:
        acts: ``[p, p, d_mlp]`` activations over ``(a, b)`` (odd ``p``).
    Returns:
        ``[(p - 1) // 2, d_mlp]``; index ``k - 1`` for frequency ``k``; zero for a dead neuron.
    """
    return neuron_spectrum(acts)[0]


def assign_clusters(
    fracs: Float[Tensor, "n_freq d_mlp"], variance: Float[Tensor, "d_mlp"], threshold: float = CLUSTER_THRESHOLD,
    min_neurons: int | None = None,
) -> NeuronClusters:
    """Cluster neurons from their ``neuron_spectrum`` (so that several thresholds can share one transform).

    Args:
        fracs, variance: the two results of ``neuron_spectrum``.
        threshold: fraction of variance the best frequency's block must explain.
        min_neurons: fewest neurons of a key frequency (default ``min_cluster_neurons(d_mlp)``).
    Returns:
        the ``NeuronClusters``.
    """
    if min_neurons is None:
        min_neurons = min_cluster_neurons(fracs.shape[1])
    best, best_k = fracs.max(dim=0)
    dead = variance <= DEAD_VARIANCE * variance.max().clamp_min(torch.finfo(torch.float64).tiny)
    best = torch.where(dead, torch.zeros_like(best), best)
    passed = (best >= threshold) & ~dead
    sizes = torch.bincount(best_k[passed] + 1, minlength=fracs.shape[0] + 1)
    keys = [k for k in range(1, fracs.shape[0] + 1) if sizes[k] >= min_neurons]
    is_key = torch.zeros(fracs.shape[0] + 1, dtype=torch.bool)
    is_key[keys] = True
    assigned = passed & is_key[best_k + 1]
    small = passed & ~assigned
    small_clusters: dict[int, list[int]] = {}
    for i in torch.nonzero(small).flatten().tolist():
        small_clusters.setdefault(int(best_k[i]) + 1, []).append(i)
    return NeuronClusters(
        freq=torch.where(assigned, best_k + 1, torch.zeros_like(best_k)),
        frac_explained=best,
        key_frequencies=keys,
        unclustered=torch.nonzero(~passed & ~dead).flatten().tolist(),
        dead=torch.nonzero(dead).flatten().tolist(),
        small_clusters=dict(sorted(small_clusters.items())),
        threshold=threshold,
        min_neurons=min_neurons,
    )


def cluster_neurons(
    acts: Float[Tensor, "p p d_mlp"], threshold: float = CLUSTER_THRESHOLD, min_neurons: int | None = None
) -> NeuronClusters:
    """Assign each neuron to the frequency whose 3x3 block explains most of its variance.

    Args:
        acts: ``[p, p, d_mlp]`` MLP activations at the ``=`` position over ``(a, b)``.
        threshold: neurons whose best block explains less than this fraction are unclustered.
        min_neurons: fewest neurons of a key frequency (default ``min_cluster_neurons(d_mlp)``).
    Returns:
        the ``NeuronClusters``; its ``key_frequencies`` are the key frequencies of the model.
    """
    return assign_clusters(*neuron_spectrum(acts), threshold, min_neurons)
