"""The losses a run can train with (``TrainConfig.loss``), and the float32 collapse count.

``criterion(name)`` is the one place a loss is chosen by name: ``softmax`` (cross-entropy with the
log-softmax in float64), ``softmax32`` (the same in float32: Prieto et al.'s collapsing control),
``stablemax`` (Prieto et al. 2025) and ``mse`` (Omnigrok's MSE against one-hot targets). The
transformer's fast path has the float64 softmax cross-entropy built in (``interp.kernel``) and is
tested equal to ``loss_fn``.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor


def over_answers(loss):
    """``loss`` for logits ``[batch, answers, classes]`` and labels ``[batch, answers]`` too: the mean over
    every answer token (the tensors flattened; a single answer position, or real-valued targets of a regression,
    unchanged)."""

    @functools.wraps(loss)
    def flat(logits: Tensor, labels: Tensor, **kw) -> Tensor:
        if labels.is_floating_point():
            return loss(logits, labels, **kw)
        return loss(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), **kw)

    return flat


def loss_fn(logits: Float[Tensor, "batch d_vocab_out"], labels: Int[Tensor, "batch"], dtype: torch.dtype = torch.float64) -> Tensor:
    """Mean cross-entropy with the log-softmax in ``dtype``: float64 by default (avoids slingshot spikes);
    float32 is the ``softmax32`` loss, the float32 control of Prieto et al. (2025), whose softmax can
    collapse (its loss term is then exactly 0, while the wrong-class entries of its gradient stay
    tiny but not 0: ``float32_collapse``). Logits ``[batch, answers, classes]`` with labels ``[batch, answers]``
    give the mean over every answer token."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).to(dtype), labels.reshape(-1))


@over_answers
def stablemax_loss(logits: Float[Tensor, "batch d_vocab_out"], labels: Int[Tensor, "batch"]) -> Tensor:
    """Mean StableMax cross-entropy (Prieto et al. 2025), in float64.

    ``s(x) = x + 1`` for ``x >= 0`` and ``1 / (1 - x)`` for ``x < 0``; the probabilities are
    ``s(x_i) / sum_j s(x_j)`` and the loss is minus the log probability of the label. ``s`` grows
    linearly rather than exponentially, so a confident model cannot drive the loss to exactly zero
    in floating point ("softmax collapse").
    """
    x = logits.to(torch.float64)
    # the clamps keep the branch torch.where does not take finite, so its gradient is 0, not NaN
    s = torch.where(x >= 0, x.clamp(min=0) + 1, 1 / (1 - x.clamp(max=0)))
    return (s.sum(-1).log() - s.gather(-1, labels[:, None]).squeeze(-1).log()).mean()


def float32_collapse(logits: Float[Tensor, "batch d_vocab_out"], labels: Int[Tensor, "batch"]) -> dict[str, float]:
    """Softmax collapse in float32 (Prieto et al. 2025), over these examples, counted as their code
    counts it:

    ``softmax_collapse_frac``
        the fraction whose float32 sum of exponentials, after subtracting the largest logit,
        ``sum_j exp(z_j - max z)``, is exactly 1: every class but the largest adds nothing float32
        can hold. This is a property of the logits alone, whatever the label, so an example whose
        largest logit is a wrong class counts too (its float32 probability of the label is then 0).
    ``zero_loss_frac``
        the fraction whose float32 cross-entropy (minus the float32 ``log_softmax`` of the label) is
        exactly 0: collapsed and answered correctly.

    A collapsed, correctly answered example still has a loss gradient: the float32 gradient with
    respect to the logits is ``softmax - onehot``, whose label entry is exactly 0 but whose other
    entries are ``exp(z_j - max z)``, about 1e-11 at a margin of 25, not 0. Adam divides each
    coordinate by the root of its running squared gradient plus eps, so with eps = 1e-25 (Prieto
    et al.'s setting) those tiny gradients still make steps of the learning rate's size; with the
    default eps 1e-8 they make almost none. ``interp.train`` records both fractions for the training
    set at every evaluation; ``analyses.stability`` adds the margin and the float32-float64 loss gap."""
    x32, y = logits.to(torch.float32), labels[:, None]
    sum_exp = torch.exp(x32 - x32.amax(-1, keepdim=True)).sum(-1)
    return {"softmax_collapse_frac": (sum_exp == 1.0).double().mean().item(),
            "zero_loss_frac": (torch.log_softmax(x32, -1).gather(-1, y) == 0.0).double().mean().item()}


@over_answers
def mse_loss(logits: Float[Tensor, "batch d_vocab_out"], labels: Tensor) -> Tensor:
    """Mean squared error between the outputs and one-hot targets of class ``labels``, averaged over examples and
    classes (``torch.nn.MSELoss`` on one-hot targets, as Omnigrok trains its MLPs), or real-valued targets
    ``labels`` ``[batch, d_out]`` of a regression task; in float64."""
    x = logits.to(torch.float64)
    target = labels.to(torch.float64) if labels.is_floating_point() else F.one_hot(labels, x.shape[-1]).to(torch.float64)
    return (x - target).square().mean()


def criterion(name: str):
    """The loss function named by ``TrainConfig.loss``: ``loss_fn`` ('softmax'; 'softmax32': the same in
    float32), ``stablemax_loss`` or ``mse_loss``, each averaged over every answer token of a sequence task."""
    return {"softmax": loss_fn, "softmax32": functools.partial(loss_fn, dtype=torch.float32),
            "stablemax": stablemax_loss, "mse": mse_loss}[name]
