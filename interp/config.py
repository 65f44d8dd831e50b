"""The one frozen config of a training run.

Every field is a CLI flag of ``python -m interp.train`` (see ``interp.train.build_parser``): a new
field is a new flag. Derived sizes are properties, so changing ``p`` can never leave ``d_vocab``
stale (the bug of the original grokking code, whose ``d_vocab = p + 1`` was frozen at class
definition).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any, Callable

from interp.errors import ConfigError  # noqa: F401  (re-exported: interp.config.ConfigError)
from interp.tasks import TASKS, Task, get_task, is_prime  # noqa: F401  (is_prime: re-exported)

# The tasks (interp.tasks.TASKS) and model families (interp.families.FAMILIES) are registries: a new one is
# one module and one registration line there; the config names them and asks them for sizes.
ENGINES = ("auto", "fast", "hooked")
GROK_ACC = 0.99  # test accuracy that counts as generalised (stop_after_grok in interp.stopping, the sweeps' test_99_step)
GRAD_FILTERS = ("none", "ema", "ma")
LOSSES = ("softmax", "stablemax", "mse", "softmax32")
OPTIMIZERS = ("adamw", "orthoadamw", "sgd")
NORMALIZATIONS = ("none", "LN")
ACT_FNS = ("relu", "gelu", "tanh")
MLP_CHOICES = {"mlp_embed": ("tied", "untied", "onehot"), "mlp_combine": ("concat", "sum", "shared"),
               "mlp_unembed": ("direct", "project"), "mlp_init": ("torch", "chughtai", "minegishi")}  # interp.mlp


# Named sets of field values (``--preset NAME``; explicit flags still win).
PRESETS: dict[str, dict] = {
    # A small run that groks on a 2-core CPU in under a minute: train accuracy reaches 99% by step ~100,
    # test accuracy plateaus and jumps later. The budget is 1.5x the slowest of 3 seeds measured with
    # `python -m interp.sweep mod_add --preset small --steps 9000 --stop-after-grok 100 --grid seed=1,2,3`
    # (commit 7f184d2, 2-core Intel Xeon): test accuracy >= 99% at steps 650, 2850 and 1950.
    "small": dict(p=59, frac=0.4, d_model=64, d_mlp=256, lr=3e-3, wd=1.0, steps=4500, eval_every=50, save_every=50),
    # Omnigrok's recipe on the digits MLP (64-200-200-10, python -m interp.train digits --preset digits):
    # 1000 training images, initial weights (biases too) x 8, MSE against one-hot targets, AdamW whose
    # weight decay pulls the norm down (lr x wd = 1e-4 per step, so that this happens in ~10^4 steps).
    "digits": dict(train_size=1000, d_mlp=200, init_scale=8.0, freeze_biases=False, loss="mse", lr=2e-3, wd=0.05,
                   steps=12000, eval_every=100, save_every=1000),
    # Group composition in S4 (python -m interp.train s4 --preset s4): 24 x 24 = 576 pairs, 80% for training,
    # the canonical widths (d_model 128, d_mlp 512), lr 3e-3, weight decay 1, mini-batches of 128: of the settings
    # measured over seeds (docs/presets.md) the one where every seed measured (0-9) reaches 99% test accuracy; on the
    # full batch some seeds stay at chance. The budget is 1.5x the slowest seed (23 750 steps). Seed 5 stayed at >= 99%
    # for 15 000 steps after it got there, where some seeds dip for a while.
    "s4": dict(frac=0.8, lr=3e-3, wd=1.0, batch_size=128, steps=36000, seed=5, eval_every=50, save_every=250),
    # Group composition in S5 (python -m interp.train s5 --preset s5): 14 400 pairs, 50% for training; analysed in
    # docs/analyses/groups.md. The budget is 1.5x the slowest of seeds 1-3 (7 000 steps; docs/presets.md).
    "s5": dict(frac=0.5, d_model=128, d_mlp=512, lr=3e-3, wd=3.0, steps=10500, eval_every=100, save_every=250),
    # ---- the papers' own MLPs (--family mlp, interp.mlp; each setting read from the authors' code) ----
    # Chughtai et al. 2023, mainline S5 (bilal-chughtai/rep-theory-mech-interp, rep_theory/paper/mainline-S5/cfg.json):
    # untied embeddings 256 wide, concatenated, 128 ReLU neurons, no biases, N(0, 1/fan-in) init, AdamW lr 1e-3
    # wd 1 betas (0.9, 0.98), 40% of the pairs, full batch, 250 000 epochs, seed 2.
    "s5-mlp": dict(family="mlp", mlp_embed="untied", mlp_combine="concat", mlp_init="chughtai", d_model=256, d_mlp=128,
                   frac=0.4, lr=1e-3, wd=1.0, steps=250_000, seed=2, eval_every=500, save_every=2500),
    # devinterp's examples/grokking.ipynb (timaeus-research/devinterp): p = 53, one shared embedding 12 wide, a
    # linear map per operand (with bias) summed, GELU, 48 neurons, output layer without bias; torch.optim.Adam
    # lr 5e-3 with L2 2e-4 (betas 0.9, 0.999), batches of 128, 40% of the pairs, 25 000 steps, a checkpoint every 250.
    "devinterp-mlp": dict(family="mlp", p=53, mlp_embed="tied", mlp_combine="sum", act_fn="gelu", d_model=12, d_mlp=48,
                          freeze_biases=False, mlp_out_bias=False, frac=0.4, lr=5e-3, wd=0.0, l2=2e-4, beta2=0.999,
                          batch_size=128, steps=25_000, seed=0, eval_every=250, save_every=250),
    # Minegishi et al. 2024, grokking tickets' MLP (gouki510/Grokking-Tickets, config/config.py and model.py OnlyMLP):
    # p = 67, one shared embedding 500 wide (N(0, 1/p)), one shared map to 48 ReLU neurons applied to each operand and
    # summed, back to 500, then to the classes; no biases; AdamW lr 1e-3 wd 1 betas (0.9, 0.98), 40%, full batch,
    # 30 000 epochs (their dense model for tickets; the repository's latest config trains with an L1 term instead).
    "tickets-mlp": dict(family="mlp", p=67, mlp_embed="tied", mlp_combine="shared", mlp_unembed="project",
                        mlp_init="minegishi", d_model=500, d_mlp=48, frac=0.4, lr=1e-3, wd=1.0, steps=30_000,
                        eval_every=100, save_every=500),
    # Prieto et al. 2025, StableMax on the MLP (LucasPrietoAl/grokking-at-the-edge-of-numerical-stability, models.py
    # and run_main_experiments.sh, Fig. 1): one-hot a and b concatenated, two ReLU layers of 200, no biases, PyTorch
    # init, StableMax cross-entropy, AdamW lr 0.01 wd 0 beta2 0.999 eps 1e-25, 40%, full batch, 80 000 epochs, seed 42.
    "stablemax-mlp": dict(family="mlp", mlp_embed="onehot", mlp_combine="concat", mlp_depth=2, d_mlp=200, loss="stablemax",
                          frac=0.4, lr=1e-2, wd=0.0, beta2=0.999, adam_eps=1e-25, steps=80_000, seed=42,
                          eval_every=500, save_every=2000),
    # Fan et al. 2024, deep grokking (Olivia-fsm/Deep-Grokking, mnist/grokking/train_mnist_mlp.py, the first run of
    # script mlp_0.sh, "mlp_d12_w400_tp2000_scale8_wd002"): 12 linear layers (11 hidden, 400 wide, biases), every
    # initial parameter x 8, MSE against one-hot targets, AdamW lr 1e-3 wd 0.02 with torch's default betas (0.9, 0.999),
    # batches of 200, 100 000 steps; on the bundled digits, 1000 training images (their code's default; the script's
    # 2000 is more than the 1797 digits hold). Their scripts pair depth 12 and scale 8 with wd 0.02 or 0.015 at 2000
    # images and with 0.01 only at 5000 or 8000: the smallest training set is the closest to ours.
    # Omnigrok's teacher-student grokking (KindXiaoming/Omnigrok teacher-student/grokking/regression_grokking.ipynb):
    # student 5-100-100-5 tanh with biases, PyTorch's init x 2, 100 training examples, MSE, AdamW lr 3e-4 wd 0.05
    # (torch's default betas), full batch, 10^5 steps.
    "omnigrok-teacher": dict(d_mlp=100, mlp_depth=2, act_fn="tanh", freeze_biases=False, init_scale=2.0, loss="mse", lr=3e-4, wd=0.05,
                             beta2=0.999, steps=100_000, eval_every=200, save_every=5000),
    "deep-mlp": dict(mlp_depth=11, d_mlp=400, init_scale=8.0, freeze_biases=False, loss="mse", lr=1e-3, wd=0.02, beta2=0.999,
                     batch_size=200, train_size=1000, steps=100_000, eval_every=500, save_every=2500),
    # ---- the sequence tasks (interp.sequences; docs/experiments/phase.md) ----
    # Nanda et al.'s 5-digit addition (progress-measures-paper, Non_Modular_Addition_Grokking_Tasks notebook): 1 layer,
    # width 512, 4 heads, MLP 2048, ReLU, no LayerNorm, biases trained, AdamW lr 1e-4 wd 0.1 betas (0.9, 0.98), 10
    # warm-up steps, 3000 full-batch steps on 700 examples (the slides' run; add --infinite-data for batches of 64).
    "add5": dict(d_model=512, n_heads=4, d_mlp=2048, freeze_biases=False, lr=1e-4, wd=0.1, warmup=10, steps=3000,
                 eval_every=10, save_every=100),
    # The slides' repeated subsequences: a 2-layer attention-only transformer on 512 examples; the width, heads and
    # optimiser are this suite's (the notebook's settings for this task are not published).
    "repeat_subseq": dict(n_layers=2, attn_only=True, d_model=64, n_heads=4, freeze_biases=False, lr=3e-3, wd=0.3, warmup=10,
                          steps=10_000, eval_every=50, save_every=250),
    # The slides' maximum of a sequence, on the 1-layer model of the 5-digit task at width 128 (this suite's choice).
    "max_elem": dict(d_model=128, n_heads=4, d_mlp=512, freeze_biases=False, lr=1e-3, wd=1.0, warmup=10, steps=5000,
                     eval_every=50, save_every=250),
}

# Where each paper preset comes from (printed by --help).
PRESET_SOURCES: dict[str, str] = {
    "s5-mlp": "Chughtai et al. 2023, bilal-chughtai/rep-theory-mech-interp rep_theory/paper/mainline-S5/cfg.json",
    "devinterp-mlp": "devinterp examples/grokking.ipynb, timaeus-research/devinterp",
    "tickets-mlp": "Minegishi et al. 2024, gouki510/Grokking-Tickets config/config.py, model.py OnlyMLP",
    "stablemax-mlp": "Prieto et al. 2025, LucasPrietoAl/grokking-at-the-edge-of-numerical-stability models.py, Fig. 1 run",
    "deep-mlp": "Fan et al. 2024, Olivia-fsm/Deep-Grokking mnist/grokking/train_mnist_mlp.py on the bundled digits",
    "add5": "Nanda et al. 2023, progress-measures-paper Non_Modular_Addition_Grokking_Tasks notebook; 700 examples from the grokking slides",
    "repeat_subseq": "the grokking slides (2-layer attention-only, 512 examples); width and optimiser this suite's",
    "max_elem": "the grokking slides' task; model and optimiser this suite's",
    "omnigrok-teacher": "Liu et al. 2023 (Omnigrok), KindXiaoming/Omnigrok teacher-student/grokking/regression_grokking.ipynb",
}

# The task each preset is written for (--preset NAME on another task is refused); a preset not named here
# suits any modular task.
PRESET_TASKS: dict[str, str] = {"digits": "digits", "s4": "s4", "s5": "s5", "s5-mlp": "s5", "devinterp-mlp": "mod_add",
                                "tickets-mlp": "mod_add", "stablemax-mlp": "mod_add", "deep-mlp": "digits",
                                "add5": "add5", "repeat_subseq": "repeat_subseq", "max_elem": "max_elem", "omnigrok-teacher": "teacher"}


# The step at which a run of each preset counts as grokked, for the measurement of its budget over seeds
# (interp.snapshot, docs/presets.md): "test_99", the first evaluation at 99 % test accuracy, unless named here.
# "late_jump": half of the test accuracy's rise after memorisation (analyses.timing.late_jump, the Omnigrok
# experiment's rule), for the digits MLP, whose test accuracy levels off below 99 %.
PRESET_GROK_RULES: dict[str, str] = {"digits": "late_jump"}

P_DEFAULT = 113  # TrainConfig.p's default (group tasks replace it by the group's order)
FRAC_DEFAULT = 0.3  # TrainConfig.frac's default


@dataclass(frozen=True)
class TrainConfig:
    """A training run: task, split, model shape, optimiser and schedule.

    Defaults are the canonical Nanda et al. (2023) set-up as run in the TransformerLens grokking
    demo: ``a + b mod 113``, 30% of the pairs for training, a 1-layer 4-head ReLU transformer without
    LayerNorm, full-batch AdamW (lr 1e-3, weight decay 1.0, betas (0.9, 0.98)), model seed 999 and
    data seed 598.
    """

    task: str = field(default="mod_add", metadata={"help": "the problem (a registered interp.tasks.Task)"})
    family: str = field(default="auto", metadata={"help": "the model family (a registered interp.families.ModelFamily): 'transformer', 'mlp', or 'auto' (the task's own; config.json records the one chosen)"})
    p: int = field(default=113, metadata={"help": "the modulus; '=' is token id p (a group task: the group's order, set for you)"})
    frac: float = field(default=FRAC_DEFAULT, metadata={"help": "fraction of all pairs used for training, in (0, 1); ignored when --train-size is given"})
    train_size: int | None = field(default=None, metadata={"help": "number of training pairs (instead of --frac); the split is the same seeded permutation, so a smaller size is a prefix of a larger one; all pairs leave no test split and the test metrics are NaN"})
    label_noise: float = field(default=0.0, metadata={"help": "fraction of the training pairs whose label is replaced by a seeded uniform random label (1.0: all random; test labels stay true)"})
    steps: int = field(default=15000, metadata={"help": "number of full-batch optimiser steps"})
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate"})
    wd: float = field(default=1.0, metadata={"help": "AdamW (decoupled) weight decay"})
    l2: float = field(default=0.0, metadata={"help": "Adam's coupled L2 term (torch.optim.Adam's weight_decay): g <- g + l2 * w before the Adam moments, after a gradient filter and ⊥Grad; Grokfast's code decays this way (with --wd 0 the optimiser is then Adam with L2)"})
    beta1: float = field(default=0.9, metadata={"help": "AdamW beta1"})
    beta2: float = field(default=0.98, metadata={"help": "AdamW beta2"})
    warmup: int = field(default=0, metadata={"help": "linear learning-rate warm-up steps (the paper used 10, the demo 0)"})
    seed: int = field(default=999, metadata={"help": "model initialisation seed"})
    data_seed: int = field(default=598, metadata={"help": "seed of the train/test split"})
    d_model: int = field(default=128, metadata={"help": "residual stream width"})
    n_heads: int = field(default=4, metadata={"help": "attention heads (d_head = d_model / n_heads)"})
    d_mlp: int = field(default=512, metadata={"help": "MLP hidden width (digits: the width of both hidden layers of the 64-d_mlp-d_mlp-10 MLP)"})
    n_layers: int = field(default=1, metadata={"help": "transformer blocks (Power et al. and Grokfast used 2); more than 1 trains through the hooked engine"})
    attn_only: bool = field(default=False, metadata={"help": "attention-only transformer blocks (no MLP; the repeated-subsequence task's 2-layer model); trains through the hooked engine; transformer family only"})
    normalization: str = field(default="none", metadata={"help": "'none' (Nanda et al.) or 'LN' (LayerNorm before attention, MLP and unembedding; Power et al. use LayerNorm, placed after each residual sum); LN trains through the hooked engine"})
    act_fn: str = field(default="relu", metadata={"help": "MLP activation: 'relu' (Nanda et al.), 'gelu' (trains through the hooked engine) or 'tanh' (the MLP on regression tasks: Omnigrok's teacher-student)"})
    # ---- the mlp family (interp.mlp; --family mlp on the token tasks, the digits task's own)
    mlp_depth: int | None = field(default=None, metadata={"help": "the MLP's hidden layers, each --d-mlp wide (none: 2 on the digits, Omnigrok's 64-200-200-10; 1 on tokens, as Chughtai et al., devinterp and Minegishi et al.); mlp family only"})
    mlp_embed: str = field(default="untied", metadata={"help": "how the MLP embeds each operand: 'tied' (one --d-model-wide table for a and b), 'untied' (one per operand) or 'onehot' (no table: the one-hot vector); mlp family only"})
    mlp_combine: str = field(default="concat", metadata={"help": "how the operands enter the MLP's first hidden layer: 'concat' (one matrix over both embeddings), 'sum' (an nn.Linear per operand, each with a bias, summed) or 'shared' (one nn.Linear applied to each, summed); mlp family only"})
    mlp_unembed: str = field(default="direct", metadata={"help": "the MLP's output: 'direct' (last hidden layer -> classes) or 'project' (hidden -> d_model -> classes, Minegishi et al.); mlp family only"})
    mlp_init: str = field(default="torch", metadata={"help": "the MLP's initialisation: 'torch' (PyTorch's nn.Embedding / nn.Linear defaults), 'chughtai' (every matrix N(0, 1/fan-in), embeddings N(0, 1/d_model)) or 'minegishi' (the same, embeddings N(0, 1/p)); then x --init-scale; mlp family only"})
    mlp_out_bias: bool = field(default=True, metadata={"help": "the MLP's output layer has a bias (when biases train, --no-freeze-biases; devinterp's has none); mlp family only"})
    # ---- the twolayer family (interp.twolayer: Kumar et al.'s lazy-to-rich network)
    output_scale: float = field(default=1.0, metadata={"help": "alpha, the two-layer network's output scale (large: lazy training, small: rich); twolayer family only"})
    quad_eps: float = field(default=0.02, metadata={"help": "epsilon of the two-layer network's activation phi(z) = z + eps z^2 / 2 (Kumar et al.); twolayer family only"})
    infinite_data: bool = field(default=False, metadata={"help": "sequence tasks: train every step on a fresh batch of --batch-size examples (default 64) drawn from the seed and the step, none of them a test example; the train_* metrics are then measured on a fixed sample of the training distribution (the task's default training-set size); not with --train-size"})
    batch_size: int | None = field(default=None, metadata={"help": "examples per step (none: the full training set every step); mini-batches are an epoch-wise permutation seeded by --seed and the epoch, so a resumed run draws the same ones (Power et al.: 512)"})
    adam_eps: float = field(default=1e-8, metadata={"help": "AdamW epsilon (Prieto et al. use 1e-25 with StableMax)"})
    freeze_biases: bool = field(default=True, metadata={"help": "keep every bias at zero, as the TransformerLens demo does"})
    eval_every: int = field(default=100, metadata={"help": "evaluate train/test loss and accuracy every N steps"})
    save_every: int = field(default=100, metadata={"help": "write a checkpoint (and resume state) every N steps"})
    engine: str = field(default="auto", metadata={"help": "training forward: 'fast' (1-layer [a, b, =] specialisation), 'hooked' (HookedTransformer.forward), or 'auto' (fast where it applies)"})
    # ---- training options (README "Train"; interp.optim): weight norm, gradient filters, loss, optimiser
    init_scale: float = field(default=1.0, metadata={"help": "multiply every initial weight by this factor alpha (Omnigrok)"})
    fixed_norm: bool = field(default=False, metadata={"help": "after every step rescale the trainable parameters to their total L2 norm at step 0 (Omnigrok; needs --wd 0)"})
    grad_filter: str = field(default="none", metadata={"help": "Grokfast gradient filter: 'none', 'ema' (g += lambda * EMA of g) or 'ma' (g += lambda * mean of the last window gradients)"})
    filter_alpha: float = field(default=0.98, metadata={"help": "EMA filter: mu <- alpha * mu + (1 - alpha) * g, alpha in [0, 1)"})
    filter_lambda: float = field(default=2.0, metadata={"help": "gradient filter gain: g <- g + lambda * filtered g, lambda >= 0"})
    filter_window: int = field(default=100, metadata={"help": "MA filter: number of recent gradients averaged"})
    loss: str = field(default="softmax", metadata={"help": "'softmax' cross-entropy, 'stablemax' cross-entropy (Prieto et al. 2025) or 'mse' (mean squared error against one-hot targets, Omnigrok), float64; or 'softmax32', the softmax cross-entropy in float32 (Prieto et al.'s control, whose softmax can collapse); evaluation reports the same loss"})
    optimizer: str = field(default="adamw", metadata={"help": "'adamw', 'orthoadamw' (the gradient's component along each weight tensor removed, then AdamW; Prieto et al. 2025) or 'sgd' (plain gradient descent with --lr and --wd as coupled L2, no momentum: Kumar et al.)"})
    init_from: str | None = field(default=None, metadata={"help": "start from another run's weights instead of the seeded init: RUN_DIR (its last checkpoint) or RUN_DIR@STEP; its model shape must match; the optimiser starts fresh (init_scale still multiplies the weights)"})
    stop_after_grok: int | None = field(default=None, metadata={"help": "end the run this many steps after its test accuracy first reaches 0.99 (checked at evaluations; none: train all --steps); the run records why it ended in config.json"})
    settle_tol: float | None = field(default=None, metadata={"help": "end the run once its test accuracy has moved by less than this (max - min) over the last fifth of the steps so far and lies more than 0.05 from its first evaluation's, not before --min-steps (ungrokking: 0.01; none: off); interp.stopping"})
    equilibrium_tol: float | None = field(default=None, metadata={"help": "end the run once its parameter norm has moved by less than this fraction of itself over the last fifth of the steps so far, not before --min-steps (D_crit at equilibrium: 0.01; none: off); interp.stopping"})
    min_steps: int = field(default=0, metadata={"help": "--settle-tol and --equilibrium-tol stop no run before this step"})
    # ---- pruning (docs/experiments/tickets.md; interp.prune)
    mask_from: str | None = field(default=None, metadata={"help": "safetensors file of 0/1 masks, one per masked weight named by parameter name (e.g. blocks.0.mlp.W_in); masked weights start at 0 and stay exactly 0; '{seed}' in the path is replaced by --seed; the run keeps a copy as masks.safetensors"})

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> None:
            raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)!r}: {why}")

        if self.task not in TASKS:
            bad("task", f"unknown task; known tasks: {', '.join(TASKS)}")
        task = TASKS[self.task]
        if task.group_order is not None:
            n = task.group_order
            if self.p == P_DEFAULT:  # not given: p becomes the group's order (what config.json then records)
                object.__setattr__(self, "p", n)
            elif self.p != n:
                bad("p", f"{self.task} is a group task: its size is fixed by the group ({n} elements), "
                         "and --p applies only to the modular tasks")
        if task.sequence:
            for name, default, why in (("p", P_DEFAULT, "--p applies only to the modular tasks"),
                                       ("frac", FRAC_DEFAULT, "its examples are drawn, not enumerated: give --train-size"),
                                       ("label_noise", 0.0, "label noise is for the single-answer tasks")):
                if getattr(self, name) != default:
                    bad(name, f"{self.task} is a sequence task: {why}")
            if self.infinite_data and self.train_size is not None:
                bad("train_size", "--infinite-data trains on fresh examples every step; a training-set size does not apply")
            if self.infinite_data and self.batch_size is None:  # Nanda et al.'s batch (what config.json then records)
                object.__setattr__(self, "batch_size", 64)
        elif task.default_train_size and self.frac != FRAC_DEFAULT:
            bad("frac", f"{self.task} has a fixed training-set size ({task.default_train_size}): give --train-size")
        if self.infinite_data and not task.sequence:
            bad("infinite_data", f"{self.task} has a finite set of examples; --infinite-data applies to the sequence tasks "
                                 f"({', '.join(k for k, t in TASKS.items() if t.sequence)})")
        if task.regression:
            if self.loss == "softmax":  # the default: a regression trains on the squared error (what config.json then records)
                object.__setattr__(self, "loss", "mse")
            if self.loss != "mse":
                bad("loss", f"{self.task} is a regression task (real-valued targets): only mse applies")
            if self.label_noise:
                bad("label_noise", f"{self.task} is a regression task: label noise replaces class labels")
        if self.p < 2:
            bad("p", "the modulus must be at least 2")
        if task.check is not None and (why := task.check(self)) is not None:
            bad("p", why)
        from interp.families import FAMILIES  # the families build models (torch, TransformerLens): imported late

        if self.family == "auto":
            object.__setattr__(self, "family", task.family)
        if self.family not in FAMILIES:
            bad("family", f"unknown model family; known: auto, {', '.join(FAMILIES)}")
        if not 0.0 < self.frac < 1.0:
            bad("frac", "must lie strictly between 0 and 1")
        if self.train_size is not None and not 1 <= self.train_size <= self.n_examples:
            bad("train_size", f"must lie in [1, {self.n_examples}] ({self.task} mod {self.p} has {self.n_examples} pairs; "
                              "all of them leave no test split)")
        if not 0.0 <= self.label_noise <= 1.0:
            bad("label_noise", "must lie in [0, 1]")
        for name in ("steps", "warmup"):
            if getattr(self, name) < 0:
                bad(name, "must be >= 0")
        for name in ("eval_every", "save_every", "d_model", "n_heads", "d_mlp"):
            if getattr(self, name) < 1:
                bad(name, "must be >= 1")
        if self.lr <= 0:
            bad("lr", "must be > 0")
        if self.wd < 0:
            bad("wd", "must be >= 0")
        if not (math.isfinite(self.l2) and self.l2 >= 0):
            bad("l2", "must be a finite number >= 0")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                bad(name, "must lie in [0, 1)")
        for name, allowed in (("normalization", NORMALIZATIONS), ("act_fn", ACT_FNS), *MLP_CHOICES.items()):
            if getattr(self, name) not in allowed:
                bad(name, f"must be one of {', '.join(allowed)}")
        if self.n_layers < 1:
            bad("n_layers", "must be >= 1")
        if self.mlp_depth is not None and self.mlp_depth < 1:
            bad("mlp_depth", "must be >= 1 (or none: the task's default)")
        if self.family == "mlp" and self.mlp_depth is None:  # what config.json then records
            object.__setattr__(self, "mlp_depth", 2 if task.d_vocab(self) == 0 else 1)
        if self.batch_size is not None and not 1 <= self.batch_size:
            bad("batch_size", "must be >= 1 (or none: full batch)")
        if not (math.isfinite(self.adam_eps) and self.adam_eps > 0):
            bad("adam_eps", "must be a finite number > 0")
        if self.engine not in ENGINES:
            bad("engine", f"must be one of {', '.join(ENGINES)}")
        if not (math.isfinite(self.output_scale) and self.output_scale > 0):
            bad("output_scale", "must be a finite number > 0")
        if self.family != "twolayer":
            from interp.twolayer import TWOLAYER_DEFAULTS

            for name, default in TWOLAYER_DEFAULTS.items():
                if getattr(self, name) != default:
                    bad(name, "is an option of the twolayer family (Kumar et al.'s network: --family twolayer)")
        family_error = FAMILIES[self.family].check(self)
        if family_error is not None:
            bad(*family_error)
        if not (math.isfinite(self.init_scale) and self.init_scale > 0):
            bad("init_scale", "must be a finite number > 0")
        if self.fixed_norm and self.wd != 0:
            bad("fixed_norm", f"needs --wd 0 (got --wd {self.wd!r}): weight decay would fight the fixed norm")
        if self.fixed_norm and self.l2 != 0:
            bad("fixed_norm", f"needs --l2 0 (got --l2 {self.l2!r}): an L2 term would fight the fixed norm")
        for name, allowed in (("grad_filter", GRAD_FILTERS), ("loss", LOSSES), ("optimizer", OPTIMIZERS)):
            if getattr(self, name) not in allowed:
                bad(name, f"must be one of {', '.join(allowed)}")
        if not 0.0 <= self.filter_alpha < 1.0:
            bad("filter_alpha", "must lie in [0, 1)")
        if not (math.isfinite(self.filter_lambda) and self.filter_lambda >= 0):
            bad("filter_lambda", "must be a finite number >= 0")
        if self.filter_window < 1:
            bad("filter_window", "must be >= 1")
        if self.stop_after_grok is not None and self.stop_after_grok < 0:
            bad("stop_after_grok", "must be >= 0 steps (or none)")
        for name in ("settle_tol", "equilibrium_tol"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v > 0):
                bad(name, "must be a finite number > 0 (or none)")
        if not 0 <= self.min_steps <= self.steps:
            bad("min_steps", f"must lie in [0, --steps {self.steps}]")
        if self.init_from is not None and not self.init_from.strip():
            bad("init_from", "must name a run directory (RUN_DIR or RUN_DIR@STEP)")
        if self.mask_from is not None and not self.mask_from.strip():
            bad("mask_from", "must be a file path (or none)")

    # ---- derived sizes -------------------------------------------------------------------
    @property
    def task_spec(self) -> "Task":
        """The registered ``interp.tasks.Task`` this config trains on."""
        return get_task(self.task)

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def d_vocab(self) -> int:
        """Input vocabulary (``Task.d_vocab``): for ``[a, b, =]`` tasks the residues 0..p-1 and '=' (id p)."""
        return self.task_spec.d_vocab(self)

    @property
    def d_vocab_out(self) -> int:
        """Number of classes (``Task.d_vocab_out``): the residues 0..p-1 (digits: 10)."""
        return self.task_spec.d_vocab_out(self)

    @property
    def n_ctx(self) -> int:
        """Input length (``Task.n_ctx``): 3 for ``[a, b, =]``."""
        return self.task_spec.n_ctx(self)

    @property
    def eq_token(self) -> int:
        """The '=' token of the ``[a, b, =]`` tasks: id p."""
        return self.p

    @property
    def n_examples(self) -> int:
        """Number of examples (``Task.n_examples``): p^2 pairs (p(p - 1) for mod_mul_nz and mod_div); digits: 1797 images."""
        return self.task_spec.n_examples(self)

    @property
    def full_batch(self) -> bool:
        """Whether every step sees the whole training set (``batch_size`` none or at least ``n_train``)."""
        return self.batch_size is None or self.batch_size >= self.n_train

    @property
    def init_source(self) -> tuple[str, int | None] | None:
        """``init_from`` split into the run directory and the step (``None``: its last checkpoint).

        The text after the last ``@`` is the step when it is all digits; otherwise ``@`` is part of the name.
        """
        if self.init_from is None:
            return None
        head, sep, tail = self.init_from.rpartition("@")
        return (head, int(tail)) if sep and tail.isdigit() else (self.init_from, None)

    @property
    def n_train(self) -> int:
        """Training-set size: ``train_size`` if given, else the task's ``default_train_size`` (sequence tasks, the
        teacher), else ``int(frac * n_examples)``."""
        if self.train_size is not None:
            return self.train_size
        return self.task_spec.default_train_size or int(self.frac * self.n_examples)

    @property
    def mask_path(self) -> str | None:
        """``mask_from`` with ``{seed}`` replaced by the model seed (one spec, a mask per seed)."""
        return None if self.mask_from is None else self.mask_from.replace("{seed}", str(self.seed))

    # ---- (de)serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown config fields: {', '.join(sorted(unknown))}")
        return cls(**d)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


# ---- values from text (CLI flags, sweep grids) ------------------------------------------------
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _parse_bool(text: str) -> bool:
    try:
        return _BOOLS[text.strip().lower()]
    except KeyError:
        raise ValueError(f"{text!r} is not a boolean (true/false)") from None


def _parse_optional_int(text: str) -> int | None:
    return None if text.strip().lower() == "none" else int(text)


def _parse_optional_float(text: str) -> float | None:
    return None if text.strip().lower() == "none" else float(text)


def _parse_optional_str(text: str) -> str | None:
    return None if text.strip().lower() == "none" else text


_parse_bool.__name__ = "boolean"  # argparse names the expected type by __name__
_parse_optional_int.__name__ = "integer (or none)"
_parse_optional_float.__name__ = "number (or none)"
_parse_optional_str.__name__ = "text (or none)"
_PARSERS: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "str": str, "bool": _parse_bool, "int | None": _parse_optional_int,
                                             "float | None": _parse_optional_float, "str | None": _parse_optional_str}


def value_parser(name: str) -> Callable[[str], Any]:
    """The function that turns text into a value of ``TrainConfig`` field ``name`` (raises ``ValueError``)."""
    f = {f.name: f for f in fields(TrainConfig)}[name]
    return _PARSERS[f.type if isinstance(f.type, str) else f.type.__name__]
