"""The model of the non-algorithmic task: a small ReLU MLP on scikit-learn's 8x8 digits.

``64 -> d_mlp -> d_mlp -> 10`` (two hidden layers of width ``TrainConfig.d_mlp``, ReLU between
layers), initialised as ``torch.nn.Linear`` does (uniform in +-1/sqrt(fan_in), from ``cfg.seed``)
and then multiplied by ``cfg.init_scale``, as in Omnigrok's MNIST experiment (Liu et al. 2023,
a depth-3 width-200 MLP, as the ``digits`` preset). With ``freeze_biases`` the biases are zero and stay zero, as in the transformer.

It is the model ``interp.model.build_model`` returns for ``cfg.model_kind == "mlp"``; training,
checkpoints, resume, sweeps and the outcome tables treat it like the transformer. The
interpretability analyses (``interp.analyze``, the run report) are about the modular-arithmetic
transformer and refuse a run of this model.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn

from interp.config import DIGITS_CLASSES, DIGITS_FEATURES, TrainConfig


class DigitsMLP(nn.Module):
    """``x [batch, 64] -> logits [batch, 10]`` through two ReLU hidden layers of width ``d_hidden``."""

    def __init__(self, d_hidden: int, d_in: int = DIGITS_FEATURES, d_out: int = DIGITS_CLASSES):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(d_in, d_hidden), nn.Linear(d_hidden, d_hidden), nn.Linear(d_hidden, d_out)])

    def forward(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_out"]:
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](x)


def build_mlp(cfg: TrainConfig) -> DigitsMLP:
    """A freshly initialised ``DigitsMLP`` for ``cfg`` (seeded; the global RNG state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = DigitsMLP(cfg.d_mlp)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if cfg.freeze_biases and name.endswith("bias"):
                param.zero_().requires_grad_(False)
            else:
                param.mul_(cfg.init_scale)
    return model
