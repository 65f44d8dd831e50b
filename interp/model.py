"""The model: always a TransformerLens ``HookedTransformer``, plus a fast path for training.

``build_model`` creates the Nanda et al. 1-layer transformer from a ``TrainConfig``.
``fast_logits`` computes exactly what ``model(inputs)[:, -1]`` computes, from the very same
parameters, but only for the ``=`` position, with everything that does not depend on the example
done once per token. ``fast_loss`` is training's loss on top of it: the MLP, unembedding and
float64 cross-entropy with their gradient computed chunk by chunk in the forward. Both are the
one-member case of ``interp.kernel``, the kernel that also trains a stack of runs (``interp.stack``):
the model's parameters enter it as ``[1, ...]`` views, so gradients land on them directly.
Both apply to 1-layer models without LayerNorm whose inputs are ``[a, b, =]`` (``fast_applies``);
``tests/test_model.py`` checks them against ``HookedTransformer.forward`` for logits, loss,
every parameter's gradient, and parameters after several AdamW steps, at the canonical size and
at other head counts and head sizes.

Guards: the fast path does not run TransformerLens hook points, so whenever a hook is attached to
the model (``model.add_hook``, ``run_with_hooks``, ``hooks()``, any PyTorch module hook) both
functions compute through ``HookedTransformer.forward`` instead, and an ablation is never
silently skipped. ``fast_loss``'s gradient is computed in its forward, so it is differentiable
once only: a double backward (Hessian-vector products) raises instead of returning a wrong value.
"""

from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer, HookedTransformerConfig

from interp.config import TrainConfig
from interp.kernel import CHUNK_ROWS, cached_layout, lone_params, stacked_logits, stacked_loss


def hooked_config(cfg: TrainConfig) -> HookedTransformerConfig:
    """The ``HookedTransformerConfig`` of Nanda et al.'s 1-layer model (as in the TransformerLens
    grokking demo) for ``cfg``'s sizes: ReLU MLP, no LayerNorm, ``d_vocab = p + 1``, ``n_ctx = 3``;
    ``cfg.n_layers``, ``cfg.normalization`` and ``cfg.act_fn`` give the papers' other shapes
    (Power et al.: 2 layers with LayerNorm)."""
    return HookedTransformerConfig(
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        d_model=cfg.d_model,
        d_head=cfg.d_head,
        d_mlp=cfg.d_mlp,
        act_fn=cfg.act_fn,
        normalization_type=None if cfg.normalization == "none" else cfg.normalization,
        d_vocab=cfg.d_vocab,
        d_vocab_out=cfg.d_vocab_out,
        n_ctx=cfg.n_ctx,
        init_weights=True,
        device="cpu",
        seed=cfg.seed,
    )


def build_transformer(cfg: TrainConfig) -> HookedTransformer:
    """A freshly initialised ``HookedTransformer`` (seeded with ``cfg.seed``), biases frozen if asked.

    Every initial parameter is multiplied by ``cfg.init_scale`` (the biases start at zero, so this
    scales the weights). The global RNG state is restored afterwards: building a model has no side
    effect on seeding.
    """
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # transformer-lens 3.x warns that HookedTransformer goes away in 4.0; we pin <4.
        warnings.filterwarnings("ignore", message=".*HookedTransformer is deprecated.*")
        model = HookedTransformer(hooked_config(cfg))
    if cfg.init_scale != 1.0:
        with torch.no_grad():
            for param in model.parameters():
                param.mul_(cfg.init_scale)
    if cfg.freeze_biases:
        for name, param in model.named_parameters():
            if "b_" in name:
                param.requires_grad_(False)
    return model


def fast_applies(model: HookedTransformer) -> bool:
    """Whether ``fast_logits`` computes the same function as ``model(inputs)[:, -1]`` (hooks aside: see ``has_hooks``)."""
    c = model.cfg
    off = lambda name: not getattr(c, name, None)  # noqa: E731 - a config option that is absent or off
    return (
        c.n_layers == 1
        and c.n_ctx == 3
        and c.normalization_type is None
        and c.act_fn == "relu"
        and c.positional_embedding_type == "standard"
        and not c.attn_only
        and c.attention_dir == "causal"
        and getattr(c, "n_key_value_heads", None) in (None, c.n_heads)
        and c.use_attn_scale
        and all(off(name) for name in ("gated_mlp", "use_attn_result", "parallel_attn_mlp", "use_qk_norm", "clip_qkv",
                                      "use_logn_attn", "use_local_attn", "num_experts", "post_embedding_ln",
                                      "use_attention_sinks"))
        and all(getattr(c, name, -1.0) <= 0 for name in ("attn_scores_soft_cap", "output_logits_soft_cap"))
    )


def has_hooks(model: HookedTransformer) -> bool:
    """Whether any forward or backward hook is attached to ``model`` or one of its modules (every
    TransformerLens hook point is a module), or registered globally for all modules."""
    from torch.nn.modules import module as _module

    global_hooks = (_module._global_forward_hooks, _module._global_forward_pre_hooks,
                    _module._global_backward_hooks, _module._global_backward_pre_hooks)
    if any(global_hooks):
        return True
    return any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
               for m in model.modules())


def _tokens(a: Tensor, b: Tensor, eq_token: int) -> Tensor:
    return torch.stack([a, b, torch.full_like(a, eq_token)], dim=1)


def fast_logits(
    model: HookedTransformer, a: Int[Tensor, "batch"], b: Int[Tensor, "batch"], eq_token: int
) -> Float[Tensor, "batch d_vocab_out"]:
    """Logits at the ``=`` position of ``[a, b, =]``, equal to ``model(inputs)[:, -1]``.

    Only the ``=`` position is computed; keys, values, scores and what each (head, token) adds to the
    MLP input and the logits are computed once per token, and each example mixes its ``3 * n_heads``
    rows weighted by its attention pattern (``interp.kernel.stacked_logits`` with one member).
    Differentiable, but training uses ``fast_loss``, which is faster.

    With a hook attached to ``model`` (``has_hooks``) the logits come from ``HookedTransformer.forward``,
    so that the hooks run.

    Args:
        model: a 1-layer ``HookedTransformer`` for which ``fast_applies`` is true.
        a, b: first and second operand tokens.
        eq_token: token id of ``=``.
    Returns:
        ``[batch, d_vocab_out]`` float32 logits.
    """
    if has_hooks(model):
        return hooked_logits(model, _tokens(a, b, eq_token))
    layout = cached_layout(a, b, model.cfg.n_heads, model.cfg.d_vocab)
    return stacked_logits(lone_params(model), a[None], b[None], eq_token, model.blocks[0].attn.attn_scale, layout)[0]


def fast_loss(
    model: HookedTransformer, a: Int[Tensor, "batch"], b: Int[Tensor, "batch"], labels: Int[Tensor, "batch"],
    eq_token: int, chunk_rows: int = CHUNK_ROWS,
) -> Tensor:
    """``loss_fn(fast_logits(model, a, b, eq_token), labels)`` and its gradient, faster: training's loss.

    The per-token part goes through autograd; the per-example part (MLP, unembedding, float64
    cross-entropy) computes its gradient in the forward, ``chunk_rows`` examples at a time
    (``interp.kernel.stacked_loss`` with one member). Differentiable once (no Hessian-vector
    products). With a hook attached to ``model`` it is ``loss_fn`` of ``HookedTransformer.forward``'s
    logits instead.
    """
    if has_hooks(model):
        return loss_fn(hooked_logits(model, _tokens(a, b, eq_token)), labels)
    layout = cached_layout(a, b, model.cfg.n_heads, model.cfg.d_vocab, chunk_rows)
    weights = torch.full((1, a.shape[0]), 1.0 / a.shape[0], dtype=torch.float64, device=a.device)
    return stacked_loss(lone_params(model), a[None], b[None], labels[None], weights, eq_token,
                        model.blocks[0].attn.attn_scale, layout)[0]


def hooked_logits(model: HookedTransformer, inputs: Int[Tensor, "batch 3"]) -> Float[Tensor, "batch d_vocab_out"]:
    """Logits at the last position through ``HookedTransformer.forward`` (the reference path)."""
    return model(inputs)[:, -1]


def loss_fn(logits: Float[Tensor, "batch d_vocab_out"], labels: Int[Tensor, "batch"], dtype: torch.dtype = torch.float64) -> Tensor:
    """Mean cross-entropy with the log-softmax in ``dtype``: float64 by default (avoids slingshot spikes);
    float32 is the ``softmax32`` loss, the float32 control of Prieto et al. (2025), whose softmax can
    collapse (its loss term is then exactly 0, while the wrong-class entries of its gradient stay
    tiny but not 0: ``float32_collapse``)."""
    return F.cross_entropy(logits.to(dtype), labels)


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


def mse_loss(logits: Float[Tensor, "batch d_vocab_out"], labels: Int[Tensor, "batch"]) -> Tensor:
    """Mean squared error between the logits and one-hot targets, averaged over examples and classes
    (``torch.nn.MSELoss`` on one-hot targets, as Omnigrok trains its MLPs), in float64."""
    x = logits.to(torch.float64)
    return (x - F.one_hot(labels, x.shape[-1]).to(torch.float64)).square().mean()


def criterion(name: str):
    """The loss function named by ``TrainConfig.loss``: ``loss_fn`` ('softmax'; 'softmax32': the same in
    float32), ``stablemax_loss`` or ``mse_loss``."""
    return {"softmax": loss_fn, "softmax32": functools.partial(loss_fn, dtype=torch.float32), "stablemax": stablemax_loss, "mse": mse_loss}[name]


# ---- the transformer as a model family (interp.families) ----------------------------------------
def answer_logits(logits: Float[Tensor, "batch pos d_vocab_out"], cfg: TrainConfig) -> Tensor:
    """The logits at the task's answer positions: ``[batch, d_vocab_out]`` for one, ``[batch, n, d_vocab_out]`` for several."""
    pos = cfg.task_spec.answer_positions
    return logits[:, pos[0]] if len(pos) == 1 else logits[:, list(pos)]


def _forward(model: HookedTransformer, cfg: TrainConfig, inputs: Tensor) -> Tensor:
    return answer_logits(model(inputs), cfg)


def _activations(model: HookedTransformer, cfg: TrainConfig, inputs: Tensor) -> dict[str, Tensor]:
    names = [f"blocks.{i}.mlp.hook_post" for i in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(inputs, names_filter=lambda n: n in names)
    pos = cfg.task_spec.answer_positions[0]
    return {n: cache[n][:, pos] for n in names}


def _views(model: HookedTransformer):
    from interp.families import WeightViews

    return WeightViews(embed=[model.W_E] * model.cfg.n_ctx, hidden=[b.mlp.W_in for b in model.blocks], unembed=model.W_U,
                       attention=not model.cfg.attn_only)


def _fast_applies(model: HookedTransformer, cfg: TrainConfig) -> bool:
    return cfg.task_spec.token_pair and fast_applies(model)


def _check(cfg: TrainConfig) -> tuple[str, str] | None:
    if cfg.task_spec.d_vocab(cfg) < 1:
        return "family", f"the transformer reads tokens; {cfg.task} has real-valued inputs (use --family mlp)"
    return None


def _family():
    from interp.families import FastPath, ModelFamily

    return ModelFamily(
        "transformer", "TransformerLens HookedTransformer (Nanda et al.'s 1-layer model by default)",
        ("p", "d_model", "n_heads", "d_mlp", "n_layers", "normalization", "act_fn", "freeze_biases"),
        build_transformer, _forward, _activations, _views,
        FastPath(_fast_applies,
                 lambda m, cfg, x: fast_logits(m, x[:, 0], x[:, 1], cfg.eq_token),
                 lambda m, cfg, x, y: fast_loss(m, x[:, 0], x[:, 1], y, cfg.eq_token)),
        _check)


FAMILY = _family()
