"""The transformer model family: TransformerLens' ``HookedTransformer``, plus a fast path for training.

``build_transformer`` creates the Nanda et al. 1-layer transformer from a ``TrainConfig`` (through
``interp.families.build_model``, which asks ``cfg.family``); ``interp.families`` registers it as the ``transformer`` family.
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

import warnings

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer, HookedTransformerConfig

from interp.kernel import CHUNK_ROWS, cached_layout, lone_params, stacked_logits, stacked_loss, stacked_post
from interp.losses import loss_fn
from interp.mlp import MLP_DEFAULTS


def hooked_config(cfg: "TrainConfig") -> HookedTransformerConfig:
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
        attn_only=cfg.attn_only,
        init_weights=True,
        device="cpu",
        seed=cfg.seed,
    )


def build_transformer(cfg: "TrainConfig") -> HookedTransformer:
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


def _plain(c: HookedTransformerConfig) -> bool:
    """Whether a ``HookedTransformer`` of config ``c`` is the plain kind the fast paths compute: no LayerNorm, ReLU MLPs
    (or none), learned absolute positions, causal attention with the standard scale and no optional extras."""
    off = lambda name: not getattr(c, name, None)  # noqa: E731 - a config option that is absent or off
    return (
        c.normalization_type is None
        and c.act_fn == "relu"
        and c.positional_embedding_type == "standard"
        and c.attention_dir == "causal"
        and getattr(c, "n_key_value_heads", None) in (None, c.n_heads)
        and c.use_attn_scale
        and all(off(name) for name in ("gated_mlp", "use_attn_result", "parallel_attn_mlp", "use_qk_norm", "clip_qkv",
                                      "use_logn_attn", "use_local_attn", "num_experts", "post_embedding_ln",
                                      "use_attention_sinks"))
        and all(getattr(c, name, -1.0) <= 0 for name in ("attn_scores_soft_cap", "output_logits_soft_cap"))
    )


def fast_applies(model: HookedTransformer) -> bool:
    """Whether ``fast_logits`` computes the same function as ``model(inputs)[:, -1]`` (hooks aside: see ``has_hooks``)."""
    c = model.cfg
    return c.n_layers == 1 and c.n_ctx == 3 and not c.attn_only and _plain(c)


def sequence_applies(model: HookedTransformer) -> bool:
    """Whether ``sequence_logits`` computes the same function as ``model(inputs)`` at the answer positions: any
    number of layers, with or without MLPs (hooks aside: see ``has_hooks``)."""
    return _plain(model.cfg)


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


def sequence_logits(model: HookedTransformer, inputs: Int[Tensor, "batch pos"], positions: tuple[int, ...]) -> Tensor:
    """``model(inputs)[:, positions]`` in plain torch, faster: the sequence tasks' training path.

    ``HookedTransformer.forward`` computes every position in every layer, through hook points and a
    masked ``where``. Here the inputs stop at the last answer position (attention is causal, so later
    tokens change nothing before them), the heads' Q, K and V are one matrix product each, the causal
    mask is added, and the last layer computes its attention queries, MLP and unembedding only at the
    answer positions. The logits and their gradients equal TransformerLens' to float32 rounding
    (``tests/test_sequences.py`` checks both on models with random biases).

    With a hook attached to ``model`` (``has_hooks``) the logits come from ``HookedTransformer.forward``.

    Args:
        model: a ``HookedTransformer`` for which ``sequence_applies`` is true.
        inputs: ``[batch, n_ctx]`` tokens.
        positions: the answer positions (the positions whose logits predict the answer tokens).
    Returns:
        ``[batch, d_vocab_out]`` logits for one position, ``[batch, len(positions), d_vocab_out]`` for several.
    """
    pos = [q % inputs.shape[1] for q in positions]
    if has_hooks(model):
        out = model(inputs)[:, pos]
        return out[:, 0] if len(pos) == 1 else out
    c = model.cfg
    n = max(pos) + 1
    x = inputs[:, :n]
    batch, heads, d_head = x.shape[0], c.n_heads, c.d_head
    resid = model.W_E[x] + model.W_pos[:n]
    mask = torch.full((n, n), float("-inf"), device=x.device, dtype=resid.dtype).triu(1)

    def proj(r: Tensor, w: Tensor, b: Tensor) -> Tensor:  # [batch, rows, d_model] -> [batch, heads, rows, d_head]
        return (r @ w.permute(1, 0, 2).reshape(c.d_model, heads * d_head) + b.reshape(-1)).view(
            batch, r.shape[1], heads, d_head).transpose(1, 2)

    for i, block in enumerate(model.blocks):
        attn, last = block.attn, i == c.n_layers - 1
        k, v = proj(resid, attn.W_K, attn.b_K), proj(resid, attn.W_V, attn.b_V)
        if last:  # only the answer positions matter from here on
            resid, rows = resid[:, pos], mask[pos]
        else:
            rows = mask
        q = proj(resid, attn.W_Q, attn.b_Q)
        pattern = ((q @ k.transpose(-1, -2)) / attn.attn_scale + rows).softmax(-1)
        z = (pattern @ v).transpose(1, 2).reshape(batch, resid.shape[1], heads * d_head)
        resid = resid + z @ attn.W_O.reshape(heads * d_head, c.d_model) + attn.b_O
        if not c.attn_only:
            mlp = block.mlp
            resid = resid + torch.relu(resid @ mlp.W_in + mlp.b_in) @ mlp.W_out + mlp.b_out
    out = resid @ model.W_U + model.b_U
    return out[:, 0] if len(pos) == 1 else out


def hooked_logits(model: HookedTransformer, inputs: Int[Tensor, "batch 3"]) -> Float[Tensor, "batch d_vocab_out"]:
    """Logits at the last position through ``HookedTransformer.forward`` (the reference path)."""
    return model(inputs)[:, -1]


# ---- the transformer as a model family (interp.families) ----------------------------------------
def answer_logits(logits: Float[Tensor, "batch pos d_vocab_out"], cfg: "TrainConfig") -> Tensor:
    """The logits at the task's answer positions: ``[batch, d_vocab_out]`` for one, ``[batch, n, d_vocab_out]`` for several."""
    pos = cfg.task_spec.answer_positions
    return logits[:, pos[0]] if len(pos) == 1 else logits[:, list(pos)]


def forward(model: HookedTransformer, cfg: "TrainConfig", inputs: Tensor) -> Tensor:
    """The reference forward: ``HookedTransformer.forward``'s logits at the task's answer positions."""
    return answer_logits(model(inputs), cfg)


def activations(model: HookedTransformer, cfg: "TrainConfig", inputs: Tensor) -> dict[str, Tensor]:
    """Every block's ``blocks.{i}.mlp.hook_post`` at the answer position, ``[batch, d_mlp]`` each (where the fast
    path applies and no hook is attached, from its tables: ``interp.kernel.stacked_post``, tested equal)."""
    if fast_path_applies(model, cfg) and not has_hooks(model):
        a, b = inputs[:, 0], inputs[:, 1]
        layout = cached_layout(a, b, model.cfg.n_heads, model.cfg.d_vocab)
        post = stacked_post(lone_params(model), a[None], b[None], cfg.eq_token, model.blocks[0].attn.attn_scale, layout)[0]
        return {"blocks.0.mlp.hook_post": post}
    names = [f"blocks.{i}.mlp.hook_post" for i in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(inputs, names_filter=lambda n: n in names)
    pos = cfg.task_spec.answer_positions[0]
    return {n: cache[n][:, pos] for n in names}


def views(model: HookedTransformer) -> dict:
    """The fields of the analysers' view of the weights (``interp.families.WeightViews``): ``W_E`` at every slot, the last
    block's neurons through ``W_out @ W_U`` (the direct path; LayerNorm and later residual terms left out),
    and the circuit roles: ``W_E`` by token, ``W_U``/``b_U`` by class, the last block's MLP by neuron."""
    last = f"blocks.{model.cfg.n_layers - 1}.mlp"
    mlp = model.blocks[-1].mlp
    roles = {"embed.W_E": ("token", 0), "unembed.W_U": ("class", 1), "unembed.b_U": ("class", 0),
             f"{last}.W_in": ("neuron", 1), f"{last}.b_in": ("neuron", 0), f"{last}.W_out": ("neuron", 0)}
    return dict(embed=[model.W_E] * model.cfg.n_ctx, neuron_logits=mlp.W_out @ model.W_U, unembed=model.W_U, roles=roles,
                attention=not model.cfg.attn_only)


def fast_path_applies(model: HookedTransformer, cfg: "TrainConfig") -> bool:
    """Whether the family's fast path computes this model on ``cfg``'s task: ``[a, b, =]`` inputs and a model
    ``fast_applies`` accepts (``fast_logits``, ``fast_loss``), or a sequence task and a model ``sequence_applies``
    accepts (``sequence_logits``)."""
    if cfg.task_spec.sequence:
        return sequence_applies(model)
    return cfg.task_spec.token_pair and fast_applies(model)


def fast_forward(model: HookedTransformer, cfg: "TrainConfig", inputs: Tensor) -> Tensor:
    """The fast path's logits at the task's answer positions (where ``fast_path_applies``)."""
    if cfg.task_spec.sequence:
        return sequence_logits(model, inputs, cfg.task_spec.answer_positions)
    return fast_logits(model, inputs[:, 0], inputs[:, 1], cfg.eq_token)


def fast_train_loss(model: HookedTransformer, cfg: "TrainConfig", inputs: Tensor, labels: Tensor) -> Tensor:
    """The fast path's training loss (float64 softmax cross-entropy over the answer tokens)."""
    if cfg.task_spec.sequence:
        return loss_fn(sequence_logits(model, inputs, cfg.task_spec.answer_positions), labels)
    return fast_loss(model, inputs[:, 0], inputs[:, 1], labels, cfg.eq_token)


def check(cfg: "TrainConfig") -> tuple[str, str] | None:
    """``(field, why)`` for a config the transformer cannot take: a task without tokens, an MLP-only option."""
    if cfg.task_spec.d_vocab(cfg) < 1:
        return "family", f"the transformer reads tokens; {cfg.task} has real-valued inputs (use --family mlp)"
    if cfg.act_fn == "tanh":
        return "act_fn", "the transformer's MLP uses relu or gelu"
    if cfg.d_model % cfg.n_heads:
        return "n_heads", f"must divide d_model = {cfg.d_model}"
    for name, default in MLP_DEFAULTS.items():
        if getattr(cfg, name) != default:
            return name, "is an option of the mlp family (--family mlp); this run trains the transformer"
    return None
