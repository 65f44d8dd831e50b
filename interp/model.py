"""The model: always a TransformerLens ``HookedTransformer``, plus a fast training forward.

``build_model`` creates the Nanda et al. 1-layer transformer from a ``TrainConfig``.
``fast_logits`` computes exactly what ``model(inputs)[:, -1]`` computes, from the very same
parameters, but only for the ``=`` position and with the work that does not depend on the batch
done once per step on per-token tables. It applies to 1-layer models without LayerNorm whose inputs
are ``[a, b, =]`` (``fast_applies``); ``tests/test_model.py`` checks it against
``HookedTransformer.forward`` for logits and for parameters after several AdamW steps.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer, HookedTransformerConfig

from interp.config import TrainConfig


def hooked_config(cfg: TrainConfig) -> HookedTransformerConfig:
    """The ``HookedTransformerConfig`` of SCIENCE.md section 1 for ``cfg``'s sizes."""
    return HookedTransformerConfig(
        n_layers=1,
        n_heads=cfg.n_heads,
        d_model=cfg.d_model,
        d_head=cfg.d_head,
        d_mlp=cfg.d_mlp,
        act_fn="relu",
        normalization_type=None,
        d_vocab=cfg.d_vocab,
        d_vocab_out=cfg.d_vocab_out,
        n_ctx=cfg.n_ctx,
        init_weights=True,
        device="cpu",
        seed=cfg.seed,
    )


def build_model(cfg: TrainConfig) -> HookedTransformer:
    """A freshly initialised ``HookedTransformer`` (seeded with ``cfg.seed``), biases frozen if asked.

    The global RNG state is restored afterwards: building a model has no side effect on seeding.
    """
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # transformer-lens 3.x warns that HookedTransformer goes away in 4.0; we pin <4.
        warnings.filterwarnings("ignore", message=".*HookedTransformer is deprecated.*")
        model = HookedTransformer(hooked_config(cfg))
    if cfg.freeze_biases:
        for name, param in model.named_parameters():
            if "b_" in name:
                param.requires_grad_(False)
    return model


def fast_applies(model: HookedTransformer) -> bool:
    """Whether ``fast_logits`` computes the same function as ``model(inputs)[:, -1]``."""
    c = model.cfg
    return (
        c.n_layers == 1
        and c.n_ctx == 3
        and c.normalization_type is None
        and c.act_fn == "relu"
        and c.positional_embedding_type == "standard"
        and not c.attn_only
        and not getattr(c, "gated_mlp", False)
        and c.attention_dir == "causal"
        and getattr(c, "n_key_value_heads", None) in (None, c.n_heads)
        and not getattr(c, "use_attn_result", False)
        and c.use_attn_scale
    )


def fast_logits(
    model: HookedTransformer, a: Int[Tensor, "batch"], b: Int[Tensor, "batch"], eq_token: int
) -> Float[Tensor, "batch d_vocab_out"]:
    """Logits at the ``=`` position of ``[a, b, =]``, equal to ``model(inputs)[:, -1]``.

    Only the ``=`` position is computed. Its query is the same for every example, so keys, values
    and scores are computed once per token (tables of ``d_vocab`` rows) and gathered per example;
    ``W_O`` is folded into ``W_in`` and ``W_U``, and ``W_out`` into ``W_U``, so the batch goes through
    three matrix multiplies instead of HookedTransformer's per-position pipeline. Differentiable in
    every parameter; the gradients reach the same ``nn.Parameter`` objects.

    Args:
        model: a 1-layer ``HookedTransformer`` for which ``fast_applies`` is true.
        a, b: first and second operand tokens.
        eq_token: token id of ``=``.
    Returns:
        ``[batch, d_vocab_out]`` float32 logits.
    """
    blk = model.blocks[0]
    attn, mlp = blk.attn, blk.mlp
    # Residual stream before the block: per-token tables for positions 0 and 1 (stacked on a
    # leading axis), a single vector for the '=' position.
    x01 = torch.stack([model.W_E + model.W_pos[0], model.W_E + model.W_pos[1]])  # [2, vocab, d_model]
    x2 = model.W_E[eq_token] + model.W_pos[2]  # [d_model]
    # Attention of the '=' query over keys at positions 0, 1, 2 (causal mask allows all three).
    q = torch.einsum("d,hde->he", x2, attn.W_Q) + attn.b_Q  # [h, d_head]
    k01 = torch.einsum("pvd,hde->pvhe", x01, attn.W_K) + attn.b_K  # [2, vocab, h, d_head]
    k2 = torch.einsum("d,hde->he", x2, attn.W_K) + attn.b_K  # [h, d_head]
    s01 = (k01 * q).sum(-1) / attn.attn_scale  # [2, vocab, h]
    s2 = (k2 * q).sum(-1) / attn.attn_scale  # [h]
    # index_select (whose backward is index_add_) rather than fancy indexing (index_put_, slower)
    scores = torch.stack(
        [s01[0].index_select(0, a), s01[1].index_select(0, b), s2.expand(a.shape[0], -1)], dim=-1
    )  # [batch, h, 3]
    pattern = scores.softmax(dim=-1)
    v01 = torch.einsum("pvd,hde->pvhe", x01, attn.W_V) + attn.b_V  # [2, vocab, h, d_head]
    v2 = torch.einsum("d,hde->he", x2, attn.W_V) + attn.b_V  # [h, d_head]
    z = (
        pattern[..., 0, None] * v01[0].index_select(0, a)
        + pattern[..., 1, None] * v01[1].index_select(0, b)
        + pattern[..., 2, None] * v2
    )  # [batch, h, d_head]
    # resid_mid = x2 + b_O + z @ W_O is only ever multiplied by W_in and W_U, so W_O is folded into
    # both (two small weight products) instead of materialising resid_mid for the whole batch.
    W_O = attn.W_O.flatten(0, 1)  # [h * d_head, d_model]
    resid_base = x2 + attn.b_O  # the part of resid_mid shared by all examples
    W_OI = W_O @ mlp.W_in  # [h * d_head, d_mlp]
    post = (z.flatten(1) @ W_OI).add_(resid_base @ mlp.W_in + mlp.b_in).relu_()  # [batch, d_mlp]
    # The MLP output only feeds W_U: fold W_L = W_out @ W_U, built transposed and contiguous so that
    # the backward's grad @ W_L.T is a plain matmul.
    W_L_T = model.W_U.T @ mlp.W_out.T  # [d_vocab_out, d_mlp]
    W_OU = W_O @ model.W_U  # [h * d_head, d_vocab_out]
    direct = torch.addmm((resid_base + mlp.b_out) @ model.W_U + model.b_U, z.flatten(1), W_OU)
    return torch.addmm(direct, post, W_L_T.T)


def hooked_logits(model: HookedTransformer, inputs: Int[Tensor, "batch 3"]) -> Float[Tensor, "batch d_vocab_out"]:
    """Logits at the last position through ``HookedTransformer.forward`` (the reference path)."""
    return model(inputs)[:, -1]


def loss_fn(logits: Float[Tensor, "batch d_vocab_out"], labels: Int[Tensor, "batch"]) -> Tensor:
    """Mean cross-entropy with the log-softmax in float64 (avoids slingshot spikes)."""
    logp = logits.to(torch.float64).log_softmax(dim=-1)
    return -logp.gather(-1, labels[:, None]).mean()
