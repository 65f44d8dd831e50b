"""Circuit efficiency (Varma et al. 2023): each circuit's correct-class logit per unit of its own parameter norm.

Two circuits fit the training set of ``a + b mod p``: **C_gen**, the Fourier-multiplication circuit
on the key frequencies, and **C_mem**, which memorises. Weight decay favours the circuit that makes
more logit per unit of parameter norm, its *efficiency*. Measuring that inside one model needs two
splits, one of the logits and one of the weights.

Logits (``circuit_logits``). The logits over all p^2 inputs split exactly and linearly: C_gen is their
component along the key-frequency input directions ``cos/sin(w_k(a +- b))``
(``analyses.fourier.directions``, the projection of the restricted and excluded loss), C_mem is the
rest. The measure of each part is its mean centred correct-class logit on the train split,
``mean_i (l[i, y_i] - mean_c l[i, c])``; it is linear in the logits, so ``cgen_logit + cmem_logit``
is the model's own correct-class logit. This definition is kept (rather than, say, running each
circuit's weights alone, which is not additive through the ReLU and the attention softmax, or
following logits through each circuit's neurons, which leaves cross terms in neither circuit)
because it is exact and is the same split the progress measures use. What it credits to C_gen is
the trigonometric part of the logits: a memoriser whose correct-class logits are spread evenly over
the classes through non-key output directions has none of it, a Fourier circuit whose neurons
cover every phase has nothing else (both used in the known-answer test); for a memoriser on an
uneven subset, the part of its table that looks like ``cos(w_k(a + b - c))`` counts as C_gen.

Weights (``split_parameters``). The *attributed* parameters are split into two orthogonal parts:

- the embeddings of the p residue tokens, ``W_E[:p]``, along the token axis: the component in the
  key-frequency Fourier subspace (span of cos k, sin k over the tokens, k a key frequency) is C_gen,
  the component in the other non-constant frequencies is C_mem;
- the unembedding ``W_U`` and its bias ``b_U`` the same way along the output-class axis;
- the MLP neurons whole (``W_in[:, n]``, ``b_in[n]``, ``W_out[n, :]``): a neuron with at least 85 % of
  its activation variance over the p^2 inputs in the key frequencies' blocks ``{const, cos k, sin k}^2``
  (``gen_neurons``; the criterion of ``analyses.fourier.cluster_neurons`` with the key frequencies
  together in place of the best single one, so every clustered neuron passes, and so do neurons that
  mix key frequencies) is C_gen; any other neuron (dead ones included) is C_mem.

The projectors are orthogonal and the neurons disjoint, so ``cgen_param_norm^2 + cmem_param_norm^2``
is the squared norm of the attributed parameters (float64). **Shared** and counted in neither
circuit: attention (``W_Q, W_K, W_V, W_O`` and their biases), ``W_pos``, the ``=`` row of ``W_E``,
``b_out``, and the constant components of ``W_E[:p]``, ``W_U`` and ``b_U`` (the same vector for
every token or every class tells no residue apart); their norm is ``shared_param_norm``, and the
three squared norms add up to the model's ``sum_sq_weights``. The neuron assignment and the key
frequencies come from the final checkpoint and are used for every checkpoint, so early in training
C_gen's norm is the norm of the weights that *become* the Fourier circuit.

Efficiency (``efficiency``): ``cgen_efficiency = cgen_logit / cgen_param_norm`` and the same for
C_mem; ``more_efficient_from`` finds the step from which C_gen stays the more efficient. Logits are not linear in the norm (a 1-layer transformer's logit grows like a power of its
weight scale), so compare the two circuits' efficiencies with each other at one checkpoint, not a
ratio across very different norms as a law.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn
from transformer_lens import HookedTransformer

from analyses import fourier
from analyses.progress_measures import project


def parameter_norm(model: HookedTransformer) -> float:
    """L2 norm of all parameters together (as ``interp.train.evaluate`` reports it)."""
    with torch.no_grad():
        return torch.sqrt(sum((p.double() ** 2).sum() for p in model.parameters())).item()


# ---- the weights ------------------------------------------------------------------------------------
def residue_projectors(p: int, freqs: list[int]) -> tuple[Float[Tensor, "p p"], Float[Tensor, "p p"], Float[Tensor, "p p"]]:
    """Orthogonal projectors over Z_p onto the key frequencies, the other frequencies and the constant.

    Args:
        p: the (odd) modulus.
        freqs: the key frequencies ``k`` (1-based).
    Returns:
        ``(P_key, P_other, P_const)``, float64 ``[p, p]``, symmetric, summing to the identity.
    """
    basis = fourier.fourier_basis(p)
    rows = [r for k in freqs for r in (fourier.cos_row(k), fourier.sin_row(k))]
    other = sorted(set(range(1, p)) - set(rows))
    key_b, other_b, const_b = basis[rows], basis[other], basis[:1]
    return key_b.T @ key_b, other_b.T @ other_b, const_b.T @ const_b


@dataclass(frozen=True)
class ParameterSplit:
    """The parameters of a model cut into C_gen, C_mem and shared pieces (float64 tensors).

    Attributes:
        gen, mem, shared: ``{piece name: tensor}``; a parameter split along an axis appears in several
            (``"embed.W_E[:p]"`` in all three), a whole one in one.
    """

    gen: dict[str, Tensor]
    mem: dict[str, Tensor]
    shared: dict[str, Tensor]

    @staticmethod
    def _norm(pieces: dict[str, Tensor]) -> float:
        return math.sqrt(sum(t.pow(2).sum().item() for t in pieces.values()))

    def norms(self) -> dict[str, float]:
        """``cgen_param_norm``, ``cmem_param_norm``, ``shared_param_norm`` (L2 over each part's pieces)."""
        return {"cgen_param_norm": self._norm(self.gen), "cmem_param_norm": self._norm(self.mem),
                "shared_param_norm": self._norm(self.shared)}


GEN_NEURON_THRESHOLD = 0.85  # the clustering threshold of analyses.fourier.cluster_neurons


def key_frequency_fraction(acts: Float[Tensor, "p p d_mlp"], key_freqs: list[int]) -> Float[Tensor, "d_mlp"]:
    """Fraction of each neuron's centred variance over ``(a, b)`` in the blocks ``{const, cos k, sin k}^2`` of the key frequencies.

    The blocks of different frequencies share only the (const, const) entry, which centring makes
    zero, so this is the sum over the key frequencies of ``analyses.fourier.neuron_frequency_fractions``.

    Args:
        acts: ``[p, p, d_mlp]`` MLP activations at the ``=`` position (``analyses.fourier.mlp_activations``).
        key_freqs: the key frequencies.
    Returns:
        ``[d_mlp]`` float64 in ``[0, 1]``; 0 for a dead neuron.
    """
    fracs = fourier.neuron_frequency_fractions(acts)
    if not key_freqs:
        return torch.zeros(fracs.shape[1], dtype=torch.float64)
    return fracs[[k - 1 for k in key_freqs]].sum(dim=0)


def gen_neurons(acts: Float[Tensor, "p p d_mlp"], key_freqs: list[int], threshold: float = GEN_NEURON_THRESHOLD) -> Bool[Tensor, "d_mlp"]:
    """C_gen's neurons: those with at least ``threshold`` of their variance in the key frequencies' blocks.

    Every neuron that ``cluster_neurons`` assigns to a key frequency passes (its one block already
    holds ``threshold``); so does a neuron that mixes several key frequencies.
    """
    return key_frequency_fraction(acts, key_freqs) >= threshold


def gen_neuron_mask(d_mlp: int, cmem_neurons: list[int]) -> Bool[Tensor, "d_mlp"]:
    """The C_gen mask back from the list of C_mem's neurons (as ``summary.json`` stores it)."""
    mask = torch.ones(d_mlp, dtype=torch.bool)
    mask[torch.as_tensor(list(cmem_neurons), dtype=torch.long)] = False
    return mask


@torch.no_grad()
def split_parameters(model: nn.Module, key_freqs: list[int], gen_neurons: Bool[Tensor, "d_mlp"],
                     roles: dict[str, tuple[str, int]] | None = None) -> ParameterSplit:
    """Split ``model``'s parameters into C_gen, C_mem and shared parts (see the module docstring).

    Args:
        model: a model whose first ``p`` tokens and ``p`` classes are the residues (``p = len of the class axis``).
        key_freqs: the key frequencies.
        gen_neurons: ``[width]`` True for C_gen's neurons of the last hidden layer (``gen_neuron_mask``).
        roles: each split parameter's role and axis (``interp.families.WeightViews.roles``); ``None``: a
            ``HookedTransformer``'s (``interp.model.views``).
    Returns:
        the ``ParameterSplit``; every parameter of the model is in it exactly once (split ones as
        orthogonal pieces), so the three squared norms add up to the model's sum of squared weights.
    Raises:
        ValueError: ``gen_neurons`` does not match the neuron axis of a parameter.
    """
    if roles is None:
        from interp.model import views

        roles = views(model)["roles"]
    classes = next(param.shape[roles[name][1]] for name, param in model.named_parameters() if roles.get(name, ("",))[0] == "class")
    idx = torch.arange(classes)
    return split_by_roles(model, roles, idx, idx, residue_projectors(classes, key_freqs), gen_neurons)


def split_by_roles(model: nn.Module, roles: dict[str, tuple[str, int]], tokens: Int[Tensor, "n"], classes: Int[Tensor, "n"],
                   projectors: tuple[Tensor, Tensor, Tensor], gen_neurons: Bool[Tensor, "width"]) -> ParameterSplit:
    """The split of ``split_parameters`` for any basis: ``projectors = (P_key, P_other, P_const)``, ``[n, n]``
    orthogonal projectors summing to the identity over the ``n`` elements.

    A ``"token"`` parameter's entries at ``tokens`` along its axis are split by the projectors (the other
    tokens, e.g. ``=``, are shared); a ``"class"`` parameter's entries at ``classes`` likewise; a ``"neuron"``
    parameter is cut along its axis into C_gen's neurons and the rest; any other parameter is shared.
    """
    P_key, P_other, P_const = projectors
    gen, mem, shared = {}, {}, {}
    for name, param in model.named_parameters():
        w = param.detach().to(torch.float64)
        role, axis = roles.get(name, ("shared", 0))
        if role in ("token", "class"):
            idx = tokens if role == "token" else classes
            w = w.movedim(axis, 0)
            res = w[idx].reshape(len(idx), -1)
            gen[name], mem[name], shared[name] = P_key @ res, P_other @ res, P_const @ res
            rest = torch.ones(w.shape[0], dtype=torch.bool)
            rest[idx] = False
            if rest.any():
                shared[name + "[rest]"] = w[rest]
        elif role == "neuron":
            if w.shape[axis] != gen_neurons.shape[0]:
                raise ValueError(f"gen_neurons has shape {tuple(gen_neurons.shape)}; {name}'s neuron axis has {w.shape[axis]}")
            gen[name], mem[name] = split_neurons(w, axis, gen_neurons)
        else:
            shared[name] = w
    return ParameterSplit(gen, mem, shared)


def split_neurons(w: Tensor, axis: int, gen_neurons: Bool[Tensor, "d_mlp"]) -> tuple[Tensor, Tensor]:
    """``w``'s slices along its neuron ``axis`` that belong to C_gen's neurons and to the rest (C_mem)."""
    return (w.index_select(axis, torch.nonzero(gen_neurons).flatten()),
            w.index_select(axis, torch.nonzero(~gen_neurons).flatten()))


@torch.no_grad()
def neuron_norms(model: HookedTransformer) -> Float[Tensor, "d_mlp"]:
    """Norm of each MLP neuron's parameters together: its ``W_in`` column, ``b_in`` entry and ``W_out`` row (float64)."""
    mlp = model.blocks[0].mlp
    sq = mlp.W_in.double().pow(2).sum(0) + mlp.b_in.double().pow(2) + mlp.W_out.double().pow(2).sum(1)
    return sq.sqrt()


def circuit_param_norms(model: nn.Module, key_freqs: list[int], gen_neurons: Bool[Tensor, "d_mlp"],
                        roles: dict[str, tuple[str, int]] | None = None) -> dict[str, float]:
    """``cgen_param_norm``, ``cmem_param_norm`` and ``shared_param_norm`` of ``model`` (``split_parameters``)."""
    return split_parameters(model, key_freqs, gen_neurons, roles).norms()


def efficiency(logit: float, norm: float) -> float:
    """Correct-class logit per unit parameter norm; NaN for a circuit with no parameters."""
    return logit / norm if norm > 0 else math.nan


# ---- the logits -------------------------------------------------------------------------------------
def split_logits(
    logits: Float[Tensor, "p_sq C"], dirs: Float[Tensor, "m p_sq"]
) -> tuple[Float[Tensor, "p_sq C"], Float[Tensor, "p_sq C"]]:
    """``(C_gen, C_mem)`` logits: the key-frequency component and the rest; they sum to ``logits``.

    Args:
        logits: ``[p * p, C]`` logits over all inputs, row-major over ``(a, b)``.
        dirs: ``[m, p * p]`` orthonormal key-frequency directions.
    Returns:
        two ``[p * p, C]`` float64 tensors.
    """
    gen = project(logits, dirs)
    return gen, logits.to(torch.float64) - gen


def centred_correct_logit(logits: Float[Tensor, "n C"], labels: Int[Tensor, "n"]) -> Float[Tensor, "n"]:
    """``logits[i, y_i] - mean_c logits[i, c]`` for each example.

    Args:
        logits: ``[n, C]`` logits.
        labels: ``[n]`` correct classes.
    Returns:
        ``[n]`` centred correct-class logits (float64).
    """
    logits = logits.to(torch.float64)
    return logits.gather(1, labels[:, None]).squeeze(1) - logits.mean(dim=1)


def circuit_logits(
    logits: Float[Tensor, "p_sq C"],
    labels: Int[Tensor, "p_sq"],
    dirs: Float[Tensor, "m p_sq"],
    idx: Int[Tensor, "n"],
) -> dict[str, float]:
    """Mean centred correct-class logit of the model, of C_gen and of C_mem on ``idx``.

    Args:
        logits: ``[p * p, C]`` logits over all inputs.
        labels: ``[p * p]`` correct classes.
        dirs: ``[m, p * p]`` key-frequency directions.
        idx: the inputs to average over (the train split in the tables).
    Returns:
        ``correct_logit`` (the full model's), ``cgen_logit``, ``cmem_logit`` (summing to it), and
        ``cgen_frac``: the fraction of the squared norm of the logits (centred over classes, all
        inputs) that lies in C_gen (the two parts are orthogonal, so C_mem has ``1 - cgen_frac``).
    """
    logits = logits.to(torch.float64)
    dirs = dirs.to(torch.float64)
    coef = dirs @ logits  # [m, C]: C_gen = dirs.T @ coef
    gen = dirs[:, idx].T @ coef
    full = logits[idx]
    y = labels[idx]
    # |C_gen centred over classes|^2 = |coef centred|^2 (orthonormal dirs); C_mem is orthogonal to it.
    g2 = (coef - coef.mean(dim=1, keepdim=True)).pow(2).sum().item()
    t2 = (logits - logits.mean(dim=1, keepdim=True)).pow(2).sum().item()
    return {
        "correct_logit": centred_correct_logit(full, y).mean().item(),
        "cgen_logit": centred_correct_logit(gen, y).mean().item(),
        "cmem_logit": centred_correct_logit(full - gen, y).mean().item(),
        "cgen_frac": g2 / t2 if t2 > 0 else float("nan"),
    }


def more_efficient_from(steps: list[int], gen: list[float], mem: list[float]) -> int | None:
    """The step from which C_gen is the more efficient circuit at every later checkpoint.

    Args:
        steps: checkpoint steps, ascending.
        gen, mem: ``cgen_efficiency`` and ``cmem_efficiency`` at those steps.
    Returns:
        the first step ``s`` such that ``gen >= mem`` at ``s`` and at every checkpoint after it (the
        last crossing, so early noise does not count), or ``None`` if C_gen is not the more
        efficient circuit at the last checkpoint (NaN counts as not).
    """
    start = None
    for s, g, m in zip(steps, gen, mem):
        if g >= m:  # False for NaN
            start = s if start is None else start
        else:
            start = None
    return start
