"""Training fraction vs steps to generalise (Power et al. 2022).

Power et al. found that the steps a transformer needs to generalise on a modular operation grow
quickly as the fraction of the table used for training falls, and that below some fraction it does
not generalise within their budget at all. This experiment sweeps the training fraction x model
seeds on ``a + b mod p`` and reports, per fraction, the median and range over seeds of the first
step with test accuracy >= 99% (``test_99_step`` of ``results.csv``), and how many seeds never got
there within the step budget.

``--quick`` (about 10-15 min on a 2-core CPU): the small preset (p = 59, d_model 64, d_mlp 256,
lr 3e-3, weight decay 1), fractions 0.2-0.8, 3 seeds, 4 000 steps.

The full version has two settings (``--setting``):

``power`` (the default): Power et al.'s setting: p = 97, a 2-layer transformer (width 128, 4 heads,
MLP 512, ReLU) with LayerNorm and, as in their code, no biases in its linear layers, mini-batches of 512, AdamW lr 1e-3, weight decay 1,
betas (0.9, 0.98), 10 warm-up steps, a budget of 10^5 steps; fractions 0.2-0.8, 3 seeds. Every
member trains alone through the hooked engine (the stack and the fast path take the 1-layer
full-batch model only).
``canonical``: the canonical 1-layer model of Nanda et al. at p = 113 (no LayerNorm, full batch, no
warm-up), fractions 0.2-0.7, 3 seeds, 20 000 steps: the setting of this project's other experiments,
which trains in stacks.

The split's data seed is the same for every member, so a smaller training set is a prefix of a larger
one and the seeds vary the initial weights.

Members stop 200 (``--quick``) or 1 000 steps after their test accuracy first reaches 99 %
(``stop_after_grok``) and leave their stack, so the sweep costs what its slowest member needs rather
than the budget times the number of members; the step they reached 99 % at is unaffected.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from interp.config import PRESETS
from interp.experiments.common import censored_median, group, median, ok_rows, spread
from interp.sweep import Spec, SweepError, load_sweep
from interp.tables import fmt

DESCRIPTION = "training fraction vs steps to 99% test accuracy (Power et al. 2022)"
SUMMARY_COLUMNS = ["frac", "n_train", "seeds", "generalised", "never", "diverged", "median_test_99_step", "min_test_99_step",
                   "max_test_99_step", "median_train_99_step", "median_final_test_acc", "budget"]


SETTINGS = ("power", "canonical")
# Power et al. 2022 (and the openai/grok code): 2 layers, width 128, 4 heads, LayerNorm, AdamW lr 1e-3, weight decay 1,
# betas (0.9, 0.98), 10 warm-up steps, batch 512, 10^5 steps, p = 97.
# Their linear layers have no biases: freeze_biases (the default) keeps those at 0 and trains LayerNorm's gain and bias.
POWER = {"p": 97, "n_layers": 2, "d_model": 128, "n_heads": 4, "d_mlp": 512, "normalization": "LN", "freeze_biases": True,
         "batch_size": 512, "warmup": 10, "lr": 1e-3, "wd": 1.0, "beta1": 0.9, "beta2": 0.98,
         "steps": 100_000, "eval_every": 100, "save_every": 10_000, "stop_after_grok": 1000}
CANONICAL = {"p": 113, "steps": 20000, "eval_every": 100, "save_every": 2000, "stop_after_grok": 1000}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--p", type=int, default=None, help="modulus (default: 59 with --quick, 97 with --setting power, 113 with --setting canonical)")
    p.add_argument("--setting", default=None, metavar="NAME",
                   help="the full version's model and schedule: 'power' (Power et al.: 2 layers, LayerNorm, batch 512, 10 warm-up "
                        "steps, p = 97, 10^5 steps; the default) or 'canonical' (the 1-layer full-batch model at p = 113, 20 000 steps)")


def spec(args: argparse.Namespace) -> Spec:
    """The sweep: ``--quick``'s, or the full version's in ``--setting`` (default ``power``).

    Raises:
        SweepError: ``--setting`` is not one of ``SETTINGS``, or is given with ``--quick``.
    """
    setting = getattr(args, "setting", None)
    if setting is not None and setting not in SETTINGS:
        raise SweepError(f"--setting {setting}: must be one of {', '.join(SETTINGS)}")
    if args.quick:
        if setting is not None:
            raise SweepError(f"--setting {setting}: applies to the full version only (--quick has its own small setting)")
        base = {**PRESETS["small"], "steps": 4000, "eval_every": 50, "save_every": 1000, "stop_after_grok": 200}
        grid = {"frac": [0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.8], "seed": [1, 2, 3]}
    elif (setting or "power") == "power":
        base = dict(POWER)
        grid = {"frac": [0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.8], "seed": [1, 2, 3]}
    else:
        base = dict(CANONICAL)
        grid = {"frac": [0.2, 0.25, 0.3, 0.4, 0.5, 0.7], "seed": [1, 2, 3]}
    if args.p is not None:
        base["p"] = args.p
    return Spec({"task": "mod_add", **base}, grid)


def summarise(out: Path) -> list[dict]:
    """One row per fraction: seeds, how many generalised, the median and range of their steps.

    ``median_test_99_step`` is the median over all seeds, counting a seed that never generalised
    as later than any that did (so it is empty when half or more never did); min/max are over the
    seeds that generalised. A member that diverged (training loss NaN or infinite) counts as a seed
    that never generalised unless it had reached 99% first (``common.ok_rows``); ``diverged`` says how many.
    """
    _, members = load_sweep(out)
    n_train = {f"runs/{m.name}": m.config.n_train for m in members if m.config}
    budgets = {f"runs/{m.name}": m.config.steps for m in members if m.config}  # the budget (stop_after_grok may end a run earlier)
    rows = []
    for frac, rs in group(ok_rows(out), "frac").items():
        steps = [r["test_99_step"] for r in rs]
        _, lo, hi = spread(steps)
        reached = sum(s is not None for s in steps)
        rows.append({
            "frac": frac,
            "n_train": n_train[rs[0]["run"]],
            "seeds": len(rs),
            "generalised": reached,
            "never": len(rs) - reached,
            "diverged": sum(r["diverged"] for r in rs),
            "median_test_99_step": censored_median(steps),
            "min_test_99_step": lo,
            "max_test_99_step": hi,
            "median_train_99_step": median(r["train_99_step"] for r in rs),
            "median_final_test_acc": median(r["final_test_acc"] for r in rs),
            "budget": max(budgets[r["run"]] for r in rs),
        })
    return rows


def _range(r: dict) -> str | None:
    return None if r["min_test_99_step"] is None else f"{fmt(r['min_test_99_step'])}–{fmt(r['max_test_99_step'])}"


TABLES = [{"columns": [
    ("frac", lambda r: f"{r['frac']:.2f}"),
    ("n_train", "n_train"),
    ("seeds reaching 99% test acc", lambda r: f"{r['generalised']} of {r['seeds']}"),
    ("diverged", lambda r: "not recorded" if r.get("diverged") is None else f"{r['diverged']} of {r['seeds']}"),
    ("median steps to 99% test acc", lambda r: fmt(r["median_test_99_step"]) if r["median_test_99_step"] is not None
     else f"> {fmt(r['budget'])}"),
    ("range", _range),
    ("median train 99% step", "median_train_99_step"),
    ("median final test acc", lambda r: "–" if r["median_final_test_acc"] is None else f"{r['median_final_test_acc']:.3f}"),
]}]
