"""Kumar et al.'s two-layer network (2024, "Grokking as the transition from lazy to rich training dynamics").

``f(x) = alpha * (1/N) sum_i [phi(w_i . x) - phi(w0_i . x)]``, with ``phi(z) = z + eps z^2 / 2``, ``N`` hidden units
(``--d-mlp``), the first-layer weights ``W`` trained and the readout fixed at ``1/N``; ``W0`` is ``W`` at
initialisation, so the network's output starts at exactly 0 (their "centred" loss, which subtracts the initial
function). ``alpha`` (``--output-scale``) sets how lazy training is: with the learning rate ``N / alpha^2`` (their
choice, ``interp.experiments.lazyrich``) the output moves at the same speed for every alpha, while the weights, and
so the features, move in proportion to ``1 / alpha``: a large alpha is lazy (the network stays near its linearisation
at initialisation, a kernel machine with the initial neural tangent kernel), a small one rich (the features move).

Initialisation: ``W`` from N(0, 1) (times ``--init-scale``), drawn from a generator seeded by ``cfg.seed``. The model
family is ``twolayer`` (``interp.families``); it reads real-valued inputs and writes one output per target.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

TWOLAYER_DEFAULTS = dict(output_scale=1.0, quad_eps=0.02)  # TrainConfig's defaults of the twolayer-only fields


class TwoLayer(nn.Module):
    """``f(x) = alpha * mean_i [phi(w_i . x) - phi(w0_i . x)]`` (the module docstring), ``[batch, d_out]`` with every
    output the same function (Kumar et al.'s targets are scalar: ``d_out`` 1).

    Parameters (names as in checkpoints): ``W`` ``[width, d_in]``; the buffer ``W0`` holds its initial value.
    """

    def __init__(self, d_in: int, width: int, d_out: int, output_scale: float, eps: float, generator: torch.Generator,
                 init_scale: float = 1.0):
        super().__init__()
        w = torch.randn(width, d_in, generator=generator) * init_scale
        self.W = nn.Parameter(w.clone())
        self.register_buffer("W0", w.clone())
        self.d_out, self.output_scale, self.eps = d_out, output_scale, eps

    def phi(self, z: Tensor) -> Tensor:
        return z + 0.5 * self.eps * z * z

    def hidden(self, x: Tensor) -> Tensor:
        """``[batch, width]``: each unit's ``phi(w_i . x)``."""
        return self.phi(x @ self.W.T)

    def forward(self, x: Tensor) -> Tensor:
        f = self.output_scale * (self.hidden(x).mean(1) - self.phi(x @ self.W0.T).mean(1))
        return f[:, None].expand(-1, self.d_out)

    def feature_distance(self) -> float:
        """``||W - W0|| / ||W0||``: how far the first-layer weights (the features' directions) have moved."""
        return ((self.W - self.W0).norm() / self.W0.norm()).item()


def build_twolayer(cfg: "TrainConfig") -> TwoLayer:
    """A freshly initialised ``TwoLayer`` for ``cfg`` (no effect on the global RNG)."""
    task = cfg.task_spec
    return TwoLayer(task.n_ctx(cfg), cfg.d_mlp, task.d_vocab_out(cfg), cfg.output_scale, cfg.quad_eps,
                    torch.Generator().manual_seed(cfg.seed), cfg.init_scale)


def activations(model: TwoLayer, cfg: "TrainConfig", x: Tensor) -> dict[str, Tensor]:
    """The hidden layer, ``phi(W x)`` (``[batch, width]``)."""
    return {"hidden": model.hidden(x)}


def views(model: TwoLayer) -> dict:
    """The fields of ``interp.families.WeightViews``: the first layer as the input map, the fixed readout (``alpha /
    N`` from every unit) as the neuron-to-output map; no circuit roles (the circuit analysers need tokens)."""
    readout = torch.full((model.W.shape[0], model.d_out), model.output_scale / model.W.shape[0])
    return dict(embed=[model.W.detach().T], neuron_logits=readout, unembed=readout, roles={}, attention=False)


def check(cfg: "TrainConfig") -> tuple[str, str] | None:
    """``(field, why)`` for a config the two-layer network cannot take."""
    from interp.mlp import MLP_DEFAULTS

    task = cfg.task_spec
    if task.d_vocab(cfg) > 0:
        return "family", f"the two-layer network reads real-valued inputs; {cfg.task} has tokens"
    if not task.regression:
        return "family", f"the two-layer network is Kumar et al.'s regression model; {cfg.task} is a classification task"
    for name, default in (("n_layers", 1), ("normalization", "none"), ("attn_only", False)):
        if getattr(cfg, name) != default:
            return name, "is a transformer option"
    for name, default in MLP_DEFAULTS.items():
        if name != "mlp_depth" and getattr(cfg, name) != default:
            return name, "is an option of the mlp family"
    if cfg.act_fn != "relu":
        return "act_fn", "the two-layer network's activation is phi(z) = z + eps z^2 / 2 (--quad-eps sets eps)"
    if cfg.engine == "fast":
        return "engine", "the twolayer family has no fast path; use auto or hooked"
    return None
