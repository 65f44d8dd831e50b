"""The grokking accelerators compared fairly: one model, one split, several seeds, censored outcomes.

Each arm is one sweep over the model seeds in ``DIR/<arm>/``, on the same task, split, model and
step budget; an arm changes only what its row of ``ARMS`` names (``ARM_NOTES`` says why):

===============  ===========================================================================
adamw            the baseline: AdamW at the base learning rate, weight decay as the base
adamw_lr3x       the baseline at 3x the learning rate (Grokfast's lambda = 2 acts like a larger
                 step, so a filter must beat the better-tuned of the two baselines)
grokfast_ema     Grokfast EMA filter, alpha 0.98, lambda 2 (the paper's algorithmic setting)
grokfast_ma      Grokfast MA filter, window 100, lambda 5 (the Grokfast code's defaults)
stablemax        StableMax cross-entropy, weight decay 0 (as Prieto et al. 2025 run it: their
                 scripts leave weight decay at its default 0 for StableMax and ⊥Grad)
orthoadamw       ⊥AdamW: the gradient's component along each weight removed, then AdamW with
                 weight decay 0 (the same; their point is grokking without weight decay)
init_x0.5        initial weights x 0.5 (Omnigrok: a smaller initial norm)
ticket           with ``--tickets DIR``: the tickets experiment's final-checkpoint ticket of each seed
                 (its masks, ``DIR/masks/ticket_seed<s>.safetensors``; the same seed rebuilds the same
                 initial weights, so this is the rewound ticket); DIR must have trained the same
                 model on the same split with the same optimiser
===============  ===========================================================================

Outcome per seed: the first step with test accuracy >= 99% (``test_99_step``). A seed that never got
there within the budget is right-censored at its last step, and the arm's curve of the fraction of
seeds generalised against step is the Kaplan-Meier estimate (``analyses.timing``); the median is that
curve's median (empty when half or more of the seeds never generalised: "more than the budget").
The speed-up of an arm is the median of the better baseline (the smaller median of ``adamw`` and
``adamw_lr3x``) divided by the arm's median.

``--quick``: the small preset (p = 59, 40% of the pairs, d_model 64, d_mlp 256, lr 3e-3, weight
decay 1), 3 seeds, 4 000 steps, evaluated every 50. The full version: the canonical p = 113 model
(30%, lr 1e-3, weight decay 1), 3 seeds, 20 000 steps, evaluated every 100.

Members stop 200 (``--quick``) or 1 000 steps after their test accuracy first reaches 99 %
(``stop_after_grok``) and leave their stack, so the sweep costs what its slowest member needs rather
than the budget times the number of members; the step they reached 99 % at is unaffected.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from analyses.timing import kaplan_meier, km_median
from interp import runs
from interp.config import PRESETS, TrainConfig
from interp.experiments.common import is_sweep, results, run_stages
from interp.sweep import Spec, SweepError
from interp.tables import SWEEP_FILE, fmt

DESCRIPTION = "Grokfast, StableMax, ⊥AdamW and a small init against a tuned AdamW baseline: steps to 99% test, censored"
BASELINES = ("adamw", "adamw_lr3x")
SUMMARY_COLUMNS = ["arm", "changes", "lr", "wd", "seeds", "generalised", "censored", "median_test_99_step", "min_test_99_step",
                   "max_test_99_step", "test_99_steps", "speedup_vs_best_baseline", "budget"]


def arms(base: dict, tickets: Path | None = None) -> dict[str, dict]:
    """``{arm: the config fields it changes}`` for a base config (``adamw_lr3x``: 3x the base's lr)."""
    out = {
        "adamw": {},
        "adamw_lr3x": {"lr": round(3 * TrainConfig(**base).lr, 12)},
        "grokfast_ema": {"grad_filter": "ema", "filter_alpha": 0.98, "filter_lambda": 2.0},
        "grokfast_ma": {"grad_filter": "ma", "filter_window": 100, "filter_lambda": 5.0},
        "stablemax": {"loss": "stablemax", "wd": 0.0},
        "orthoadamw": {"optimizer": "orthoadamw", "wd": 0.0},
        "init_x0.5": {"init_scale": 0.5},
    }
    ticket = ticket_arm(base, tickets)
    if ticket is not None:
        out["ticket"] = ticket
    return out


# ---- the ticket arm ---------------------------------------------------------------------------
TICKET_MATCH = ("task", "p", "frac", "train_size", "data_seed", "d_model", "n_heads", "d_mlp", "lr", "wd", "beta1", "beta2", "warmup")


def ticket_arm(base: dict, tickets: Path | None) -> dict | None:
    """The ticket arm's config fields (``mask_from`` with a ``{seed}`` placeholder), or None without ``--tickets``.

    Raises:
        SweepError: ``tickets`` is not a tickets experiment whose dense runs share ``base``'s model,
        split and optimiser, or lacks a seed's masks.
    """
    if tickets is None:
        return None
    dense_sweep = Path(tickets) / "dense" / SWEEP_FILE
    if not dense_sweep.is_file():
        raise SweepError(f"--tickets {tickets}: not a tickets experiment directory (no dense/{SWEEP_FILE})")
    dense = TrainConfig(**{"seed": 1, **json.loads(dense_sweep.read_text())["spec"]["base"]})
    mine = TrainConfig(**base)
    diff = [f"{f} {getattr(dense, f)} there, {getattr(mine, f)} here" for f in TICKET_MATCH if getattr(dense, f) != getattr(mine, f)]
    if diff:
        raise SweepError(f"--tickets {tickets}: its dense runs differ from this comparison's base ({'; '.join(diff)})")
    return {"mask_from": str(Path(tickets).resolve() / "masks" / "ticket_seed{seed}.safetensors")}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--p", type=int, default=None, help="modulus (default: 59 with --quick, else 113)")
    p.add_argument("--tickets", type=Path, default=None, metavar="DIR",
                   help="a finished `interp.experiment tickets` directory of the same model: adds its tickets as an arm")


def settings(args: argparse.Namespace) -> tuple[dict, list[int]]:
    """The base config every arm shares and the seeds (``--quick`` or full). Tests replace this."""
    if args.quick:
        base = {**PRESETS["small"], "task": "mod_add", "steps": 4000, "eval_every": 50, "save_every": 4000, "stop_after_grok": 200}
    else:
        base = {"task": "mod_add", "p": 113, "steps": 20000, "eval_every": 100, "save_every": 5000, "stop_after_grok": 1000}
    if args.p is not None:
        base["p"] = args.p
    return base, [1, 2, 3]


def specs(args: argparse.Namespace) -> dict[str, Spec]:
    base, seeds = settings(args)
    tickets = getattr(args, "tickets", None)
    all_arms = arms(base, tickets)
    if "ticket" in all_arms:
        missing = [s for s in seeds if not Path(all_arms["ticket"]["mask_from"].format(seed=s)).is_file()]
        if missing:
            raise SweepError(f"--tickets {tickets}: no ticket masks for seed(s) {missing} (masks/ticket_seed<s>.safetensors)")
    return {arm: Spec({**base, **fields}, {"seed": seeds}) for arm, fields in all_arms.items()}


def run(args: argparse.Namespace, sweep) -> dict[str, dict]:
    return run_stages(specs(args), sweep)


# ---- summary ------------------------------------------------------------------------------------
def arm_outcomes(out: Path) -> dict[str, dict]:
    """Per arm found in ``out``: its base config (seed aside), per-seed ``(time, observed)`` and the budget.

    A member that finished without reaching 99% test accuracy is censored at its final step; a failed
    member (diverged) is censored at the last step it reached.
    """
    found = {}
    for d in sorted(p for p in Path(out).iterdir() if is_sweep(p)):
        cfg = TrainConfig(**json.loads((d / SWEEP_FILE).read_text())["spec"]["base"])
        times, observed = [], []
        for r in results(d):
            if r["test_99_step"] is not None:
                times.append(r["test_99_step"])
                observed.append(True)
            elif r["final_step"] is not None:
                times.append(r["final_step"])
                observed.append(False)
        found[d.name] = {"config": cfg, "times": times, "observed": observed, "budget": cfg.steps}
    return found


def summarise(out: Path) -> list[dict]:
    """One row per arm: seeds, how many generalised, Kaplan-Meier median and range of steps to 99%
    test accuracy, and the speed-up against the better of the two baselines."""
    found = arm_outcomes(out)
    if not found:
        return []
    ref = found["adamw"]["config"].to_dict() if "adamw" in found else None
    medians = {}
    for arm, f in found.items():
        medians[arm] = km_median(*kaplan_meier(f["times"], f["observed"])) if f["times"] else None
    base_meds = [medians[b] for b in BASELINES if b in medians and medians[b] is not None]
    best = min(base_meds) if base_meds else None
    rows = []
    for arm, f in found.items():
        seen = sorted(t for t, o in zip(f["times"], f["observed"]) if o)
        med = medians[arm]
        rows.append({
            "arm": arm,
            "changes": "?" if ref is None else " ".join(f"{k}={v}" for k, v in f["config"].to_dict().items() if v != ref[k] and k != "seed") or "-",
            "lr": f["config"].lr, "wd": f["config"].wd,
            "seeds": len(f["times"]), "generalised": len(seen), "censored": len(f["times"]) - len(seen),
            "median_test_99_step": med, "min_test_99_step": seen[0] if seen else None, "max_test_99_step": seen[-1] if seen else None,
            "test_99_steps": ";".join(str(t) if o else f">{t}" for t, o in sorted(zip(f["times"], f["observed"]))),
            "speedup_vs_best_baseline": best / med if best is not None and med else None,
            "budget": f["budget"],
        })
    order = list(arms({"task": "mod_add"}))
    return sorted(rows, key=lambda r: order.index(r["arm"]) if r["arm"] in order else len(order))


TABLES = [{"columns": [
    ("arm", "arm"),
    ("changes", "changes"),
    ("seeds at 99% test", lambda r: f"{r['generalised']} of {r['seeds']}"),
    ("median steps (Kaplan–Meier)", lambda r: fmt(r["median_test_99_step"]) if r["median_test_99_step"] is not None
     else f"> {fmt(r['budget'])}"),
    ("per seed", lambda r: "; ".join(("> " + fmt(int(s[1:]))) if s.startswith(">") else fmt(int(s))
                                     for s in str(r["test_99_steps"]).split(";"))),
    ("speed-up vs best baseline", lambda r: None if r["speedup_vs_best_baseline"] is None else f"{r['speedup_vs_best_baseline']:.2f}"),
]}]


def summary_caption(rows: list[dict]) -> str:
    """What the survival figure shows: per arm the generalised count and median, and the fastest arm."""
    def med(r):
        return f"median {r['median_test_99_step']:g}" if r["median_test_99_step"] is not None else "median beyond the budget"

    budget = max(r["budget"] for r in rows)
    seeds = max(r["seeds"] for r in rows)
    parts = [f"{r['arm']} {r['generalised']}/{r['seeds']} ({med(r)})" for r in rows]
    cap = (f"Fraction of seeds with test accuracy >= 99% against step (Kaplan-Meier; a seed that never got there is censored "
           f"at the budget of {budget} steps; {seeds} seeds per arm). Seeds generalised and median step per arm: "
           + "; ".join(parts) + ". ")
    base = [r for r in rows if r["arm"] in BASELINES and r["median_test_99_step"] is not None]
    if base:
        b = min(base, key=lambda r: r["median_test_99_step"])
        cap += f"The better baseline is {b['arm']} (median {b['median_test_99_step']:g}). "
        fast = [r for r in rows if r["speedup_vs_best_baseline"] is not None and r["arm"] not in BASELINES]
        if fast:
            top = max(fast, key=lambda r: r["speedup_vs_best_baseline"])
            cap += f"Against it the largest speed-up of the medians is {top['arm']}'s {top['speedup_vs_best_baseline']:.2f}x. "
    else:
        cap += "Neither baseline reached a median within the budget, so no speed-up is computed. "
    if not any(r["arm"] == "ticket" for r in rows):
        cap += "No ticket arm was run (it needs --tickets DIR, a finished tickets experiment of the same model)."
    return cap


def figures(out: Path) -> list:
    from interp import plots
    from interp.plots import Figure

    rows = summarise(out)
    if not rows:
        return []
    found = arm_outcomes(out)
    curves = {arm: kaplan_meier(found[arm]["times"], found[arm]["observed"]) for arm in (r["arm"] for r in rows)}
    budget = max(r["budget"] for r in rows)
    figs = [Figure("accelerate-survival", plots.generalised_fraction(curves, budget, "Seeds generalised (test accuracy >= 99%) against step"),
                   summary_caption(rows))]
    members, groups = {}, {}
    for r in rows:
        for res in results(Path(out) / r["arm"]):
            name = f"{r['arm']}/{res['run']}"
            members[name] = runs.read_metrics(Path(out) / r["arm"] / res["run"])
            groups[name] = r["arm"]
    if members:
        figs.append(Figure("accelerate-curves", plots.member_curves(members, groups, "test_acc", "test accuracy", "Test accuracy of every seed, per arm"),
                           f"Test accuracy against step for the {len(members)} runs, one colour per arm."))
    return figs
