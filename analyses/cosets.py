"""Cosets in the unembedding: do the per-class output directions cluster into cosets of a subgroup?

Power et al. (2022) found the output layer of a network trained on S5 clustered into cosets of a
subgroup (and its conjugates). Why that can happen: if the part of ``W_U`` in an irrep rho is
``u_c = A rho(c) v`` for one vector v, then ``u_c = u_c'`` exactly when ``c^-1 c'`` fixes v, so
classes with equal directions are the left cosets ``c H`` of the stabiliser H of v.

``coset_structure`` clusters the class directions (the columns of ``W_U`` for the group's classes,
centred over the classes; optionally only their component in some irreps) by average-linkage
hierarchical clustering on the cosine distance (``scipy.cluster.hierarchy``), cuts the tree into k
clusters for every k that divides |G| (1 < k < |G|), and keeps the cuts whose clusters are all of one
size and are exactly the left cosets ``gH`` or the right cosets ``Hg`` of H, the cluster of the
identity (which must then be a subgroup). For each such cut it reports H (order, elements, a small
generating set), which side, whether H is normal, its conjugates ``xHx^-1`` (how many distinct
ones), and how tight the clusters are: the mean cosine within clusters and between them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from analyses.groups import Group


@dataclass(frozen=True)
class CosetCut:
    """One cut of the class-direction tree into the cosets of a subgroup.

    Attributes:
        k: number of clusters (the index of H).
        side: ``"left"`` (clusters are gH), ``"right"`` (Hg) or ``"both"`` (H normal, or the two coincide).
        subgroup: the sorted elements of H (the identity's cluster).
        generators: a small generating set of H (greedy, in element order).
        normal: whether H is a normal subgroup.
        conjugates: the distinct conjugates ``xHx^-1``, each as a sorted tuple (H itself included).
        clusters: the clusters, each a sorted list of elements, in order of their smallest element.
        within, between: mean cosine similarity of class directions in the same / different clusters.
    """

    k: int
    side: str
    subgroup: list[int]
    generators: list[int]
    normal: bool
    conjugates: list[tuple[int, ...]] = field(default_factory=list)
    clusters: list[list[int]] = field(default_factory=list)
    within: float = float("nan")
    between: float = float("nan")


def generators(group: Group, elements: list[int]) -> list[int]:
    """A small generating set of the subgroup ``elements`` (greedy: add the first element not yet generated)."""
    gens: list[int] = []
    have = {group.identity}
    for g in elements:
        if g not in have:
            gens.append(g)
            have = set(group.subgroup(gens))
    return gens


def conjugates(group: Group, elements: list[int]) -> list[tuple[int, ...]]:
    """The distinct subgroups ``x H x^-1`` for x in G, sorted (H included)."""
    H = torch.tensor(elements)
    out = {tuple(sorted(group.table[group.table[x, H], group.inverse[x]].tolist())) for x in range(group.order)}
    return sorted(out)


def is_coset_partition(group: Group, clusters: list[list[int]]) -> tuple[str | None, list[int] | None]:
    """``(side, H)`` if ``clusters`` are the left (``gH``), right (``Hg``) or both cosets of the identity's
    cluster H, a subgroup; ``(None, None)`` otherwise."""
    e = group.identity
    H = next(c for c in clusters if e in c)
    if sorted(group.subgroup(H)) != sorted(H) or len({len(c) for c in clusters}) != 1:
        return None, None
    Ht = torch.tensor(H)
    got = {tuple(sorted(c)) for c in clusters}
    left = {tuple(sorted(group.table[g, Ht].tolist())) for g in range(group.order)}
    right = {tuple(sorted(group.table[Ht, g].tolist())) for g in range(group.order)}
    is_left, is_right = got == left, got == right
    if is_left and is_right:
        return "both", sorted(H)
    return ("left" if is_left else "right" if is_right else None), (sorted(H) if is_left or is_right else None)


def class_directions(W_U_el: Float[Tensor, "d_model n"], B: Float[Tensor, "n n"] | None = None,
                     rows: Tensor | None = None) -> Float[Tensor, "n d_model"]:
    """The classes' output directions: ``W_U``'s element columns, centred over the classes; with ``B`` and
    ``rows`` (an isotypic basis and the indices of some of its rows) only their component in those rows' span."""
    U = W_U_el.T.to(torch.float64)
    U = U - U.mean(0, keepdim=True)
    if B is not None:
        Bs = B[rows]
        U = Bs.T @ (Bs @ U)
    return U


def coset_structure(group: Group, directions: Float[Tensor, "n d"]) -> list[CosetCut]:
    """The cuts of the average-linkage tree of ``directions`` (one per element, cosine distance) into the
    cosets of a subgroup, one per k dividing |G| (1 < k < |G|), smallest k first (see the module docstring)."""
    from scipy.cluster.hierarchy import fcluster, linkage

    X = directions.detach().to(torch.float64).numpy()
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    Xn = X / np.where(norms > 0, norms, 1.0)
    n = group.order
    if n < 4 or not np.isfinite(Xn).all():
        return []
    sim = Xn @ Xn.T
    tree = linkage(Xn, method="average", metric="cosine")
    out = []
    for k in [d for d in range(2, n) if n % d == 0]:
        lab = fcluster(tree, t=k, criterion="maxclust")
        clusters = sorted(([int(i) for i in np.nonzero(lab == c)[0]] for c in np.unique(lab)), key=min)
        if len(clusters) != k:
            continue
        side, H = is_coset_partition(group, clusters)
        if side is None:
            continue
        same = lab[:, None] == lab[None, :]
        off = ~np.eye(n, dtype=bool)
        within = float(sim[same & off].mean()) if (same & off).any() else float("nan")
        between = float(sim[~same].mean())
        conj = conjugates(group, H)
        out.append(CosetCut(k, side, H, generators(group, H), len(conj) == 1, conj, clusters, within, between))
    return out


def describe(group: Group, cut: CosetCut) -> str:
    """One sentence about a cut, elements named by ``group.labels``."""
    gens = ", ".join(group.labels[g] for g in cut.generators) or group.labels[group.identity]
    side = {"left": "left cosets gH", "right": "right cosets Hg", "both": "cosets (left = right)"}[cut.side]
    norm = "normal" if cut.normal else f"{len(cut.conjugates)} conjugates"
    return (f"{cut.k} clusters of {len(cut.subgroup)} classes = {side} of H = <{gens}> (order {len(cut.subgroup)}, {norm}); "
            f"mean cosine within clusters {cut.within:.2f}, between {cut.between:.2f}")
