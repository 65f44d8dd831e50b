"""Grokking tickets (Minegishi et al. 2024): pruned, rewound subnetworks against dense and norm-matched controls.

Minegishi et al. train a dense network until it groks, keep the largest-magnitude weights of the
final model (pruning rate k: the fraction removed), rewind the kept weights to their initial values
and retrain under that mask. They report that these "grokking tickets" generalise several times
sooner than the dense network, that the dense initial weights rescaled to the ticket's L1 or L2
norm do not, and that neither do tickets taken before the network generalised nor masks chosen at
initialisation. This experiment runs the same comparison on this project's transformer.

Stages (each a sweep directory under ``DIR``; seeds vary the initial weights, the split is shared):

``dense``
    the dense network, the baseline; its final checkpoint gives the ticket.
``masks/``
    the masks every arm trains under, ``<arm>_seed<s>.safetensors``, and ``masks.json`` (the
    checkpoint each came from, kept fraction, the norms of the masked initial weights, the rescale
    factors).
``ticket``
    magnitude pruning of the dense run's final checkpoint (``--scope global``: one threshold over
    all weight matrices; ``layer``: each matrix its own), the kept weights rewound to the dense
    run's step-0 weights (the same model seed builds the same initial weights) and retrained under
    the mask.
``dense_l1/seed<s>``, ``dense_l2/seed<s>``
    the dense initial weights, every one multiplied by one factor (``init_scale``) so that the
    weight matrices' L1 (or L2) norm equals the ticket's at step 0; no mask.
``ticket_mem``, ``ticket_mid``
    tickets from the first checkpoint at or after memorisation (train accuracy >= 95%) and from the
    checkpoint nearest the midpoint between memorisation and generalisation (test accuracy >= 95%;
    the last checkpoint if the dense run never generalised).
``random``, ``snip``, ``grasp``, ``synflow``
    masks chosen at initialisation at the same k (``interp.prune``: random scores, SNIP
    ``|g * theta|``, GraSP ``theta * H g`` on the loss at temperature 200, SynFlow with 100 rounds
    on all p^2 inputs without labels).
``ticket_wd0``
    the ticket (its masks file) trained with weight decay 0.

``--quick`` (p = 59, the small preset; dense 3 000 steps): every arm, 3 seeds. The full version
(p = 113, the canonical model; dense 15 000 steps): ticket, dense and the two rescaled controls,
3 seeds; ``--all-arms`` adds the others. ``--arm-steps`` is the arms' step budget (default: the dense
budget with ``--quick``, 3 000 at full size). ``DIR/summary.csv`` has a row per arm: steps to 95% train
accuracy (t_mem) and to 95% test accuracy (t_gen), median and range over seeds, and how many seeds
never generalised within the budget (counted as later than any that did: a median is empty when half
or more never did).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch
from torch.func import functional_call

from interp import plots, prune, runs
from interp.config import PRESETS, ConfigError, TrainConfig
from interp.experiments import common
from interp.experiments.common import censored_median, ok_rows, spread
from interp.model import build_model, loss_fn
from interp.sweep import RUNS_DIR, Spec
from interp.tables import RESULTS_FILE, fmt
from interp.tasks import make_dataset

log = logging.getLogger(__name__)

DESCRIPTION = "grokking tickets vs dense, norm-matched and pruned-at-init controls (Minegishi et al. 2024)"
SEEDS = [1, 2, 3]
THRESHOLD = 0.95  # t_mem / t_gen: first evaluation at or above this train / test accuracy
MASKED_ARMS = ("ticket", "ticket_mem", "ticket_mid", "random", "snip", "grasp", "synflow", "ticket_wd0")
RESCALED_ARMS = ("dense_l1", "dense_l2")
METHODS = ("dense", "ticket", "dense_l1", "dense_l2", "ticket_mem", "ticket_mid", "random", "snip", "grasp", "synflow", "ticket_wd0")
FULL_ARMS = ("ticket", "dense_l1", "dense_l2")
GRASP_TEMPERATURE = 200.0
SYNFLOW_ROUNDS = 100
MASKS_DIR = "masks"
SUMMARY_COLUMNS = ["method", "k", "seeds", "budget", "memorised", "median_t_mem", "min_t_mem", "max_t_mem",
                   "generalised", "never", "median_t_gen", "min_t_gen", "max_t_gen", "speedup_vs_dense"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--p", type=int, default=None, help="modulus (default: 59 with --quick, else 113)")
    p.add_argument("--k", type=float, default=0.6, help="pruning rate: the fraction of the weight matrices' entries removed, in (0, 1) (default: 0.6, the paper's)")
    p.add_argument("--scope", choices=prune.SCOPES, default="global", help="magnitude threshold over all weight matrices together, or per matrix (default: global)")
    p.add_argument("--arm-steps", type=int, default=None, help="step budget of the arms (default: the dense budget with --quick, 3000 at full size)")
    p.add_argument("--all-arms", action="store_true", help="at full size also run the ticket from memorisation and mid-transition, pruning at init and the ticket without weight decay")


def dense_spec(args: argparse.Namespace) -> Spec:
    if args.quick:
        base = {"task": "mod_add", **PRESETS["small"], "steps": 3000, "eval_every": 50, "save_every": 100}
    else:
        base = {"task": "mod_add", "p": 113, "steps": 15000, "eval_every": 100, "save_every": 500}
    if args.p is not None:
        base["p"] = args.p
    return Spec(base, {"seed": SEEDS})


def arms(args: argparse.Namespace) -> tuple[str, ...]:
    return METHODS[1:] if args.quick or args.all_arms else FULL_ARMS


def arm_steps(args: argparse.Namespace, dense: Spec) -> int:
    steps = args.arm_steps if args.arm_steps is not None else (dense.base["steps"] if args.quick else 3000)
    if steps < 1:
        raise ConfigError(f"--arm-steps {steps}: must be >= 1")
    return steps


# ---- masks from the dense runs ------------------------------------------------------------------
def first_step(rows: list[dict], key: str, threshold: float = THRESHOLD) -> int | None:
    """``interp.experiments.common.first_step`` at this experiment's threshold (95%)."""
    return common.first_step(rows, key, threshold)


def source_steps(metrics: list[dict], ckpts: list[int]) -> dict[str, int]:
    """The checkpoints the tickets come from: ``ticket`` the last, ``ticket_mem`` the first at or after
    t_mem (else the last), ``ticket_mid`` the nearest to (t_mem + t_gen) / 2 (t_gen: the last
    checkpoint if the run never generalised)."""
    last = ckpts[-1]
    t_mem, t_gen = first_step(metrics, "train_acc"), first_step(metrics, "test_acc")
    mem = next((s for s in ckpts if t_mem is not None and s >= t_mem), last)
    mid_target = ((t_mem if t_mem is not None else 0) + (t_gen if t_gen is not None else last)) / 2
    mid = min(ckpts, key=lambda s: (abs(s - mid_target), s))
    return {"ticket": last, "ticket_mem": mem, "ticket_mid": mid}


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
        return functional_call(model, params, (inputs,))[:, -1]

    if method == "snip":
        return prune.keep_top(prune.snip(theta, lambda p: loss_fn(logits(p, x), y)), k, scope)
    if method == "grasp":
        return prune.keep_top(prune.grasp(theta, lambda p: loss_fn(logits(p, x) / GRASP_TEMPERATURE, y)), k, scope)
    # synflow: every parameter made non-negative, the sum of the logits over all p^2 inputs (no labels)
    rest = {n: p.detach().abs() for n, p in model.named_parameters() if n not in theta}
    return prune.synflow(theta, lambda p: logits({**rest, **p}, data.inputs).double().sum(), k, scope, SYNFLOW_ROUNDS)


def make_masks(dense_dir: Path, k: float, scope: str, methods: tuple[str, ...]) -> tuple[dict[str, dict], dict[str, dict]]:
    """The masks of ``methods`` for one dense run: ``({arm: masks}, {arm: facts})``; ``facts`` holds the
    source step (tickets) and the kept fraction. The dense_l1/dense_l2 factors come from the ticket."""
    cfg = runs.read_config(dense_dir)
    sources = source_steps(runs.read_metrics(dense_dir), runs.checkpoint_steps(dense_dir))
    out, facts = {}, {}
    for m in methods:
        if m in sources:
            step = sources[m]
            out[m] = prune.keep_top(prune.magnitude(_prunable(runs.load_checkpoint(dense_dir, step, cfg))), k, scope)
            facts[m] = {"from_step": step}
        else:
            out[m] = init_masks(cfg, m, k, scope)
            facts[m] = {"from_step": None}
        n = sum(t.numel() for t in out[m].values())
        facts[m]["kept"] = sum(t.sum().item() for t in out[m].values()) / n
    return out, facts


def rescale_factors(cfg: TrainConfig, ticket: dict[str, torch.Tensor]) -> dict[str, float]:
    """``init_scale`` factors that bring the dense initial weight matrices to the ticket's L1 / L2 norm."""
    theta = _prunable(build_model(cfg))
    (l1, l2), (t1, t2) = prune.norms(theta), prune.norms(theta, ticket)
    return {"dense_l1": t1 / l1, "dense_l2": t2 / l2, "init_l1": l1, "init_l2": l2, "ticket_l1": t1, "ticket_l2": t2}


# ---- the stages ---------------------------------------------------------------------------------
def run(args: argparse.Namespace, sweep) -> dict[str, dict]:
    prune.check_rate(args.k)
    dense = dense_spec(args)
    steps = arm_steps(args, dense)
    chosen = arms(args)
    out = Path(args.out)
    rows = {f"dense/{n}": r for n, r in sweep(dense, "dense").items()}
    mask_dir = (out / MASKS_DIR).resolve()  # absolute: member configs name their masks file
    info_path = mask_dir / "masks.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    need = tuple(dict.fromkeys(("ticket",) + tuple(a for a in chosen if a in MASKED_ARMS and a != "ticket_wd0")))
    for seed in SEEDS:
        dense_dir = out / "dense" / RUNS_DIR / f"seed{seed}"
        if rows.get(f"dense/seed{seed}", {}).get("status") != "ok":
            log.warning("%s did not finish; its seed is left out of the arms", dense_dir)
            continue
        todo = tuple(a for a in need if not (mask_dir / f"{a}_seed{seed}.safetensors").is_file() or f"{a}_seed{seed}" not in info)
        if todo:
            masks, facts = make_masks(dense_dir, args.k, args.scope, todo)
            for a, m in masks.items():
                prune.write_masks(mask_dir / f"{a}_seed{seed}.safetensors", m)
                info[f"{a}_seed{seed}"] = {**facts[a], "k": args.k, "scope": args.scope}
            if "ticket" in masks:
                info[f"rescale_seed{seed}"] = rescale_factors(runs.read_config(dense_dir), masks["ticket"])
            runs.write_text(info_path, json.dumps(info, indent=2) + "\n")
    done = [s for s in SEEDS if f"ticket_seed{s}" in info]
    base = {**dense.base, "steps": steps, "save_every": min(dense.base["save_every"], steps)}
    for a in chosen:
        if a in MASKED_ARMS:
            if not done:
                continue
            masks = "ticket" if a == "ticket_wd0" else a
            spec = Spec({**base, "mask_from": str(mask_dir / f"{masks}_seed{{seed}}.safetensors"), **({"wd": 0.0} if a == "ticket_wd0" else {})},
                        {"seed": done})
            rows.update({f"{a}/{n}": r for n, r in sweep(spec, a).items()})
        else:
            for s in done:
                factor = info[f"rescale_seed{s}"][a]
                spec = Spec({**base, "init_scale": base.get("init_scale", 1.0) * factor}, {"seed": [s]})
                rows.update({f"{a}/seed{s}/{n}": r for n, r in sweep(spec, f"{a}/seed{s}").items()})
    return rows


# ---- summary and figures ------------------------------------------------------------------------
def members(out: Path, method: str) -> list[Path]:
    """The finished run directories of ``method`` (its sweep, or its per-seed sweeps)."""
    d = Path(out) / method
    sweeps = [d] if (d / RESULTS_FILE).is_file() else sorted(p for p in d.glob("seed*") if (p / RESULTS_FILE).is_file())
    return [s / r["run"] for s in sweeps for r in ok_rows(s)]


def summarise(out: Path) -> list[dict]:
    """One row per method with finished members (see the module doc)."""
    info_path = Path(out) / MASKS_DIR / "masks.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    ks = {v["k"] for key, v in info.items() if not key.startswith("rescale")}
    rows = []
    for method in METHODS:
        dirs = members(out, method)
        if not dirs:
            continue
        metrics = [runs.read_metrics(d) for d in dirs]
        t_mem = [first_step(m, "train_acc") for m in metrics]
        t_gen = [first_step(m, "test_acc") for m in metrics]
        (_, mem_lo, mem_hi), (_, gen_lo, gen_hi) = spread(t_mem), spread(t_gen)
        n_gen = sum(t is not None for t in t_gen)
        rows.append({
            "method": method,
            "k": None if method == "dense" or len(ks) != 1 else next(iter(ks)),
            "seeds": len(dirs),
            "budget": max(m[-1]["step"] for m in metrics),
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
        })
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
    ("t_gen median (range)", lambda r: _median_range(r, "t_gen")),
    ("speed-up vs dense", lambda r: None if r["speedup_vs_dense"] is None else f"{r['speedup_vs_dense']:.2f}×"),
]}]


def figures(out: Path) -> list:
    from interp.plots import Figure

    curves = {m: [runs.read_metrics(d) for d in members(out, m)] for m in METHODS}
    curves = {m: c for m, c in curves.items() if c}
    if not curves:
        return []
    summary = {r["method"]: r for r in summarise(out)}
    parts = [f"Test accuracy against step, the median over seeds per method (band: lowest to highest seed); "
             f"t_gen is the first evaluation with test accuracy >= {THRESHOLD:.0%}."]
    for m, r in summary.items():
        reached = f"{r['generalised']} of {r['seeds']} seeds generalised within {r['budget']} steps"
        if r["median_t_gen"] is None:
            parts.append(f"{m}: {reached}, so no median.")
            continue
        speed = f", {r['speedup_vs_dense']:g}x sooner than dense" if r["speedup_vs_dense"] and m != "dense" else ""
        parts.append(f"{m}: median t_gen {_fmt(r['median_t_gen'])} ({reached}{speed}).")
    fig = plots.median_curves(curves, "test_acc", "test accuracy", "Test accuracy of each method (median over seeds)")
    return [Figure("tickets-test-acc", fig, " ".join(parts))]
