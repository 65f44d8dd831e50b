"""Numerical stability of the softmax cross-entropy (Prieto et al. 2025, "Grokking at the edge of numerical stability").

A model that fits its training set keeps growing its logits (weight decay aside), and in float32 the
softmax then *collapses*: after subtracting the largest logit, every other class's ``exp`` is too
small to change a float32 sum that starts at 1, so the sum of exponentials is exactly 1. The
correct class of a correctly answered collapsed example then has probability exactly 1 and loss
exactly 0, but its loss gradient is not 0: the other classes' entries of ``softmax - onehot`` are
``exp(-margin)`` (about 1e-11 at a margin of 25), representable in float32. Adam normalises each
coordinate by the root of its running squared gradient plus eps, so at Prieto et al.'s eps = 1e-25
these tiny gradients still move the weights by about the learning rate per step, pushing the other
classes' logits further down; at the default eps 1e-8 they barely move them. Training in this
project computes the loss in float64 (``interp.losses.loss_fn``) unless ``--loss softmax32``; these
measures say how far a checkpoint is from (or into) collapse, from the logits the (float32) model
produces:

``softmax_collapse_frac``
    fraction of the training examples whose float32 sum of exponentials after subtracting the
    largest logit is exactly 1, whatever the label (``interp.losses.float32_collapse``: how Prieto et
    al.'s code counts it; an example whose largest logit is a wrong class counts too).
``zero_loss_frac``
    fraction whose float32 cross-entropy (minus the float32 ``log_softmax`` of the correct class, which
    is what ``torch.nn.functional.cross_entropy`` computes) is exactly 0: the collapsed examples
    that are answered correctly. It can differ from the collapsed fraction on wrongly answered
    examples (collapsed, with a large loss), and on a few examples where ``log_softmax``'s own float32
    sum rounds differently from this one.
``min_train_margin``
    the minimum over the training examples of (correct logit - the largest other logit), in float64
    from the float32 logits: below 0 some training example is answered wrongly; large means every
    example is far from a wrong answer. A correctly answered example's float32 softmax collapses once
    each other class's exp(-(its margin to that class)) no longer changes the float32 sum (roughly
    when their total falls below float32's 2^-24): a margin of at least 24 ln 2 = 16.6 to every other
    class, and up to ln(p - 1) more (21.3 for p = 113) when all p - 1 other classes sit at the same
    margin, depending on the order in which the float32 sum adds them.
``loss_f32_minus_f64``
    the mean training cross-entropy computed in float32 minus the same in float64 (both from the
    same float32 logits). Near 0 early on; once many examples collapse the float32 loss is stuck at
    multiples of float32's resolution and the difference shows how much of the loss float32 cannot
    see.

All four use the labels training uses (``Dataset.train_labels``) and the softmax cross-entropy
whatever ``TrainConfig.loss`` a run trained with (a stablemax or MSE run is still asked how a softmax
would fare on its logits).
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.losses import float32_collapse

COLUMNS = ("softmax_collapse_frac", "zero_loss_frac", "min_train_margin", "loss_f32_minus_f64")


def margins(logits: Float[Tensor, "n c"], labels: Int[Tensor, "n"]) -> Float[Tensor, "n"]:
    """Correct logit minus the largest other logit, per example, in float64.

    Args:
        logits: ``[n, c]`` logits (any float dtype).
        labels: ``[n]`` the correct classes.
    Returns:
        ``[n]`` float64 margins (negative where another class has the larger logit).
    """
    x = logits.to(torch.float64)
    correct = x.gather(-1, labels[:, None]).squeeze(-1)
    others = x.scatter(-1, labels[:, None], -torch.inf)
    return correct - others.max(-1).values


@torch.no_grad()
def stability_measures(logits: Float[Tensor, "n c"], labels: Int[Tensor, "n"]) -> dict[str, float]:
    """The four stability columns (see the module docstring) of one checkpoint's training logits.

    Args:
        logits: ``[n, c]`` the model's logits on the training examples; cast to float32 for the
            float32 measures (pass the model's own float32 output: logits that went through float64
            arithmetic first can differ in the last bit).
        labels: ``[n]`` the labels training uses.
    Returns:
        ``{"softmax_collapse_frac", "zero_loss_frac", "min_train_margin", "loss_f32_minus_f64"}``.
    """
    x32 = logits.to(torch.float32)
    x64 = x32.to(torch.float64)
    y = labels[:, None]
    loss32 = -torch.log_softmax(x32, dim=-1).gather(-1, y)  # what F.cross_entropy computes, per example
    loss64 = -torch.log_softmax(x64, dim=-1).gather(-1, y)
    return {
        **float32_collapse(x32, labels),  # softmax_collapse_frac, zero_loss_frac (also in metrics.jsonl)
        "min_train_margin": margins(x64, labels).min().item(),
        "loss_f32_minus_f64": loss32.mean().item() - loss64.mean().item(),
    }
