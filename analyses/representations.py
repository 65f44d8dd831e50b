"""What each hidden layer represents, per checkpoint: its feature rank and its share in the key frequencies.

- ``feature_rank`` (Fan et al. 2024, "Deep grokking"): the numerical rank of the covariance of a layer's
  features over a set of inputs, ``torch.linalg.matrix_rank(torch.cov(H.T))`` with PyTorch's default
  tolerance (singular values above ``sigma_max * width * float64 eps``), as their code computes it. They
  read each linear layer's output before the activation over the test set; ``interp.analysers`` reads each
  hidden layer's activations (after it, the features the next layer sees) over the test split.
- ``key_fraction``: the fraction of a layer's total centred activation variance (all neurons together) in
  the blocks ``{const, cos k, sin k}^2`` of the key frequencies (or ``{trivial, rho}^2`` of the key irreps),
  the per-layer version of the neurons' clustering criterion (``analyses.fourier.neuron_spectrum``); only
  the key blocks are transformed, so it costs a small fraction of a full spectrum.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor


def feature_rank(features: Float[Tensor, "n width"]) -> int:
    """Numerical rank of the ``[width, width]`` covariance of ``features`` over its ``n`` rows (float64).

    A constant feature adds nothing (the covariance centres it); ``n <= 1`` rows give rank 0.
    """
    if features.shape[0] <= 1:
        return 0
    return int(torch.linalg.matrix_rank(torch.cov(features.detach().to(torch.float64).T)).item())


def key_fraction(acts: Float[Tensor, "n n width"], basis: Float[Tensor, "n n"], blocks: list[list[int]]) -> float:
    """Share of the layer's centred variance over the grid ``(a, b)`` in the blocks ``rows x rows`` of an
    orthonormal basis over each input, one block per key frequency or irrep (``rows``: the constant /
    trivial row and that key's rows). Blocks share only the constant-constant entry, which centring makes
    zero, so this is the variance-weighted mean over neurons of ``analyses.efficiency.key_frequency_fraction``.

    Args:
        acts: ``[n, n, width]`` activations indexed ``[a, b]``.
        basis: ``[n, n]`` orthonormal rows (``analyses.fourier.fourier_basis``, ``analyses.groups.isotypic_basis``).
        blocks: the basis rows of each key's block.
    Returns:
        a number in [0, 1]; ``nan`` for a layer without variance or no block.
    """
    x = acts.detach().to(torch.float64)
    x = x - x.mean(dim=(0, 1), keepdim=True)
    total = x.pow(2).sum()
    if not blocks or total <= 0:
        return float("nan")
    rows = sorted({r for block in blocks for r in block})
    where = {r: i for i, r in enumerate(rows)}
    b = basis[rows].to(torch.float64)
    n = x.shape[0]
    y = (b @ x.reshape(n, -1)).reshape(len(rows), n, -1)  # over a
    power = torch.einsum("jb,ibw->ijw", b, y).pow(2).sum(-1)  # [rows, rows], summed over the layer's neurons
    mask = torch.zeros(len(rows), len(rows), dtype=torch.bool)
    for block in blocks:
        idx = torch.tensor([where[r] for r in block])
        mask[idx[:, None], idx[None, :]] = True
    return (power[mask].sum() / total).item()
