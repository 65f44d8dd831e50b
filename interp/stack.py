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

The forward and loss are ``interp.kernel``'s, the same kernel ``interp.model.fast_loss`` runs for
one model (a stack of one): the per-token part (``stacked_tables``) is batched over members; the
per-example part and the float64 cross-entropy (``_HeadLoss``) compute their gradient in the
forward, member by member and chunk by chunk so that the activations stay in cache.

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
from torch import Tensor

from interp import prune, runs
from interp.config import TrainConfig
from interp.device import describe
from interp.kernel import Layout, short_name, stacked_logits, stacked_loss
from interp.families import TRANSFORMER, build_model, family_of
from interp.runs import RunError
from interp.speed import flush_denormals
from interp.stopping import stop_reason
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
    coupled L2 (``l2``), fixed-norm training, mini-batches, other model shapes (layers, LayerNorm, GELU), the hooked
    engine and the mlp family (no kernel: see docs/analyses/models.md) train alone.
    """
    return (family_of(cfg) is TRANSFORMER and cfg.task_spec.token_pair and cfg.engine != "hooked" and cfg.grad_filter == "none" and cfg.loss == "softmax"
            and cfg.optimizer == "adamw" and cfg.l2 == 0 and not cfg.fixed_norm and cfg.full_batch
            and (cfg.n_layers, cfg.normalization, cfg.act_fn) == (1, "none", "relu"))


def pack_key(cfg: TrainConfig, start_step: int = 0) -> tuple:
    """Members with equal keys can share a pack (also the step they resume from)."""
    return (*(getattr(cfg, f) for f in SHAPE_FIELDS), start_step)


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
    ended: str | None = None  # why it stopped before its steps (interp.stopping), once it has
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
        self.layout = Layout(self.a, self.b, n_real, cfg0.n_heads, cfg0.d_vocab)  # fixed batch: built once
        inputs = members[0].data.inputs  # the same for every member of a pack (same task and p)
        self.all_a = inputs[:, 0].expand(len(members), -1).to(dev)
        self.all_b = inputs[:, 1].expand(len(members), -1).to(dev)
        self.all_layout = Layout(self.all_a, self.all_b, [inputs.shape[0]] * len(members), cfg0.n_heads, cfg0.d_vocab)
        self.attn_scale = float(self.models[0].blocks[0].attn.attn_scale)

    def _moment(self, state: dict, i: int, key: str, name: str) -> Tensor:
        if i in state:
            return state[i][key].detach()
        return torch.zeros_like(self.models[0].get_parameter(name))

    def params(self) -> dict[str, Tensor]:
        return {short_name(n): t for n, t in self.P.items()}

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
        logits = stacked_logits(self.params(), self.all_a, self.all_b, self.cfg0.eq_token, self.attn_scale, self.all_layout).cpu()
        sq = sum((t.double() ** 2).flatten(1).sum(1) for t in self.P.values()).cpu()
        return [{**split_metrics(logits[i], m.data), "param_norm": sq[i].sqrt().item()} for i, m in enumerate(self.members)]

    @torch.no_grad()
    def sync(self, i: int) -> None:
        """Copy member ``i``'s slice of the stack into its ``HookedTransformer``."""
        for n, p in self.models[i].named_parameters():
            p.copy_(self.P[n][i].cpu())

    def stop(self, i: int, reason: str) -> None:
        """Stop training member ``i`` (a stopping rule said so): no more updates and no more compute for it."""
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
                stopping = [(i, r) for i, m in enumerate(members) if not (m.failed or m.ended)
                            and (r := stop_reason(m.config, m.metrics, pack.step))]
            if pack.step % cfg.save_every == 0 or pack.step == cfg.steps:
                checkpoint()
            elif stopping:
                checkpoint([i for i, _ in stopping])  # saved alone: their pack-mates go on
            for i, reason in stopping:
                runs.record_end(members[i].out, pack.step, reason)
                pack.stop(i, reason)
    return members
