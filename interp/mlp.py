"""The model of the non-algorithmic task: a small ReLU MLP on scikit-learn's 8x8 digits.

``64 -> d_mlp -> d_mlp -> 10`` (two hidden layers of width ``TrainConfig.d_mlp``, ReLU between
layers), initialised as ``torch.nn.Linear`` does (uniform in +-1/sqrt(fan_in), from ``cfg.seed``)
and then multiplied by ``cfg.init_scale``, as in Omnigrok's MNIST experiment (Liu et al. 2023,
a depth-3 width-200 MLP, as the ``digits`` preset). With ``freeze_biases`` the biases are zero and stay zero, as in the transformer.

It is the ``mlp`` model family (``interp.families``, the digits task's own): training, checkpoints,
resume, sweeps and the outcome tables treat it like the transformer; the analysers that need the
transformer's Fourier structure say why they skip it.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn

from interp.tasks import DIGITS_CLASSES, DIGITS_FEATURES


class DigitsMLP(nn.Module):
    """``x [batch, 64] -> logits [batch, 10]`` through two ReLU hidden layers of width ``d_hidden``."""

    def __init__(self, d_hidden: int, d_in: int = DIGITS_FEATURES, d_out: int = DIGITS_CLASSES):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(d_in, d_hidden), nn.Linear(d_hidden, d_hidden), nn.Linear(d_hidden, d_out)])

    def forward(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_out"]:
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](x)


def build_mlp(cfg: "TrainConfig") -> DigitsMLP:
    """A freshly initialised ``DigitsMLP`` for ``cfg`` (seeded; the global RNG state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = DigitsMLP(cfg.d_mlp, cfg.n_ctx, cfg.d_vocab_out)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if cfg.freeze_biases and name.endswith("bias"):
                param.zero_().requires_grad_(False)
            else:
                param.mul_(cfg.init_scale)
    return model


# ---- the MLP as a model family (interp.families) ------------------------------------------------
def activations(model: DigitsMLP, cfg: "TrainConfig", x: Tensor) -> dict[str, Tensor]:
    """Each hidden layer's post-ReLU activations, ``layers.{i}.post`` (``[batch, d_mlp]``)."""
    out = {}
    for i, layer in enumerate(model.layers[:-1]):
        x = torch.relu(layer(x))
        out[f"layers.{i}.post"] = x
    return out


def check(cfg: "TrainConfig") -> tuple[str, str] | None:
    """``(field, why)`` for a config this MLP cannot take: transformer options, the fast engine, token inputs."""
    if (cfg.n_layers, cfg.normalization, cfg.act_fn) != (1, "none", "relu"):
        name = "n_layers" if cfg.n_layers != 1 else "normalization" if cfg.normalization != "none" else "act_fn"
        return name, f"the {cfg.task} MLP has a fixed shape; these options are for the transformer"
    if cfg.engine == "fast":
        return "engine", f"the {cfg.task} MLP has no fast path; use auto or hooked (both train its plain forward)"
    if cfg.task_spec.d_vocab(cfg) > 0:
        return "family", f"this MLP reads real-valued inputs; {cfg.task} has tokens (use --family transformer)"
    return None
