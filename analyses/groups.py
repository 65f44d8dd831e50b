"""Finite groups, their real irreducible representations, and the Fourier analysers generalised to them.

The Fourier analysis of ``a + b mod p`` (``analyses.fourier``) is the special case G = Z_p of a
harmonic analysis on any finite group G (Chughtai et al. 2023, "A toy model of universality"): the
functions on G split into orthogonal *isotypic* subspaces, one per real irreducible representation
(irrep) rho, spanned by the matrix entries ``g -> rho(g)_ij``. For Z_p these are the constants and,
for each frequency k, ``span{cos(2 pi k g / p), sin(2 pi k g / p)}``.

Groups (``Group``): elements are indices ``0..n-1`` with a multiplication table ``table[g, h] =
g·h``. ``cyclic(n)`` is Z_n (``g·h = g + h mod n``); ``symmetric(k)`` is S_k with its k!
permutations in **lexicographic order of their one-line notation** (index 0 is the identity
``0123...``, the last is the reversal) and ``(g·h)(x) = g(h(x))`` (apply h first);
``alternating(k)`` is A_k, the even permutations in the same order; ``dihedral(m)`` is the symmetry
group of the regular m-gon, ``r^i s^j`` at index ``i + m j`` (r the rotation, s a reflection,
``s r s = r^-1``).

Irreps (``Irrep``: a name, the real dimension, the orthogonal matrices of every element):

- Z_n: the trivial irrep, for each frequency ``k = 1..(n-1)//2`` the rotation by ``2 pi k g / n``
  (2-dimensional over the reals; it is two complex characters ``e^{+-2 pi i k g/n}`` together), and
  for even n the sign ``(-1)^g`` (the Nyquist frequency ``n/2``). Irrep index k is frequency k, as in
  ``analyses.fourier``.
- S_k: one per partition of k, in Young's orthogonal form (the standard Young tableaux as basis;
  the adjacent transposition ``(i i+1)`` acts with ``1/r`` on the diagonal and ``sqrt(1 - 1/r^2)``
  between a tableau and the one with i, i+1 swapped, r the axial distance), extended to every
  element along the Cayley graph of the adjacent transpositions. Partitions in reverse
  lexicographic order: ``[k]`` (trivial) first, ``[1^k]`` (sign) last; ``[k-1, 1]`` is the
  *standard* irrep, ``[2, 1^(k-2)]`` = sign ⊗ standard.
- D_m: trivial, the sign of the reflection, for even m also ``(-1)^i`` and ``(-1)^(i+j)``, and the
  2-dimensional ``r -> rotation by 2 pi k / m``, ``s -> diag(1, -1)`` for ``k = 1..(m-1)//2``.
- Any other group whose irreps are all of real type (A_5 yes, A_4 no): computed numerically
  (``irreps_from_regular``): the real isotypic components of the regular representation, split by a
  random symmetric central element; irreps are then named by their dimension (A_5: 1, 3, 3, 4, 5).

The tests check every set: homomorphism, orthogonality of the matrices, Schur orthogonality of the
characters and that the isotypic bases fill the n-dimensional space of functions on G.

The analysers on a group view (``GroupView``: the group, its irreps, which input token and which
output class is each element, and whether the label is ``g·h`` or ``g·h^-1``):

- ``isotypic_basis``: an orthonormal basis of the functions on G, rows grouped by irrep
  (``owner[i]`` is the irrep of row i); ``projector`` sums ``B_rho^T B_rho`` over a set of irreps.
- ``fractions_1d``: the fraction of ``|W|^2`` of a matrix along its element axis (the embedding
  rows of the element tokens, the unembedding columns of the element classes) in each irrep.
- ``neuron_spectrum``: per MLP neuron, the fraction of its centred variance over the n^2 inputs
  ``(g, h)`` in the block ``{trivial, rho}^2`` of each non-trivial irrep (the 3x3 frequency block of
  ``analyses.fourier.neuron_spectrum``); ``analyses.fourier.assign_clusters`` then clusters the
  neurons, so "key irreps" follow the same rule as key frequencies (85% of a neuron's variance,
  ``min_cluster_neurons`` neurons).
- ``directions``: orthonormal directions over the n^2 inputs ``psi(g·h) / sqrt(n)`` for psi in the
  key irreps' isotypic bases (``g·h^-1`` for the ``-1`` label); for Z_p these span exactly the
  directions ``cos/sin(w_k(a +- b))`` of ``analyses.fourier.directions``, so restricted and excluded
  loss (``analyses.progress_measures``) and the C_gen/C_mem logit split (``analyses.efficiency``) apply
  unchanged.
- ``ideal_logit_cosine``: cosine of the class-centred logits with their best fit by
  ``sum_rho alpha_rho chi_rho(label(g, h) · c^-1)`` (for Z_p, ``chi_k(x) = 2 cos(w_k x)``: the
  ideal terms ``cos(w_k(a + b - c))`` of ``analyses.progress_measures.ideal_logit_cosine``).
- ``split_parameters``: C_gen/C_mem/shared parameter split of ``analyses.efficiency`` with the
  isotypic projectors of the key irreps in place of the key-frequency projectors.

The discrete logarithm (``log_view``): for prime p every non-zero residue is ``g^i`` for a primitive
root g, so ``a * b mod p`` is ``i + j mod p - 1`` and ``a / b`` is ``i - j``: the task is the group
Z_{p-1} in log coordinates. ``primitive_root`` finds the smallest one (by the prime factors of
p - 1), ``discrete_log`` builds the table. Zero has no logarithm: the view covers only the
``(p - 1)^2`` pairs of non-zero residues; the token 0, its embedding row and the class 0 (its
unembedding column, whose logit stays in the softmax) are left out of the basis and counted as
shared weights.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from analyses import efficiency, fourier


class GroupError(ValueError):
    """A group, irrep or view request that does not exist (the message says what does)."""


# ---- groups ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Group:
    """A finite group as a multiplication table.

    Attributes:
        name: e.g. ``"S4"``, ``"Z58"``.
        table: ``[n, n]`` with ``table[g, h]`` the index of ``g·h``.
        labels: a printable name per element (one-line notation for permutations).
        elements: the underlying objects (permutation tuples, integers, ``(i, j)`` pairs).
    """

    name: str
    table: Int[Tensor, "n n"]
    labels: list[str]
    elements: list = field(default_factory=list)

    @property
    def order(self) -> int:
        return self.table.shape[0]

    @property
    def identity(self) -> int:
        n = self.order
        for e in range(n):
            if torch.equal(self.table[e], torch.arange(n)):
                return e
        raise GroupError(f"{self.name}: no identity element")

    @property
    def inverse(self) -> Int[Tensor, "n"]:
        """``inverse[g]`` is the index of ``g^-1``."""
        return (self.table == self.identity).int().argmax(dim=1)

    def check(self) -> None:
        """Raise ``GroupError`` unless the table is a group (closure, Latin square, associativity, identity)."""
        n, t = self.order, self.table
        rng = torch.arange(n)
        if not all(torch.equal(t[i].sort().values, rng) and torch.equal(t[:, i].sort().values, rng) for i in range(n)):
            raise GroupError(f"{self.name}: the table is not a Latin square")
        if not torch.equal(t[t], t[:, t]):  # (gh)k == g(hk): t[t[g,h],k] vs t[g,t[h,k]]
            raise GroupError(f"{self.name}: the table is not associative")
        _ = self.identity

    def subgroup(self, gens: list[int]) -> list[int]:
        """The sorted elements of the subgroup generated by ``gens``."""
        sub, frontier = {self.identity}, [self.identity]
        while frontier:
            g = frontier.pop()
            for s in gens:
                h = int(self.table[g, s])
                if h not in sub:
                    sub.add(h)
                    frontier.append(h)
        return sorted(sub)


def _from_elements(name: str, elements: list, mul, label=str) -> Group:
    index = {e: i for i, e in enumerate(elements)}
    table = torch.tensor([[index[mul(g, h)] for h in elements] for g in elements], dtype=torch.long)
    return Group(name, table, [label(e) for e in elements], list(elements))


def cyclic(n: int) -> Group:
    """Z_n: elements ``0..n-1``, ``g·h = g + h mod n``."""
    if n < 1:
        raise GroupError(f"Z_n needs n >= 1 (n = {n})")
    return _from_elements(f"Z{n}", list(range(n)), lambda g, h: (g + h) % n)


def compose(g: tuple[int, ...], h: tuple[int, ...]) -> tuple[int, ...]:
    """``(g·h)(x) = g(h(x))``: apply h first."""
    return tuple(g[x] for x in h)


def perm_label(g: tuple[int, ...]) -> str:
    """One-line notation: ``"1023"`` is the permutation 0->1, 1->0, 2->2, 3->3."""
    return "".join(str(x) for x in g) if len(g) <= 10 else " ".join(str(x) for x in g)


def parity(g: tuple[int, ...]) -> int:
    """0 for an even permutation, 1 for an odd one (by counting inversions)."""
    return sum(1 for i in range(len(g)) for j in range(i + 1, len(g)) if g[i] > g[j]) % 2


def symmetric(k: int) -> Group:
    """S_k: the k! permutations of ``0..k-1`` in lexicographic order, ``(g·h)(x) = g(h(x))``."""
    if not 1 <= k <= 7:
        raise GroupError(f"S_k is built for k in 1..7 (k = {k})")
    return _from_elements(f"S{k}", list(itertools.permutations(range(k))), compose, perm_label)


def alternating(k: int) -> Group:
    """A_k: the even permutations of ``0..k-1`` in lexicographic order."""
    if not 1 <= k <= 7:
        raise GroupError(f"A_k is built for k in 1..7 (k = {k})")
    perms = [g for g in itertools.permutations(range(k)) if parity(g) == 0]
    return _from_elements(f"A{k}", perms, compose, perm_label)


def dihedral(m: int) -> Group:
    """D_m (order 2m): ``r^i s^j`` at index ``i + m j``, with ``s r = r^-1 s``."""
    if m < 3:
        raise GroupError(f"D_m is built for m >= 3 (m = {m})")
    elements = [(i, j) for j in (0, 1) for i in range(m)]

    def mul(x, y):
        (i1, j1), (i2, j2) = x, y  # r^i1 s^j1 r^i2 s^j2 = r^(i1 + (-1)^j1 i2) s^(j1 + j2)
        return ((i1 + (i2 if j1 == 0 else -i2)) % m, (j1 + j2) % 2)

    return _from_elements(f"D{m}", elements, mul, lambda e: f"r{e[0]}" + ("s" if e[1] else ""))


# ---- irreducible representations ------------------------------------------------------------------
@dataclass(frozen=True)
class Irrep:
    """A real irreducible representation: ``matrices[g]`` is the orthogonal ``[dim, dim]`` image of g."""

    name: str
    matrices: Float[Tensor, "n d d"]

    @property
    def dim(self) -> int:
        return self.matrices.shape[1]

    @property
    def character(self) -> Float[Tensor, "n"]:
        return self.matrices.diagonal(dim1=1, dim2=2).sum(-1)


def cyclic_irreps(n: int) -> list[Irrep]:
    """Trivial, rotations by frequency ``k = 1..(n-1)//2``, and the sign ``(-1)^g`` for even n (index k = frequency k)."""
    g = torch.arange(n, dtype=torch.float64)
    out = [Irrep("trivial", torch.ones(n, 1, 1, dtype=torch.float64))]
    for k in range(1, (n - 1) // 2 + 1):
        w = 2 * math.pi * k * g / n
        c, s = torch.cos(w), torch.sin(w)
        out.append(Irrep(f"freq {k}", torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)))
    if n % 2 == 0 and n > 1:
        out.append(Irrep(f"freq {n // 2}", ((-1.0) ** g).reshape(n, 1, 1)))
    return out


def partitions(k: int) -> list[tuple[int, ...]]:
    """Partitions of k in reverse lexicographic order: ``(k,)`` first, ``(1,)*k`` last."""
    def gen(rest: int, largest: int):
        if rest == 0:
            yield ()
            return
        for first in range(min(rest, largest), 0, -1):
            for tail in gen(rest - first, first):
                yield (first,) + tail
    return list(gen(k, k))


def standard_tableaux(shape: tuple[int, ...]) -> list[tuple[tuple[int, int], ...]]:
    """Standard Young tableaux of ``shape``, each as the ``(row, column)`` of the numbers ``0..k-1``."""
    k = sum(shape)
    out = []

    def fill(pos: tuple, lengths: list[int]):
        if len(pos) == k:
            out.append(pos)
            return
        for r in range(len(shape)):
            if lengths[r] < shape[r] and (r == 0 or lengths[r - 1] > lengths[r]):
                lengths[r] += 1
                fill(pos + ((r, lengths[r] - 1),), lengths)
                lengths[r] -= 1

    fill((), [0] * len(shape))
    return out


def partition_name(shape: tuple[int, ...]) -> str:
    """``[3,1]``-style name, with ``trivial``, ``sign``, ``standard`` and ``sign⊗standard`` where they apply."""
    k, base = sum(shape), "[" + ",".join(str(x) for x in shape) + "]"
    nick = {(k,): "trivial", (1,) * k: "sign"}
    if k >= 3:
        nick[(2,) + (1,) * (k - 2)] = "sign⊗standard"
        nick[(k - 1, 1)] = "standard"  # for k = 3 they are the same partition [2,1]
    return f"{nick[shape]} {base}" if shape in nick else base


def _young_generators(shape: tuple[int, ...]) -> list[Tensor]:
    """Young's orthogonal form of the adjacent transpositions ``(i i+1)``, ``i = 0..k-2``."""
    tabs = standard_tableaux(shape)
    index = {t: i for i, t in enumerate(tabs)}
    k, d = sum(shape), len(tabs)
    gens = []
    for i in range(k - 1):
        M = torch.zeros(d, d, dtype=torch.float64)
        for t, T in enumerate(tabs):
            (r1, c1), (r2, c2) = T[i], T[i + 1]
            if r1 == r2:
                M[t, t] = 1.0
            elif c1 == c2:
                M[t, t] = -1.0
            else:
                r = (c2 - r2) - (c1 - r1)  # axial distance from i to i+1
                M[t, t] = 1.0 / r
                swapped = list(T)
                swapped[i], swapped[i + 1] = T[i + 1], T[i]
                M[index[tuple(swapped)], t] = math.sqrt(1.0 - 1.0 / r**2)
        gens.append(M)
    return gens


def _extend(group: Group, gen_elements: list[int], gen_matrices: list[Tensor]) -> Float[Tensor, "n d d"]:
    """Images of every element from the images of generators, along the Cayley graph (``rho(s g) = rho(s) rho(g)``)."""
    d = gen_matrices[0].shape[0]
    out: dict[int, Tensor] = {group.identity: torch.eye(d, dtype=torch.float64)}
    frontier = [group.identity]
    while frontier:
        nxt = []
        for g in frontier:
            for s, M in zip(gen_elements, gen_matrices):
                h = int(group.table[s, g])
                if h not in out:
                    out[h] = M @ out[g]
                    nxt.append(h)
        frontier = nxt
    if len(out) != group.order:
        raise GroupError(f"{group.name}: the generators do not generate the group")
    return torch.stack([out[g] for g in range(group.order)])


def symmetric_irreps(group: Group) -> list[Irrep]:
    """The irreps of S_k (``group = symmetric(k)``), one per partition, in Young's orthogonal form."""
    k = len(group.elements[0])
    index = {e: i for i, e in enumerate(group.elements)}
    if k == 1:
        return [Irrep("trivial [1]", torch.ones(1, 1, 1, dtype=torch.float64))]
    transpositions = []
    for i in range(k - 1):
        s = list(range(k))
        s[i], s[i + 1] = i + 1, i
        transpositions.append(index[tuple(s)])
    return [Irrep(partition_name(shape), _extend(group, transpositions, _young_generators(shape))) for shape in partitions(k)]


def dihedral_irreps(group: Group) -> list[Irrep]:
    """The irreps of D_m (``group = dihedral(m)``): 1-dimensional ones, then the 2-dimensional ones by k."""
    m = group.order // 2
    i = torch.tensor([e[0] for e in group.elements], dtype=torch.float64)
    j = torch.tensor([e[1] for e in group.elements], dtype=torch.float64)
    one = lambda v: v.reshape(-1, 1, 1)  # noqa: E731
    out = [Irrep("trivial", one(torch.ones_like(i))), Irrep("reflection sign", one((-1.0) ** j))]
    if m % 2 == 0:
        out += [Irrep("rotation parity", one((-1.0) ** i)), Irrep("rotation parity x reflection sign", one((-1.0) ** (i + j)))]
    for k in range(1, (m - 1) // 2 + 1):
        w = 2 * math.pi * k * i / m
        c, s = torch.cos(w), torch.sin(w)
        R = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
        S = torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64))
        mats = torch.where(j.reshape(-1, 1, 1) > 0, R @ S, R)
        out.append(Irrep(f"rotation {k}", mats))
    return out


def irreps_from_regular(group: Group, seed: int = 0) -> list[Irrep]:
    """Real irreps of any small group, numerically.

    A random class function ``z``, symmetrised under inversion, acts on the functions on G by
    convolution as a symmetric matrix that commutes with both translations; generically its
    eigenspaces are exactly the real isotypic components. On each component (dimension ``m^2``
    for an irrep of real dimension ``m`` and real type) the left translations act as ``m`` copies
    of the irrep; the first copy is the span of the left translates of one vector, and its
    matrices come from an orthonormal basis of that span (``rho(x) = Q^T L_x Q``). Only real-type irreps are supported
    (a component whose dimension is not a square raises ``GroupError``).
    """
    n, t, inv = group.order, group.table, group.inverse
    # conjugacy classes
    cls = torch.full((n,), -1, dtype=torch.long)
    c = 0
    for g in range(n):
        if cls[g] < 0:
            conj = t[t[:, g], inv]  # x g x^-1 for every x
            cls[conj] = c
            c += 1
    gen = torch.Generator().manual_seed(seed)
    val = torch.rand(c, generator=gen, dtype=torch.float64)
    z = val[cls] + val[cls[inv]]
    # (Z f)(g) = sum_h z(h) f(h^-1 g): matrix Z[g, x] = z(g x^-1)
    Z = z[t[:, inv]]
    evals, evecs = torch.linalg.eigh((Z + Z.T) / 2)
    order = torch.argsort(evals)
    evals, evecs = evals[order], evecs[:, order]
    groups, start = [], 0
    for i in range(1, n + 1):
        if i == n or evals[i] - evals[i - 1] > 1e-8 * max(1.0, evals.abs().max().item()):
            groups.append(evecs[:, start:i])
            start = i
    out = []
    for V in groups:
        dim2 = V.shape[1]
        m = round(math.sqrt(dim2))
        if m * m != dim2:
            raise GroupError(f"{group.name}: an isotypic component of dimension {dim2} is not of real type")
        # one copy of the irrep: an eigenspace, inside the component, of a random symmetric right
        # convolution (it commutes with the left translations, so its eigenspaces are left-invariant)
        w = torch.rand(n, generator=gen, dtype=torch.float64)
        w = w + w[inv]
        R = w[t[inv]]  # R[g, k] = w(g^-1 k)
        ev, U = torch.linalg.eigh(V.T @ R @ V)
        Q = V @ U[:, :m]
        mats = torch.stack([Q.T @ Q[t[inv[x]]] for x in range(n)])  # rho(x) = Q^T L_x Q
        out.append((mats, V))
    out.sort(key=lambda mv: (mv[0].shape[1], -mv[0].diagonal(dim1=1, dim2=2).sum(-1).sum().item()))
    names, seen = [], {}
    for mats, _ in out:
        d = mats.shape[1]
        triv = d == 1 and torch.allclose(mats, torch.ones_like(mats))
        seen[d] = seen.get(d, 0) + 1
        names.append("trivial" if triv else f"dim {d}" + (f" #{seen[d]}" if sum(o[0].shape[1] == d for o in out) > 1 else ""))
    return [Irrep(nm, mats) for nm, (mats, _) in zip(names, out)]


def irreps(group: Group) -> list[Irrep]:
    """The real irreps of ``group``, trivial first (see the module docstring for each family)."""
    if group.name.startswith("Z"):
        return cyclic_irreps(group.order)
    if group.name.startswith("S"):
        return symmetric_irreps(group)
    if group.name.startswith("D"):
        return dihedral_irreps(group)
    return irreps_from_regular(group)


# ---- harmonic analysis --------------------------------------------------------------------------
def isotypic_basis(irreps_: list[Irrep], tol: float = 1e-9) -> tuple[Float[Tensor, "n n"], Int[Tensor, "n"]]:
    """An orthonormal basis of the functions on G, rows grouped by irrep.

    Args:
        irreps_: the real irreps of G, trivial first.
        tol: an entry function whose part orthogonal to the earlier ones is below ``tol`` times the largest
            entry's norm is dropped (a complex-type irrep such as a rotation of Z_n has ``dim^2 = 4``
            matrix entries spanning only 2 functions). Gram-Schmidt in entry order, so for Z_n the rows
            of frequency k are ``cos k`` and ``-sin k`` (``analyses.fourier``'s rows up to a sign).
    Returns:
        ``(B [n, n], owner [n])``: rows of B are orthonormal functions on G, ``owner[i]`` the index of
        the irrep whose matrix entries span row i.
    Raises:
        GroupError: the irreps do not fill the n-dimensional space (a missing or repeated irrep).
    """
    rows, owner = [], []
    for r, rho in enumerate(irreps_):
        F = rho.matrices.reshape(rho.matrices.shape[0], -1).T  # [d^2, n]: the matrix entries as functions
        scale = F.norm(dim=1).max()
        kept: list[Tensor] = []
        for f in F:  # Gram-Schmidt in entry order (twice, for accuracy): Z_p's rotation gives cos k, -sin k
            v = f.clone()
            for _ in range(2):
                for q in kept:
                    v = v - (q @ v) * q
            if v.norm() > tol * scale:
                kept.append(v / v.norm())
        rows.append(torch.stack(kept))
        owner += [r] * len(kept)
    B = torch.cat(rows)
    n = irreps_[0].matrices.shape[0]
    if B.shape[0] != n or not torch.allclose(B @ B.T, torch.eye(n, dtype=B.dtype), atol=1e-8):
        raise GroupError(f"the irreps span {B.shape[0]} orthonormal functions, not the {n} functions on the group")
    return B, torch.tensor(owner, dtype=torch.long)


def projector(B: Float[Tensor, "n n"], owner: Int[Tensor, "n"], which: list[int]) -> Float[Tensor, "n n"]:
    """Orthogonal projector onto the functions in the irreps ``which`` (indices into the irrep list)."""
    rows = B[torch.isin(owner, torch.tensor(list(which), dtype=torch.long))]
    return rows.T @ rows


def fractions_1d(W: Float[Tensor, "n d"], B: Float[Tensor, "n n"], owner: Int[Tensor, "n"], n_irreps: int) -> Float[Tensor, "n_irreps"]:
    """Fraction of ``|W|^2`` in each irrep along the first (element) axis.

    Args:
        W: ``[n, d]``, row g belonging to element g (embedding rows; ``W_U.T`` for the unembedding).
        B, owner: ``isotypic_basis``.
        n_irreps: number of irreps.
    Returns:
        ``[n_irreps]`` float64 fractions summing to 1 (the trivial irrep included).
    """
    power = (B @ W.to(torch.float64)).pow(2).sum(-1)
    per = torch.zeros(n_irreps, dtype=torch.float64).index_add_(0, owner, power)
    return per / per.sum().clamp_min(torch.finfo(torch.float64).tiny)


def neuron_spectrum(
    acts: Float[Tensor, "n n d_mlp"], B: Float[Tensor, "n n"], owner: Int[Tensor, "n"], n_irreps: int
) -> tuple[Float[Tensor, "m d_mlp"], Float[Tensor, "d_mlp"]]:
    """Per neuron, the fraction of its centred variance over ``(g, h)`` in ``{trivial, rho}^2`` for each non-trivial irrep.

    The generalisation of ``analyses.fourier.neuron_spectrum`` (same conventions, same result on Z_p);
    feed it to ``analyses.fourier.assign_clusters`` to get key irreps (index k is irrep k).

    Args:
        acts: ``[n, n, d_mlp]`` MLP activations at ``=`` indexed ``[g, h]``.
        B, owner: ``isotypic_basis`` (trivial irrep 0).
        n_irreps: number of irreps.
    Returns:
        ``([n_irreps - 1, d_mlp] fractions, row r - 1 for irrep r``, ``[d_mlp] centred sums of squares)``.
    """
    x = acts.to(torch.float64)
    x = x - x.mean(dim=(0, 1), keepdim=True)
    n = x.shape[0]
    y = (B @ x.reshape(n, -1)).reshape(n, n, -1)  # transform over g
    power = torch.einsum("jb,ibn->ijn", B, y).pow(2)  # then over h
    total = power.sum(dim=(0, 1))
    fracs = []
    for r in range(1, n_irreps):
        rows = torch.nonzero((owner == r) | (owner == 0)).flatten()
        fracs.append(power[rows][:, rows].sum(dim=(0, 1)))
    return torch.stack(fracs) / total.clamp_min(torch.finfo(torch.float64).tiny), total


def activation_fractions(acts: Float[Tensor, "n n d_mlp"], B: Float[Tensor, "n n"], owner: Int[Tensor, "n"], n_irreps: int) -> Float[Tensor, "m"]:
    """Fraction of the MLP's total centred activation variance (all neurons together) in each non-trivial irrep's block."""
    fracs, total = neuron_spectrum(acts, B, owner, n_irreps)
    return (fracs * total).sum(-1) / total.sum().clamp_min(torch.finfo(torch.float64).tiny)


def label_elements(group: Group, sign: int = +1) -> Int[Tensor, "n_sq"]:
    """The element ``g·h`` (``sign = +1``) or ``g·h^-1`` (``-1``) of each input, row-major over ``(g, h)``."""
    t = group.table if sign == +1 else group.table[:, group.inverse]
    return t.reshape(-1)


def directions(group: Group, B: Float[Tensor, "n n"], owner: Int[Tensor, "n"], which: list[int], sign: int = +1) -> Float[Tensor, "m n_sq"]:
    """Orthonormal directions ``psi(g·h^{sign}) / sqrt(n)`` over the n^2 inputs, psi in the isotypic bases of ``which``.

    Returns:
        ``[sum of the irreps' function counts, n * n]``, row-major over ``(g, h)``.
    """
    n = group.order
    rows = B[torch.isin(owner, torch.tensor(list(which), dtype=torch.long))]
    return rows[:, label_elements(group, sign)] / math.sqrt(n)


def ideal_logit_cosine(
    logits: Float[Tensor, "n_sq n"], group: Group, irreps_: list[Irrep], which: list[int], sign: int = +1
) -> float:
    """Cosine of the class-centred logits (classes in element order) with their best fit by ``chi_rho(x · c^-1)``.

    ``x`` is each input's label element. The terms of different irreps are orthogonal (Schur), so the
    fit is a projection. On Z_p with ``chi_k = 2 cos(w_k x)`` this is
    ``analyses.progress_measures.ideal_logit_cosine``.

    Returns:
        the cosine in ``[0, 1]`` (0 for no irreps).
    """
    logits = logits.to(torch.float64)
    centred = logits - logits.mean(dim=1, keepdim=True)
    if not which:
        return 0.0
    x = label_elements(group, sign)
    idx = group.table[x][:, group.inverse]  # [n_sq, n]: x · c^-1
    total = 0.0
    for r in which:
        term = irreps_[r].character[idx]
        term = term - term.mean(dim=1, keepdim=True)
        total += ((centred * term).sum() / term.norm()).item() ** 2
    return math.sqrt(total) / centred.norm().item()


# ---- views of tasks as groups --------------------------------------------------------------------------
@dataclass(frozen=True)
class GroupView:
    """A task seen as composition in a group.

    Attributes:
        group, irreps: the group and its real irreps (trivial first).
        tokens: ``[n]`` input token id of each element.
        classes: ``[n]`` output class id of each element.
        sign: the label is ``g·h`` (+1) or ``g·h^-1`` (-1).
        basis: ``"irreps"`` (a group task), ``"log"`` (discrete log of mod_mul/mod_div), ``"fourier"`` (Z_p).
        note: what the view leaves out (the zero of the discrete log), or ``None``.
        generator: the primitive root of the discrete log (``None`` otherwise).
    """

    group: Group
    irreps: list[Irrep]
    tokens: Int[Tensor, "n"]
    classes: Int[Tensor, "n"]
    sign: int = +1
    basis: str = "irreps"
    note: str | None = None
    generator: int | None = None

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.irreps]

    def irrep_index(self, name: str) -> int:
        """Index of the irrep called ``name`` (its full name, or its ``[partition]`` / frequency number)."""
        for i, r in enumerate(self.irreps):
            if name in (r.name, str(i)) or r.name.endswith(" " + name) or r.name.startswith(name + " "):
                return i
        raise GroupError(f"{self.group.name} has no irrep {name!r}; its irreps are: {', '.join(self.names)}")

    def inputs(self) -> tuple[Int[Tensor, "n_sq"], Int[Tensor, "n_sq"]]:
        """Token ids ``(a, b)`` of the n^2 inputs, row-major over the elements ``(g, h)``."""
        n = self.group.order
        g = torch.arange(n).repeat_interleave(n)
        h = torch.arange(n).repeat(n)
        return self.tokens[g], self.tokens[h]

    def labels(self) -> Int[Tensor, "n_sq"]:
        """Class id of each input's answer."""
        return self.classes[label_elements(self.group, self.sign)]

    def grid_positions(self, a: Int[Tensor, "N"], b: Int[Tensor, "N"]) -> Int[Tensor, "N"]:
        """Position in the n^2 grid of each token pair ``(a, b)``; -1 where a token is no element (zero in log view)."""
        lookup = torch.full((int(max(self.tokens.max().item(), a.max().item(), b.max().item())) + 1,), -1, dtype=torch.long)
        lookup[self.tokens] = torch.arange(self.group.order)
        ga, gb = lookup[a], lookup[b]
        return torch.where((ga >= 0) & (gb >= 0), ga * self.group.order + gb, torch.full_like(ga, -1))


def primitive_root(p: int) -> int:
    """The smallest primitive root modulo the prime ``p``: g with ``g^((p-1)/q) != 1`` for every prime q | p - 1."""
    if not fourier_is_prime(p):
        raise GroupError(f"the discrete log needs a prime modulus (p = {p})")
    if p == 2:
        return 1
    n, qs, q = p - 1, [], 2
    while q * q <= n:
        if n % q == 0:
            qs.append(q)
            while n % q == 0:
                n //= q
        q += 1
    if n > 1:
        qs.append(n)
    for g in range(2, p):
        if all(pow(g, (p - 1) // q, p) != 1 for q in qs):
            return g
    raise GroupError(f"no primitive root mod {p}")  # unreachable for a prime


def fourier_is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(math.isqrt(n)) + 1))


def discrete_log(p: int, g: int | None = None) -> tuple[int, Int[Tensor, "p"]]:
    """``(g, log)`` with ``g^log[a] = a mod p`` for ``a = 1..p-1``; ``log[0] = -1`` (zero has no logarithm)."""
    g = primitive_root(p) if g is None else g
    log = torch.full((p,), -1, dtype=torch.long)
    x = 1
    for i in range(p - 1):
        log[x] = i
        x = x * g % p
    return g, log


def log_view(p: int, sign: int = +1) -> GroupView:
    """``a * b`` (``sign = +1``) or ``a / b`` (``-1``) mod the prime p as Z_{p-1} in log coordinates: element i is ``g^i``
    (and is labelled by that residue, so a subgroup reads as residues: ``<58>`` is ``{1, -1}`` mod 59)."""
    g, _ = discrete_log(p)
    powers = torch.tensor([pow(g, i, p) for i in range(p - 1)], dtype=torch.long)
    note = (f"zero has no logarithm: the log-coordinate analysis covers the (p - 1)^2 = {(p - 1) ** 2} pairs of non-zero "
            f"residues (primitive root g = {g}, residue g^i is element i of Z_{p - 1}); token 0 and class 0 are left out of "
            "the basis (their weights count as shared) and class 0's logit stays in the softmax")
    Z = cyclic(p - 1)
    Z = Group(Z.name, Z.table, [str(int(r)) for r in powers], Z.elements)  # element i is named by its residue g^i
    return GroupView(Z, cyclic_irreps(p - 1), powers, powers.clone(), sign, "log", note, g)


def cyclic_view(p: int, sign: int = +1) -> GroupView:
    """``a +- b mod p`` as Z_p (the Fourier case): element x is token x and class x."""
    ids = torch.arange(p)
    return GroupView(cyclic(p), cyclic_irreps(p), ids, ids.clone(), sign, "fourier")


def group_view(group: Group) -> GroupView:
    """A group task: element g is token g and class g, the label is ``g·h``."""
    ids = torch.arange(group.order)
    return GroupView(group, irreps(group), ids, ids.clone(), +1, "irreps")


# ---- C_gen / C_mem weights on a view ----------------------------------------------------------------------
def key_irrep_fraction(fracs: Float[Tensor, "m d_mlp"], key: list[int]) -> Float[Tensor, "d_mlp"]:
    """Fraction of each neuron's variance in the key irreps' blocks together (``neuron_spectrum`` rows ``r - 1``)."""
    if not key:
        return torch.zeros(fracs.shape[1], dtype=torch.float64)
    return fracs[[r - 1 for r in key]].sum(0)


@torch.no_grad()
def split_parameters(model, view: GroupView, B: Float[Tensor, "n n"], owner: Int[Tensor, "n"], key: list[int],
                     gen_neurons: Bool[Tensor, "d_mlp"], roles: dict[str, tuple[str, int]] | None = None) -> efficiency.ParameterSplit:
    """``analyses.efficiency.split_parameters`` on a group view: the element rows of the token parameters
    (``W_E``) and the element columns of the class parameters (``W_U``, ``b_U``) are split by the isotypic
    projectors (key irreps -> C_gen, other non-trivial irreps -> C_mem, trivial -> shared); tokens and
    classes that are no element (``=``, and zero in the log view) are shared; the last hidden layer's
    neurons go whole to C_gen (``gen_neurons``) or C_mem. ``roles``: as ``analyses.efficiency.split_by_roles``
    (``None``: a ``HookedTransformer``'s).

    Raises:
        ValueError: ``gen_neurons`` has the wrong length.
    """
    if roles is None:
        from interp.model import views

        roles = views(model)["roles"]
    n_irreps = len(view.irreps)
    projectors = (projector(B, owner, key), projector(B, owner, [r for r in range(1, n_irreps) if r not in key]),
                  projector(B, owner, [0]))
    return efficiency.split_by_roles(model, roles, view.tokens, view.classes, projectors, gen_neurons)


def mlp_activations(model, view: GroupView, eq_token: int) -> Float[Tensor, "n n d_mlp"]:
    """MLP activations at ``=`` for every element pair ``(g, h)`` of the view: ``[n, n, d_mlp]``."""
    a, b = view.inputs()
    tokens = torch.stack([a, b, torch.full_like(a, eq_token)], dim=1)
    name = "blocks.0.mlp.hook_post"
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=name)
    n = view.group.order
    return cache[name][:, -1].reshape(n, n, -1)


def cluster_neurons(acts: Float[Tensor, "n n d_mlp"], view: GroupView, threshold: float = fourier.CLUSTER_THRESHOLD,
                    min_neurons: int | None = None) -> fourier.NeuronClusters:
    """``analyses.fourier.cluster_neurons`` over the view's irreps: ``key_frequencies`` are key irrep indices."""
    B, owner = isotypic_basis(view.irreps)
    return fourier.assign_clusters(*neuron_spectrum(acts, B, owner, len(view.irreps)), threshold, min_neurons)
