"""The tasks (``TASKS``, one ``Task`` each: examples, sizes, answer position, structure) and the split.

A new task is a ``Task`` and a ``register_task`` line (``docs/extending.md``); ``TrainConfig.task``
names it and every other module asks the registry, never the name.

The modular tasks' inputs are the token triples ``[a, b, =]`` with ``=`` the token id ``p``. Pairs are enumerated
row-major (``index = a * p + b``; for ``mod_mul_nz`` and ``mod_div`` the pairs with b = 0 are left out), then the split
is a seeded permutation of that enumeration: the first ``cfg.n_train`` indices (``train_size``, or
``int(frac * N)``) are the training set, so a smaller training set is a prefix of a larger one.
With p = 113, frac 0.3 and data seed 598 this is exactly the split of the TransformerLens grokking demo
(``torch.manual_seed(598); torch.randperm(p * p)``).

Group tasks (``s4``, ``s5``, ``a5``; registered with their ``group_order``): the inputs are ``[g, h, =]`` for every
pair of group elements and the label is ``g·h``; ``p`` is the group's order n, the elements are the tokens
``0..n-1`` and ``=`` is token n. Permutations are numbered in lexicographic order of their one-line
notation (``analyses.groups.symmetric``: token 0 is the identity ``0123``, token 1 is ``0132``, ...;
``a5`` numbers the even permutations of 0..4 in the same order), and ``(g·h)(x) = g(h(x))``. Pairs are
row-major and split exactly as for the modular tasks.

Sequence tasks (``add5``, ``repeat_subseq``, ``max_elem``: ``interp.sequences``) have too many examples to
enumerate; each has a ``sample`` function that draws fresh ones. Their fixed examples are a training set of
``cfg.n_train`` draws (the task's ``default_train_size`` unless ``train_size`` is given) from a generator
seeded by ``("train", data_seed)``, then ``test_size`` draws from ``("test", data_seed)`` with any example
of the training set drawn again, so the test set is held out by construction; the split is then the
identity (the training set first). With ``infinite_data`` every step trains on a fresh batch drawn from
``("batch", seed, step)``, its test examples redrawn (``infinite_batch``), and the training set above is only
evaluated: a fixed sample of the training distribution. Their labels are ``[N, answers]``, one per answer
position (``[N]`` when there is one).

The ``digits`` task (``tasks.digits``) is not algorithmic: scikit-learn's bundled 8x8 handwritten
digits, 1797 images as 64 pixel intensities in [0, 1] with labels 0..9, split the same way.

Label noise (``label_noise`` > 0, e.g. for memorisation-only runs): the same generator, after the
permutation, draws one uniform random label per position of the permutation; the first
``round(label_noise * n_train)`` training examples (in split order) take them. Test labels stay true.
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass
from typing import Callable

import torch
from jaxtyping import Float, Int
from torch import Tensor

# "TrainConfig" in annotations is interp.config.TrainConfig, named as a string: the config imports this
# registry, so the registry does not import the config back.


# ---- the registry --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Structure:
    """The algebra behind a task's labels that analysers may use.

    ``kind``: ``"cyclic"`` (labels are a function of a +- b in Z_p: Fourier over Z_p, ``sign`` +1 for a + b,
    -1 for a - b), ``"discrete_log"`` (a * b or a / b in Z_p^*: Fourier over Z_{p-1} in log coordinates,
    ``sign`` +1 / -1), ``"group"`` (composition in the finite group ``group``, e.g. ``"s4"``).
    """

    kind: str
    sign: int = +1
    group: str | None = None


@dataclass(frozen=True)
class Task:
    """A problem the suite can train on: everything about it that is not the model.

    Register one with ``register_task``; ``TrainConfig.task`` names it, ``config.json`` stores the name.

    Attributes:
        name: the key in ``TASKS`` (and the ``TASK`` argument of ``python -m interp.train``).
        description: one line for ``--help`` and the docs.
        examples: ``cfg -> (inputs, labels)``, every example in a fixed order (the split permutes it).
        n_examples: ``cfg -> int``, ``len(labels)`` without building them.
        d_vocab: ``cfg -> int``, the input vocabulary (0 when inputs are real-valued vectors).
        d_vocab_out: ``cfg -> int``, the number of classes.
        n_ctx: ``cfg -> int``, input length (tokens, or features for vector inputs).
        answer_positions: the input positions whose output is the answer (``(-1,)``: the last token).
        family: the model family trained when ``TrainConfig.family`` is ``"auto"`` (``interp.families``).
        structure: what the analysers may use (``Structure``), or ``None``.
        group_order: a group task: ``p`` is fixed to the group's order.
        check: ``cfg -> reason | None``: why ``cfg.p`` does not suit this task (``--p`` is then refused).
        token_pair: the inputs are ``[a, b, =]`` with ``=`` the token ``p`` (the layout the transformer's
            fast path and the stack compute).
        sample: a sequence task: ``(n, generator) -> (inputs, labels)`` draws ``n`` fresh examples (then
            ``examples`` is the drawn training and test set, ``--p`` and ``--frac`` do not apply, and
            ``--infinite-data`` does).
        default_train_size: the training-set size when ``train_size`` is not given (sequence tasks, and tasks whose
            papers fix it; ``--frac`` does not apply then). 0: ``frac`` of the examples.
        test_size: a sequence task's number of held-out test examples.
        regression: the labels are real-valued targets ``[N, d_vocab_out]``, not classes: the loss is the mean
            squared error, and an example counts as right when its mean squared error is below ``REGRESSION_TOL``
            (Omnigrok's teacher-student accuracy); the classification-only options are refused.
    """

    name: str
    description: str
    examples: Callable[["TrainConfig"], tuple[Tensor, Tensor]]
    n_examples: Callable[["TrainConfig"], int]
    d_vocab: Callable[["TrainConfig"], int] = lambda cfg: cfg.p + 1
    d_vocab_out: Callable[["TrainConfig"], int] = lambda cfg: cfg.p
    n_ctx: Callable[["TrainConfig"], int] = lambda cfg: 3
    answer_positions: tuple[int, ...] = (-1,)
    family: str = "transformer"
    structure: Structure | None = None
    group_order: int | None = None
    check: Callable[["TrainConfig"], str | None] | None = None
    token_pair: bool = False
    sample: Callable[[int, torch.Generator], tuple[Tensor, Tensor]] | None = None
    default_train_size: int = 0
    test_size: int = 0
    regression: bool = False

    @property
    def sequence(self) -> bool:
        """Whether this is a sequence task (examples drawn by ``sample``, not enumerated)."""
        return self.sample is not None


TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Add ``task`` to ``TASKS`` (a name may be registered once) and return it."""
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} is already registered")
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    """The registered task ``name`` (``KeyError`` naming the known ones otherwise)."""
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None


# ---- the tasks -----------------------------------------------------------------------------------
def _mod_div(a: Tensor, b: Tensor, p: int) -> Tensor:
    inv = torch.tensor([pow(int(x), -1, p) if x else 0 for x in range(p)], dtype=torch.long)
    return (a * inv[b]) % p


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    i = 2
    while i * i <= n:
        if n % i == 0:
            return False
        i += 1
    return True


def pair_examples(label: Callable[[Tensor, Tensor, int], Tensor], skip_b0: bool = False):
    """``cfg -> (inputs, labels)`` for a binary operation on ``0..p-1``: every pair ``[a, b, =]`` (``=`` the
    token ``p``), row-major in (a, b) (``index = a * p + b``; ``skip_b0`` leaves out b = 0)."""

    def examples(cfg: "TrainConfig") -> tuple[Int[Tensor, "N 3"], Int[Tensor, "N"]]:
        p = cfg.p
        a = torch.arange(p).repeat_interleave(p)
        b = torch.arange(p).repeat(p)
        if skip_b0:
            keep = b != 0
            a, b = a[keep], b[keep]
        return torch.stack([a, b, torch.full_like(a, p)], dim=1), label(a, b, p)

    return examples


def _pairs(cfg: "TrainConfig") -> int:
    return cfg.p * cfg.p


def _prime_p(cfg: "TrainConfig") -> str | None:
    return None if is_prime(cfg.p) else "mod_div needs a prime modulus (division by b needs b to be invertible)"


# name -> (label function of (a, b, p), formula, structure); NONZERO_B_TASKS leave out b = 0: mod_mul_nz is
# Grokfast's data (x * y mod p for 0 <= x < p, 0 < y < p); mod_mul keeps b = 0, so its pairs and bits are unchanged.
NONZERO_B_TASKS = ("mod_mul_nz", "mod_div")
OPERATIONS: dict[str, tuple[Callable[[Tensor, Tensor, int], Tensor], str, Structure | None]] = {
    "mod_add": (lambda a, b, p: (a + b) % p, "a + b", Structure("cyclic", +1)),
    "mod_sub": (lambda a, b, p: (a - b) % p, "a - b", Structure("cyclic", -1)),
    "mod_mul": (lambda a, b, p: (a * b) % p, "a * b", Structure("discrete_log", +1)),
    "mod_mul_nz": (lambda a, b, p: (a * b) % p, "a * b (b != 0)", Structure("discrete_log", +1)),
    "mod_div": (_mod_div, "a / b (b != 0)", Structure("discrete_log", -1)),
    "x2_y2": (lambda a, b, p: (a * a + b * b) % p, "a^2 + b^2", None),
    "x2_xy_y2": (lambda a, b, p: (a * a + a * b + b * b) % p, "a^2 + ab + b^2", None),
    "x3_xy": (lambda a, b, p: (a * a * a + a * b) % p, "a^3 + ab", None),
}
for _name, (_fn, _formula, _structure) in OPERATIONS.items():
    register_task(Task(
        _name, f"{_formula} mod p, inputs [a, b, =]", pair_examples(_fn, skip_b0=_name in NONZERO_B_TASKS),
        (lambda cfg: cfg.p * (cfg.p - 1)) if _name in NONZERO_B_TASKS else _pairs,
        structure=_structure, check=_prime_p if _name == "mod_div" else None, token_pair=True))


def task_group(task: str):
    """The ``analyses.groups.Group`` of a group task (``s4``: S_4, ``s5``: S_5, ``a5``: A_5)."""
    from analyses import groups

    return {"s": groups.symmetric, "a": groups.alternating}[task[0]](int(task[1:]))


def _group_examples(cfg: "TrainConfig") -> tuple[Int[Tensor, "N 3"], Int[Tensor, "N"]]:
    return pair_examples(lambda a, b, p: task_group(cfg.task).table[a, b])(cfg)


for _name, _order, _what in (("s4", 24, "S_4"), ("s5", 120, "S_5"), ("a5", 60, "A_5")):
    register_task(Task(_name, f"composition g·h in {_what}, inputs [g, h, =]", _group_examples, _pairs,
                       structure=Structure("group", group=_name), group_order=_order, token_pair=True))


DIGITS_EXAMPLES, DIGITS_FEATURES, DIGITS_CLASSES = 1797, 64, 10


def digits() -> tuple[Float[Tensor, "1797 64"], Int[Tensor, "1797"]]:
    """scikit-learn's bundled 8x8 handwritten digits (shipped with the package, no download): the
    1797 images as float32 rows of 64 pixel intensities scaled from 0..16 to [0, 1], and their
    labels 0..9, in scikit-learn's order."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.tensor(d.data / 16.0, dtype=torch.float32), torch.tensor(d.target, dtype=torch.long)


register_task(Task("digits", "scikit-learn's bundled 8x8 handwritten digits (64 pixels -> 10 classes)",
                   lambda cfg: digits(), lambda cfg: DIGITS_EXAMPLES, d_vocab=lambda cfg: 0,
                   d_vocab_out=lambda cfg: DIGITS_CLASSES, n_ctx=lambda cfg: DIGITS_FEATURES, answer_positions=(),
                   family="mlp"))


# ---- regression: Omnigrok's teacher-student task -----------------------------------------------------------
REGRESSION_TOL = 1e-3  # a regression example is right when its mean squared error is below this (Omnigrok's threshold)
TEACHER_IN, TEACHER_OUT, TEACHER_WIDTH, TEACHER_EXAMPLES, TEACHER_TRAIN = 5, 5, 100, 200, 100


def teacher_examples(cfg: "TrainConfig") -> tuple[Tensor, Tensor]:
    """Omnigrok's teacher-student regression (its ``teacher-student`` notebooks): 200 inputs drawn from N(0, I_5)
    and their targets, the outputs of a teacher MLP 5-100-100-5 with tanh activations and PyTorch's default
    initialisation (weights and biases uniform in +-1/sqrt(fan-in)). Everything is drawn from a generator seeded by
    ``cfg.data_seed``, so the teacher and the data are the same for every model seed."""
    gen = generator("teacher", cfg.data_seed)
    x = torch.randn(TEACHER_EXAMPLES, TEACHER_IN, generator=gen)
    h = x
    for fan_in, fan_out in ((TEACHER_IN, TEACHER_WIDTH), (TEACHER_WIDTH, TEACHER_WIDTH), (TEACHER_WIDTH, TEACHER_OUT)):
        bound = 1 / math.sqrt(fan_in)
        w = (torch.rand(fan_out, fan_in, generator=gen) * 2 - 1) * bound
        b = (torch.rand(fan_out, generator=gen) * 2 - 1) * bound
        h = _dot(h, w) + b.double()
        if fan_out == TEACHER_WIDTH:
            h = torch.tanh(h)
    return x, h.float()


def _dot(x: Tensor, w: Tensor) -> Tensor:
    """``x @ w.T`` in float64 as an elementwise product summed row by row: the same bits whatever the thread count
    (a float32 matmul's summation order, and so its last bits, depends on it; generated targets must not)."""
    return (x.double()[:, None, :] * w.double()[None]).sum(-1)


register_task(Task("teacher", "Omnigrok's teacher-student regression: 5 inputs from N(0, 1) -> a random tanh MLP 5-100-100-5's 5 outputs",
                   teacher_examples, lambda cfg: TEACHER_EXAMPLES, d_vocab=lambda cfg: 0, d_vocab_out=lambda cfg: TEACHER_OUT,
                   n_ctx=lambda cfg: TEACHER_IN, answer_positions=(), family="mlp", default_train_size=TEACHER_TRAIN, regression=True))


# ---- regression: Kumar et al.'s polynomial target ------------------------------------------------------------
POLY_DIM, POLY_TRAIN, POLY_TEST = 100, 550, 1000


def poly_examples(cfg: "TrainConfig") -> tuple[Tensor, Tensor]:
    """Kumar et al.'s polynomial regression (their Section 5): inputs ``x`` from N(0, I / D) in D = 100 dimensions,
    targets ``y = (beta . x)^2 / 2`` for a ``beta`` from N(0, I); 550 training and 1 000 test examples, all drawn from
    a generator seeded by ``cfg.data_seed``. ``[N, 100]`` inputs, ``[N, 1]`` targets."""
    gen = generator("poly", cfg.data_seed)
    x = torch.randn(POLY_TRAIN + POLY_TEST, POLY_DIM, generator=gen) / math.sqrt(POLY_DIM)
    beta = torch.randn(POLY_DIM, generator=gen)
    return x, (_dot(x, beta[None]) ** 2 / 2).float()


register_task(Task("poly", "Kumar et al.'s polynomial regression: x from N(0, I/100) in 100 dimensions -> (beta . x)^2 / 2",
                   poly_examples, lambda cfg: POLY_TRAIN + POLY_TEST, d_vocab=lambda cfg: 0, d_vocab_out=lambda cfg: 1,
                   n_ctx=lambda cfg: POLY_DIM, answer_positions=(), family="twolayer", default_train_size=POLY_TRAIN,
                   regression=True))


# ---- sequence tasks: examples drawn, not enumerated (interp.sequences) ----------------------------------
def generator(*keys) -> torch.Generator:
    """A ``torch.Generator`` seeded by ``keys`` (e.g. ``("test", 598)``): distinct keys, independent streams."""
    return torch.Generator().manual_seed(int(hashlib.sha256(repr(keys).encode()).hexdigest()[:15], 16))


def _rows(x: Tensor) -> list[tuple]:
    return [tuple(r) for r in x.reshape(len(x), -1).tolist()]


def draw(sample, n: int, gen: torch.Generator, exclude: set[tuple] = frozenset()) -> tuple[Tensor, Tensor]:
    """``n`` examples from ``sample`` with ``gen``, every one whose input is in ``exclude`` (rows as tuples) drawn again."""
    xs, ys, have = [], [], 0
    while have < n:
        x, y = sample(n - have, gen)
        keep = torch.tensor([r not in exclude for r in _rows(x)], dtype=torch.bool)
        xs.append(x[keep])
        ys.append(y[keep])
        have += int(keep.sum())
    return torch.cat(xs), torch.cat(ys)


def sequence_examples(sample, test_size: int):
    """``cfg -> (inputs, labels)`` of a sequence task: ``cfg.n_train`` training draws, then ``test_size`` test
    draws none of which is a training input (the module docstring says how they are seeded)."""

    def examples(cfg: "TrainConfig") -> tuple[Tensor, Tensor]:
        x_tr, y_tr = draw(sample, cfg.n_train, generator("train", cfg.data_seed))
        x_te, y_te = draw(sample, test_size, generator("test", cfg.data_seed), set(_rows(x_tr)))
        return torch.cat([x_tr, x_te]), torch.cat([y_tr, y_te])

    return examples


def register_sequence_task(name: str, description: str, sample, n_ctx: int, d_vocab: int, d_vocab_out: int,
                           answers: tuple[int, ...], train_size: int, test_size: int = 1000) -> Task:
    """Register a sequence task: its ``sample`` function, sizes, answer positions and default training-set size."""
    return register_task(Task(name, description, sequence_examples(sample, test_size), lambda cfg: cfg.n_train + test_size,
                              d_vocab=lambda cfg: d_vocab, d_vocab_out=lambda cfg: d_vocab_out, n_ctx=lambda cfg: n_ctx,
                              answer_positions=answers, sample=sample, default_train_size=train_size, test_size=test_size))


import interp.sequences as _seq  # noqa: E402  (the generators use nothing of this module)

register_sequence_task("add5", "5-digit addition, 1|3|4|5|2|+|5|8|3|2|1|=|0|7|1|7|7|3, six answer digits", _seq.sample_add5,
                       _seq.ADD_CTX, 12, 10, _seq.ADD_ANSWERS, train_size=700)
register_sequence_task("repeat_subseq", "24 distinct random tokens, then 8 of them again from a random start: predict the repeat",
                       _seq.sample_repeat_subseq, _seq.REPEAT_CTX, _seq.REPEAT_VOCAB, _seq.REPEAT_VOCAB, _seq.REPEAT_ANSWERS,
                       train_size=512)
register_sequence_task("max_elem", "START x1 .. x10 END -> the maximum (values 0..15)", _seq.sample_max_elem, _seq.MAX_CTX,
                       _seq.MAX_VALUES + 2, _seq.MAX_VALUES, (-1,), train_size=1000)


def input_rows(inputs: Tensor) -> set[tuple]:
    """The inputs as a set of tuples (what ``draw`` excludes)."""
    return set(_rows(inputs.cpu()))


def infinite_batch(cfg: "TrainConfig", step: int, exclude: set[tuple]) -> tuple[Tensor, Tensor]:
    """The fresh batch of ``cfg.batch_size`` examples that update ``step`` of an ``infinite_data`` run trains on:
    drawn from ``("batch", cfg.seed, step)`` (so a resumed run draws the same), none of them in ``exclude``
    (the test inputs, ``input_rows``)."""
    return draw(cfg.task_spec.sample, cfg.batch_size, generator("batch", cfg.seed, step), exclude)


# ---- examples and their split ----------------------------------------------------------------------
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


def all_examples(cfg: "TrainConfig") -> tuple[Tensor, Int[Tensor, "N"]]:
    """Every example of ``cfg.task`` and its label, in the task's fixed order (``Task.examples``)."""
    return get_task(cfg.task).examples(cfg)


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


def make_dataset(cfg: "TrainConfig") -> Dataset:
    """The inputs, labels and seeded train/test split that ``cfg`` describes (with its label noise).

    The digits task splits its 1797 images the same way (seeded permutation, first ``n_train``)."""
    inputs, labels = all_examples(cfg)
    if cfg.task_spec.sequence:  # drawn training set first, then the held-out test set
        return Dataset(inputs, labels, torch.arange(cfg.n_train), torch.arange(cfg.n_train, len(labels)))
    train_idx, test_idx, random_labels = split_indices(len(labels), cfg.n_train, cfg.data_seed, cfg.d_vocab_out)
    train_labels = labels[train_idx].clone()
    n_noisy = round(cfg.label_noise * len(train_idx))
    if n_noisy:  # (never on a regression task: refused by TrainConfig)
        train_labels[:n_noisy] = random_labels[:n_noisy]
    return Dataset(inputs, labels, train_idx, test_idx, train_labels)


@functools.lru_cache(maxsize=2)
def _epoch_order(seed: int, n: int, epoch: int) -> Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def batch_positions(cfg: "TrainConfig", step: int) -> Int[Tensor, "batch"] | None:
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
