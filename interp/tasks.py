"""Algorithmic datasets: every pair (a, b) of residues mod p, its label and the train/test split.

Inputs are the token triples ``[a, b, =]`` with ``=`` the token id ``p``. Pairs are enumerated
row-major (``index = a * p + b``; for ``mod_mul_nz`` and ``mod_div`` the pairs with b = 0 are left out), then the split
is a seeded permutation of that enumeration: the first ``cfg.n_train`` indices (``train_size``, or
``int(frac * N)``) are the training set, so a smaller training set is a prefix of a larger one.
With p = 113, frac 0.3 and data seed 598 this is exactly the split of the TransformerLens grokking demo
(``torch.manual_seed(598); torch.randperm(p * p)``).

Group tasks (``s4``, ``s5``, ``a5``; ``interp.config.GROUP_TASKS``): the inputs are ``[g, h, =]`` for every
pair of group elements and the label is ``g·h``; ``p`` is the group's order n, the elements are the tokens
``0..n-1`` and ``=`` is token n. Permutations are numbered in lexicographic order of their one-line
notation (``analyses.groups.symmetric``: token 0 is the identity ``0123``, token 1 is ``0132``, ...;
``a5`` numbers the even permutations of 0..4 in the same order), and ``(g·h)(x) = g(h(x))``. Pairs are
row-major and split exactly as for the modular tasks.

The ``digits`` task (``tasks.digits``) is not algorithmic: scikit-learn's bundled 8x8 handwritten
digits, 1797 images as 64 pixel intensities in [0, 1] with labels 0..9, split the same way.

Label noise (``label_noise`` > 0, e.g. for memorisation-only runs): the same generator, after the
permutation, draws one uniform random label per position of the permutation; the first
``round(label_noise * n_train)`` training examples (in split order) take them. Test labels stay true.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.config import NONZERO_B_TASKS, TrainConfig


def _mod_div(a: Tensor, b: Tensor, p: int) -> Tensor:
    inv = torch.tensor([pow(int(x), -1, p) if x else 0 for x in range(p)], dtype=torch.long)
    return (a * inv[b]) % p


# name -> (label function of (a, b, p), formula); mod_mul_nz and mod_div also leave out b = 0 (see all_pairs).
# mod_mul_nz is Grokfast's data (x * y mod p for 0 <= x < p, 0 < y < p); mod_mul keeps b = 0, so its bits are unchanged.
OPERATIONS: dict[str, tuple[Callable[[Tensor, Tensor, int], Tensor], str]] = {
    "mod_add": (lambda a, b, p: (a + b) % p, "a + b"),
    "mod_sub": (lambda a, b, p: (a - b) % p, "a - b"),
    "mod_mul": (lambda a, b, p: (a * b) % p, "a * b"),
    "mod_mul_nz": (lambda a, b, p: (a * b) % p, "a * b (b != 0)"),
    "mod_div": (_mod_div, "a / b (b != 0)"),
    "x2_y2": (lambda a, b, p: (a * a + b * b) % p, "a^2 + b^2"),
    "x2_xy_y2": (lambda a, b, p: (a * a + a * b + b * b) % p, "a^2 + ab + b^2"),
    "x3_xy": (lambda a, b, p: (a * a * a + a * b) % p, "a^3 + ab"),
}


@dataclass(frozen=True)
class Dataset:
    """All examples of a task and their split.

    Attributes:
        inputs: ``[N, 3]`` token triples ``[a, b, =]`` (digits: ``[N, 64]`` float images).
        labels: ``[N]`` the answer ``c`` in 0..p-1 (digits: the digit 0..9).
        train_idx: indices into ``inputs`` of the training examples, in split order.
        test_idx: the remaining indices.
        train_labels: ``[n_train]`` the labels training uses, in split order: ``labels[train_idx]``
            unless some were replaced by label noise (default: ``labels[train_idx]``).
    """

    inputs: Int[Tensor, "N 3"]
    labels: Int[Tensor, "N"]
    train_idx: Int[Tensor, "n_train"]
    test_idx: Int[Tensor, "n_test"]
    train_labels: Int[Tensor, "n_train"] | None = None

    def __post_init__(self) -> None:
        if self.train_labels is None:
            object.__setattr__(self, "train_labels", self.labels[self.train_idx])

    def to(self, device: torch.device | str) -> "Dataset":
        """The same dataset with every tensor on ``device``."""
        return Dataset(*(t.to(device) for t in (self.inputs, self.labels, self.train_idx, self.test_idx, self.train_labels)))

    @property
    def a(self) -> Int[Tensor, "N"]:
        return self.inputs[:, 0]

    @property
    def b(self) -> Int[Tensor, "N"]:
        return self.inputs[:, 1]


def all_pairs(cfg: TrainConfig) -> tuple[Int[Tensor, "N 3"], Int[Tensor, "N"]]:
    """Every input triple of ``cfg.task`` and its label, row-major in (a, b)."""
    p = cfg.p
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    if cfg.task in NONZERO_B_TASKS:
        keep = b != 0
        a, b = a[keep], b[keep]
    if cfg.is_group_task:
        labels = task_group(cfg.task).table[a, b]
    else:
        fn, _ = OPERATIONS[cfg.task]
        labels = fn(a, b, p)
    inputs = torch.stack([a, b, torch.full_like(a, cfg.eq_token)], dim=1)
    return inputs, labels


def task_group(task: str):
    """The ``analyses.groups.Group`` of a group task (``s4``: S_4, ``s5``: S_5, ``a5``: A_5)."""
    from analyses import groups

    return {"s": groups.symmetric, "a": groups.alternating}[task[0]](int(task[1:]))


def split_indices(n: int, n_train: int, data_seed: int, n_classes: int) -> tuple[Tensor, Tensor, Tensor]:
    """Seeded permutation of ``range(n)``: the first ``n_train`` are the training indices.

    Returns:
        ``(train_idx, test_idx, random_labels)``; ``random_labels[i]`` is the seeded uniform label in
        ``0..n_classes-1`` that training example ``i`` takes under label noise.
    """
    gen = torch.Generator().manual_seed(data_seed)
    perm = torch.randperm(n, generator=gen)
    random_labels = torch.randint(n_classes, (n,), generator=gen)[:n_train]
    return perm[:n_train], perm[n_train:], random_labels


def digits() -> tuple[Float[Tensor, "1797 64"], Int[Tensor, "1797"]]:
    """scikit-learn's bundled 8x8 handwritten digits (shipped with the package, no download): the
    1797 images as float32 rows of 64 pixel intensities scaled from 0..16 to [0, 1], and their
    labels 0..9, in scikit-learn's order."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.tensor(d.data / 16.0, dtype=torch.float32), torch.tensor(d.target, dtype=torch.long)


def all_examples(cfg: TrainConfig) -> tuple[Tensor, Int[Tensor, "N"]]:
    """Every example of ``cfg.task`` and its label: ``all_pairs`` for the modular tasks, ``digits()``."""
    return digits() if cfg.task == "digits" else all_pairs(cfg)


def make_dataset(cfg: TrainConfig) -> Dataset:
    """The inputs, labels and seeded train/test split that ``cfg`` describes (with its label noise).

    The digits task splits its 1797 images the same way (seeded permutation, first ``n_train``)."""
    inputs, labels = all_examples(cfg)
    train_idx, test_idx, random_labels = split_indices(len(labels), cfg.n_train, cfg.data_seed, cfg.d_vocab_out)
    train_labels = labels[train_idx].clone()
    n_noisy = round(cfg.label_noise * len(train_idx))
    train_labels[:n_noisy] = random_labels[:n_noisy]
    return Dataset(inputs, labels, train_idx, test_idx, train_labels)


@functools.lru_cache(maxsize=2)
def _epoch_order(seed: int, n: int, epoch: int) -> Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def batch_positions(cfg: TrainConfig, step: int) -> Int[Tensor, "batch"] | None:
    """Positions in the training split (into ``train_idx`` / ``train_labels``) of the mini-batch that
    update ``step`` uses, or ``None`` for full-batch training.

    Each epoch is a permutation of the training split seeded by ``cfg.seed`` and the epoch number, cut
    into ``ceil(n_train / batch_size)`` batches (the last may be smaller). Nothing is drawn from a
    global generator, so a resumed run sees exactly the batches an uninterrupted one saw.
    """
    if cfg.full_batch:
        return None
    per_epoch = math.ceil(cfg.n_train / cfg.batch_size)
    epoch, i = divmod(step, per_epoch)
    return _epoch_order(cfg.seed, cfg.n_train, epoch)[i * cfg.batch_size : (i + 1) * cfg.batch_size]
