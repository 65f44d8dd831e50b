"""The model: always a TransformerLens ``HookedTransformer``, plus a fast path for training.

``build_model`` creates the Nanda et al. 1-layer transformer from a ``TrainConfig``.
``fast_logits`` computes exactly what ``model(inputs)[:, -1]`` computes, from the very same
parameters, but only for the ``=`` position, with everything that does not depend on the example
done once per token (``_tables``). ``fast_loss`` is training's loss on top of it: the MLP,
unembedding and float64 cross-entropy with their gradient computed chunk by chunk in the forward.
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


def build_model(cfg: TrainConfig) -> HookedTransformer:
    """A freshly initialised ``HookedTransformer`` (seeded with ``cfg.seed``), biases frozen if asked.

    For a task that is not modular arithmetic (``cfg.model_kind == "mlp"``: digits) it is the
    ``interp.mlp.DigitsMLP`` instead, built with the same conventions.

    Every initial parameter is multiplied by ``cfg.init_scale`` (the biases start at zero, so this
    scales the weights). The global RNG state is restored afterwards: building a model has no side
    effect on seeding.
    """
    if cfg.model_kind == "mlp":
        from interp.mlp import build_mlp

        return build_mlp(cfg)
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


def to_device(model: torch.nn.Module, device: torch.device | str) -> torch.nn.Module:
    """``model`` moved to ``device`` in place (quietly: ``HookedTransformer.to`` prints by default)."""
    if isinstance(model, HookedTransformer):
        return model.to(device, print_details=False)
    return model.to(device)


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


FLOAT32_TINY = torch.finfo(torch.float32).tiny  # smallest normal float32; below it are the slow denormals


def float32_grad(g: Float[Tensor, "... classes"]) -> Float[Tensor, "... classes"]:
    """A float64 loss gradient cast to float32, with every entry smaller than ``FLOAT32_TINY`` in
    magnitude set to 0 first, so that the cast makes no denormal numbers (``interp.speed``: they
    would slow every later multiply by several times on x86; the rounding is what flush-to-zero
    does). Modifies ``g`` in place."""
    return g.masked_fill_(g.abs() < FLOAT32_TINY, 0.0).float()


CHUNK_ROWS = 2048  # fast_loss's chunk: its [rows, d_mlp] activations stay in cache from forward to backward


class _Chunk:
    """Rows ``start:end`` of a ``_Batch``, with the transposed layout its backward needs: for every
    table row, which of the chunk's examples use it (``cols_t``, grouped by ``offsets_t``)."""

    def __init__(self, cols: Tensor, start: int, end: int, n_rows: int):
        self.start, self.end = start, end
        self.cols = cols[start:end]
        self.shape = (end - start, n_rows)

    @functools.cached_property
    def crow(self) -> Tensor:
        return torch.arange(0, self.cols.numel() + 1, self.cols.shape[1], device=self.cols.device)

    @functools.cached_property
    def perm(self) -> Tensor:
        return torch.argsort(self.cols.flatten(), stable=True)

    @functools.cached_property
    def cols_t(self) -> Tensor:
        return torch.arange(self.shape[0], device=self.cols.device).repeat_interleave(self.cols.shape[1])[self.perm]

    @functools.cached_property
    def offsets_t(self) -> Tensor:
        counts = torch.bincount(self.cols.flatten(), minlength=self.shape[1])
        return torch.cat([counts.new_zeros(1), counts.cumsum(0)[:-1]])

    def mix(self, weights: Tensor, table: Tensor) -> Tensor:
        """``out[n] = sum_k weights[n, k] * table[cols[n, k]]``, a sparse ``[rows, table rows] @ table``."""
        return F.embedding_bag(self.cols, table, mode="sum", per_sample_weights=weights)

    def table_grad(self, weights_t: Tensor, grad: Tensor) -> Tensor:
        """Gradient of ``mix`` for the table: the same sum over the transposed layout.

        ``weights_t`` is ``weights.flatten()[self.perm]``, the weights in the transposed order.
        """
        return F.embedding_bag(self.cols_t, grad, self.offsets_t, mode="sum", per_sample_weights=weights_t)

    def weights_grad(self, weights: Tensor, grad: Tensor, table: Tensor) -> Tensor:
        """Gradient of ``mix`` for the weights: one dot product per (example, row) pair."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta.*")
            pattern = torch.sparse_csr_tensor(self.crow, self.cols.flatten(), weights.flatten(), self.shape, check_invariants=False)
        return torch.sparse.sampled_addmm(pattern, grad, table.T, beta=0.0).values().view_as(weights)


class _Batch:
    """Index tables for a fixed batch of ``[a, b, =]`` inputs.

    Per-token tables have ``2 * d_vocab + 1`` rows (a token at position 0, a token at position 1,
    the ``=`` token); ``token_rows`` picks each example's three. The MLP-input and logit tables have
    one such block per head and a last row that every example shares: example ``n`` mixes
    ``K = 3 * n_heads + 1`` of their rows, ``cols[n]``, weighted by its attention pattern.
    """

    def __init__(self, a: Tensor, b: Tensor, n_heads: int, d_vocab: int, chunk_rows: int):
        n, block = a.shape[0], 2 * d_vocab + 1
        self.a, self.b, self.key = a.clone(), b.clone(), (n_heads, d_vocab, chunk_rows)
        dev = a.device
        self.token_rows = torch.cat([a, d_vocab + b, torch.full((n,), 2 * d_vocab, device=dev)])  # [3 * batch]
        base = torch.arange(n_heads, device=dev) * block
        per_head = torch.stack([base + a[:, None], base + d_vocab + b[:, None], (base + 2 * d_vocab).expand(n, -1)], -1)
        n_rows = n_heads * block + 1
        cols = torch.cat([per_head.flatten(1), torch.full((n, 1), n_rows - 1, device=dev)], 1)  # [batch, K]
        self.chunks = [_Chunk(cols, s, min(s + chunk_rows, n), n_rows) for s in range(0, n, chunk_rows)]
        self.all = self.chunks[0] if len(self.chunks) == 1 else _Chunk(cols, 0, n, n_rows)

    def matches(self, a: Tensor, b: Tensor, key: tuple) -> bool:
        return self.key == key and torch.equal(self.a, a) and torch.equal(self.b, b)


_BATCHES: list[_Batch] = []  # the few most recent batches: training reuses one every step


def _batch(a: Tensor, b: Tensor, n_heads: int, d_vocab: int, chunk_rows: int = CHUNK_ROWS) -> _Batch:
    key = (n_heads, d_vocab, chunk_rows)
    for i, batch in enumerate(_BATCHES):
        if batch.matches(a, b, key):
            _BATCHES.insert(0, _BATCHES.pop(i))
            return batch
    _BATCHES.insert(0, _Batch(a, b, *key))
    del _BATCHES[4:]
    return _BATCHES[0]


def _tables(model: HookedTransformer, batch: _Batch, eq_token: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Everything of ``model``'s forward that is per token, not per example.

    Returns the attention pattern of the ``=`` query as mixing weights ``[batch, K]``, the MLP-input
    table ``[rows, d_mlp]``, the logit table ``[rows, d_vocab_out]`` (the attention output's path
    around the MLP) and ``W_L.T = (W_out @ W_U).T``.
    """
    blk = model.blocks[0]
    attn, mlp = blk.attn, blk.mlp
    n = batch.a.shape[0]
    # Residual stream before the block for each (token, position) the '=' query attends to:
    # every token at positions 0 and 1, then '=' at position 2.  [2 * vocab + 1, d_model]
    x_eq = model.W_E[eq_token] + model.W_pos[2]
    x = torch.cat([(model.W_E[None] + model.W_pos[:2, None]).flatten(0, 1), x_eq[None]])
    q = torch.einsum("d,hde->he", x_eq, attn.W_Q) + attn.b_Q  # the same query for every example
    k = torch.einsum("rd,hde->hre", x, attn.W_K) + attn.b_K[:, None]  # [h, rows, d_head]
    v = torch.einsum("rd,hde->hre", x, attn.W_V) + attn.b_V[:, None]
    scores = torch.einsum("hre,he->hr", k, q) / attn.attn_scale  # [h, rows]
    # key position before batch: a softmax over an axis of 3 is many times faster when it is not the last
    pattern = scores.index_select(1, batch.token_rows).view(-1, 3, n).softmax(dim=1)  # [h, 3, batch]
    weights = torch.cat([pattern.permute(2, 0, 1).flatten(1), pattern.new_ones(n, 1)], 1)  # [batch, K]
    # resid_mid = x_eq + b_O + sum_h pattern_h . v_h @ W_O[h]; it only ever meets W_in and W_U.
    resid_base = x_eq + attn.b_O  # the part shared by all examples
    to_mlp = torch.cat([torch.bmm(v, torch.einsum("hed,dm->hem", attn.W_O, mlp.W_in)).flatten(0, 1),
                        (resid_base @ mlp.W_in + mlp.b_in)[None]])
    to_logits = torch.cat([torch.bmm(v, torch.einsum("hed,dv->hev", attn.W_O, model.W_U)).flatten(0, 1),
                           ((resid_base + mlp.b_out) @ model.W_U + model.b_U)[None]])
    # The MLP output only feeds W_U: fold W_L = W_out @ W_U, kept transposed and contiguous.
    W_L_T = model.W_U.T @ mlp.W_out.T  # [d_vocab_out, d_mlp]
    return weights, to_mlp, to_logits, W_L_T


def fast_logits(
    model: HookedTransformer, a: Int[Tensor, "batch"], b: Int[Tensor, "batch"], eq_token: int
) -> Float[Tensor, "batch d_vocab_out"]:
    """Logits at the ``=`` position of ``[a, b, =]``, equal to ``model(inputs)[:, -1]``.

    Only the ``=`` position is computed. Its query is the same for every example, so keys, values
    and scores are computed once per token. What the attention output adds to the MLP input and to
    the logits is linear in the pattern, so it is tabulated per token and head too (``W_O`` folded
    into ``W_in`` and ``W_U``) and each example mixes 13 table rows weighted by its pattern, instead
    of a ``[batch, d_model] @ [d_model, d_mlp]`` multiply. ``W_out`` is folded into ``W_U``, so the
    one dense multiply left is ``relu(pre) @ W_L``. Differentiable (through ``embedding_bag``), but
    training uses ``fast_loss``, which is faster.

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
    batch = _batch(a, b, model.cfg.n_heads, model.cfg.d_vocab)
    weights, to_mlp, to_logits, W_L_T = _tables(model, batch, eq_token)
    post = batch.all.mix(weights, to_mlp).relu_()  # [batch, d_mlp]
    return torch.addmm(batch.all.mix(weights, to_logits), post, W_L_T.T)


class _HeadLoss(torch.autograd.Function):
    """Mean float64 cross-entropy of ``mix(to_logits) + relu(mix(to_mlp)) @ W_L``, with its gradient.

    The gradient is computed in the forward, chunk by chunk, while each chunk's activations are
    still in cache; the backward only scales it. One pass over the batch instead of autograd's two.
    The saved gradient is a constant to autograd, so the function is differentiable once only: a
    backward that builds a graph for a second derivative (``create_graph=True``) raises, instead of
    silently leaving this part out of a Hessian-vector product. (``torch.autograd.function.once_differentiable``
    does not catch that case: it only refuses when the incoming gradient itself requires grad.)
    """

    @staticmethod
    def forward(ctx, weights: Tensor, to_mlp: Tensor, to_logits: Tensor, W_L_T: Tensor, labels: Tensor, batch: _Batch) -> Tensor:
        n = labels.shape[0]
        g_weights, g_mlp, g_logits, g_W_L_T = torch.empty_like(weights), 0, 0, 0
        total = torch.zeros((), dtype=torch.float64, device=labels.device)
        for c in batch.chunks:
            w, y = weights[c.start : c.end], labels[c.start : c.end, None]
            post = c.mix(w, to_mlp).relu_()
            logp = torch.addmm(c.mix(w, to_logits), post, W_L_T.T).double().log_softmax(-1)
            total -= logp.gather(-1, y).sum()
            # d loss / d logits = (softmax - onehot) / n
            g = float32_grad(logp.exp_().scatter_add_(-1, y, logp.new_full(y.shape, -1.0)).div_(n))
            g_W_L_T = g_W_L_T + g.T @ post
            g_pre = torch.ops.aten.threshold_backward(g @ W_L_T, post, 0)  # relu's backward
            g_weights[c.start : c.end] = c.weights_grad(w, g_pre, to_mlp) + c.weights_grad(w, g, to_logits)
            w_t = w.flatten()[c.perm]
            g_mlp = g_mlp + c.table_grad(w_t, g_pre)
            g_logits = g_logits + c.table_grad(w_t, g)
        ctx.save_for_backward(g_weights, g_mlp, g_logits, g_W_L_T)
        return total / n

    @staticmethod
    def backward(ctx, grad: Tensor):
        if torch.is_grad_enabled():  # create_graph=True: the caller wants to differentiate the gradient
            raise RuntimeError("fast_loss is differentiable once only (its gradient is computed in the forward); "
                               "for second derivatives use loss_fn(hooked_logits(model, tokens), labels)")
        if grad.item() == 1.0:  # loss.backward(): the gradient is the one already computed
            return *ctx.saved_tensors, None, None
        return *(g * grad.to(g.dtype) for g in ctx.saved_tensors), None, None


def fast_loss(
    model: HookedTransformer, a: Int[Tensor, "batch"], b: Int[Tensor, "batch"], labels: Int[Tensor, "batch"],
    eq_token: int, chunk_rows: int = CHUNK_ROWS,
) -> Tensor:
    """``loss_fn(fast_logits(model, a, b, eq_token), labels)`` and its gradient, faster: training's loss.

    The per-token part goes through autograd as in ``fast_logits``; the per-example part (MLP,
    unembedding, float64 cross-entropy) computes its gradient in the forward, ``chunk_rows``
    examples at a time (``_HeadLoss``). Differentiable once (no Hessian-vector products). With a
    hook attached to ``model`` it is ``loss_fn`` of ``HookedTransformer.forward``'s logits instead.
    """
    if has_hooks(model):
        return loss_fn(hooked_logits(model, _tokens(a, b, eq_token)), labels)
    batch = _batch(a, b, model.cfg.n_heads, model.cfg.d_vocab, chunk_rows)
    return _HeadLoss.apply(*_tables(model, batch, eq_token), labels, batch)


def hooked_logits(model: HookedTransformer, inputs: Int[Tensor, "batch 3"]) -> Float[Tensor, "batch d_vocab_out"]:
    """Logits at the last position through ``HookedTransformer.forward`` (the reference path)."""
    return model(inputs)[:, -1]


def loss_fn(logits: Float[Tensor, "batch d_vocab_out"], labels: Int[Tensor, "batch"]) -> Tensor:
    """Mean cross-entropy with the log-softmax in float64 (avoids slingshot spikes)."""
    return F.cross_entropy(logits.to(torch.float64), labels)


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


def mse_loss(logits: Float[Tensor, "batch d_vocab_out"], labels: Int[Tensor, "batch"]) -> Tensor:
    """Mean squared error between the logits and one-hot targets, averaged over examples and classes
    (``torch.nn.MSELoss`` on one-hot targets, as Omnigrok trains its MLPs), in float64."""
    x = logits.to(torch.float64)
    return (x - F.one_hot(labels, x.shape[-1]).to(torch.float64)).square().mean()


def criterion(name: str):
    """The loss function named by ``TrainConfig.loss``: ``loss_fn`` ('softmax'), ``stablemax_loss`` or ``mse_loss``."""
    return {"softmax": loss_fn, "stablemax": stablemax_loss, "mse": mse_loss}[name]
