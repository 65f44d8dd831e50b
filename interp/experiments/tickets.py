"""Grokking tickets (Minegishi et al. 2024): pruned, rewound subnetworks against dense and norm-matched controls.

Minegishi et al. train a dense network until it groks, keep the largest-magnitude weights of the
grokked model, rewind the kept weights to their initial values and retrain under that mask. They
report that these "grokking tickets" generalise several times sooner than the dense network, that
the dense initial weights rescaled to the ticket's L1 or L2 norm do not, and that neither do tickets
taken before the network generalised nor masks chosen at initialisation; and that at a critical
pruning rate (k ~ 0.81) a ticket groks even without weight decay. This experiment runs the same
comparison on this project's transformer.

**The pruning rate k** is the fraction of the weight matrices' entries *removed* (k = 0.6 keeps 40 %).
The authors' code calls the fraction *kept* ``sparsity`` (their ``sparsity = 0.4`` is k = 0.6 here).

**t_mem / t_gen** are the first evaluations with train / test accuracy >= 95 %, the paper's threshold.

**Which checkpoint is the ticket** (``ticket_step``, by the rule ``cleanup_end``): the paper takes the
ticket from the generalised solution (its dense network trained 50 000 epochs, far past t_gen) and
finds no speed-up from tickets taken at memorisation or during the transition. Here the ticket is
taken where the dense run's cleanup has ended, read off its own progress measure: the first
checkpoint, at or after the run first reached 99 % test accuracy, over whose last fifth of steps the
Gini coefficient of the embedding's Fourier norms (``gini_W_E``, ``gini_curve``) moved by less than
``CLEANUP_TOL``. A dense run that never reached 99 % test accuracy, or whose Gini was still moving at
its cap, gives no ticket: its seed is listed in the dense row of the summary (``no_ticket_seeds``)
and left out of every arm. The dense run trains its whole cap, so that cleanup can end within it.

**When the ticket was taken** (the paper's contrast, ``STAGES``): the same dense run also gives
tickets at memorisation (``ticket_mem``), mid-transition (``ticket_mid``) and at 99 % test accuracy
(``ticket_99``, roughly where this experiment used to take its ticket), pruned and rewound the same
way; the summary's second table and the figure ``tickets-when-taken`` set their t_gen and speed-up
against the moment they were taken.

Stages (each a sweep directory under ``DIR``; seeds vary the initial weights, the split is shared):

``dense``
    the dense network, the baseline; trains its whole cap (``--cap``); its checkpoints give the tickets.
``masks/``
    the masks every arm trains under, ``<arm>_seed<s>.safetensors`` (the k sweep's
    ``ticket_k<k>_seed<s>.safetensors``), and ``masks.json`` (per dense seed its t_gen, the step it
    reached 99 % test accuracy and the ticket's step, or null; per mask the checkpoint it came from,
    k, the kept fraction; the norms of the initial parameters with and without the ticket's mask and
    the rescale factors).
``ticket``
    magnitude pruning at rate ``--k`` of the dense run's ticket checkpoint, the end of its cleanup (``--scope global``: one
    threshold over all weight matrices; ``layer``: each matrix its own), the kept weights rewound
    to the dense run's step-0 weights (the same model seed builds the same initial weights) and
    retrained under the mask.
``dense_l1/seed<s>``, ``dense_l2/seed<s>``
    the dense initial parameters, every one multiplied by one factor (``init_scale``, which
    multiplies every parameter) so that the L1 (or L2) norm of all parameters equals the ticket's at
    step 0 (``rescale_factors``: the norm is taken over the same parameters the factor multiplies);
    no mask.
``ticket_mem``, ``ticket_mid``, ``ticket_99``
    tickets from the first checkpoint at or after memorisation (t_mem), from the checkpoint
    nearest the midpoint between t_mem and t_gen, and from the first checkpoint at or after the
    first evaluation with test accuracy >= 99 %.
``random``, ``snip``, ``grasp``, ``synflow``
    masks chosen at initialisation at the same k (``interp.prune``: random scores, SNIP
    ``|g * theta|``, GraSP ``theta * H g`` on the loss at temperature 200, SynFlow with 100 rounds
    on all p^2 inputs without labels).
``ticket_wd0``
    the ticket (its masks file) trained with weight decay 0.
``ticket_k/k<k>``, ``ticket_wd0_k/k<k>``
    the k sweep (``--k-sweep``, on by default in the full version): tickets at k = 0.3 ... 0.9
    with the dense run's weight decay, and at k = 0.80 ... 0.90 with weight decay 0 (the paper's
    App. H finds a critical k ~ 0.81 without weight decay); a k equal to ``--k`` is the main arm.

Every arm gets ``--cap`` as its step budget, the dense run's cap in the full version (where an arm
stops 500 steps after it grokked, which cannot move its t_gen).

``--quick`` (p = 59, the small preset; the dense run 8 000 steps, so that its cleanup can end, every
arm 3 000 steps; no early stop, no k sweep): every arm at k = 0.6, 3 seeds. The full version: p = 113, the canonical model, dense 50 000 steps
(the authors' code trains 50 000 full-batch epochs), every arm and the k sweep, 3 seeds. ``DIR/summary.csv`` has a row per arm and k: steps to 95 % train accuracy
(t_mem) and to 95 % test accuracy (t_gen), median and range over seeds, and how many seeds never
generalised within the budget (counted as later than any that did: a median is empty when half or
more never did).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path

import torch
from torch.func import functional_call

from analyses import fourier, progress_measures
from interp import plots, prune, runs, stopping
from interp.cli import number_list
from interp.config import GROK_ACC, PRESETS, ConfigError, TrainConfig
from interp.experiments import common
from interp.experiments.common import censored_median, ok_rows, spread
from interp.families import build_model, operand_embedding
from interp.losses import loss_fn
from interp.runs import RunError
from interp.sweep import RUNS_DIR, Spec
from interp.tables import RESULTS_FILE, fmt
from interp.tasks import make_dataset

log = logging.getLogger(__name__)

DESCRIPTION = "grokking tickets vs dense, norm-matched and pruned-at-init controls (Minegishi et al. 2024)"
SEEDS = [1, 2, 3]
THRESHOLD = 0.95  # t_mem / t_gen: first evaluation at or above this train / test accuracy (the paper's)
MASKED_ARMS = ("ticket", "ticket_mem", "ticket_mid", "ticket_99", "random", "snip", "grasp", "synflow", "ticket_wd0")
RESCALED_ARMS = ("dense_l1", "dense_l2")
METHODS = ("dense", "ticket", "dense_l1", "dense_l2", "ticket_mem", "ticket_mid", "ticket_99", "random", "snip", "grasp", "synflow",
           "ticket_wd0")
# the tickets taken at four moments of the dense run, in order (the paper's contrast): arm -> what the moment is
STAGES = {"ticket_mem": "memorisation (train accuracy >= 95%)", "ticket_mid": "transition (midway from t_mem to t_gen)",
          "ticket_99": "99% test accuracy", "ticket": "after cleanup (cleanup_end)"}
QUICK_CAP, FULL_CAP = 3000, 50_000  # dense step cap, and every arm's budget
STOP_AFTER_GROK = 500  # full version: the arms end this many steps after their test accuracy first reached 99%
CLEANUP_TOL = 0.01  # cleanup_end: the Gini of W_E moved by less than this over the last fifth of the steps
QUICK_DENSE_SAVE = 50  # the quick dense run's checkpoint spacing (the Gini of W_E is read at every checkpoint)
QUICK_DENSE_STEPS = 8000  # the quick dense run's least cap: its cleanup must end within it (the arms keep QUICK_CAP)
K_SWEEP = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # with weight decay (the paper: 0.7 best, 0.9 fails)
K_SWEEP_WD0 = (0.80, 0.81, 0.82, 0.83, 0.85, 0.87, 0.90)  # without weight decay (critical k ~ 0.81, App. H)
SWEEP_STAGES = {"ticket": "ticket_k", "ticket_wd0": "ticket_wd0_k"}  # arm -> the directory of its k sweep
GRASP_TEMPERATURE = 200.0
SYNFLOW_ROUNDS = 100
MASKS_DIR = "masks"
SUMMARY_COLUMNS = ["method", "k", "seeds", "diverged", "budget", "memorised", "median_t_mem", "min_t_mem", "max_t_mem",
                   "generalised", "never", "median_t_gen", "min_t_gen", "max_t_gen", "speedup_vs_dense", "no_ticket_seeds",
                   "median_from_step", "min_from_step", "max_from_step"]


SETTINGS = ("transformer", "mlp")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--p", type=int, default=None, help="modulus (default: 59 with --quick, else 113; with --setting mlp: 67)")
    p.add_argument("--setting", default="transformer", metavar="NAME",
                   help="the dense model: 'transformer' (the small preset with --quick, else the canonical 1-layer model) or 'mlp' "
                        "(Minegishi et al.'s own MLP setting, the tickets-mlp preset: p = 67, embedding 500, 48 ReLU neurons; "
                        "python -m interp.train --help names its source) (default: transformer)")
    p.add_argument("--k", type=float, default=0.6,
                   help="pruning rate of the arms: the fraction of the weight matrices' entries removed, in (0, 1) (default: 0.6, the paper's; "
                        "the authors' code's sparsity is the fraction kept, 1 - k)")
    p.add_argument("--scope", choices=prune.SCOPES, default="global", help="magnitude threshold over all weight matrices together, or per matrix (default: global)")
    p.add_argument("--cap", type=int, default=None,
                   help=f"every arm's step budget, and the dense run's (default: {QUICK_CAP} with --quick, {FULL_CAP} otherwise; "
                        f"with --quick the dense run trains at least {QUICK_DENSE_STEPS} steps, so that its cleanup can end)")
    p.add_argument("--k-sweep", action=argparse.BooleanOptionalAction, default=None,
                   help="also train tickets over a grid of k, with and without weight decay (default: on; off with --quick unless --ks or --ks-wd0 is given)")
    p.add_argument("--ks", default=None, metavar="K1,K2,...",
                   help=f"the k sweep with the dense run's weight decay (default: {','.join(f'{k:g}' for k in K_SWEEP)})")
    p.add_argument("--ks-wd0", default=None, metavar="K1,K2,...",
                   help=f"the k sweep with weight decay 0 (default: {','.join(f'{k:g}' for k in K_SWEEP_WD0)})")


def cap(args: argparse.Namespace) -> int:
    """Every arm's step budget (``--cap``), and the dense run's cap (with ``--quick`` at least ``QUICK_DENSE_STEPS``)."""
    c = getattr(args, "cap", None)
    c = (QUICK_CAP if args.quick else FULL_CAP) if c is None else c
    if c < 1:
        raise ConfigError(f"--cap {c}: the dense run's step cap must be >= 1")
    return c


def dense_spec(args: argparse.Namespace) -> Spec:
    """The dense stage, trained to its whole cap (no early stop: the tickets are read off its
    checkpoints afterwards, the last one after cleanup): ``--quick`` the small preset for at least
    ``QUICK_DENSE_STEPS``, a checkpoint every ``QUICK_DENSE_SAVE`` steps; the full version the
    canonical model for the cap, a checkpoint every 500; ``--setting mlp`` Minegishi et al.'s MLP
    (``tickets-mlp``) on the same schedules.

    Raises:
        ConfigError: ``--setting`` is not one of ``SETTINGS``.
    """
    steps = cap(args)
    setting = getattr(args, "setting", "transformer")
    if setting not in SETTINGS:
        raise ConfigError(f"--setting {setting}: must be one of {', '.join(SETTINGS)}")
    model = PRESETS["tickets-mlp"] if setting == "mlp" else PRESETS["small"] if args.quick else {"p": 113}
    model = {k: v for k, v in model.items() if k not in ("steps", "eval_every", "save_every")}
    if args.quick:
        steps = max(steps, QUICK_DENSE_STEPS)
        base = {"task": "mod_add", **model, "steps": steps, "eval_every": 50, "save_every": QUICK_DENSE_SAVE}
    else:
        base = {"task": "mod_add", **model, "steps": steps, "eval_every": 100, "save_every": 500}
    if args.p is not None:
        base["p"] = args.p
    return Spec(base, {"seed": SEEDS})


def sweep_rates(args: argparse.Namespace) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The k sweep's rates ``(with weight decay, without)``, ascending; both empty when there is no
    k sweep (``--no-k-sweep``, or ``--quick`` without ``--k-sweep``, ``--ks`` or ``--ks-wd0``).

    Raises:
        ConfigError: a rate that is not a number or lies outside (0, 1), or an empty list (checked whether or
            not the sweep runs).
    """
    given = {"--ks": getattr(args, "ks", None), "--ks-wd0": getattr(args, "ks_wd0", None)}
    out = []
    for (flag, ks), default in zip(given.items(), (K_SWEEP, K_SWEEP_WD0)):
        ks = default if ks is None else number_list(ks, flag, error=ConfigError)
        for k in ks:
            if not 0.0 < k < 1.0:
                raise ConfigError(f"{flag} {k!r}: a pruning rate (fraction of weights removed) must lie strictly between 0 and 1")
        out.append(tuple(sorted(set(ks))))
    on = getattr(args, "k_sweep", None)
    if on is None:
        on = not args.quick or any(v is not None for v in given.values())
    return (out[0], out[1]) if on else ((), ())


def arm_base(args: argparse.Namespace, dense: Spec) -> dict:
    """The fields every arm shares: the dense run's, with ``cap`` as the budget; fewer checkpoints
    (only the dense run's are read); the full version's arms end ``STOP_AFTER_GROK`` steps after
    their test accuracy first reached 99 %, which is after their t_gen and so cannot move it."""
    steps = cap(args)
    if args.quick:
        return {**dense.base, "steps": steps, "save_every": min(100, steps)}
    return {**dense.base, "steps": steps, "save_every": min(max(dense.base["save_every"], steps // 10), steps), "stop_after_grok": STOP_AFTER_GROK}


# ---- masks from the dense runs ------------------------------------------------------------------
def first_step(rows: list[dict], key: str, threshold: float | None = None) -> int | None:
    """``interp.experiments.common.first_step`` at this experiment's threshold (``THRESHOLD``, 95%)."""
    return common.first_step(rows, key, THRESHOLD if threshold is None else threshold)


def gini_curve(run_dir: Path) -> list[dict]:
    """``[{"step", "gini_W_E"}]`` at every checkpoint of a run: the Gini coefficient of the Fourier
    norms of the residue embeddings ``W_E[:p]`` (``analyses.progress_measures.gini`` of
    ``analyses.fourier.embedding_fourier_norms``, the ``gini_W_E`` of ``interp.analyze``)."""
    cfg = runs.read_config(run_dir)
    out = []
    for step in runs.checkpoint_steps(run_dir):
        emb = operand_embedding(runs.load_checkpoint(run_dir, step, cfg), cfg)  # W_E; an MLP's operand embeddings
        out.append({"step": step, "gini_W_E": progress_measures.gini(fourier.embedding_fourier_norms(emb, cfg.p))})
    return out


def cleanup_end(gini: list[dict], grok_step: int | None, tol: float = CLEANUP_TOL) -> int | None:
    """The first checkpoint at which the run's cleanup has ended: the rule that picks the grokked ticket.

    Nanda et al.'s cleanup is the phase after the generalising circuit has formed in which weight
    decay removes the memorising weights: the Gini coefficient of the embedding's Fourier norms
    (``gini_W_E``) rises steeply through it, then stays flat. Cleanup has ended at checkpoint s when

    - s is at or after ``grok_step`` (the first evaluation with test accuracy >= 99 %: the run has
      generalised, so a flat stretch of the memorisation plateau cannot count), and
    - over the checkpoints in the last fifth of the steps up to s (steps >= 0.8 s; at least
      ``interp.stopping.MIN_WINDOW_EVALS`` of them, so a curve watched briefly cannot look flat),
      ``gini_W_E`` moved (largest minus smallest) by less than ``tol`` (absolute; the Gini lies in
      [0, 1]).

    This is ``interp.stopping``'s "moved less than T over the last fifth" rule applied to the Gini,
    read off the checkpoints afterwards. On a curve rising until step r and flat after, it returns
    about r / 0.8 or later: never a step inside the rise.

    Args:
        gini: ``[{"step", "gini_W_E"}]`` at the checkpoints, ascending in step (``gini_curve``).
        grok_step: the first step with test accuracy >= 99 %; None (never): no cleanup end.
        tol: the largest movement of the Gini over the window that counts as flat.
    Returns:
        the step, or None when the run never generalised or its Gini was still moving at its last checkpoint.
    """
    if grok_step is None:
        return None
    for i, r in enumerate(gini):
        if r["step"] < grok_step:
            continue
        d = stopping.moved(gini[: i + 1], r["step"], "gini_W_E")
        if d is not None and d < tol:
            return r["step"]
    return None


def ticket_step(metrics: list[dict], gini: list[dict]) -> int | None:
    """The checkpoint the grokked ticket comes from: ``cleanup_end`` of the dense run (its metrics
    give the step it first reached 99 % test accuracy; ``gini`` is ``gini_curve``). None: no ticket."""
    return cleanup_end(gini, first_step(metrics, "test_acc", GROK_ACC))


def source_steps(metrics: list[dict], ckpts: list[int], gini: list[dict]) -> dict[str, int | None]:
    """The checkpoints the tickets come from, one per moment of the dense run (``STAGES``):
    ``ticket_mem`` the first at or after t_mem (else the last); ``ticket_mid`` the nearest to
    (t_mem + t_gen) / 2 (t_gen: the last checkpoint if the run never generalised); ``ticket_99`` the
    first at or after the first evaluation with test accuracy >= 99 % (None if never); ``ticket``
    from ``ticket_step``, the end of cleanup (None: no ticket)."""
    last = ckpts[-1]
    t_mem, t_gen, t_99 = first_step(metrics, "train_acc"), first_step(metrics, "test_acc"), first_step(metrics, "test_acc", GROK_ACC)
    mem = next((s for s in ckpts if t_mem is not None and s >= t_mem), last)
    mid_target = ((t_mem if t_mem is not None else 0) + (t_gen if t_gen is not None else last)) / 2
    mid = min(ckpts, key=lambda s: (abs(s - mid_target), s))
    s99 = next((s for s in ckpts if t_99 is not None and s >= t_99), None)
    return {"ticket": ticket_step(metrics, gini), "ticket_mem": mem, "ticket_mid": mid, "ticket_99": s99}


def _prunable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters() if prune.is_prunable(n)}


def init_masks(cfg: TrainConfig, method: str, k: float, scope: str) -> dict[str, torch.Tensor]:
    """Masks chosen at initialisation (``random``, ``snip``, ``grasp``, ``synflow``) for ``cfg``'s model."""
    model = build_model(cfg)
    theta = _prunable(model)
    if method == "random":
        return prune.keep_top(prune.random_scores(theta, cfg.seed), k, scope)
    data = make_dataset(cfg)
    x, y = data.inputs[data.train_idx], data.train_labels

    def logits(params, inputs):
        out = functional_call(model, params, (inputs,))
        return out[:, -1] if out.dim() == 3 else out  # a transformer's last position; an MLP's logits

    if method == "snip":
        return prune.keep_top(prune.snip(theta, lambda p: loss_fn(logits(p, x), y)), k, scope)
    if method == "grasp":
        return prune.keep_top(prune.grasp(theta, lambda p: loss_fn(logits(p, x) / GRASP_TEMPERATURE, y)), k, scope)
    # synflow: every parameter made non-negative, the sum of the logits over all p^2 inputs (no labels)
    rest = {n: p.detach().abs() for n, p in model.named_parameters() if n not in theta}
    return prune.synflow(theta, lambda p: logits({**rest, **p}, data.inputs).double().sum(), k, scope, SYNFLOW_ROUNDS)


def make_masks(dense_dir: Path, jobs: dict[str, tuple[str, float]], scope: str) -> tuple[dict[str, dict], dict[str, dict]]:
    """The masks of one dense run: ``jobs`` maps a mask's name to ``(method, k)`` (the k sweep's
    tickets are named ``ticket_k<k>``). Returns ``({name: masks}, {name: facts})``; ``facts`` holds
    the source step (tickets; None for masks chosen at initialisation), k and the kept fraction.
    The dense run must give a ticket (``ticket_step`` not None)."""
    cfg = runs.read_config(dense_dir)
    sources = source_steps(runs.read_metrics(dense_dir), runs.checkpoint_steps(dense_dir), gini_curve(dense_dir))
    weights: dict[int, dict] = {}
    out, facts = {}, {}
    for name, (method, k) in jobs.items():
        if method in sources:
            step = sources[method]
            if step not in weights:
                weights[step] = _prunable(runs.load_checkpoint(dense_dir, step, cfg))
            out[name] = prune.keep_top(prune.magnitude(weights[step]), k, scope)
        else:
            step = None
            out[name] = init_masks(cfg, method, k, scope)
        n = sum(t.numel() for t in out[name].values())
        facts[name] = {"from_step": step, "k": k, "scope": scope, "kept": sum(t.sum().item() for t in out[name].values()) / n}
    return out, facts


def rescale_factors(cfg: TrainConfig, ticket: dict[str, torch.Tensor]) -> dict[str, float]:
    """``init_scale`` factors that bring the dense initial parameters to the ticket's L1 / L2 norm at step 0.

    ``init_scale`` multiplies every parameter (``interp.model.build_model``), so the norms are taken
    over every parameter too: the dense initial weights against the ticket's (the same weights with
    the pruned entries zeroed; the positional embedding and the biases, never pruned, count in both).
    The rescaled dense network then has exactly the ticket's total L1 (L2) norm.
    """
    theta = {n: q.detach() for n, q in build_model(cfg).named_parameters()}
    (l1, l2), (t1, t2) = prune.norms(theta), prune.norms(theta, ticket)
    return {"dense_l1": t1 / l1, "dense_l2": t2 / l2, "init_l1": l1, "init_l2": l2, "ticket_l1": t1, "ticket_l2": t2}


def mask_name(k: float, main_k: float) -> str:
    """The masks file stem of the ticket at rate ``k``: ``ticket`` at the arms' rate, else ``ticket_k<k>``."""
    return "ticket" if k == main_k else f"ticket_k{k:g}"


# ---- the stages ---------------------------------------------------------------------------------
def plan_specs(args: argparse.Namespace) -> list[Spec]:
    """``--plan``: the dense stage and every arm at its budget, as if every seed gave a ticket (an
    upper bound: seeds that give no ticket train no arms, and the full version's arms may stop early)."""
    prune.check_rate(args.k)
    ks, ks0 = sweep_rates(args)
    dense = dense_spec(args)
    base = arm_base(args, dense)
    wd0 = {"wd": 0.0}
    arms = [Spec({**base, **(wd0 if a == "ticket_wd0" else {})}, {"seed": SEEDS}) for a in METHODS[1:]]
    arms += [Spec({**base, **extra}, {"seed": SEEDS}) for rates, extra in ((ks, {}), (ks0, wd0)) for k in rates if k != args.k]
    return [dense, *arms]


def run(args: argparse.Namespace, sweep) -> dict[str, dict]:
    from interp.sweep import check_values

    prune.check_rate(args.k)
    ks, ks0 = sweep_rates(args)
    dense = dense_spec(args)
    check_values(dense)  # bad --p or --cap: refused before anything is written
    base = arm_base(args, dense)
    out = Path(args.out)
    rows = {f"dense/{n}": r for n, r in sweep(dense, "dense").items()}
    mask_dir = (out / MASKS_DIR).resolve()  # absolute: member configs name their masks file
    info_path = mask_dir / "masks.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    jobs = {a: (a, args.k) for a in MASKED_ARMS if a != "ticket_wd0"}
    jobs.update({mask_name(k, args.k): ("ticket", k) for k in (*ks, *ks0) if k != args.k})
    done = []
    for seed in SEEDS:
        dense_dir = out / "dense" / RUNS_DIR / f"seed{seed}"
        if rows.get(f"dense/seed{seed}", {}).get("status") != "ok":
            log.warning("%s did not finish; its seed is left out of the arms", dense_dir)
            continue
        metrics = runs.read_metrics(dense_dir)
        t_99 = first_step(metrics, "test_acc", GROK_ACC)
        step = ticket_step(metrics, gini_curve(dense_dir))
        info[f"dense_seed{seed}"] = {"t_gen": first_step(metrics, "test_acc"), "t_99": t_99, "ticket_step": step}
        if step is None:
            why = (f"never reached {GROK_ACC:.0%} test accuracy" if t_99 is None
                   else f"its cleanup had not ended (cleanup_end: the Gini of W_E still moved by {CLEANUP_TOL:g} or more)")
            log.warning("%s %s within %d steps: no ticket, seed %d is left out of the arms", dense_dir, why, dense.base["steps"], seed)
            runs.write_text(info_path, json.dumps(info, indent=2) + "\n")
            continue
        todo = {n: j for n, j in jobs.items() if not (mask_dir / f"{n}_seed{seed}.safetensors").is_file() or f"{n}_seed{seed}" not in info}
        if todo:
            masks, facts = make_masks(dense_dir, todo, args.scope)
            for n, m in masks.items():
                prune.write_masks(mask_dir / f"{n}_seed{seed}.safetensors", m)
                info[f"{n}_seed{seed}"] = facts[n]
            if "ticket" in masks:
                info[f"rescale_seed{seed}"] = rescale_factors(runs.read_config(dense_dir), masks["ticket"])
        runs.write_text(info_path, json.dumps(info, indent=2) + "\n")
        done.append(seed)
    if not done:
        return rows
    for a in METHODS[1:]:
        if a in MASKED_ARMS:
            masks = "ticket" if a == "ticket_wd0" else a
            spec = Spec({**base, "mask_from": str(mask_dir / f"{masks}_seed{{seed}}.safetensors"), **({"wd": 0.0} if a == "ticket_wd0" else {})},
                        {"seed": done})
            rows.update({f"{a}/{n}": r for n, r in sweep(spec, a).items()})
        else:
            for s in done:
                factor = info[f"rescale_seed{s}"][a]
                spec = Spec({**base, "init_scale": base.get("init_scale", 1.0) * factor}, {"seed": [s]})
                rows.update({f"{a}/seed{s}/{n}": r for n, r in sweep(spec, f"{a}/seed{s}").items()})
    for arm, rates, extra in (("ticket", ks, {}), ("ticket_wd0", ks0, {"wd": 0.0})):
        for k in rates:
            if k == args.k:
                continue  # the arm itself
            stage = f"{SWEEP_STAGES[arm]}/k{k:g}"
            spec = Spec({**base, "mask_from": str(mask_dir / f"{mask_name(k, args.k)}_seed{{seed}}.safetensors"), **extra}, {"seed": done})
            rows.update({f"{stage}/{n}": r for n, r in sweep(spec, stage).items()})
    return rows


# ---- summary and figures ------------------------------------------------------------------------
def members(out: Path, method: str) -> list[Path]:
    """The finished run directories of ``method`` (its sweep, or its per-seed sweeps; ``method`` may
    also be a path inside ``out``, such as ``ticket_k/k0.3``)."""
    d = Path(out) / method
    sweeps = [d] if (d / RESULTS_FILE).is_file() else sorted(p for p in d.glob("seed*") if (p / RESULTS_FILE).is_file())
    return [s / r["run"] for s in sweeps for r in ok_rows(s)]


def diverged_runs(out: Path) -> set[Path]:
    """The run directories of every member under ``out`` that diverged (``common.ok_rows``; ``members``
    keeps them: a diverged member counts as one that never got there)."""
    return {f.parent / r["run"] for f in Path(out).rglob(RESULTS_FILE) for r in ok_rows(f.parent) if r["diverged"]}


def _info(out: Path) -> dict:
    path = Path(out) / MASKS_DIR / "masks.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def main_k(info: dict) -> float | None:
    """The arms' pruning rate, from ``masks.json`` (None if there are no masks, or several rates)."""
    arm = re.compile(rf"^({'|'.join(MASKED_ARMS)})_seed\d+$")
    ks = {v["k"] for key, v in info.items() if arm.match(key) and "k" in v}
    return next(iter(ks)) if len(ks) == 1 else None


def arm_groups(out: Path) -> list[tuple[str, float | None, list[Path]]]:
    """``(method, k, finished run directories)`` per row of the summary: every method at the arms' k
    (dense: None), then the k sweep's tickets with and without weight decay, in ascending k."""
    k0 = main_k(_info(out))
    groups = [(m, None if m == "dense" else k0, members(out, m)) for m in METHODS]
    for arm, stage in SWEEP_STAGES.items():
        subs = [d for d in (Path(out) / stage).glob("k*") if d.is_dir()]
        for d in sorted(subs, key=lambda d: float(d.name[1:])):
            groups.append((arm, float(d.name[1:]), members(out, f"{stage}/{d.name}")))
    return [g for g in groups if g[2]]


def _budget(run_dir: Path, metrics: list[dict]) -> int:
    """The run's step budget (its configured steps: a run that stopped early still had them)."""
    try:
        return runs.read_config(run_dir).steps
    except RunError:
        return metrics[-1]["step"]


def no_ticket_seeds(out: Path) -> list[int]:
    """Dense seeds that gave no ticket (they never generalised within the cap), from ``masks.json``."""
    info = _info(out)
    return sorted(int(key[len("dense_seed"):]) for key, v in info.items() if key.startswith("dense_seed") and v.get("ticket_step") is None)


def from_steps(out: Path, method: str, dirs: list[Path]) -> list[int | None]:
    """The dense-run step each member's ticket was taken from (``masks.json``; a member's seed is its
    run directory's name), for the tickets at the arms' k; ``[]`` for any other method."""
    if method not in STAGES:
        return []
    info = _info(out)
    return [info.get(f"{method}_seed{d.name.removeprefix('seed')}", {}).get("from_step") for d in dirs]


def summarise(out: Path) -> list[dict]:
    """One row per method and k with finished members (see the module doc)."""
    rows = []
    seen = set()
    div = diverged_runs(out)
    for method, k, dirs in arm_groups(out):
        metrics = [runs.read_metrics(d) for d in dirs]
        t_mem = [first_step(m, "train_acc") for m in metrics]
        t_gen = [first_step(m, "test_acc") for m in metrics]
        (_, mem_lo, mem_hi), (_, gen_lo, gen_hi) = spread(t_mem), spread(t_gen)
        n_gen = sum(t is not None for t in t_gen)
        rows.append({
            "method": method,
            "k": k,
            "seeds": len(dirs),
            "diverged": sum(d in div for d in dirs),
            "budget": max(_budget(d, m) for d, m in zip(dirs, metrics)),
            "memorised": sum(t is not None for t in t_mem),
            "median_t_mem": censored_median(t_mem),
            "min_t_mem": mem_lo,
            "max_t_mem": mem_hi,
            "generalised": n_gen,
            "never": len(dirs) - n_gen,
            "median_t_gen": censored_median(t_gen),
            "min_t_gen": gen_lo,
            "max_t_gen": gen_hi,
            "speedup_vs_dense": None,
            "no_ticket_seeds": (" ".join(map(str, no_ticket_seeds(out))) or None) if method == "dense" else None,
            **dict(zip(("median_from_step", "min_from_step", "max_from_step"), spread([] if method in seen else from_steps(out, method, dirs)))),
        })
        seen.add(method)
    dense = next((r for r in rows if r["method"] == "dense"), None)
    for r in rows:
        if dense and dense["median_t_gen"] and r["median_t_gen"]:
            r["speedup_vs_dense"] = round(dense["median_t_gen"] / r["median_t_gen"], 2)
    return rows


def _fmt(x) -> str:
    return "never" if x is None else f"{x:g}"


def _median_range(r: dict, what: str) -> str:
    """``650 (350–950)``; ``> budget`` for a median beyond the budget, with the range of the seeds that got there."""
    lo, hi = r[f"min_{what}"], r[f"max_{what}"]
    rng = "" if lo is None else f" ({fmt(lo)})" if lo == hi else f" ({fmt(lo)}–{fmt(hi)})"
    med = r[f"median_{what}"]
    return (fmt(med) if med is not None else f"> {fmt(r['budget'])}") + rng


TABLES = [{"columns": [
    ("method", "method"),
    ("k", "k"),
    ("seeds", "seeds"),
    ("budget", "budget"),
    ("t_mem median (range)", lambda r: _median_range(r, "t_mem")),
    ("generalised", lambda r: f"{r['generalised']} of {r['seeds']}"),
    ("diverged", lambda r: "not recorded" if r.get("diverged") is None else f"{r['diverged']} of {r['seeds']}"),
    ("t_gen median (range)", lambda r: _median_range(r, "t_gen")),
    ("speed-up vs dense", lambda r: None if r["speedup_vs_dense"] is None else f"{r['speedup_vs_dense']:.2f}×"),
]}, {"title": "When the ticket was taken (the paper's contrast): the tickets at k from four moments of the dense run, "
               "the dense step they came from (median and range over seeds), and how soon they generalised.",
     "transform": lambda rows: stage_rows(rows), "columns": [
    ("taken at", lambda r: STAGES[r["method"]]),
    ("method", "method"),
    ("dense step (range)", lambda r: _median_range(r, "from_step")),
    ("generalised", lambda r: f"{r['generalised']} of {r['seeds']}"),
    ("t_gen median (range)", lambda r: _median_range(r, "t_gen")),
    ("speed-up vs dense", lambda r: None if r["speedup_vs_dense"] is None else f"{r['speedup_vs_dense']:.2f}×"),
]}]


def stage_rows(rows: list[dict]) -> list[dict]:
    """The summary rows of the tickets taken at the four moments (``STAGES``), in that order (each
    method's first row: the arms' k, not the k sweep's); none from a summary written before the
    ticket was taken at the end of cleanup (it has no ``median_from_step`` column)."""
    if not rows or "median_from_step" not in rows[0]:
        return []
    first = {}
    for r in rows:
        first.setdefault(r["method"], r)
    return [first[m] for m in STAGES if m in first]


def tickets_note(rows: list[dict]) -> str:
    """Which dense seeds gave a ticket: those that reached 99 % test accuracy and ended their cleanup within the cap."""
    d = next((r for r in rows if r["method"] == "dense"), None)
    if d is None:
        return "No dense run finished, so there are no tickets."
    missing = d.get("no_ticket_seeds")
    if missing:
        seeds = str(missing).split()
        them = "them" if len(seeds) > 1 else "it"
        return (f"Dense seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)} gave no ticket: within {fmt(d['budget'])} steps "
                f"{them} never reached {GROK_ACC:.0%} test accuracy, or {them} did and cleanup had not ended by the rule "
                f"(cleanup_end); every arm left {them} out.")
    if "median_from_step" not in d:  # a summary written before the ticket was taken at the end of cleanup
        return (f"All {d['seeds']} dense seeds reached {THRESHOLD:.0%} test accuracy within {fmt(d['budget'])} steps, so each gave "
                f"a ticket (by the earlier protocol: its last checkpoint, at or after its t_gen).")
    return (f"All {d['seeds']} dense seeds generalised and ended their cleanup within {fmt(d['budget'])} steps, "
            f"so each gave a ticket (from its checkpoint at the end of cleanup, cleanup_end).")


def labels(rows: list[dict]) -> list[str]:
    """A name per summary row: the method, with its k for the k sweep's rows (a method's later rows)."""
    seen, out = set(), []
    for r in rows:
        out.append(r["method"] if r["method"] not in seen else f"{r['method']} k={r['k']:g}")
        seen.add(r["method"])
    return out


def caption(rows: list[dict]) -> str:
    """The figure's caption, every number from the summary ``rows``."""
    parts = [(f"Test accuracy against step, the median over seeds per method (band: lowest to highest seed); "
              f"t_gen is the first evaluation with test accuracy >= {THRESHOLD:.0%}. {tickets_note(rows)}")]
    for m, r in zip(labels(rows), rows):
        reached = f"{r['generalised']} of {r['seeds']} seeds generalised within {fmt(r['budget'])} steps"
        if r["median_t_gen"] is None:
            parts.append(f"{m}: {reached}, so no median.")
            continue
        speed = f", speed-up vs dense {r['speedup_vs_dense']:g}x" if r["speedup_vs_dense"] and m != "dense" else ""
        parts.append(f"{m}: median t_gen {_fmt(r['median_t_gen'])} ({reached}{speed}).")
    return " ".join(parts)


NOTES = caption  # the report's caption, below the docs' table


def figures(out: Path) -> list:
    from interp.plots import Figure

    groups = arm_groups(out)
    if not groups:
        return []
    rows = summarise(out)  # the same groups, in the same order
    curves = {name: [runs.read_metrics(d) for d in dirs] for name, (_, _, dirs) in zip(labels(rows), groups)}
    fig = plots.median_curves(curves, "test_acc", "test accuracy", "Test accuracy of each method (median over seeds)")
    out_figs = [Figure("tickets-test-acc", fig, caption(rows))]
    stages = stage_rows(rows)
    if stages:
        out_figs.append(Figure("tickets-when-taken", stage_figure(out, groups, rows), stage_caption(rows)))
    return out_figs


def stage_figure(out: Path, groups, rows: list[dict]):
    """Each seed's t_gen of the tickets taken at the four moments (x: the moment), against the dense median."""
    dirs: dict[str, list[Path]] = {}
    for m, _, d in groups:  # each method's first group: the arms' k, not the k sweep's
        dirs.setdefault(m, d)
    names = [m for m in STAGES if m in dirs]
    points = [(i + 1, first_step(runs.read_metrics(d), "test_acc")) for i, m in enumerate(names) for d in dirs[m]]
    budget = max((r["budget"] for r in rows if r["method"] in names), default=None)
    fig = plots.sweep_outcome(points, "when the ticket was taken", f"t_gen (steps to {THRESHOLD:.0%} test accuracy)", budget,
                              "Tickets taken at four moments of the dense run: how soon each generalised")
    fig.update_xaxes(tickvals=list(range(1, len(names) + 1)), ticktext=[STAGES[m].split(" (")[0] for m in names])
    dense = next((r for r in rows if r["method"] == "dense"), None)
    if dense and dense["median_t_gen"] is not None:
        fig.add_hline(y=dense["median_t_gen"], line_dash="dash", annotation_text="dense, median t_gen")
    return fig


def stage_caption(rows: list[dict]) -> str:
    """The caption of ``stage_figure``, every number from the summary ``rows``."""
    dense = next((r for r in rows if r["method"] == "dense"), None)
    parts = [f"Each seed's t_gen (first evaluation with test accuracy >= {THRESHOLD:.0%}) of the ticket at k taken from the dense run "
             "at memorisation, mid-transition, 99% test accuracy and after cleanup (cleanup_end); open markers at the budget: never "
             "within it; the line joins the medians (a seed that never generalised counts as later than any that did)."]
    if dense and dense["median_t_gen"] is not None:
        parts.append(f"Dashed: the dense network's median t_gen, {_fmt(dense['median_t_gen'])}.")
    for r in stage_rows(rows):
        speed = f", speed-up vs dense {r['speedup_vs_dense']:g}x" if r["speedup_vs_dense"] else ""
        taken = f"taken at dense step {_fmt(r['median_from_step'])} (median)" if r["median_from_step"] is not None else "taken"
        med = f"median t_gen {_fmt(r['median_t_gen'])}" if r["median_t_gen"] is not None else "no median t_gen"
        parts.append(f"{STAGES[r['method']]}: {taken}, {r['generalised']} of {r['seeds']} seeds generalised, {med}{speed}.")
    return " ".join(parts)
