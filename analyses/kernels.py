"""The empirical neural tangent kernel and its alignment with the labels (Kumar et al. 2024's progress measure).

The empirical NTK of a scalar-output network ``f(x; theta)`` on inputs ``x_1..x_n`` is ``K_ij = grad_theta f(x_i) .
grad_theta f(x_j)``: the kernel that gradient descent on ``theta`` uses, to first order. While training is lazy it stays
at its initial value and the network behaves like kernel regression with it; feature learning (rich training) changes
it. Kumar et al. track how well it is aligned with the task: the centred kernel alignment

    A(K, y) = <K_c, y_c y_c^T>_F / (||K_c||_F ||y_c y_c^T||_F) = y_c^T K_c y_c / (||K_c||_F ||y_c||^2),

with ``K_c = H K H`` and ``y_c = H y`` centred (``H = I - 11^T / n``; Cortes et al. 2012). It is 1 when ``K`` is a
multiple of ``y y^T`` (after centring) and near 0 when the kernel's large directions ignore ``y``. Kumar et al.'s code
centres ``K`` over its rows only (``K - K.mean(axis=0)``); the double centring used here is the standard one, and the
two agree when the kernel's row means are constant.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap


def centred_alignment(K: Tensor, y: Tensor) -> float:
    """The centred kernel alignment ``A(K, y)`` of a kernel matrix ``K`` ``[n, n]`` with targets ``y`` ``[n]`` (see the
    module docstring); in float64."""
    K, y = K.double(), y.double().reshape(-1)
    n = len(y)
    H = torch.eye(n, dtype=torch.float64) - 1.0 / n
    Kc, yc = H @ K @ H, y - y.mean()
    return (yc @ Kc @ yc / (Kc.norm() * yc.dot(yc))).item()


def empirical_ntk(model: nn.Module, x: Tensor, chunk: int = 256) -> Tensor:
    """``[n, n]``: the empirical NTK of ``model``'s first output over the trainable parameters, at inputs ``x``
    (per-example gradients by ``torch.func``, ``chunk`` examples at a time; the Gram matrix in float64)."""
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def f(p, xi):
        return functional_call(model, (p, buffers), (xi[None],))[0].reshape(-1)[0]

    rows = []
    for i in range(0, len(x), chunk):
        jac = vmap(jacrev(f), in_dims=(None, 0))(params, x[i:i + chunk])
        rows.append(torch.cat([j.reshape(j.shape[0], -1) for j in jac.values()], dim=1).double())
    J = torch.cat(rows)
    return J @ J.T
