"""Model families: what a model is, as the rest of the suite sees it.

A ``ModelFamily`` says which ``TrainConfig`` fields it reads, how to ``build`` a seeded model, its
reference ``forward`` (inputs -> logits at the task's answer positions), its hidden ``activations``
by name, the ``views`` of its weights that analysers read, and its ``fast`` path or none.
``TrainConfig.family`` names one (``auto``: the task's own, ``interp.tasks.Task.family``) and
``config.json`` records it; training, evaluation, checkpoints, resume and the analysers go through
the family, so no other module asks which model it has.

    transformer   TransformerLens ``HookedTransformer`` (Nanda et al.'s 1-layer model by default;
                  ``n_layers``, ``normalization``, ``act_fn`` are its switches), fast path ``interp.model``
    mlp           the papers' MLPs on token pairs and Omnigrok's on real-valued inputs (``interp.mlp``), no fast path
    twolayer      Kumar et al.'s lazy-to-rich two-layer network on real-valued regression (``interp.twolayer``)

A new family is one module (its build, forward, activations) and one ``register_family`` line (here
for the built-in ones, or in your own script; see ``docs/extending.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from interp.errors import ConfigError

# "TrainConfig" in annotations is interp.config.TrainConfig, named as a string: the config asks this
# registry for its families, so the registry (and the family modules) do not import the config back.


@dataclass(frozen=True)
class WeightViews:
    """The weights analysers read, named the same way for every family.

    Attributes:
        embed: per input slot, ``[d_vocab, d]``: each token's vector as it enters the model at that slot
            (a transformer shares ``W_E`` between its slots; an MLP may have one embedding per operand).
        neuron_logits: ``[width, d_vocab_out]``: how each neuron of the last hidden layer writes to the
            logits along the direct path (the transformer's last ``W_out @ W_U``; the MLP's output layer).
        unembed: ``[d, d_vocab_out]``, the last linear map to the logits (``W_U``; the MLP's output layer).
        roles: ``{parameter name: (role, axis)}`` for the circuit split (``analyses.efficiency``):
            ``"token"`` (``axis`` runs over input tokens), ``"class"`` (over output classes) or ``"neuron"``
            (over the last hidden layer's neurons); every other parameter is shared by both circuits.
        attention: whether the model mixes positions by attention.
        operand_hidden: per operand slot, ``[d_vocab, width]``: what each token adds to the first hidden layer's
            pre-activation (an MLP's "total embedding", Chughtai et al.'s ``W_x @ W_left``); ``None`` where
            attention mixes the slots first (the transformer).
    """

    embed: list[Tensor]
    neuron_logits: Tensor
    unembed: Tensor
    roles: dict[str, tuple[str, int]]
    attention: bool
    operand_hidden: list[Tensor] | None = None


@dataclass(frozen=True)
class FastPath:
    """A faster computation of a family's forward and training loss, tested equal to ``forward``.

    Attributes:
        applies: ``(model, cfg) -> bool``, whether it computes the same function as the family's ``forward``
            on ``cfg``'s task.
        logits: ``(model, cfg, inputs) -> logits`` at the answer positions.
        loss: ``(model, cfg, inputs, labels) -> loss``, the float64 softmax cross-entropy with its gradient.
    """

    applies: Callable[[nn.Module, "TrainConfig"], bool]
    logits: Callable[[nn.Module, "TrainConfig", Tensor], Tensor]
    loss: Callable[[nn.Module, "TrainConfig", Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class ModelFamily:
    """A kind of model the suite can train and analyse (register it with ``register_family``).

    Attributes:
        name: the key in ``FAMILIES`` and the value of ``TrainConfig.family``.
        description: one line for the docs.
        fields: the ``TrainConfig`` fields that shape the model (``init_from`` needs them equal).
        build: ``cfg -> model``, freshly initialised from ``cfg.seed`` (no effect on the global RNG),
            every initial parameter times ``cfg.init_scale``, biases frozen at zero if ``cfg.freeze_biases``.
        forward: ``(model, cfg, inputs) -> logits`` at the task's answer positions (the reference path).
        activations: ``(model, cfg, inputs) -> {name: [batch, width]}``, each hidden layer's activations at
            the answer position, in layer order.
        views: ``model -> WeightViews``.
        fast: a ``FastPath``, or ``None``.
        check: ``cfg -> (field, why) | None``: a config this family cannot build (refused naming the field).
    """

    name: str
    description: str
    fields: tuple[str, ...]
    build: Callable[["TrainConfig"], nn.Module]
    forward: Callable[[nn.Module, "TrainConfig", Tensor], Tensor]
    activations: Callable[[nn.Module, "TrainConfig", Tensor], dict[str, Tensor]]
    views: Callable[[nn.Module], WeightViews]
    fast: FastPath | None = None
    check: Callable[["TrainConfig"], tuple[str, str] | None] = lambda cfg: None

    def uses_fast(self, cfg: "TrainConfig", model: nn.Module) -> bool:
        """Whether ``cfg.engine`` trains ``model`` through the fast path (``auto``: where it applies).

        Raises:
            ConfigError: ``--engine fast`` for a model the fast path does not compute.
        """
        if cfg.engine == "hooked":
            return False
        if self.fast is None:
            if cfg.engine == "fast":
                raise ConfigError(f"--engine fast: the {self.name} family has no fast path")
            return False
        if cfg.engine == "fast" and not self.fast.applies(model, cfg):
            raise ConfigError("--engine fast: the fast forward does not apply to this model")
        return self.fast.applies(model, cfg)


FAMILIES: dict[str, ModelFamily] = {}


def register_family(family: ModelFamily) -> ModelFamily:
    """Add ``family`` to ``FAMILIES`` (a name may be registered once) and return it."""
    if family.name in FAMILIES:
        raise ValueError(f"model family {family.name!r} is already registered")
    FAMILIES[family.name] = family
    return family


def family_of(cfg: "TrainConfig") -> ModelFamily:
    """The registered family ``cfg.family`` names."""
    return FAMILIES[cfg.family]


def build_model(cfg: "TrainConfig") -> nn.Module:
    """A freshly initialised model of ``cfg``'s family (``ModelFamily.build``)."""
    return family_of(cfg).build(cfg)


def to_device(model: nn.Module, device: torch.device | str) -> nn.Module:
    """``model`` moved to ``device`` in place (quietly: ``HookedTransformer.to`` prints by default)."""
    from transformer_lens import HookedTransformer

    if isinstance(model, HookedTransformer):
        return model.to(device, print_details=False)
    return model.to(device)


# ---- what analysers read through the family ------------------------------------------------------
@torch.no_grad()
def hidden_activations(model: nn.Module, cfg: "TrainConfig", inputs: Tensor) -> dict[str, Tensor]:
    """Each hidden layer's activations at the answer position, ``{name: [batch, width]}`` in layer order
    (the family's ``activations``)."""
    return family_of(cfg).activations(model, cfg, inputs)


def last_layer(model: nn.Module, cfg: "TrainConfig", inputs: Tensor) -> Tensor:
    """The last hidden layer's activations, ``[batch, width]``: the neurons whose clustering gives the key
    frequencies and whose split is C_gen / C_mem (``WeightViews.neuron_logits`` maps them to the logits)."""
    return list(hidden_activations(model, cfg, inputs).values())[-1]


def grid_inputs(p: int, eq_token: int) -> Tensor:
    """``[a, b, =]`` for every pair, row-major (``index = a * p + b``)."""
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    return torch.stack([a, b, torch.full_like(a, eq_token)], dim=1)


def operand_embedding(model: nn.Module, cfg: "TrainConfig") -> Tensor:
    """The operand slots' embeddings side by side, ``[d_vocab, d * slots]`` (``WeightViews.embed[:2]``; a matrix
    that both slots share, as the transformer's ``W_E``, counted once)."""
    seen: list[Tensor] = []
    for e in family_of(cfg).views(model).embed[:2]:
        if not any(e is s for s in seen):
            seen.append(e)
    return torch.cat([e.detach() for e in seen], dim=1)


# ---- the built-in families: one registration each ----------------------------------------------
import interp.mlp as _mlp  # noqa: E402  (after the classes: the family modules use none of them)
import interp.model as _transformer  # noqa: E402

TRANSFORMER = register_family(ModelFamily(
    "transformer", "TransformerLens HookedTransformer (Nanda et al.'s 1-layer model by default)",
    ("p", "d_model", "n_heads", "d_mlp", "n_layers", "normalization", "act_fn", "attn_only", "freeze_biases"),
    _transformer.build_transformer, _transformer.forward, _transformer.activations,
    lambda m: WeightViews(**_transformer.views(m)),
    FastPath(_transformer.fast_path_applies, _transformer.fast_forward, _transformer.fast_train_loss),
    _transformer.check))

MLP = register_family(ModelFamily(
    "mlp", "the papers' MLPs on [a, b, =] (Chughtai et al., devinterp, Minegishi et al., Prieto et al.) and Omnigrok's on "
           "real-valued inputs (the digits)",
    ("p", "d_model", "d_mlp", "mlp_depth", "mlp_embed", "mlp_combine", "mlp_unembed", "mlp_init", "mlp_out_bias", "act_fn",
     "freeze_biases"),
    _mlp.build_mlp, lambda m, cfg, x: m(x), _mlp.activations, lambda m: WeightViews(**_mlp.views(m)), check=_mlp.check))

import interp.twolayer as _twolayer  # noqa: E402

TWOLAYER = register_family(ModelFamily(
    "twolayer", "Kumar et al.'s two-layer network f(x) = alpha mean_i [phi(w_i.x) - phi(w0_i.x)], phi(z) = z + eps z^2/2 "
                "(the lazy-to-rich regression)",
    ("d_mlp", "output_scale", "quad_eps"), _twolayer.build_twolayer, lambda m, cfg, x: m(x), _twolayer.activations,
    lambda m: WeightViews(**_twolayer.views(m)), check=_twolayer.check))
