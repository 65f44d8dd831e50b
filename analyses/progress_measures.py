"""Progress measures of Nanda et al. (2023): restricted and excluded loss, weight norms, Gini, ideal-logit similarity.

All functions take the logits of every input pair, ``[p * p, p]`` flattened row-major over
``(a, b)`` (``index = a * p + b``), and the unit directions of ``analyses.fourier.directions``
(``[m, p * p]``, orthonormal). Computation is in float64; losses use ``interp.losses.loss_fn``.

- Restricted logits: the component of the logits (for each output class, as a function over the
  p^2 inputs) along the key-frequency directions, plus the mean over inputs of the removed part.
  The directions are orthogonal to the constant, so that mean is the per-class mean of the logits.
- Excluded logits: the logits with the key-frequency components removed (the constant stays).
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from analyses.fourier import cos_row, directions, fourier_basis, n_frequencies, sin_row
from interp.losses import loss_fn


def project(
    logits: Float[Tensor, "p_sq C"], dirs: Float[Tensor, "m p_sq"], idx: Int[Tensor, "n"] | None = None
) -> Float[Tensor, "n C"]:
    """Orthogonal projection of each logit column (a function over the inputs) onto ``dirs``.

    Args:
        logits: ``[p * p, C]`` logits over all inputs.
        dirs: ``[m, p * p]`` orthonormal directions over the inputs.
        idx: the inputs (rows) to return; all when ``None``. The projection always uses all inputs.
    Returns:
        ``[n, C]`` float64: the rows ``idx`` of ``dirs.T @ (dirs @ logits)``.
    """
    dirs = dirs.to(torch.float64)
    coef = dirs @ logits.to(torch.float64)  # [m, C]
    return (dirs if idx is None else dirs[:, idx]).T @ coef


def restricted_logits(
    logits: Float[Tensor, "p_sq C"], dirs: Float[Tensor, "m p_sq"], idx: Int[Tensor, "n"] | None = None
) -> Float[Tensor, "n C"]:
    """Only the ``dirs`` components of the logits, plus the mean over inputs of what was dropped.

    Args:
        logits: ``[p * p, C]`` logits over all inputs.
        dirs: ``[m, p * p]`` orthonormal key-frequency directions.
        idx: the inputs (rows) to return; all when ``None``.
    Returns:
        ``[n, C]`` float64 restricted logits.
    """
    logits = logits.to(torch.float64)
    dirs = dirs.to(torch.float64)
    coef = dirs @ logits
    dropped_mean = logits.mean(dim=0) - dirs.mean(dim=1) @ coef  # the directions have ~zero mean
    return (dirs if idx is None else dirs[:, idx]).T @ coef + dropped_mean


def excluded_logits(
    logits: Float[Tensor, "p_sq C"], dirs: Float[Tensor, "m p_sq"], idx: Int[Tensor, "n"] | None = None
) -> Float[Tensor, "n C"]:
    """The logits with their ``dirs`` components removed.

    Args:
        logits: ``[p * p, C]`` logits over all inputs.
        dirs: ``[m, p * p]`` orthonormal key-frequency directions.
        idx: the inputs (rows) to return; all when ``None``.
    Returns:
        ``[n, C]`` float64 excluded logits.
    """
    logits = logits.to(torch.float64)
    return (logits if idx is None else logits[idx]) - project(logits, dirs, idx)


def restricted_loss(
    logits: Float[Tensor, "p_sq C"], labels: Int[Tensor, "p_sq"], dirs: Float[Tensor, "m p_sq"], idx: Int[Tensor, "n"]
) -> float:
    """Cross-entropy of the restricted logits on the inputs ``idx`` (the test split in the tables).

    Args:
        logits: ``[p * p, C]`` logits over all inputs.
        labels: ``[p * p]`` correct classes.
        dirs: ``[m, p * p]`` key-frequency directions.
        idx: indices of the inputs to take the loss on.
    Returns:
        the mean loss.
    """
    return loss_fn(restricted_logits(logits, dirs, idx), labels[idx]).item()


def excluded_loss(
    logits: Float[Tensor, "p_sq C"], labels: Int[Tensor, "p_sq"], dirs: Float[Tensor, "m p_sq"], idx: Int[Tensor, "n"]
) -> float:
    """Cross-entropy of the excluded logits on the inputs ``idx`` (the train split in the tables).

    Args:
        logits: ``[p * p, C]`` logits over all inputs.
        labels: ``[p * p]`` correct classes.
        dirs: ``[m, p * p]`` key-frequency directions.
        idx: indices of the inputs to take the loss on.
    Returns:
        the mean loss.
    """
    return loss_fn(excluded_logits(logits, dirs, idx), labels[idx]).item()


def excluded_loss_per_frequency(
    logits: Float[Tensor, "p_sq p"],
    labels: Int[Tensor, "p_sq"],
    idx: Int[Tensor, "n"],
    freqs: list[int] | None = None,
    sign: int = +1,
) -> Float[Tensor, "n_k"]:
    """Excluded loss on ``idx`` with the two directions of a single frequency removed, for each frequency.

    Args:
        logits: ``[p * p, p]`` logits over all inputs (odd ``p``).
        labels: ``[p * p]`` correct classes.
        idx: indices of the inputs to take the loss on (the train split in the tables).
        freqs: the frequencies to remove one at a time; all ``k = 1..(p-1)//2`` when ``None``.
        sign: ``+1`` for sum directions (``mod_add``), ``-1`` for differences (``mod_sub``).
    Returns:
        ``[len(freqs)]`` float64 losses, in the order of ``freqs``.
    """
    p = logits.shape[1]
    freqs = list(range(1, n_frequencies(p) + 1)) if freqs is None else list(freqs)
    if not freqs:
        return torch.zeros(0, dtype=torch.float64)
    logits = logits.to(torch.float64)
    dirs = directions(p, freqs, sign)
    coef = (dirs @ logits).reshape(len(freqs), 2, -1)  # [n_k, 2, C]
    dirs_idx = dirs[:, idx].reshape(len(freqs), 2, -1)  # [n_k, 2, n]
    base, y = logits[idx], labels[idx]
    return torch.tensor([loss_fn(base - dirs_idx[i].T @ coef[i], y).item() for i in range(len(freqs))], dtype=torch.float64)


def sum_squared_weights(model: HookedTransformer) -> float:
    """Sum of the squares of every parameter of ``model`` (frozen biases included; they are zero)."""
    with torch.no_grad():
        return sum((p.double() ** 2).sum() for p in model.parameters()).item()


def gini(x: Float[Tensor, "N"]) -> float:
    """Gini coefficient of a non-negative vector (Hurley & Rickard 2009).

    Sort ascending; ``G = 1 - 2 sum_k (c_k / |c|_1) (N - k + 1/2) / N`` with ``k = 1..N``. A one-hot
    vector gives ``1 - 1/N``, a uniform one 0.

    Args:
        x: ``[N]`` non-negative values (for example the Fourier norms of ``W_E``).
    Returns:
        the Gini coefficient in ``[0, 1)``.
    """
    c = x.to(torch.float64).flatten().sort().values
    N = c.numel()
    k = torch.arange(1, N + 1, dtype=torch.float64)
    return (1 - 2 * ((c / c.sum()) * (N - k + 0.5) / N).sum()).item()


def ideal_logit_cosine(logits: Float[Tensor, "p_sq p"], freqs: list[int], sign: int = +1) -> float:
    """Cosine similarity of the logits with their best fit by the ideal terms ``cos(w_k(a + sign*b - c))``.

    The logits are centred over the output classes for each input (softmax ignores that shift; the
    ideal terms have zero mean over ``c``). The terms of different ``k`` are orthogonal, so the best
    fit ``sum_k alpha_k cos(w_k(a + sign*b - c))`` (least squares) is the projection onto their span,
    and the cosine similarity is ``|projection| / |centred logits|``. The unit term of frequency
    ``k`` is ``(d_cos(x)c_k + d_sin(x)s_k) / sqrt 2`` with the input directions ``d`` and the output
    basis rows ``c_k, s_k``.

    Args:
        logits: ``[p * p, p]`` logits over all inputs (odd ``p``).
        freqs: the key frequencies.
        sign: ``+1`` for ``a + b``, ``-1`` for ``a - b``.
    Returns:
        the cosine similarity in ``[0, 1]`` (0 for no frequencies).
    """
    p = logits.shape[1]
    logits = logits.to(torch.float64)
    centred = logits - logits.mean(dim=1, keepdim=True)
    if not freqs:
        return 0.0
    basis = fourier_basis(p)
    coef = directions(p, freqs, sign) @ centred  # [2K, p]: components along each input direction
    total = 0.0
    for i, k in enumerate(freqs):
        term = (coef[2 * i] @ basis[cos_row(k)] + coef[2 * i + 1] @ basis[sin_row(k)]) / math.sqrt(2)
        total += term.item() ** 2
    return math.sqrt(total) / centred.norm().item()
