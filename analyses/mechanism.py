"""Clock or pizza? The three measures of Zhong et al. 2023 ("The clock and the pizza").

Two algorithms solve ``a + b mod p`` with embeddings on circles ``E_a = (cos wa, sin wa)``:

- the **clock** multiplies the two embeddings (through attention) and reads off
  ``cos(w(a + b - c))``: its correct logit does not depend on ``a - b``, and the logit's gradient
  with respect to ``E_a`` is ``E_b`` rotated, not ``E_b``'s own gradient;
- the **pizza** adds them first, ``E_a + E_b``, and a nonlinearity then gives logits
  ``~ |cos(w(a - b)/2)| cos(w(a + b - c))``: the correct logit depends on ``a - b``, and since only
  the sum of the embeddings enters, the gradients with respect to ``E_a`` and ``E_b`` are equal.

The measures (as the authors' code ``fjzzq2002/pizza`` computes them, read not copied):

``grad_symmetricity``
    over ``N_TRIPLES`` = 256 triples ``(a, b, c)`` drawn uniformly from Z_p^3 with a
    ``torch.Generator`` seeded ``SEED`` = 0 (the authors: 100 triples, Python's ``random`` seeded
    42; 256 keeps the column within the analysis's time budget, with a standard error of about 0.02
    on the canonical run), the mean cosine between the gradients of logit ``c`` (any class, not only the correct
    one) with respect to the input embedding vectors of ``a`` (position 0) and ``b`` (position 1),
    taken at the '=' position. A triple whose gradient is exactly zero counts as cosine 0
    (``torch.nn.functional.cosine_similarity``'s eps). 1 for a pizza (exactly, when the logits
    depend on ``E_a + E_b`` only: any model with constant attention); near 0 for an ideal clock
    (its cosine is ``cos(w(a - b))``, which averages to 0 over uniform ``a, b``).
``distance_irrelevance``
    the correct logit ``l(a, b)`` over all p^2 pairs: for each difference ``d = a - b mod p`` the
    population standard deviation of ``l`` over the p pairs with that difference, averaged over
    ``d``, divided by the population standard deviation of ``l`` over all pairs. 1 when ``l`` does
    not depend on ``a - b`` (clock-like), 0 when it depends on nothing else (pizza-like). The
    paper defines it on the correct logit, as here; the authors' training script
    (``code/train-main.py``) computes it on the largest *wrong* logit instead.
``circularity``
    the embedding of the p residue tokens, ``W_E[:p]``, centred over tokens; its top
    ``N_COMPONENTS`` = 4 principal components (score vectors over the p tokens); for each, the
    largest fraction of its squared norm in one frequency ``k`` (its cos and sin together); the
    mean of the four. 1 when the top components are pure circles (clock and pizza alike; the
    authors keep only runs with circularity > 0.99 when they compare the other two). The authors
    fit the PCA on every token row (the '=' token too, where their model has one) and search
    frequencies by permuting the tokens; restricting to the residues and projecting on the Fourier
    basis gives the same number for the residue rows.

Reference values (``PIZZA_REFERENCE``, ``CLOCK_REFERENCE``): the medians over the authors' table of
1-layer transformers at p = 59 (``result/1l_fixedwidth.csv``) with circularity > 0.99: 799 runs
with attention rate < 0.4 (pizza-like) have gradient symmetricity 0.993 and distance irrelevance
0.282; 354 runs with attention rate >= 0.8 (clock-like) have 0.557 and 0.797.
``mechanism_position`` places a run between the two.

Applies to ``mod_add`` with an odd modulus (``mechanism_applies``); the measures are about
addition, so the other tasks get empty cells and the reason.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from analyses import fourier

COLUMNS = ("grad_symmetricity", "distance_irrelevance", "circularity")
N_TRIPLES = 256
SEED = 0
N_COMPONENTS = 4
PIZZA_REFERENCE = {"grad_symmetricity": 0.993, "distance_irrelevance": 0.282}
CLOCK_REFERENCE = {"grad_symmetricity": 0.557, "distance_irrelevance": 0.797}

LogitFn = Callable[[Tensor, Tensor], Tensor]  # (x_a [n, d], x_b [n, d]) -> logits [n, classes]


def mechanism_applies(task: str, p: int) -> str | None:
    """``None`` when the clock/pizza measures apply to ``task`` mod ``p``, else the reason why not."""
    if task != "mod_add":
        return (f"the clock/pizza measures (Zhong et al. 2023) are defined for modular addition; {task} is not "
                "a + b mod p, so grad_symmetricity, distance_irrelevance and circularity are left empty")
    if p % 2 == 0 or p < 3:
        return f"the clock/pizza measures need an odd modulus p >= 3 (p = {p})"
    return None


def sample_triples(p: int, n: int = N_TRIPLES, seed: int = SEED) -> Int[Tensor, "n 3"]:
    """``n`` triples ``(a, b, c)`` uniform over Z_p^3 (with replacement) from a ``torch.Generator`` seeded ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, p, (n, 3), generator=g)


def grad_symmetricity(logit_fn: LogitFn, emb: Float[Tensor, "p d"], triples: Int[Tensor, "n 3"]) -> float:
    """Mean cosine between the gradients of logit ``c`` with respect to ``E_a`` and ``E_b`` over ``triples``.

    Args:
        logit_fn: the model from the two input embedding vectors: ``(x_a [n, d], x_b [n, d]) -> [n, classes]``.
        emb: ``[p, d]`` the embedding vectors of the residues.
        triples: ``[n, 3]`` the ``(a, b, c)`` triples (``sample_triples``).
    Returns:
        The mean cosine (a zero gradient counts as 0).
    """
    a, b, c = triples.unbind(-1)
    x_a = emb[a].detach().clone().requires_grad_(True)
    x_b = emb[b].detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logit = logit_fn(x_a, x_b).gather(-1, c[:, None]).sum()
        g_a, g_b = torch.autograd.grad(logit, (x_a, x_b))
    return F.cosine_similarity(g_a.double(), g_b.double(), dim=-1).mean().item()


def transformer_logit_fn(model, eq_token: int) -> LogitFn:
    """``logit_fn`` of a 1-layer ``HookedTransformer`` on ``[a, b, =]``: the logits at '=' from the
    embedding vectors of ``a`` and ``b`` (position embeddings added, then the blocks and unembedding
    through ``HookedTransformer.forward(..., start_at_layer=0)``)."""

    def fn(x_a: Tensor, x_b: Tensor) -> Tensor:
        eq = model.W_E[eq_token].expand_as(x_a)
        resid = torch.stack([x_a, x_b, eq], dim=1) + model.W_pos[:3]
        return model(resid, start_at_layer=0)[:, -1]

    return fn


def distance_irrelevance(correct: Float[Tensor, "p p"]) -> float:
    """Mean over ``d = a - b`` of the std of the correct logit at that difference, over its overall std.

    Args:
        correct: ``[p, p]`` the correct logit ``l(a, b)`` (row ``a``, column ``b``).
    Returns:
        ``mean_d std_{a - b = d}(l) / std(l)`` (population stds); NaN if ``l`` is constant.
    """
    p = correct.shape[0]
    x = correct.to(torch.float64)
    r = torch.arange(p)
    by_diff = x[(r[:, None] + r[None, :]) % p, r[None, :]]  # [d, b] = l(b + d, b)
    total = x.std(correction=0)
    if total == 0:
        return math.nan
    return (by_diff.std(dim=1, correction=0).mean() / total).item()


def component_circularity(scores: Float[Tensor, "p k"]) -> Float[Tensor, "k"]:
    """For each column (a function over Z_p), the largest fraction of its centred squared norm in one frequency.

    Args:
        scores: ``[p, k]`` functions over the residues (p odd), e.g. principal-component scores.
    Returns:
        ``[k]`` fractions in [0, 1] (NaN for a constant column).
    """
    p = scores.shape[0]
    x = scores.to(torch.float64)
    x = x - x.mean(0)
    # with the orthonormal basis of analyses.fourier, cos_k^2 + sin_k^2 = 2 |DFT_k|^2 / p for k = 1 .. (p - 1) / 2
    energy = 2 * torch.fft.rfft(x, dim=0)[1: fourier.n_frequencies(p) + 1].abs().pow(2) / p
    return energy.max(0).values / x.pow(2).sum(0)


def circularity(emb: Float[Tensor, "p d"], n_components: int = N_COMPONENTS) -> float:
    """Mean ``component_circularity`` of the top ``n_components`` principal components of ``emb``'s rows.

    Args:
        emb: ``[p, d]`` the embedding vectors of the residues (p odd).
        n_components: how many principal components.
    Returns:
        The mean over those components.
    """
    x = emb.detach().to(torch.float64)
    x = x - x.mean(0)
    u, s, _ = torch.linalg.svd(x, full_matrices=False)
    k = min(n_components, int((s > s[0] * 1e-12).sum()))
    return component_circularity(u[:, :k] * s[:k]).mean().item()


def mechanism_position(grad_sym: float, dist_irr: float) -> dict[str, float]:
    """Where a run sits between the pizza (0) and the clock (1) on each measure, by linear
    interpolation between ``PIZZA_REFERENCE`` and ``CLOCK_REFERENCE`` (outside [0, 1] beyond them).

    Returns:
        ``{"grad_symmetricity": t, "distance_irrelevance": t}``.
    """
    out = {}
    for name, x in (("grad_symmetricity", grad_sym), ("distance_irrelevance", dist_irr)):
        lo, hi = PIZZA_REFERENCE[name], CLOCK_REFERENCE[name]
        out[name] = (x - lo) / (hi - lo)
    return out
