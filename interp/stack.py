"""Train several runs of equal tensor shapes together, as one stack of parameters.

A *pack* is a list of ``(TrainConfig, run directory)`` members that share the task, p, model sizes,
trainable parameters and schedule (``pack_key``). Everything else may differ per member: model and
data seeds, training-set size, label noise, learning rate, weight decay, betas, warm-up. Each
parameter tensor of the ``HookedTransformer`` gets a leading member axis (``W_E`` is
``[member, d_vocab, d_model]``), so one batched forward, one backward and one AdamW step train
every member at once: the per-step Python and kernel-launch overhead that dominates a small run is
paid once per pack instead of once per run.

What a member computes is what the same config computes alone in ``interp.train``: the same
initial weights (each member's model is built by ``interp.runs.init_model``: the seeded init, or the
checkpoint ``init_from`` names), the same full-batch
float64 cross-entropy on its own training set, the same AdamW update (``adamw_step`` is torch's
formula with per-member hyper-parameters). Members with fewer training examples are padded to the
largest and the padding carries zero weight in the loss. ``tests/test_stack.py`` checks losses,
gradients and weights after 50 steps against ``interp.train`` and ``HookedTransformer.forward``.

The forward uses the fast path's ideas (``interp.model``): only the ``=`` position is computed;
keys, values and scores are computed once per token, not per example; each example's attention
output is a mix of per-token rows weighted by its attention pattern (``embedding_bag``). The
per-token part (``stacked_tables``) is batched over members; the per-example part and the float64
cross-entropy (``_HeadLoss``) compute their gradient in the forward, member by member and chunk by
chunk so that the activations stay in cache, as the fast path's ``fast_loss`` does for one run.

Every member writes an ordinary run directory, in exactly the files ``interp.train`` writes
(config, split, metrics, checkpoints, and resume state with the AdamW moments under the same
names), so ``interp.train --resume``, ``interp.analyze`` and ``interp.report`` work on it, and a pack
can resume members that were saved by ``interp.train`` and vice versa.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from einops import rearrange
from jaxtyping import Float, Int
from torch import Tensor
from torch.autograd.function import once_differentiable

from interp import prune, runs
from interp.config import GROK_ACC, TrainConfig
from interp.device import describe
from interp.model import CHUNK_ROWS, _Chunk, build_model, float32_grad
from interp.runs import RunError
from interp.speed import flush_denormals
from interp.tasks import Dataset, make_dataset
from interp.train import load_state, lr_at, make_optimizer, split_metrics, state_tensors

log = logging.getLogger(__name__)

# Fields that must be equal within a pack: they fix tensor shapes, which parameters train, and the
# schedule. Every other TrainConfig field may differ between the members of a pack.
SHAPE_FIELDS = ("task", "p", "d_model", "n_heads", "d_mlp", "freeze_biases", "steps", "eval_every", "save_every", "adam_eps")


def stackable(cfg: TrainConfig) -> bool:
    """Whether ``cfg`` can train in a stack (else the sweep trains it alone with ``interp.train``).

    The stack implements the fast path's model (1 layer, ``[a, b, =]``), the softmax cross-entropy
    and plain AdamW; ``init_scale`` is part of the initial weights, so it stacks too, and so does
    ``mask_from`` (each member its own masks, or none). Gradient filters, StableMax, MSE, ⊥AdamW,
    fixed-norm training, mini-batches, other model shapes (layers, LayerNorm, GELU), the hooked
    engine and the digits MLP train alone.
    """
    return (cfg.model_kind == "transformer" and cfg.engine != "hooked" and cfg.grad_filter == "none" and cfg.loss == "softmax"
            and cfg.optimizer == "adamw" and not cfg.fixed_norm and cfg.full_batch
            and (cfg.n_layers, cfg.normalization, cfg.act_fn) == (1, "none", "relu"))


def pack_key(cfg: TrainConfig, start_step: int = 0) -> tuple:
    """Members with equal keys can share a pack (also the step they resume from)."""
    return (*(getattr(cfg, f) for f in SHAPE_FIELDS), start_step)


# ---- the stacked forward ---------------------------------------------------------------------
class _Mix(torch.autograd.Function):
    """``out[i] = sum_k weights[i, k] * table[cols[i, k]]`` with the fast path's backward
    (``interp.model._Chunk``: the table gradient by ``embedding_bag`` over the transposed layout,
    the weights' gradient by ``sampled_addmm``), several times faster than autograd's."""

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


def mix_layout(a: Int[Tensor, "M n"], b: Int[Tensor, "M n"], n_heads: int, d_vocab: int) -> _Chunk:
    """The rows each example mixes in ``stacked_logits``' tables: ``3 * n_heads`` per example, in
    ``[M * n_heads * (2 * d_vocab + 1)]`` stacked rows (a pack caches it for its fixed batch)."""
    M, n = a.shape
    R = 2 * d_vocab + 1
    rows = torch.stack([a, d_vocab + b, torch.full_like(a, 2 * d_vocab)], -1)  # [M, n, 3]
    member_head = (torch.arange(M, device=a.device)[:, None] * n_heads + torch.arange(n_heads, device=a.device)) * R
    cols = rearrange(member_head[:, None, :, None] + rows[:, :, None, :], "m n h j -> (m n) (h j)")
    return _Chunk(cols.contiguous(), 0, M * n, M * n_heads * R)


def stacked_tables(
    P: dict[str, Tensor], a: Int[Tensor, "M n"], b: Int[Tensor, "M n"], eq_token: int, attn_scale: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Everything of every member's forward that is per token, not per example (as ``interp.model._tables``).

    Args:
        P: stacked parameters by ``HookedTransformer`` name without the ``blocks.0.`` prefix
            (``W_E [M, d_vocab, d_model]``, ``attn.W_Q [M, n_heads, d_model, d_head]``, ...),
            biases included (zeros where frozen).
        a, b: ``[M, n]`` operand tokens, per member.
        eq_token: token id of ``=``.
        attn_scale: the attention's score divisor (``sqrt(d_head)``).
    Returns:
        ``weights [M * n, 3 * n_heads]`` (each example's attention pattern, the mixing weights of
        ``mix_layout``), ``table [M * n_heads * (2 * d_vocab + 1), d_mlp + d_vocab_out]`` (what a
        (head, token row) adds to the MLP input and, around the MLP, to the logits), ``base_pre
        [M, d_mlp]`` and ``base_logits [M, d_vocab_out]`` (the parts every example shares) and
        ``W_L = W_out @ W_U [M, d_mlp, d_vocab_out]``.
    """
    W_E, W_pos = P["W_E"], P["W_pos"]
    M, V, _ = W_E.shape
    n_heads = P["attn.W_Q"].shape[1]
    # residual stream of every (token, position) the '=' query attends to: rows a, V + b and 2V ('=')
    x_eq = W_E[:, eq_token] + W_pos[:, 2]  # [M, d]
    x = torch.cat([W_E + W_pos[:, 0, None], W_E + W_pos[:, 1, None], x_eq[:, None]], 1)  # [M, R, d]
    q = torch.einsum("md,mhde->mhe", x_eq, P["attn.W_Q"]) + P["attn.b_Q"]
    k = torch.einsum("mrd,mhde->mhre", x, P["attn.W_K"]) + P["attn.b_K"][:, :, None]
    v = torch.einsum("mrd,mhde->mhre", x, P["attn.W_V"]) + P["attn.b_V"][:, :, None]
    scores = torch.einsum("mhre,mhe->mhr", k, q) / attn_scale  # [M, h, R]
    n = a.shape[1]
    rows = torch.stack([a, V + b, torch.full_like(a, 2 * V)], -1)  # [M, n, 3]
    picked = scores.gather(2, rearrange(rows, "m n j -> m 1 (j n)").expand(-1, n_heads, -1))
    # a softmax over an axis of 3 is many times faster when that axis is not the last
    pattern = rearrange(picked, "m h (j n) -> m h j n", j=3).softmax(2)
    # What the attention output adds to the MLP input and to the logits is linear in the pattern:
    # tabulate it per (head, token row) with W_O folded into W_in and W_U; each example then mixes
    # 3 * n_heads rows weighted by its pattern (embedding_bag) instead of multiplying [n, d_model] by W_in.
    W_OU = torch.einsum("mhed,mdf->mhef", P["attn.W_O"], torch.cat([P["mlp.W_in"], P["W_U"]], 2))  # [M, h, d_head, d_mlp + V]
    table = torch.einsum("mhre,mhef->mhrf", v, W_OU).flatten(0, 2)  # [M * h * R, d_mlp + d_vocab_out]
    weights = rearrange(pattern, "m h j n -> (m n) (h j)").contiguous()
    base = x_eq + P["attn.b_O"]  # the part of resid_mid shared by every example  [M, d]
    base_pre = torch.einsum("md,mdf->mf", base, P["mlp.W_in"]) + P["mlp.b_in"]
    base_logits = torch.einsum("md,mdc->mc", base + P["mlp.b_out"], P["W_U"]) + P["b_U"]
    W_L = torch.bmm(P["mlp.W_out"], P["W_U"])  # the MLP output only meets W_U  [M, d_mlp, d_vocab_out]
    return weights, table, base_pre, base_logits, W_L


def stacked_logits(
    P: dict[str, Tensor], a: Int[Tensor, "M n"], b: Int[Tensor, "M n"], eq_token: int, attn_scale: float,
    layout: _Chunk | None = None,
) -> Float[Tensor, "M n d_vocab_out"]:
    """Logits at the ``=`` position of ``[a, b, =]`` for every member, ``model(inputs)[:, -1]`` each.

    Arguments as ``stacked_tables``; ``layout`` is ``mix_layout(a, b, ...)`` if already built.
    Returns ``[M, n, d_vocab_out]`` float32 logits. Differentiable; training uses ``stacked_loss``.
    """
    weights, table, base_pre, base_logits, W_L = stacked_tables(P, a, b, eq_token, attn_scale)
    M, n = a.shape
    layout = layout or mix_layout(a, b, P["attn.W_Q"].shape[1], P["W_E"].shape[1])
    mixed = _Mix.apply(weights, table, layout).view(M, n, -1)
    d_mlp = W_L.shape[1]
    post = (mixed[..., :d_mlp] + base_pre[:, None]).relu()
    return torch.baddbmm(mixed[..., d_mlp:] + base_logits[:, None], post, W_L)


class _HeadLoss(torch.autograd.Function):
    """Each member's weighted float64 cross-entropy of ``stacked_logits``' per-example part, with its
    gradient computed in the forward, as ``interp.model._HeadLoss`` does for one model.

    The work goes member by member and ``CHUNK_ROWS`` examples at a time, so that a chunk's
    activations stay in cache from the forward to the gradient (the whole pack's would not), and a
    member's padding is skipped. Each chunk: mix its table rows, ReLU, ``addmm`` by ``W_L``,
    log-softmax in float64 and straight back, without autograd's bookkeeping. Differentiable once
    only: a backward that builds a graph raises.
    """

    @staticmethod
    def forward(ctx, weights: Tensor, table: Tensor, base_pre: Tensor, base_logits: Tensor, W_L: Tensor,
                labels: Tensor, example_weights: Tensor, layout: "_Layout", live: list[bool] | None) -> Tensor:
        M, n = labels.shape
        d_mlp = W_L.shape[1]
        loss = torch.zeros(M, dtype=torch.float64, device=labels.device)
        g_weights, g_table = torch.zeros_like(weights), torch.zeros_like(table)
        g_base_pre, g_base_logits, g_W_L = torch.zeros_like(base_pre), torch.zeros_like(base_logits), torch.zeros_like(W_L)
        blocks = table.view(M, -1, table.shape[1])
        g_blocks = g_table.view_as(blocks)

        def member(m: int) -> None:  # writes only member m's slices of the outputs
            T, W_L_m = blocks[m], W_L[m]
            for c in layout.chunks[m]:
                rows = slice(m * n + c.start, m * n + c.end)
                w, y, ew = weights[rows], labels[m, c.start : c.end, None], example_weights[m, c.start : c.end, None]
                mixed = c.mix(w, T)
                post = torch.add(mixed[:, :d_mlp], base_pre[m]).relu_()
                logp = torch.addmm(torch.add(mixed[:, d_mlp:], base_logits[m]), post, W_L_m).double().log_softmax(-1)
                loss[m] -= (logp.gather(-1, y) * ew).sum()
                # d loss_m / d logits = (softmax - onehot) * the example's weight (1 / n_m)
                g = float32_grad(logp.exp_().scatter_add_(-1, y, logp.new_full(y.shape, -1.0)).mul_(ew))
                g_W_L[m].addmm_(post.T, g)
                g_pre = torch.ops.aten.threshold_backward(g @ W_L_m.T, post, 0)  # relu's backward
                g_mixed = torch.cat([g_pre, g], 1)
                g_weights[rows] = c.weights_grad(w, g_mixed, T)
                g_blocks[m] += c.table_grad(w.flatten()[c.perm], g_mixed)
                g_base_pre[m] += g_pre.sum(0)
                g_base_logits[m] += g.sum(0)

        for m in range(M):
            if live is None or live[m]:  # a stopped or failed member costs nothing here (its gradient stays 0)
                member(m)
        ctx.save_for_backward(g_weights, g_table, g_base_pre, g_base_logits, g_W_L)
        return loss

    @staticmethod
    def backward(ctx, grad: Tensor):
        if torch.is_grad_enabled():  # create_graph=True: the caller wants to differentiate the gradient
            raise RuntimeError("the stacked loss is differentiable once only (its gradient is computed in the forward)")
        g_weights, g_table, g_base_pre, g_base_logits, g_W_L = ctx.saved_tensors
        if not bool((grad == 1).all()):  # d (sum_m c_m loss_m): scale each member's part by its c_m
            c = grad.float()
            M = c.shape[0]
            g_weights = (g_weights.view(M, -1) * c[:, None]).view_as(g_weights)
            g_table = (g_table.view(M, -1) * c[:, None]).view_as(g_table)
            g_base_pre, g_base_logits, g_W_L = g_base_pre * c[:, None], g_base_logits * c[:, None], g_W_L * c[:, None, None]
        return g_weights, g_table, g_base_pre, g_base_logits, g_W_L, None, None, None, None


class _Layout:
    """``_HeadLoss``' chunks: for each member, ``_Chunk``s of at most ``CHUNK_ROWS`` of its real
    (unpadded) examples, indexing rows of that member's own block of the table."""

    def __init__(self, a: Tensor, b: Tensor, n_real: list[int], n_heads: int, d_vocab: int, chunk_rows: int = CHUNK_ROWS):
        self.chunks = []
        for m, n in enumerate(n_real):
            cols = mix_layout(a[m : m + 1, :n], b[m : m + 1, :n], n_heads, d_vocab)
            self.chunks.append([_Chunk(cols.cols, s, min(s + chunk_rows, n), cols.shape[1]) for s in range(0, n, chunk_rows)])


def stacked_loss(
    P: dict[str, Tensor], a: Int[Tensor, "M n"], b: Int[Tensor, "M n"], labels: Int[Tensor, "M n"],
    example_weights: Float[Tensor, "M n"], eq_token: int, attn_scale: float, layout: _Layout | None = None,
    live: list[bool] | None = None,
) -> Float[Tensor, "M"]:
    """``[M]`` each member's float64 cross-entropy ``sum_i example_weights[m, i] * nll[m, i]`` of
    ``stacked_logits`` (weights ``1 / n_m``, 0 on padding, give the mean over its training set).
    Differentiable once; the per-example part's gradient is computed in the forward (``_HeadLoss``).
    Members with ``live[m]`` false are skipped: loss 0 and no gradient from their examples."""
    weights, table, base_pre, base_logits, W_L = stacked_tables(P, a, b, eq_token, attn_scale)
    if layout is None:
        n_real = (example_weights > 0).sum(1).tolist()  # padding comes last and has weight 0
        layout = _Layout(a, b, n_real, P["attn.W_Q"].shape[1], P["W_E"].shape[1])
    return _HeadLoss.apply(weights, table, base_pre, base_logits, W_L, labels, example_weights, layout, live)


def _short(name: str) -> str:
    """``stacked_logits``' key of a parameter: ``blocks.0.attn.W_Q`` -> ``attn.W_Q``, ``unembed.W_U`` -> ``W_U``."""
    return name.removeprefix("blocks.0.") if name.startswith("blocks.0.") else name.rsplit(".", 1)[-1]


# ---- AdamW over the stack --------------------------------------------------------------------
def adamw_step(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
               step: Tensor, lr: Tensor, wd: Tensor, beta1: Tensor, beta2: Tensor, eps: float = 1e-8) -> None:
    """One AdamW update of stacked parameters, in place: torch's ``AdamW`` formula with a
    hyper-parameter per member (``step``, ``lr``, ``wd``, ``beta1``, ``beta2`` are ``[M]`` float64;
    ``step`` counts this update). Decoupled weight decay ``p *= 1 - lr * wd``; moments
    ``m = lerp(m, g, 1 - beta1)``, ``v = beta2 v + (1 - beta2) g^2``; ``p -= lr / (1 - beta1^t) * m /
    (sqrt(v) / sqrt(1 - beta2^t) + eps)``."""
    bc1 = 1 - beta1**step
    bc2_sqrt = (1 - beta2**step).sqrt()
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs):
        shape = (-1,) + (1,) * (p.dim() - 1)
        r = lambda t: t.to(p.dtype).view(shape)  # noqa: E731  per-member scalar -> broadcastable
        p.mul_(r(1 - lr * wd))
        m.lerp_(g, r(1 - beta1))
        v.mul_(r(beta2)).addcmul_(g * r(1 - beta2), g)
        denom = (v.sqrt() / r(bc2_sqrt)).add_(eps)
        p.addcdiv_(m * r(-lr / bc1), denom)


# ---- one pack --------------------------------------------------------------------------------
@dataclass
class Member:
    """One run of a pack: its config, run directory and (once loaded) data and bookkeeping."""

    config: TrainConfig
    out: Path | None
    data: Dataset | None = None
    metrics: list[dict] = field(default_factory=list)
    failed: str | None = None  # the reason, once failed
    ended: str | None = None  # why it stopped before its steps (stop_after_grok), once it has
    masks: dict[str, Tensor] = field(default_factory=dict)  # --mask-from's masks (interp.prune), once loaded


NEXT_STATE = "state.next.safetensors"  # a pack's new resume state, before all members have it


def _step_of(path: Path) -> int | None:
    return int(runs.read_tensors(path)[1]["step"]) if path.is_file() else None


def settle_state(out: Path) -> None:
    """Finish or undo an interrupted two-phase save of a pack member's resume state.

    A pack saves in two phases: every member's new state goes to ``state/state.next.safetensors``
    first, then each is renamed over ``state.safetensors``. A kill in between leaves the members at
    different steps; this rolls ``out`` forward if all its pack-mates had written their new state
    (phase 1 was complete), else back. So after a kill all members of a pack resume from one
    step, in the same pack as before, and compute what the uninterrupted sweep computed.
    """
    nxt = runs.state_path(out).with_name(NEXT_STATE)
    if not nxt.is_file():
        return
    try:
        meta = runs.read_tensors(nxt)[1]
        step, mates = int(meta["step"]), json.loads(meta["pack"])
    except (RunError, KeyError, ValueError):
        nxt.unlink(missing_ok=True)
        return
    def has(mate: Path) -> bool:
        return _step_of(mate / runs.STATE_DIR / NEXT_STATE) == step or _step_of(runs.state_path(mate)) == step
    if all(has((Path(out) / m).resolve()) for m in mates):
        os.replace(nxt, runs.state_path(out))
    else:
        nxt.unlink()


def saved_step(out: Path) -> int:
    """The step a run directory resumes from (0 when it has no resume state yet)."""
    settle_state(out)
    return _step_of(runs.state_path(out)) or 0


class Pack:
    """The members' parameters stacked along a leading member axis, their AdamW state and data."""

    def __init__(self, members: list[Member], device: str | torch.device = "cpu", n_pad: int | None = None):
        self.members, self.device = members, torch.device(device)
        cfg0 = members[0].config
        self.cfg0 = cfg0
        for m in members:
            if pack_key(m.config) != pack_key(cfg0):
                raise ValueError(f"{m.out}: config does not fit the pack ({SHAPE_FIELDS} must be equal)")
        self.models, self.steps, self.elapsed = [], [], []
        opt_state: list[dict] = []
        for m in members:
            m.data = make_dataset(m.config)
            resuming = m.out is not None and saved_step(m.out) > 0
            model = build_model(m.config) if resuming else runs.init_model(m.config)  # init_from's weights, when given
            m.masks = prune.run_masks(m.config, m.out, model, resume=m.out is not None)
            prune.apply_masks(dict(model.named_parameters()), m.masks)
            opt = make_optimizer(model, m.config)
            step, elapsed = 0, 0.0
            if resuming:
                meta, _ = load_state(runs.state_path(m.out), model, opt)
                step, elapsed = int(meta["step"]), float(meta.get("elapsed", 0.0))
                m.metrics = [r for r in runs.read_metrics(m.out) if r["step"] <= step]
            self.models.append(model)
            self.steps.append(step)
            self.elapsed.append(elapsed)
            opt_state.append(opt.state_dict()["state"])
        if len(set(self.steps)) != 1:
            raise ValueError(f"members resume from different steps {self.steps}; pack them separately")
        self.step = self.steps[0]
        self.names = [n for n, p in self.models[0].named_parameters() if p.requires_grad]
        dev = self.device
        with torch.no_grad():
            all_params = [dict(mdl.named_parameters()) for mdl in self.models]
            self.P = {n: torch.stack([ps[n].detach() for ps in all_params]).to(dev) for n in all_params[0]}
            for n in self.names:
                self.P[n].requires_grad_(True)
            # stacked 0/1 masks of the weights any member masks (ones for the members that do not)
            masked = sorted({n for m in members for n in m.masks})
            self.masks = {n: torch.stack([m.masks.get(n, torch.ones_like(self.P[n][0])) for m in members]).to(dev) for n in masked}
            # AdamW moments in interp.train's order (state index i = i-th trainable parameter)
            self.exp_avg = [torch.stack([self._moment(st, i, "exp_avg", n) for st in opt_state]).to(dev) for i, n in enumerate(self.names)]
            self.exp_avg_sq = [torch.stack([self._moment(st, i, "exp_avg_sq", n) for st in opt_state]).to(dev) for i, n in enumerate(self.names)]
        f64 = dict(dtype=torch.float64, device=dev)
        self.wd = torch.tensor([m.config.wd for m in members], **f64)
        self.beta1 = torch.tensor([m.config.beta1 for m in members], **f64)
        self.beta2 = torch.tensor([m.config.beta2 for m in members], **f64)
        self.active = torch.ones(len(members), dtype=torch.bool, device=dev)
        # training batch: each member's examples, padded to n_pad (default: the largest); padding has
        # zero weight. A fixed n_pad makes a member's arithmetic independent of its pack-mates.
        n_max = max(len(m.data.train_idx) for m in members)
        if n_pad is not None and n_pad < n_max:
            raise ValueError(f"n_pad {n_pad} is smaller than the largest training set ({n_max})")
        n_max = n_pad or n_max
        a, b, y, w = (torch.zeros(len(members), n_max, dtype=t) for t in (torch.long, torch.long, torch.long, torch.float64))
        for i, m in enumerate(members):
            n = len(m.data.train_idx)
            x = m.data.inputs[m.data.train_idx]
            a[i, :n], b[i, :n], y[i, :n], w[i, :n] = x[:, 0], x[:, 1], m.data.train_labels, 1.0 / n
        self.a, self.b, self.y, self.w = a.to(dev), b.to(dev), y.to(dev), w.to(dev)
        n_real = [len(m.data.train_idx) for m in members]
        self.layout = _Layout(self.a, self.b, n_real, cfg0.n_heads, cfg0.d_vocab)  # fixed batch: built once
        inputs = members[0].data.inputs  # the same for every member of a pack (same task and p)
        self.all_a = inputs[:, 0].expand(len(members), -1).to(dev)
        self.all_b = inputs[:, 1].expand(len(members), -1).to(dev)
        self.attn_scale = float(self.models[0].blocks[0].attn.attn_scale)

    def _moment(self, state: dict, i: int, key: str, name: str) -> Tensor:
        if i in state:
            return state[i][key].detach()
        return torch.zeros_like(self.models[0].get_parameter(name))

    def params(self) -> dict[str, Tensor]:
        return {_short(n): t for n, t in self.P.items()}

    def losses(self) -> Tensor:
        """``[M]`` each member's mean float64 cross-entropy on its training set."""
        live = [not (m.failed or m.ended) for m in self.members]
        return stacked_loss(self.params(), self.a, self.b, self.y, self.w, self.cfg0.eq_token, self.attn_scale, self.layout, live)

    def train_step(self) -> Tensor:
        """One full-batch step of every active member; returns the ``[M]`` losses before it."""
        lr = torch.tensor([lr_at(m.config, self.step) for m in self.members], dtype=torch.float64, device=self.device)
        lr = lr * self.active
        loss = self.losses()
        loss.sum().backward()
        with torch.no_grad():
            for n, mask in self.masks.items():  # masked weights: no gradient, no update (interp.prune)
                self.P[n].grad.mul_(mask)
            params = [self.P[n] for n in self.names]
            grads = [p.grad for p in params]
            step = torch.full((len(self.members),), float(self.step + 1), dtype=torch.float64, device=self.device)
            adamw_step(params, grads, self.exp_avg, self.exp_avg_sq, step, lr, self.wd, self.beta1, self.beta2, self.cfg0.adam_eps)
            for n, mask in self.masks.items():
                self.P[n].mul_(mask)
            for p in params:
                p.grad = None
        self.step += 1
        return loss.detach()

    @torch.no_grad()
    def evaluate(self) -> list[dict]:
        """Each member's metrics row (as ``interp.train.evaluate`` computes them) at the current step."""
        logits = stacked_logits(self.params(), self.all_a, self.all_b, self.cfg0.eq_token, self.attn_scale).cpu()
        sq = sum((t.double() ** 2).flatten(1).sum(1) for t in self.P.values()).cpu()
        return [{**split_metrics(logits[i], m.data), "param_norm": sq[i].sqrt().item()} for i, m in enumerate(self.members)]

    @torch.no_grad()
    def sync(self, i: int) -> None:
        """Copy member ``i``'s slice of the stack into its ``HookedTransformer``."""
        for n, p in self.models[i].named_parameters():
            p.copy_(self.P[n][i].cpu())

    def stop(self, i: int, reason: str) -> None:
        """Stop training member ``i`` (``stop_after_grok``): no more updates and no more compute for it."""
        self.members[i].ended = reason
        self.active[i] = False

    def fail(self, i: int, reason: str) -> None:
        """Stop updating member ``i`` (its slices are zeroed, so nothing non-finite spreads in its tensors)."""
        self.members[i].failed = reason
        self.active[i] = False
        with torch.no_grad():
            for t in [*self.P.values(), *self.exp_avg, *self.exp_avg_sq]:
                t[i] = 0

    def state_tensors(self, i: int) -> dict[str, Tensor]:
        """Member ``i``'s resume state in ``interp.train``'s format (weights, AdamW moments and step)."""
        self.sync(i)
        model = self.models[i]
        opt = make_optimizer(model, self.members[i].config)
        tensors = state_tensors(model, opt)
        for j in range(len(self.names)):
            tensors[f"opt.{j}.exp_avg"] = self.exp_avg[j][i].cpu()
            tensors[f"opt.{j}.exp_avg_sq"] = self.exp_avg_sq[j][i].cpu()
            tensors[f"opt.{j}.step"] = torch.tensor(float(self.step))
        return tensors


def train_pack(members: list[Member], device: str | torch.device = "cpu",
               on_progress: Callable[[int, list[dict]], None] | None = None, n_pad: int | None = None) -> list[Member]:
    """Train a pack to its ``steps``, writing every member's run directory as ``interp.train`` does.

    Members must share ``pack_key`` (including the step their run directory resumes from). A member
    whose training loss is not finite at an evaluation is marked failed (``member.failed`` holds the
    reason) and stops; the others go on.

    Args:
        members: the pack; run directories are created or resumed.
        device: torch device of the stack.
        on_progress: called after every evaluation with the step and the members' latest rows.
        n_pad: pad training sets to this many examples (default: the largest member's). With the
            same ``n_pad``, a member's weights come out bit for bit the same whichever members it
            shares the pack with (each member's products and sums are computed alone), so a sweep
            that regroups members after an interruption reproduces the uninterrupted one.
    Returns:
        ``members``, with their metrics and failure reasons filled in.
    """
    pack = Pack(members, device, n_pad)
    cfg = pack.cfg0
    t0 = time.perf_counter() - pack.elapsed[0]

    def record() -> None:
        elapsed = time.perf_counter() - t0
        for i, (m, row) in enumerate(zip(members, pack.evaluate())):
            if m.failed or m.ended:
                continue
            m.metrics.append({"step": pack.step, **row, "lr": lr_at(m.config, max(pack.step - 1, 0)), "elapsed_s": round(elapsed, 3)})
            if not math.isfinite(row["train_loss"]):
                pack.fail(i, f"training loss is not finite at step {pack.step}")
        if on_progress:
            on_progress(pack.step, [m.metrics[-1] for m in members if m.metrics])

    def stop_reason(m: Member) -> str | None:  # stop_after_grok, as interp.train.train decides it
        after = m.config.stop_after_grok
        g = next((r["step"] for r in m.metrics if r["test_acc"] >= GROK_ACC), None) if after is not None else None
        if g is not None and pack.step - g >= after and pack.step < cfg.steps:
            return f"stop_after_grok {after}: test accuracy reached {GROK_ACC} at step {g}"
        return None

    def checkpoint(only: list[int] | None = None) -> None:
        elapsed = time.perf_counter() - t0
        live = only if only is not None else [i for i, m in enumerate(members) if not (m.failed or m.ended)]
        for i in live:  # checkpoints and metrics, then the resume state in two phases (settle_state)
            pack.sync(i)
            runs.save_checkpoint(members[i].out, pack.step, pack.models[i])
            runs.write_metrics(members[i].out, members[i].metrics)
        for i in live:
            out = members[i].out
            mates = [os.path.relpath(members[j].out, out) for j in live]
            meta = {"step": str(pack.step), "elapsed": repr(elapsed), "pack": json.dumps(mates)}
            runs.write_tensors(runs.state_path(out).with_name(NEXT_STATE), pack.state_tensors(i), metadata=meta)
        for i in live:
            os.replace(runs.state_path(members[i].out).with_name(NEXT_STATE), runs.state_path(members[i].out))

    machine = describe(pack.device)
    if pack.step == 0:
        for m in members:
            runs.init_run_dir(m.out, m.config.replace(engine="fast"), m.data, machine)  # the stack is the fast path
            if m.masks:
                prune.write_masks(m.out / prune.MASKS_FILE, m.masks)
        record()
        checkpoint()
    else:
        for m in members:
            runs.record_resume(m.out, pack.step, machine)
    with flush_denormals():
        while pack.step < cfg.steps and pack.active.any():
            pack.train_step()
            stopping = []
            if pack.step % cfg.eval_every == 0 or pack.step == cfg.steps:
                record()
                stopping = [(i, r) for i, m in enumerate(members) if not (m.failed or m.ended) and (r := stop_reason(m))]
            if pack.step % cfg.save_every == 0 or pack.step == cfg.steps:
                checkpoint()
            elif stopping:
                checkpoint([i for i, _ in stopping])  # saved alone: their pack-mates go on
            for i, reason in stopping:
                runs.record_end(members[i].out, pack.step, reason)
                pack.stop(i, reason)
    return members
