"""Measures of phase changes on the sequence tasks: where a loss curve falls, what attention heads do, carries.

``fall_step``
    The step at which a loss curve falls most steeply: the most negative slope of log(loss) against the
    step (a centred difference, over a short moving average so that one noisy evaluation does not win),
    or ``None`` when the curve never falls by a factor ``min_drop`` (default ``MIN_DROP`` = 3: from the highest
    loss before a point to the lowest after it): no phase change. The rule finds where a fall is steepest, not
    whether it is sudden: ``fall_window`` gives its duration.
``fall_window``
    The steps at which log loss has completed 10 % and 90 % of its largest fall: how long the change took.
``prev_token_score`` / ``induction_score``
    A head's mean attention from each position to the one before it, and its mean attention from each
    token to the token right after an earlier occurrence of the same token (the prefix-matching score of
    Olsson et al. 2022; Elhage et al. 2021), over the queries that have such an occurrence.
``carries`` / ``loss_by_carry``
    For n-digit addition, whether a carry comes into each answer digit, and a per-position loss split by it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

MIN_DROP = 3.0  # the factor by which a loss must fall (highest before to lowest after) for fall_step to name a step


def _log_curve(steps: Sequence[float], losses: Sequence[float], smooth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(steps, smoothed steps, smoothed log loss)`` of the finite losses: a ``smooth``-point moving average of
    both the step and the log loss (log loss held at its end values beyond the ends, the steps continued by
    reflection, so that evenly spaced steps average to themselves). Each smoothed point is an average point of the
    curve, so a difference of two is a weighted mean of secant slopes even where the steps are unevenly spaced."""
    x = np.asarray(steps, dtype=float)
    y = np.log(np.clip(np.asarray(losses, dtype=float), 1e-300, None))
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    xs = x
    if smooth > 1 and len(y) >= smooth:
        left, right = smooth // 2, smooth - 1 - smooth // 2
        kernel = np.ones(smooth) / smooth
        yp = np.concatenate([np.full(left, y[0]), y, np.full(right, y[-1])])
        xp = np.concatenate([2 * x[0] - x[left:0:-1], x, 2 * x[-1] - x[-2:-2 - right:-1]])
        xs, y = np.convolve(xp, kernel, mode="valid"), np.convolve(yp, kernel, mode="valid")
    return x, xs, y


def _drop(y: np.ndarray) -> float:
    """The largest fall of ``y`` (log loss): max over points of (highest before) - (lowest after)."""
    return float(np.max(np.maximum.accumulate(y) - np.minimum.accumulate(y[::-1])[::-1])) if len(y) else 0.0


def fall_step(steps: Sequence[float], losses: Sequence[float], min_drop: float = MIN_DROP, smooth: int = 3) -> int | None:
    """The step of the steepest fall of a loss curve (most negative d log(loss) / d step), or ``None``.

    Args:
        steps: evaluation steps, ascending (spacing may vary).
        losses: the loss at each.
        min_drop: the factor by which the loss must fall somewhere (highest before to lowest after) to count.
            The steepest point is sought in the upper half of that largest fall (in log loss), where the loss
            is still above the geometric mean of its high and low: below it, a small loss's swings between
            evaluations are steep in log and would otherwise win.
        smooth: the width of the moving average over the step and log loss before differencing (1: none).

    Returns:
        the evaluation step at the centre of the steepest centred difference, or ``None`` if the curve
        never falls by ``min_drop`` or has fewer than three evaluations.
    """
    x, xs, y = _log_curve(steps, losses, smooth)
    if len(y) < 3 or _drop(y) < np.log(min_drop):
        return None
    slope = (y[2:] - y[:-2]) / (xs[2:] - xs[:-2])
    # only the upper half (in log loss) of the largest fall: once the loss is small its log swings widely between
    # evaluations (a loss of 1e-3 halving is as steep in log as a phase change), and those swings are no phase change
    fall = np.maximum.accumulate(y) - np.minimum.accumulate(y[::-1])[::-1]
    i = int(np.argmax(fall))
    midpoint = (y[: i + 1].max() + y[i:].min()) / 2
    slope = np.where(y[1:-1] >= midpoint, slope, np.inf)
    return int(x[1 + int(np.argmin(slope))])


def fall_window(steps: Sequence[float], losses: Sequence[float], lo: float = 0.1, hi: float = 0.9,
                min_drop: float = MIN_DROP, smooth: int = 3) -> tuple[int, int] | None:
    """The first steps at which log loss has completed ``lo`` and ``hi`` of its fall from its highest value
    before the steepest fall to its lowest after it (``None`` where ``fall_step`` is)."""
    at = fall_step(steps, losses, min_drop, smooth)
    if at is None:
        return None
    x, _, y = _log_curve(steps, losses, smooth)
    i = int(np.searchsorted(x, at))
    top, bottom = y[: i + 1].max(), y[i:].min()
    start = int(np.argmax(y[: i + 1]))
    done = (top - y[start:]) / (top - bottom)
    return int(x[start + int(np.argmax(done >= lo))]), int(x[start + int(np.argmax(done >= hi))])


def positions_falls(steps: Sequence[float], losses_by_pos, min_drop: float = MIN_DROP) -> list[int | None]:
    """``fall_step`` of each column of ``losses_by_pos`` (``[n_evals, n_positions]``)."""
    a = np.asarray(losses_by_pos, dtype=float)
    return [fall_step(steps, a[:, j], min_drop) for j in range(a.shape[1])]


def prev_token_score(pattern: Tensor) -> Tensor:
    """``[n_heads]``: mean over the batch and the queries q >= 1 of ``pattern[..., q, q - 1]``
    (``pattern``: ``[batch, n_heads, q, k]`` attention probabilities)."""
    q = torch.arange(1, pattern.shape[-2])
    return pattern[:, :, q, q - 1].mean(dim=(0, 2))


def induction_score(pattern: Tensor, tokens: Tensor) -> Tensor:
    """``[n_heads]``: for each query q, the attention on the keys k <= q whose previous token equals the query's
    token (``tokens[k - 1] == tokens[q]``, k - 1 < q), averaged over the (example, query) pairs that have such
    a key; NaN where none has."""
    t = tokens
    # match[b, q, k]: tokens[b, k - 1] == tokens[b, q] for 1 <= k <= q
    n = t.shape[1]
    prev = torch.cat([torch.full_like(t[:, :1], -1), t[:, :-1]], dim=1)  # token before each key position
    match = (prev[:, None, :] == t[:, :, None]) & torch.ones(n, n, dtype=torch.bool, device=t.device).tril()[None]
    has = match.any(-1)  # [b, q]
    mass = (pattern * match[:, None].to(pattern.dtype)).sum(-1)  # [b, h, q]
    denom = has.sum()
    if denom == 0:
        return torch.full((pattern.shape[1],), float("nan"), dtype=pattern.dtype)
    return (mass * has[:, None].to(pattern.dtype)).sum(dim=(0, 2)) / denom


def carries(a_digits: Tensor, b_digits: Tensor) -> Tensor:
    """``[batch, n + 1]`` bool: whether a carry comes into each digit of the (n + 1)-digit answer of ``a + b``
    (``a_digits``, ``b_digits``: ``[batch, n]``, most significant first; the answer is written the same way).

    The first answer digit is the final carry itself: its entry says whether a carry comes out of the top
    digit (that digit is then 1). The last (units) digit never receives one."""
    n = a_digits.shape[1]
    out = torch.zeros(a_digits.shape[0], n + 1, dtype=torch.bool, device=a_digits.device)
    carry = torch.zeros(a_digits.shape[0], dtype=torch.long, device=a_digits.device)
    for i in range(n - 1, -1, -1):  # answer digit i + 1 sums digit i of a and b and the carry into it
        out[:, i + 1] = carry.bool()
        carry = (a_digits[:, i] + b_digits[:, i] + carry) // 10
    out[:, 0] = carry.bool()
    return out


def loss_by_carry(per_example_pos_loss: Tensor, carry: Tensor) -> tuple[Tensor, Tensor]:
    """``([n_pos] mean loss where carry, [n_pos] mean loss where no carry)``; NaN where a group is empty
    (both inputs ``[batch, n_pos]``)."""
    c = carry.to(per_example_pos_loss.dtype)
    nc = 1 - c

    def mean(w):
        n = w.sum(0)
        return torch.where(n > 0, (per_example_pos_loss * w).sum(0) / n.clamp(min=1), torch.full_like(n, float("nan")))

    return mean(c), mean(nc)
