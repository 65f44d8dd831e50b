"""Critical dataset size (Varma et al. 2023): where memorising stops being cheaper than generalising.

Two families of networks are trained apart (``interp.experiments.dcrit``): **C_mem-only** networks on
fully random labels (nothing to generalise, so all they learn is a lookup table) over a geometric grid
of training-set sizes D, and **C_gen-only** networks on a large D with the true labels (they
generalise). A memoriser must store every extra example, so the parameter norm it needs grows with
D (its efficiency falls); a generaliser's does not depend on D. D_crit is the D where the two meet.

The norms are compared **at equilibrium** (each network trained until its parameter norm stopped
moving, ``interp.stopping``), at several weight decays. A larger weight decay holds a network at a
smaller norm and a larger loss, so the weight decays trace, for each family, D and seed, how much
norm the network needs for a given correct-class logit or training loss; ``norm_at`` reads that
curve at one matched value, so the two families are compared making the same logits (or the same
loss), as the paper compares them.

This module holds the pure pieces: the matched read across weight decays (``norm_at``), the check that C_gen's level does not depend on D
(``level_check``), and estimating the crossing with its interval (``crossing``). Nothing here reads
or writes files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from jaxtyping import Float, Int
from scipy import stats
from torch import Tensor
from transformer_lens import HookedTransformer

from analyses import efficiency, fourier

SUBSPACE_MIN = 0.95  # C_gen-only networks need at least this share of their logits' squared norm in the key subspace


@torch.no_grad()
def key_subspace_fraction(model: HookedTransformer, logits: Float[Tensor, "p_sq C"], labels: Int[Tensor, "p_sq"],
                          train_idx: Int[Tensor, "n"], task: str = "mod_add") -> tuple[list[int], float | None]:
    """The check a C_gen-only network must pass: how much of its logits lies in the key-frequency subspace.

    Args:
        model: the network (1 layer; its first ``p`` tokens are the residues, token ``p`` is ``=``).
        logits: ``[p * p, p]`` its logits over all inputs, row-major over ``(a, b)``.
        labels, train_idx: the true labels and the training inputs.
        task: ``mod_add`` or ``mod_sub`` (the sign of the key directions).
    Returns:
        ``(key frequencies, fraction)``: the key frequencies from clustering the MLP neurons
        (``analyses.fourier.cluster_neurons``), and the fraction of the squared norm of the logits
        (centred over classes, all inputs) in the directions ``cos/sin(w_k(a +- b))`` of those
        frequencies (``cgen_frac`` of ``analyses.efficiency.circuit_logits``); ``None`` when no
        frequency is key. The network passes when the fraction is at least ``SUBSPACE_MIN``.
    """
    p = model.cfg.d_vocab_out
    keys = fourier.cluster_neurons(fourier.mlp_activations(model, p, p)).key_frequencies
    if not keys:
        return keys, None
    dirs = fourier.directions(p, keys, fourier.DIRECTION_SIGN[task])
    return keys, efficiency.circuit_logits(logits, labels, dirs, train_idx)["cgen_frac"]


def norm_at(points: Sequence[tuple[float, float]], x: float) -> tuple[float, bool] | None:
    """The parameter norm a network needs at a matched value ``x`` of its logit (or loss), from its
    equilibria at several weight decays.

    Args:
        points: ``(value, param_norm)`` of one family, D and seed at equilibrium, one per weight decay
            (value: the mean correct-class logit, or the training loss; both > 0).
        x: the matched value.
    Returns:
        ``(norm, extrapolated)``: the least-squares line ``log norm = a + b log value`` through the
        points, evaluated at ``x``, and whether ``x`` lies outside the points' range (the line is then
        extended past the weight decays trained); ``None`` with fewer than two distinct values.
    """
    pts = [(math.log(v), math.log(n)) for v, n in points if v is not None and n is not None and v > 0 and n > 0]
    if len({v for v, _ in pts}) < 2 or not x > 0:
        return None
    xs = np.array([v for v, _ in pts])
    f = _fit_fast(xs, np.array([n for _, n in pts]))
    if f is None:
        return None
    lx = math.log(x)
    return math.exp(f[0] + f[1] * lx), bool(lx < xs.min() - 1e-12 or lx > xs.max() + 1e-12)


def level_check(by_d: dict[float, Sequence[float]]) -> dict:
    """Whether C_gen's level is independent of D, as the account says it should be.

    The test: the ratio of the medians at the largest and the smallest D, against the seeds' spread
    (largest over smallest value) within each of the two sizes. The level counts as independent of D
    when the ratio (or its inverse) is no larger than the larger of the two spreads: the two sizes
    differ by no more than seeds at one size differ among themselves.

    Args:
        by_d: the C_gen members' values (e.g. parameter norms) by training-set size.
    Returns:
        ``status``: ``"independent"``, ``"depends on D"``, ``"one size"`` (fewer than two sizes with
        values) or ``"too few seeds"`` (fewer than two values at either end); ``ratio`` (median at
        the largest D over the median at the smallest), ``spread`` (the larger of the two sizes'
        max/min), ``d_lo``, ``d_hi``.
    """
    vals = {d: sorted(v for v in vs if v is not None and v > 0) for d, vs in by_d.items()}
    ds = sorted(d for d, vs in vals.items() if vs)
    out = {"status": "one size", "ratio": None, "spread": None, "d_lo": ds[0] if ds else None, "d_hi": ds[-1] if ds else None}
    if len(ds) < 2:
        return out
    lo, hi = vals[ds[0]], vals[ds[-1]]
    out["ratio"] = float(np.median(hi) / np.median(lo))
    if len(lo) < 2 or len(hi) < 2:
        out["status"] = "too few seeds"
        return out
    out["spread"] = max(lo[-1] / lo[0], hi[-1] / hi[0])
    out["status"] = "independent" if abs(math.log(out["ratio"])) <= math.log(out["spread"]) else "depends on D"
    return out


def _fit(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Least-squares line ``log y = a + b log D`` through ``(D, y)``; ``None`` with fewer than two D."""
    if len({d for d, _ in points}) < 2:
        return None
    r = stats.linregress([math.log(d) for d, _ in points], [math.log(y) for _, y in points])
    return float(r.intercept), float(r.slope)


def _fit_fast(x: np.ndarray, y: np.ndarray) -> tuple[float, float] | None:
    """``_fit`` on logs already taken, in closed form (the same least-squares line, for the resamples)."""
    xc = x - x.mean()
    sxx = float(xc @ xc)
    if sxx <= 1e-12 * max(1.0, float(x @ x)):
        return None
    b = float(xc @ (y - y.mean())) / sxx
    return float(y.mean() - b * x.mean()), b


def _cross(fit: tuple[float, float], gen_log: float) -> float:
    a, b = fit
    return math.exp((gen_log - a) / b) if b != 0 else math.nan


def crossing(mem: Sequence[tuple[float, int, float]], gen: Sequence[tuple[int, float]], direction: int,
             level: float = 0.90, n_boot: int = 2000, seed: int = 0) -> dict:
    """Where the C_mem family's measure, a power law in D, meets the C_gen family's level.

    The C_mem points are fitted by ``log y = a + b log D`` (``scipy.stats.linregress``); the C_gen
    level is the mean of ``log y`` over its members (a geometric mean: C_gen does not depend on D);
    the crossing solves ``a + b log D = level``. The interval is a bootstrap over seeds: each
    resample draws the C_mem seeds with replacement (a seed brings its whole curve over D) and the
    C_gen members with replacement, and refits.

    Args:
        mem: ``(D, seed, y)`` of each C_mem member used (``y > 0``).
        gen: ``(seed, y)`` of each C_gen member used.
        direction: ``+1`` if C_mem's measure should rise with D (parameter norm), ``-1`` if it should
            fall (efficiency).
        level: the interval's coverage (0.90: the 5th to 95th percentile of the resamples).
        n_boot: resamples.
        seed: the resampling generator's seed (the estimate is reproducible).
    Returns:
        ``status``: ``"crossed"`` (``dcrit`` inside the C_mem grid), ``"below grid"`` / ``"above grid"``
        (the line meets the C_gen level outside the grid: ``dcrit`` is ``None`` and the one bound the grid
        gives is in ``hi`` / ``lo``), ``"no trend"`` (C_mem's slope has the wrong sign, or its bootstrap
        interval reaches zero or the wrong sign: no crossing is claimed) or ``"too few points"``;
        ``dcrit``, ``lo``, ``hi`` (the interval, cut at the grid's ends: ``lo_at_grid``/``hi_at_grid``
        say where), ``slope`` and its interval ``slope_lo``/``slope_hi``, ``intercept``,
        ``gen_level`` (the geometric mean of C_gen's values), ``d_min``/``d_max`` (the C_mem grid),
        ``n_mem``, ``n_gen``.
    """
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, not {direction!r}")
    mem = [(float(d), s, float(y)) for d, s, y in mem if y is not None and y > 0]
    gen = [(s, float(y)) for s, y in gen if y is not None and y > 0]
    ds = sorted({d for d, _, _ in mem})
    out = {"status": "too few points", "dcrit": None, "lo": None, "hi": None, "lo_at_grid": False, "hi_at_grid": False,
           "slope": None, "slope_lo": None, "slope_hi": None, "intercept": None, "gen_level": None,
           "d_min": ds[0] if ds else None, "d_max": ds[-1] if ds else None, "n_mem": len(mem), "n_gen": len(gen)}
    fit = _fit([(d, y) for d, _, y in mem])
    if fit is None or not gen:
        return out
    gen_log = float(np.mean([math.log(y) for _, y in gen]))
    out.update(intercept=fit[0], slope=fit[1], gen_level=math.exp(gen_log))

    rng = np.random.default_rng(seed)
    by_seed: dict[int, list] = {}
    for d, s, y in mem:
        by_seed.setdefault(s, []).append((math.log(d), math.log(y)))
    seeds = sorted(by_seed)
    logs = [np.array(by_seed[s]) for s in seeds]
    gen_logs = np.log([y for _, y in gen])
    slopes, crossings = [], []
    for _ in range(n_boot):
        pts = np.concatenate([logs[i] for i in rng.integers(len(seeds), size=len(seeds))])
        g = float(gen_logs[rng.integers(len(gen), size=len(gen))].mean())
        f = _fit_fast(pts[:, 0], pts[:, 1])
        if f is None:
            continue
        slopes.append(f[1])
        # a resample whose slope has the wrong sign never meets the level going the right way
        crossings.append(_cross(f, g) if f[1] * direction > 0 else math.nan)
    q = (1 - level) / 2
    if slopes:
        out["slope_lo"], out["slope_hi"] = (float(v) for v in np.quantile(slopes, [q, 1 - q]))
    if fit[1] * direction <= 0 or not slopes or min(out["slope_lo"] * direction, out["slope_hi"] * direction) <= 0:
        out["status"] = "no trend"
        return out
    d_star = _cross(fit, gen_log)
    lo_d, hi_d = ds[0], ds[-1]
    if d_star < lo_d:
        out.update(status="below grid", hi=lo_d, hi_at_grid=True)
        return out
    if d_star > hi_d:
        out.update(status="above grid", lo=hi_d, lo_at_grid=True)
        return out
    # NaN resamples (wrong slope) count as beyond the grid on the side they would never reach
    arr = np.array([c if math.isfinite(c) else math.inf for c in crossings])
    lo, hi = (float(v) for v in np.quantile(arr, [q, 1 - q]))
    out.update(status="crossed", dcrit=d_star, lo=max(lo, lo_d), hi=min(hi, hi_d), lo_at_grid=lo <= lo_d, hi_at_grid=hi >= hi_d)
    return out
