"""Pruning masks: the scores that choose them, and the masks file a run trains under.

A *mask* is a 0/1 tensor of a weight's shape; a masks file (safetensors) holds one per masked
weight, named by the ``HookedTransformer`` parameter name (``embed.W_E``, ``blocks.0.attn.W_Q``,
``blocks.0.mlp.W_in``, ``unembed.W_U``, ...). A run with ``--mask-from FILE`` (``interp.train`` and
``interp.stack``) multiplies those weights by their masks after initialisation, multiplies their
gradients by the masks after every backward pass and the weights again after every AdamW step,
so a masked weight starts at zero and stays exactly zero through AdamW and weight decay.

Prunable weights (``is_prunable``) are the weight matrices: ``W_E``, ``W_Q``, ``W_K``, ``W_V``,
``W_O``, ``W_in``, ``W_out``, ``W_U`` (an MLP's: its embeddings and every layer's ``weight``). As in Minegishi et al.'s code (which masks the token
embedding and unembedding of its transformer but not the positional embedding), ``W_pos`` and the
biases are not pruned.

A pruning rate ``k`` in (0, 1) is the fraction of the prunable weights removed: ``keep_top`` keeps
the ``n - round(k n)`` highest scores, over all prunable weights together (``scope="global"``) or
in every weight matrix separately (``scope="layer"``, the reference code's "local" scope; ties go to
the earlier element). The scores (higher = kept):

- ``magnitude``: ``|theta|`` (of a trained checkpoint: the grokking ticket);
- ``random_scores``: uniform noise (random pruning);
- ``snip``: ``|g * theta|`` with ``g`` the training-loss gradient (Lee et al. 2019);
- ``grasp``: ``theta * H g`` with ``H`` the Hessian of the loss (Wang et al. 2020 prune the weights
  with the highest ``-theta * H g``, i.e. keep the highest ``theta * H g``; their code, like
  Minegishi et al.'s, computes the loss on logits divided by a temperature of 200);
- ``synflow``: iterative and label-free (Tanaka et al. 2020): with every weight replaced by its
  absolute value, score ``|theta * dR/dtheta|`` for ``R`` the sum of the network's outputs, prune
  to keep ``(1 - k)^(j / n)`` at round ``j`` of ``n``.

Everything here except ``read_masks``/``write_masks``/``run_masks`` is pure: tensors in, tensors out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from interp import runs
from interp.config import ConfigError, TrainConfig
from interp.runs import RunError

MASKS_FILE = "masks.safetensors"
SCOPES = ("global", "layer")
PRUNABLE = ("W_E", "W_Q", "W_K", "W_V", "W_O", "W_in", "W_out", "W_U")

Params = dict[str, Tensor]


def is_prunable(name: str) -> bool:
    """Whether parameter ``name`` is a weight matrix that pruning may remove weights from: the transformer's
    ``PRUNABLE``; the mlp family's embeddings (``embed.i``) and every linear layer's weight (Minegishi et
    al. prune their MLP's embedding, both projections and the unembedding), never a bias."""
    return name.rsplit(".", 1)[-1] in PRUNABLE or name.startswith("embed.") or name.endswith(".weight")


def check_rate(k: float) -> None:
    """Refuse a pruning rate outside (0, 1)."""
    if not 0.0 < k < 1.0:
        raise ConfigError(f"--k {k!r}: the pruning rate (fraction of weights removed) must lie strictly between 0 and 1")


# ---- scores -> masks ---------------------------------------------------------------------------
def _keep_mask(scores: Tensor, n_keep: int) -> Tensor:
    flat = scores.flatten()
    order = torch.argsort(flat, descending=True, stable=True)
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[order[:n_keep]] = True
    return keep


def keep_top(scores: Params, k: float, scope: str = "global") -> Params:
    """0/1 float masks keeping the highest scores: ``n - round(k * n)`` of the ``n`` scored weights,
    counted over all of ``scores`` (``global``) or in each tensor (``layer``)."""
    if scope not in SCOPES:
        raise ConfigError(f"--scope {scope!r}: must be one of {', '.join(SCOPES)}")
    if scope == "layer":
        return {n: _keep_mask(s, s.numel() - round(k * s.numel())).view(s.shape).float() for n, s in scores.items()}
    names = list(scores)
    flat = torch.cat([scores[n].detach().flatten().double() for n in names])
    keep = _keep_mask(flat, flat.numel() - round(k * flat.numel()))
    out, i = {}, 0
    for n in names:
        s = scores[n]
        out[n] = keep[i : i + s.numel()].view(s.shape).float()
        i += s.numel()
    return out


def magnitude(params: Params) -> Params:
    return {n: p.detach().abs() for n, p in params.items()}


def random_scores(params: Params, seed: int) -> Params:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=g, dtype=torch.float64) for n, p in params.items()}


def _leaves(params: Params) -> Params:
    return {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}


def snip(params: Params, loss: Callable[[Params], Tensor]) -> Params:
    """``|g * theta|``, ``g`` the gradient of ``loss(params)`` (a scalar) at ``params``."""
    theta = _leaves(params)
    grads = torch.autograd.grad(loss(theta), list(theta.values()))
    return {n: (g * t).detach().abs() for (n, t), g in zip(theta.items(), grads)}


def grasp(params: Params, loss: Callable[[Params], Tensor]) -> Params:
    """``theta * H g``: ``g`` the gradient and ``H`` the Hessian of ``loss`` at ``params`` (``H g`` as
    the gradient of ``g . stop_gradient(g)``)."""
    theta = _leaves(params)
    grads = torch.autograd.grad(loss(theta), list(theta.values()), create_graph=True)
    gg = sum((g * g.detach()).sum() for g in grads)
    hg = torch.autograd.grad(gg, list(theta.values()))
    return {n: (t * h).detach() for (n, t), h in zip(theta.items(), hg)}


def synflow(params: Params, objective: Callable[[Params], Tensor], k: float, scope: str = "global",
            iterations: int = 100) -> Params:
    """SynFlow masks at pruning rate ``k``.

    Args:
        params: the prunable weights (signs are dropped: the scores use ``|theta|``).
        objective: ``R(weights)``, the sum of the network's outputs with these weights put in (the
            caller also makes the other parameters non-negative).
        iterations: ``n``; round ``j`` keeps ``(1 - k)^(j / n)`` of the weights.
    """
    masks = {n: torch.ones_like(p, dtype=torch.float32) for n, p in params.items()}
    for j in range(1, iterations + 1):
        theta = {n: (p.detach().abs() * masks[n].to(p.dtype)).requires_grad_(True) for n, p in params.items()}
        grads = torch.autograd.grad(objective(theta), list(theta.values()))
        scores = {n: torch.where(masks[n] > 0, (g * t).detach().abs().double(), -torch.inf)
                  for (n, t), g in zip(theta.items(), grads)}
        masks = keep_top(scores, 1.0 - (1.0 - k) ** (j / iterations), scope)
    return masks


def norms(params: Params, masks: Params | None = None) -> tuple[float, float]:
    """L1 and L2 norms of ``params`` (times ``masks`` where given), all tensors together, in float64."""
    xs = [p.detach().double() * (masks[n].double() if masks is not None and n in masks else 1.0) for n, p in params.items()]
    return sum(x.abs().sum().item() for x in xs), sum((x**2).sum().item() for x in xs) ** 0.5


# ---- masks in a run ------------------------------------------------------------------------------
def write_masks(path: Path, masks: Params) -> None:
    runs.write_tensors(path, {n: m.to(torch.uint8) for n, m in masks.items()})


def read_masks(path: Path, model: torch.nn.Module) -> Params:
    """Masks from ``path``, checked against ``model``: every name a trainable parameter, same shape,
    values 0 or 1. Returns float masks of the parameters' dtype.

    Raises:
        ConfigError: the file is missing or unreadable, or a mask does not fit the model.
    """
    try:
        tensors, _ = runs.read_tensors(path)
    except RunError as e:
        raise ConfigError(f"--mask-from {path}: {str(e).removeprefix(f'{path}: ')}") from None
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    out = {}
    for n, m in tensors.items():
        if n not in params:
            raise ConfigError(f"--mask-from {path}: {n!r} is not a trainable parameter of this model "
                              f"(masks are named by parameter name: {', '.join(params)})")
        if tuple(m.shape) != tuple(params[n].shape):
            raise ConfigError(f"--mask-from {path}: mask {n} has shape {tuple(m.shape)}, the model's weight {tuple(params[n].shape)}")
        if not bool(((m == 0) | (m == 1)).all()):
            raise ConfigError(f"--mask-from {path}: mask {n} holds values other than 0 and 1")
        out[n] = m.to(params[n].dtype)
    return out


def run_masks(cfg: TrainConfig, out: Path | None, model: torch.nn.Module, resume: bool) -> Params:
    """The masks a run trains under: its own copy (``out/masks.safetensors``) when it resumes, else
    ``cfg.mask_from`` (``{}`` without one)."""
    if resume and out is not None and (Path(out) / MASKS_FILE).is_file():
        return read_masks(Path(out) / MASKS_FILE, model)
    return read_masks(Path(cfg.mask_path), model) if cfg.mask_from is not None else {}


@torch.no_grad()
def apply_masks(named: Params, masks: Params) -> None:
    """Multiply each masked tensor of ``named`` (parameters, or gradients) by its mask, in place."""
    for n, m in masks.items():
        named[n].mul_(m)
