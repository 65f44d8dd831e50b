"""The fast forward and loss of the 1-layer ``[a, b, =]`` transformer, for a stack of M models at once.

One kernel serves both training paths: ``interp.model.fast_logits``/``fast_loss`` (one run: a stack of
one, sharing the model's parameters through views) and ``interp.stack`` (a pack of runs with every
parameter stacked along a leading member axis, ``W_E [M, d_vocab, d_model]``).

Only the ``=`` position is computed. Its query is the same for every example, so keys, values and
scores are computed once per token (``stacked_tables``); what the attention output adds to the MLP
input and to the logits is linear in the pattern, so it is tabulated per (head, token row) with
``W_O`` folded into ``W_in`` and ``W_U``, and each example mixes ``3 * n_heads`` table rows weighted by
its attention pattern (``embedding_bag``) instead of multiplying ``[n, d_model]`` by ``W_in``.
``W_out`` is folded into ``W_U``. The per-example part and the float64 cross-entropy (``_HeadLoss``)
compute their gradient in the forward, member by member and ``CHUNK_ROWS`` examples at a time, so
that a chunk's activations stay in cache from the forward to the gradient.

Parameters are passed as a dict by ``HookedTransformer`` name without the ``blocks.0.`` prefix
(``short_name``), each with the member axis first, biases included (zeros where frozen).
"""

from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from torch.autograd.function import once_differentiable

FLOAT32_TINY = torch.finfo(torch.float32).tiny  # smallest normal float32; below it are the slow denormals


def float32_grad(g: Float[Tensor, "... classes"]) -> Float[Tensor, "... classes"]:
    """A float64 loss gradient cast to float32, with every entry smaller than ``FLOAT32_TINY`` in
    magnitude set to 0 first, so that the cast makes no denormal numbers (``interp.speed``: they
    would slow every later multiply by several times on x86; the rounding is what flush-to-zero
    does). Modifies ``g`` in place."""
    return g.masked_fill_(g.abs() < FLOAT32_TINY, 0.0).float()


CHUNK_ROWS = 2048  # fast_loss's chunk: its [rows, d_mlp] activations stay in cache from forward to backward


class _Chunk:
    """Examples ``start:end`` of one member's batch: the table rows each mixes (``cols``), with the
    transposed layout the backward needs: for every table row, which of the chunk's examples use it
    (``cols_t``, grouped by ``offsets_t``)."""

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


# ---- the stacked forward ---------------------------------------------------------------------
class _Mix(torch.autograd.Function):
    """``_Chunk.mix`` with ``_Chunk``'s backward (the table gradient by ``embedding_bag`` over the
    transposed layout, the weights' gradient by ``sampled_addmm``), several times faster than autograd's."""

    @staticmethod
    def forward(ctx, weights: Tensor, table: Tensor, chunk: _Chunk) -> Tensor:
        ctx.save_for_backward(weights, table)
        ctx.chunk = chunk
        return chunk.mix(weights, table)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        weights, table = ctx.saved_tensors
        c, grad = ctx.chunk, grad.contiguous()
        g_weights = c.weights_grad(weights, grad, table) if ctx.needs_input_grad[0] else None
        g_table = c.table_grad(weights.flatten()[c.perm], grad) if ctx.needs_input_grad[1] else None
        return g_weights, g_table, None


def table_rows(n_heads: int, d_vocab: int) -> int:
    """Rows of a member's MLP-input and logit tables: per head, a token at position 0, at position 1
    and '=' (``2 * d_vocab + 1``), and one last row that every example shares."""
    return n_heads * (2 * d_vocab + 1) + 1


def token_cols(a: Int[Tensor, "n"], b: Int[Tensor, "n"], n_heads: int, d_vocab: int) -> Int[Tensor, "n K"]:
    """The ``K = 3 * n_heads + 1`` table rows example ``[a, b, =]`` mixes: its three tokens' rows in
    each head's block, then the shared last row."""
    n, block, dev = a.shape[0], 2 * d_vocab + 1, a.device
    base = torch.arange(n_heads, device=dev) * block
    per_head = torch.stack([base + a[:, None], base + d_vocab + b[:, None], (base + 2 * d_vocab).expand(n, -1)], -1)
    return torch.cat([per_head.flatten(1), torch.full((n, 1), table_rows(n_heads, d_vocab) - 1, device=dev)], 1)


class Layout:
    """Which table rows each example mixes, built once for a fixed batch ``a, b [M, n]``: for each
    member, ``_Chunk``s of at most ``chunk_rows`` of its ``n_real[m]`` real (unpadded) examples
    (``chunks``), and one chunk of all of them (``all``)."""

    def __init__(self, a: Tensor, b: Tensor, n_real: list[int], n_heads: int, d_vocab: int, chunk_rows: int = CHUNK_ROWS):
        rows = table_rows(n_heads, d_vocab)
        self.chunks, self.all = [], []
        for m, n in enumerate(n_real):
            cols = token_cols(a[m, :n], b[m, :n], n_heads, d_vocab)
            self.chunks.append([_Chunk(cols, s, min(s + chunk_rows, n), rows) for s in range(0, n, chunk_rows)])
            self.all.append(self.chunks[m][0] if len(self.chunks[m]) == 1 else _Chunk(cols, 0, n, rows))


def stacked_tables(
    P: dict[str, Tensor], a: Int[Tensor, "M n"], b: Int[Tensor, "M n"], eq_token: int, attn_scale: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Everything of every member's forward that is per token, not per example.

    Args:
        P: stacked parameters by ``short_name`` (``W_E [M, d_vocab, d_model]``, ``attn.W_Q [M,
            n_heads, d_model, d_head]``, ...), biases included (zeros where frozen).
        a, b: ``[M, n]`` operand tokens, per member.
        eq_token: token id of ``=``.
        attn_scale: the attention's score divisor (``sqrt(d_head)``).
    Returns:
        ``weights [M, n, K]`` (each example's attention pattern, then 1 for the shared row: the mixing
        weights of ``token_cols``), ``to_mlp [M, rows, d_mlp]`` and ``to_logits [M, rows,
        d_vocab_out]`` (what each (head, token row) adds to the MLP input and, around the MLP, to the
        logits; the last row is the part every example shares) and ``W_L_T = (W_out @ W_U).T [M,
        d_vocab_out, d_mlp]``.
    """
    W_E, W_pos = P["W_E"], P["W_pos"]
    M, V, _ = W_E.shape
    n_heads, n = P["attn.W_Q"].shape[1], a.shape[1]
    # residual stream of every (token, position) the '=' query attends to: rows a, V + b and 2V ('=')
    x_eq = W_E[:, eq_token] + W_pos[:, 2]  # [M, d]
    x = torch.cat([W_E + W_pos[:, 0, None], W_E + W_pos[:, 1, None], x_eq[:, None]], 1)  # [M, R, d]
    q = torch.einsum("md,mhde->mhe", x_eq, P["attn.W_Q"]) + P["attn.b_Q"]  # the same query for every example
    k = torch.einsum("mrd,mhde->mhre", x, P["attn.W_K"]) + P["attn.b_K"][:, :, None]
    v = torch.einsum("mrd,mhde->mhre", x, P["attn.W_V"]) + P["attn.b_V"][:, :, None]
    scores = torch.einsum("mhre,mhe->mhr", k, q) / attn_scale  # [M, h, R]
    rows = torch.cat([a, V + b, torch.full_like(a, 2 * V)], 1)  # [M, 3n]
    picked = scores.gather(2, rows[:, None, :].expand(-1, n_heads, -1))
    # key position before batch: a softmax over an axis of 3 is many times faster when it is not the last
    pattern = picked.view(M, n_heads, 3, n).softmax(2)  # [M, h, 3, n]
    weights = torch.cat([pattern.permute(0, 3, 1, 2).flatten(2), pattern.new_ones(M, n, 1)], 2)  # [M, n, K]
    # resid_mid = x_eq + b_O + sum_h pattern_h . v_h @ W_O[h]; it only ever meets W_in and W_U.
    base = x_eq + P["attn.b_O"]  # [M, d]
    W_OI = torch.einsum("mhed,mdf->mhef", P["attn.W_O"], P["mlp.W_in"])
    W_OU = torch.einsum("mhed,mdc->mhec", P["attn.W_O"], P["W_U"])
    to_mlp = torch.cat([torch.einsum("mhre,mhef->mhrf", v, W_OI).flatten(1, 2),
                        (torch.einsum("md,mdf->mf", base, P["mlp.W_in"]) + P["mlp.b_in"])[:, None]], 1)
    to_logits = torch.cat([torch.einsum("mhre,mhec->mhrc", v, W_OU).flatten(1, 2),
                           (torch.einsum("md,mdc->mc", base + P["mlp.b_out"], P["W_U"]) + P["b_U"])[:, None]], 1)
    # The MLP output only feeds W_U: fold W_L = W_out @ W_U, kept transposed and contiguous.
    W_L_T = torch.bmm(P["W_U"].transpose(1, 2), P["mlp.W_out"].transpose(1, 2))
    return weights, to_mlp, to_logits, W_L_T


def stacked_logits(
    P: dict[str, Tensor], a: Int[Tensor, "M n"], b: Int[Tensor, "M n"], eq_token: int, attn_scale: float,
    layout: Layout | None = None,
) -> Float[Tensor, "M n d_vocab_out"]:
    """Logits at the ``=`` position of ``[a, b, =]`` for every member, ``model(inputs)[:, -1]`` each.

    Arguments as ``stacked_tables``; ``layout`` is ``Layout`` of this ``a, b`` if already built.
    Returns ``[M, n, d_vocab_out]`` float32 logits. Differentiable; training uses ``stacked_loss``.
    """
    weights, to_mlp, to_logits, W_L_T = stacked_tables(P, a, b, eq_token, attn_scale)
    M, n = a.shape
    layout = layout or Layout(a, b, [n] * M, P["attn.W_Q"].shape[1], P["W_E"].shape[1])
    out = []
    for m in range(M):
        c = layout.all[m]
        post = _Mix.apply(weights[m], to_mlp[m], c).relu()
        out.append(torch.addmm(_Mix.apply(weights[m], to_logits[m], c), post, W_L_T[m].T))
    return torch.stack(out)


@torch.no_grad()
def stacked_post(
    P: dict[str, Tensor], a: Int[Tensor, "M n"], b: Int[Tensor, "M n"], eq_token: int, attn_scale: float,
    layout: Layout | None = None,
) -> Float[Tensor, "M n d_mlp"]:
    """The MLP activations (``blocks.0.mlp.hook_post``) at the ``=`` position for every member, from the
    same tables as ``stacked_logits`` (arguments as there; not differentiable)."""
    weights, to_mlp, _, _ = stacked_tables(P, a, b, eq_token, attn_scale)
    M, n = a.shape
    layout = layout or Layout(a, b, [n] * M, P["attn.W_Q"].shape[1], P["W_E"].shape[1])
    return torch.stack([_Mix.apply(weights[m], to_mlp[m], layout.all[m]).relu() for m in range(M)])


class _HeadLoss(torch.autograd.Function):
    """Each member's weighted float64 cross-entropy of ``stacked_logits``' per-example part, with its
    gradient computed in the forward.

    The work goes member by member and ``CHUNK_ROWS`` examples at a time, so that a chunk's
    activations stay in cache from the forward to the gradient; a member's padding is skipped.
    Each chunk: mix its table rows, ReLU, ``addmm`` by ``W_L_T.T``, log-softmax in float64 and
    straight back, without autograd's bookkeeping; one pass over the batch instead of autograd's two.
    The saved gradient is a constant to autograd, so the function is differentiable once only: a
    backward that builds a graph for a second derivative raises, instead of silently leaving this
    part out of a Hessian-vector product (``once_differentiable`` does not catch that case).
    """

    @staticmethod
    def forward(ctx, weights: Tensor, to_mlp: Tensor, to_logits: Tensor, W_L_T: Tensor, labels: Tensor,
                example_weights: Tensor, layout: Layout, live: list[bool] | None) -> Tensor:
        M = labels.shape[0]
        loss = torch.zeros(M, dtype=torch.float64, device=labels.device)
        g_weights, g_mlp, g_logits, g_W_L_T = (torch.zeros_like(t) for t in (weights, to_mlp, to_logits, W_L_T))
        for m in range(M):
            if live is not None and not live[m]:  # a stopped or failed member costs nothing here (its gradient stays 0)
                continue
            T_mlp, T_logits, W = to_mlp[m], to_logits[m], W_L_T[m]
            for c in layout.chunks[m]:
                w, y, ew = weights[m, c.start : c.end], labels[m, c.start : c.end, None], example_weights[m, c.start : c.end, None]
                post = c.mix(w, T_mlp).relu_()
                logp = torch.addmm(c.mix(w, T_logits), post, W.T).double().log_softmax(-1)
                loss[m] -= (logp.gather(-1, y) * ew).sum()
                # d loss_m / d logits = (softmax - onehot) * the example's weight (1 / n_m)
                g = float32_grad(logp.exp_().scatter_add_(-1, y, logp.new_full(y.shape, -1.0)).mul_(ew))
                g_W_L_T[m] += g.T @ post
                g_pre = torch.ops.aten.threshold_backward(g @ W, post, 0)  # relu's backward
                g_weights[m, c.start : c.end] = c.weights_grad(w, g_pre, T_mlp) + c.weights_grad(w, g, T_logits)
                w_t = w.flatten()[c.perm]
                g_mlp[m] += c.table_grad(w_t, g_pre)
                g_logits[m] += c.table_grad(w_t, g)
        ctx.save_for_backward(g_weights, g_mlp, g_logits, g_W_L_T)
        return loss

    @staticmethod
    def backward(ctx, grad: Tensor):
        if torch.is_grad_enabled():  # create_graph=True: the caller wants to differentiate the gradient
            raise RuntimeError("fast_loss and the stacked loss are differentiable once only (their gradient is computed in the "
                               "forward); for second derivatives use loss_fn(hooked_logits(model, tokens), labels)")
        saved = ctx.saved_tensors
        if not bool((grad == 1).all()):  # d (sum_m c_m loss_m): scale each member's part by its c_m
            c = grad.float()
            saved = tuple(t * c.view(-1, *([1] * (t.dim() - 1))) for t in saved)
        return *saved, None, None, None, None


def stacked_loss(
    P: dict[str, Tensor], a: Int[Tensor, "M n"], b: Int[Tensor, "M n"], labels: Int[Tensor, "M n"],
    example_weights: Float[Tensor, "M n"], eq_token: int, attn_scale: float, layout: Layout | None = None,
    live: list[bool] | None = None,
) -> Float[Tensor, "M"]:
    """``[M]`` each member's float64 cross-entropy ``sum_i example_weights[m, i] * nll[m, i]`` of
    ``stacked_logits`` (weights ``1 / n_m``, 0 on padding, give the mean over its training set).
    Differentiable once; the per-example part's gradient is computed in the forward (``_HeadLoss``).
    Members with ``live[m]`` false are skipped: loss 0 and no gradient from their examples."""
    weights, to_mlp, to_logits, W_L_T = stacked_tables(P, a, b, eq_token, attn_scale)
    if layout is None:
        n_real = (example_weights > 0).sum(1).tolist()  # padding comes last and has weight 0
        layout = Layout(a, b, n_real, P["attn.W_Q"].shape[1], P["W_E"].shape[1])
    return _HeadLoss.apply(weights, to_mlp, to_logits, W_L_T, labels, example_weights, layout, live)


def short_name(name: str) -> str:
    """``stacked_logits``' key of a parameter: ``blocks.0.attn.W_Q`` -> ``attn.W_Q``, ``unembed.W_U`` -> ``W_U``."""
    return name.removeprefix("blocks.0.") if name.startswith("blocks.0.") else name.rsplit(".", 1)[-1]


def lone_params(model) -> dict[str, Tensor]:
    """A ``HookedTransformer``'s parameters as a stack of one (``[1, ...]`` views: gradients reach the
    model's own parameters), by ``short_name``."""
    return {short_name(n): p.unsqueeze(0) for n, p in model.named_parameters()}


_LAYOUTS: list[tuple[tuple, Tensor, Tensor, Layout]] = []  # the few most recent: training reuses one every step


def cached_layout(a: Int[Tensor, "n"], b: Int[Tensor, "n"], n_heads: int, d_vocab: int, chunk_rows: int = CHUNK_ROWS) -> Layout:
    """``Layout`` of one member's batch ``a, b``, built once and reused while the same batch comes back."""
    key = (n_heads, d_vocab, chunk_rows, a.device)
    for i, (k, a0, b0, layout) in enumerate(_LAYOUTS):
        if k == key and torch.equal(a0, a) and torch.equal(b0, b):
            _LAYOUTS.insert(0, _LAYOUTS.pop(i))
            return layout
    layout = Layout(a[None], b[None], [a.shape[0]], n_heads, d_vocab, chunk_rows)
    _LAYOUTS.insert(0, (key, a.clone(), b.clone(), layout))
    del _LAYOUTS[4:]
    return layout
