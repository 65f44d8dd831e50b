"""Circuit efficiency (Varma et al. 2023): split the logits into C_gen and C_mem and measure each per unit norm.

The logits over all p^2 inputs split exactly and linearly: ``C_gen`` is their component along the
key-frequency directions (``analyses.fourier.directions``, the same projection as the restricted
loss) and ``C_mem`` is everything else (the per-class constant included), so
``logits = C_gen + C_mem``. The measure of each part is its mean centred correct-class logit on the
train split, ``mean_i (l[i, y_i] - mean_c l[i, c])``; it is linear in the logits, so the two parts
add up to the model's own. Dividing by the parameter norm gives the logit each circuit produces per
unit parameter norm, the quantity weight decay trades off.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from analyses.progress import project


def parameter_norm(model: HookedTransformer) -> float:
    """L2 norm of all parameters together (as ``interp.train.evaluate`` reports it)."""
    with torch.no_grad():
        return torch.sqrt(sum((p.double() ** 2).sum() for p in model.parameters())).item()


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
    param_norm: float,
) -> dict[str, float]:
    """Mean centred correct-class logit of C_gen and C_mem on ``idx``, and per unit parameter norm.

    Args:
        logits: ``[p * p, C]`` logits over all inputs.
        labels: ``[p * p]`` correct classes.
        dirs: ``[m, p * p]`` key-frequency directions.
        idx: the inputs to average over (the train split in the tables).
        param_norm: the model's parameter norm.
    Returns:
        ``correct_logit`` (the full model's), ``cgen_logit``, ``cmem_logit`` (summing to it),
        ``cgen_logit_per_norm``, ``cmem_logit_per_norm``, and ``cgen_frac``: the fraction of the
        squared norm of the logits (centred over classes, all inputs) that lies in C_gen (the two
        parts are orthogonal, so C_mem has ``1 - cgen_frac``).
    """
    logits = logits.to(torch.float64)
    dirs = dirs.to(torch.float64)
    coef = dirs @ logits  # [m, C]: C_gen = dirs.T @ coef
    gen = dirs[:, idx].T @ coef
    full = logits[idx]
    y = labels[idx]
    cgen = centred_correct_logit(gen, y).mean().item()
    cmem = centred_correct_logit(full - gen, y).mean().item()
    # |C_gen centred over classes|^2 = |coef centred|^2 (orthonormal dirs); C_mem is orthogonal to it.
    g2 = (coef - coef.mean(dim=1, keepdim=True)).pow(2).sum().item()
    t2 = (logits - logits.mean(dim=1, keepdim=True)).pow(2).sum().item()
    return {
        "correct_logit": centred_correct_logit(full, y).mean().item(),
        "cgen_logit": cgen,
        "cmem_logit": cmem,
        "cgen_logit_per_norm": cgen / param_norm,
        "cmem_logit_per_norm": cmem / param_norm,
        "cgen_frac": g2 / t2 if t2 > 0 else float("nan"),
    }
