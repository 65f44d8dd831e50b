"""Training options that act around the optimiser step: gradient filters, ⊥Grad and fixed-norm training.

``interp.train``'s loop uses them in this order (each only when its ``TrainConfig`` field asks)::

    loss.backward()
    grad_filter.apply()              # --grad-filter ema|ma: g <- g + lambda * low-pass(g)   (Grokfast)
    orthogonalize(params)            # --optimizer orthoadamw: g <- g - (g.w / w.w) w       (⊥Grad)
    add_l2(params, l2)               # --l2: g <- g + l2 * w, Adam's coupled L2              (Grokfast's decay)
    opt.step()                       # AdamW (decoupled decay --wd)
    rescale_to_norm(params, norm0)   # --fixed-norm: back to the total norm of step 0      (Omnigrok)

``params`` are the trainable parameters (``trainable``), the ones AdamW updates. The gradient
filter's state and the fixed-norm target go into the resume state (``option_state``,
``load_option_state``), so a resumed run ends with the same bits as an uninterrupted one.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from interp.config import TrainConfig


def trainable(model: nn.Module) -> list[nn.Parameter]:
    """The parameters the optimiser updates (frozen biases excluded), in ``model.parameters()`` order."""
    return [p for p in model.parameters() if p.requires_grad]


# ---- gradient filters (Grokfast, Lee et al. 2024) --------------------------------------------
class GradFilter:
    """No filtering (``--grad-filter none``), and the interface of the filters below."""

    def __init__(self, params: list[nn.Parameter]):
        self.params = params

    def apply(self) -> None:
        """Replace every parameter's ``.grad`` by its filtered version (here: leave it)."""

    def state_dict(self) -> dict[str, Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore ``state_dict()``'s tensors; ``ValueError`` if they do not fit the parameters."""
        expected = self.state_dict()
        if set(state) != set(expected):
            raise ValueError(f"gradient-filter state has {sorted(state)}, expected {sorted(expected)}")
        for k, v in state.items():
            if v.shape != expected[k].shape or v.dtype != expected[k].dtype:
                raise ValueError(f"gradient-filter state {k}: {v.dtype} {list(v.shape)}, expected {expected[k].dtype} {list(expected[k].shape)}")
        self._load(state)

    def _load(self, state: dict[str, Tensor]) -> None:
        pass


class EmaFilter(GradFilter):
    """Grokfast-EMA: ``mu <- alpha * mu + (1 - alpha) * g``, then ``g <- g + lambda * mu``.

    ``mu`` starts at the first gradient (as in the Grokfast code), so the first step's gradient is
    ``(1 + lambda) * g``.
    """

    def __init__(self, params: list[nn.Parameter], alpha: float, lamb: float):
        super().__init__(params)
        self.alpha, self.lamb = alpha, lamb
        self.mu = [torch.zeros_like(p) for p in params]
        self.started = False

    @torch.no_grad()
    def apply(self) -> None:
        for p, mu in zip(self.params, self.mu):
            if self.started:
                mu.mul_(self.alpha).add_(p.grad, alpha=1 - self.alpha)
            else:
                mu.copy_(p.grad)
            p.grad.add_(mu, alpha=self.lamb)
        self.started = True

    def state_dict(self) -> dict[str, Tensor]:
        return {"started": torch.tensor(self.started), **{f"mu.{i}": mu for i, mu in enumerate(self.mu)}}

    def _load(self, state: dict[str, Tensor]) -> None:
        self.started = bool(state["started"])
        self.mu = [state[f"mu.{i}"].clone() for i in range(len(self.mu))]


class MaFilter(GradFilter):
    """Grokfast-MA: ``g <- g + lambda * (mean of the last window gradients, this one included)``.

    Until ``window`` gradients have been seen the gradient is left as it is (Grokfast's warm-up).
    The last gradients are kept in a ring buffer ``[window, *shape]`` per parameter.
    """

    def __init__(self, params: list[nn.Parameter], window: int, lamb: float):
        super().__init__(params)
        self.window, self.lamb = window, lamb
        self.buf = [p.new_zeros((window, *p.shape)) for p in params]
        self.seen = 0  # gradients seen so far; the next one goes to slot seen % window

    @torch.no_grad()
    def apply(self) -> None:
        slot = self.seen % self.window
        self.seen += 1
        for p, buf in zip(self.params, self.buf):
            buf[slot] = p.grad
            if self.seen >= self.window:
                p.grad.add_(buf.mean(0), alpha=self.lamb)

    def state_dict(self) -> dict[str, Tensor]:
        return {"seen": torch.tensor(self.seen), **{f"buf.{i}": buf for i, buf in enumerate(self.buf)}}

    def _load(self, state: dict[str, Tensor]) -> None:
        self.seen = int(state["seen"])
        self.buf = [state[f"buf.{i}"].clone() for i in range(len(self.buf))]


def make_grad_filter(cfg: TrainConfig, params: list[nn.Parameter]) -> GradFilter:
    """The gradient filter ``cfg.grad_filter`` names, over ``params``."""
    if cfg.grad_filter == "ema":
        return EmaFilter(params, cfg.filter_alpha, cfg.filter_lambda)
    if cfg.grad_filter == "ma":
        return MaFilter(params, cfg.filter_window, cfg.filter_lambda)
    return GradFilter(params)


# ---- ⊥Grad (Prieto et al. 2025) ----------------------------------------------------------------
@torch.no_grad()
def orthogonalize(params: list[nn.Parameter]) -> None:
    """Remove from each tensor's gradient its component along the tensor: ``g <- g - (g.w / w.w) w``.

    Per tensor, dot products and the subtraction in float64; an all-zero tensor keeps its gradient.
    (The authors' code also rescales the result back to ``|g|``; this is the paper's plain projection.)
    """
    for p in params:
        w, g = p.detach().double(), p.grad.double()
        ww = torch.dot(w.flatten(), w.flatten())
        if ww == 0:
            continue
        p.grad.copy_(g - (torch.dot(g.flatten(), w.flatten()) / ww) * w)


# ---- coupled L2 (Adam's weight_decay; the Grokfast code's decay) ------------------------------
@torch.no_grad()
def add_l2(params: list[nn.Parameter], l2: float) -> None:
    """Add ``l2 * w`` to each gradient: the L2 penalty ``l2 / 2 * |w|^2`` coupled to the gradient, as
    ``torch.optim.Adam(weight_decay=l2)`` does before its moments. Unlike AdamW's decoupled decay
    (``w <- w - lr * wd * w``), Adam then normalises this term together with the loss gradient, so
    where the loss gradient is small it moves a weight by up to about the learning rate per step."""
    for p in params:
        p.grad.add_(p.detach(), alpha=l2)


# ---- fixed-norm training (Omnigrok, Liu et al. 2023) ------------------------------------------
@torch.no_grad()
def total_norm(params: list[nn.Parameter]) -> Tensor:
    """The L2 norm of all of ``params`` together, as a float64 scalar tensor."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.double()) for p in params]))


@torch.no_grad()
def rescale_to_norm(params: list[nn.Parameter], norm: Tensor) -> None:
    """Multiply all of ``params`` by one factor so that their total L2 norm is ``norm``."""
    scale = (norm / total_norm(params)).item()
    for p in params:
        p.mul_(scale)


# ---- resume state ------------------------------------------------------------------------------
def option_state(grad_filter: GradFilter, norm0: Tensor) -> dict[str, Tensor]:
    """What the options carry from step to step, as tensors for the state file."""
    return {**{f"filter.{k}": v for k, v in grad_filter.state_dict().items()}, "fixed_norm.norm0": norm0}


def load_option_state(state: dict[str, Tensor], grad_filter: GradFilter, norm0: Tensor) -> Tensor:
    """Restore ``option_state``'s filter state into ``grad_filter``; returns the saved fixed-norm target.

    A state file written before these options existed has neither; it resumes with ``norm0``.
    Raises ``ValueError`` if the filter's tensors do not fit.
    """
    grad_filter.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("filter.")})
    return state.get("fixed_norm.norm0", norm0)
