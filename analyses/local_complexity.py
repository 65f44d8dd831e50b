"""Local complexity: how many of a ReLU network's region boundaries pass close to a point (Humayun et al. 2024).

A ReLU network cuts its input space into linear regions; each hidden neuron contributes one boundary, where
its pre-activation is zero (in deeper layers the boundary is bent by the layers before it). Humayun,
Balestriero and Baraniuk ("Deep networks always grok and here is why") measure the density of these
boundaries around a point ``x``:

1. take a neighbourhood of ``x``: the cross-polytope (an L1 ball) with the ``2 P`` vertices
   ``x +- r v_j``, for ``P`` random orthonormal directions ``v_j`` and radius ``r`` (``unit_offsets`` draws them);
2. pass the vertices through the network and, layer by layer, count the neurons whose pre-activation
   takes both signs over the vertices: those neurons' boundaries cut the convex hull of the vertices as
   that layer sees them (a hyperplane meets a convex hull exactly when the hull has vertices on both of
   its sides);
3. the local complexity of ``x`` is the count, summed over the hidden layers.

A smooth neighbourhood (few boundaries) means the network is nearly linear there. Their claim, for
classifiers that grok: after an early rise, the boundaries move away from the training points (their
local complexity falls) and gather near the decision boundary, and the delayed generalisation (and
robustness) comes after this migration.

This module holds the measure only; ``interp.analysers``' ``local_complexity`` analyser applies it to every
checkpoint of a ReLU MLP (the digits MLP, the modular MLPs in the space of their operand vectors).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def unit_offsets(n: int, dim: int, directions: int, generator: torch.Generator) -> Tensor:
    """``[n, 2 * directions, dim]``: for each of ``n`` points, ``+v_j`` then ``-v_j`` for ``directions`` orthonormal
    vectors ``v_j`` drawn afresh for each point (QR of a Gaussian matrix) from ``generator``: the vertices of the unit
    cross-polytope around the origin.

    Raises:
        ValueError: ``directions`` not in 1..dim.
    """
    if not 1 <= directions <= dim:
        raise ValueError(f"directions {directions}: must be between 1 and the input dimension {dim}")
    gauss = torch.randn(n, dim, directions, generator=generator, dtype=torch.float64)
    v = torch.linalg.qr(gauss).Q.transpose(1, 2)  # [n, P, dim], orthonormal rows
    return torch.cat([v, -v], dim=1)


def cross_polytope(points: Tensor, radius: float, directions: int, generator: torch.Generator) -> Tensor:
    """``[N, 2 * directions, D]``: each point's cross-polytope vertices ``x +- radius * v_j`` (``unit_offsets``).

    Raises:
        ValueError: ``radius`` <= 0, or ``directions`` not in 1..D.
    """
    if not radius > 0:
        raise ValueError(f"radius {radius}: must be > 0")
    n, d = points.shape
    return points[:, None, :] + radius * unit_offsets(n, d, directions, generator).to(points.dtype)


def boundaries_crossed(preacts: list[Tensor], n_vertices: int) -> Tensor:
    """``[N, layers]``: per point (its ``n_vertices`` consecutive rows) and hidden layer, the number of neurons
    whose pre-activation is positive at one vertex and negative at another."""
    out = []
    for pre in preacts:
        pre = pre.reshape(-1, n_vertices, pre.shape[-1])
        out.append(((pre.amax(1) > 0) & (pre.amin(1) < 0)).sum(-1))
    return torch.stack(out, dim=1)


@torch.no_grad()
def local_complexity(preactivations: Callable[[Tensor], list[Tensor]], points: Tensor, radius: float, offsets: Tensor,
                     chunk: int = 4096) -> Tensor:
    """``[N, layers]``: the local complexity of each point, per hidden layer (sum over the last axis for the total).

    Args:
        preactivations: ``inputs [M, D] -> [pre-activation [M, width] of each hidden layer]`` (the network up to
            its last hidden layer, ReLU between layers).
        points: ``[N, D]``, the centres.
        radius: the cross-polytope's radius, in input units (> 0).
        offsets: ``[N, 2P, D]``, each point's unit cross-polytope (``unit_offsets``; drawn once, reused at every
            checkpoint so that a change of the count is the network's, not the draw's).
        chunk: vertices per forward call.
    """
    if not radius > 0:
        raise ValueError(f"radius {radius}: must be > 0")
    n_vertices = offsets.shape[1]
    vertices = (points[:, None, :] + radius * offsets.to(points.dtype)).reshape(-1, points.shape[1])
    per_chunk = max(1, chunk // n_vertices) * n_vertices  # whole points per chunk
    parts = [boundaries_crossed(preactivations(vertices[i:i + per_chunk]), n_vertices) for i in range(0, len(vertices), per_chunk)]
    return torch.cat(parts, dim=0)
