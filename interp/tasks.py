"""Algorithmic datasets: every pair (a, b) of residues mod p, its label and the train/test split.

Inputs are the token triples ``[a, b, =]`` with ``=`` the token id ``p``. Pairs are enumerated
row-major (``index = a * p + b``; for ``mod_div`` the pairs with b = 0 are left out), then the split
is a seeded permutation of that enumeration: the first ``int(frac * N)`` indices are the training set.
With p = 113, frac 0.3 and data seed 598 this is exactly the split of the TransformerLens grokking demo
(``torch.manual_seed(598); torch.randperm(p * p)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from jaxtyping import Int
from torch import Tensor

from interp.config import TrainConfig


def _mod_div(a: Tensor, b: Tensor, p: int) -> Tensor:
    inv = torch.tensor([pow(int(x), -1, p) if x else 0 for x in range(p)], dtype=torch.long)
    return (a * inv[b]) % p


# name -> (label function of (a, b, p), formula); mod_div also leaves out b = 0 (see all_pairs)
OPERATIONS: dict[str, tuple[Callable[[Tensor, Tensor, int], Tensor], str]] = {
    "mod_add": (lambda a, b, p: (a + b) % p, "a + b"),
    "mod_sub": (lambda a, b, p: (a - b) % p, "a - b"),
    "mod_mul": (lambda a, b, p: (a * b) % p, "a * b"),
    "mod_div": (_mod_div, "a / b (b != 0)"),
    "x2_y2": (lambda a, b, p: (a * a + b * b) % p, "a^2 + b^2"),
    "x2_xy_y2": (lambda a, b, p: (a * a + a * b + b * b) % p, "a^2 + ab + b^2"),
    "x3_xy": (lambda a, b, p: (a * a * a + a * b) % p, "a^3 + ab"),
}


@dataclass(frozen=True)
class Dataset:
    """All examples of a task and their split.

    Attributes:
        inputs: ``[N, 3]`` token triples ``[a, b, =]``.
        labels: ``[N]`` the answer ``c`` in 0..p-1.
        train_idx: indices into ``inputs`` of the training examples, in split order.
        test_idx: the remaining indices.
    """

    inputs: Int[Tensor, "N 3"]
    labels: Int[Tensor, "N"]
    train_idx: Int[Tensor, "n_train"]
    test_idx: Int[Tensor, "n_test"]

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
    if cfg.task == "mod_div":
        keep = b != 0
        a, b = a[keep], b[keep]
    fn, _ = OPERATIONS[cfg.task]
    labels = fn(a, b, p)
    inputs = torch.stack([a, b, torch.full_like(a, cfg.eq_token)], dim=1)
    return inputs, labels


def split_indices(n: int, frac: float, data_seed: int) -> tuple[Int[Tensor, "n_train"], Int[Tensor, "n_test"]]:
    """Seeded permutation of ``range(n)``; the first ``int(frac * n)`` are the training indices."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(data_seed))
    n_train = int(frac * n)
    return perm[:n_train], perm[n_train:]


def make_dataset(cfg: TrainConfig) -> Dataset:
    """The inputs, labels and seeded train/test split that ``cfg`` describes."""
    inputs, labels = all_pairs(cfg)
    train_idx, test_idx = split_indices(len(labels), cfg.frac, cfg.data_seed)
    return Dataset(inputs, labels, train_idx, test_idx)
