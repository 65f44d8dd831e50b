"""Semi-grokking (Varma et al. 2023): at a training-set size near D_crit, delayed generalisation to partial test accuracy.

Near the critical size the generalising and the memorising circuit are about equally efficient, so
weight decay has no strong reason to prefer either: the circuit-efficiency account predicts that a
network there, after memorising, rises late to a *partial* test accuracy and stays there for a long
time (the paper sees about 0.55 at D = 1532 for p = 113, and notes that it is hard to elicit).

This experiment trains fresh networks (model seeds) at training-set sizes around the transition,
for a long step budget, and looks in each member's test-accuracy curve for such a plateau.

Plateau (``find_plateau``): the longest stretch of consecutive evaluations, after the train
accuracy first reached 0.99, in which every test accuracy lies in [0.2, 0.9] and the highest and
lowest differ by at most 0.2; it counts when it lasts at least 25 % of the step budget and does
not trend (the mean test accuracy of its last quarter is within 0.05 of its first quarter's: a slow
steady rise through the band is not a plateau). Its start, length, mean level, drift and whether it
lasts to the end of the run are reported, together with the
member's final test accuracy and the step it reached 99 % test accuracy, if it did: a plateau that
ends in full generalisation within the budget is delayed grokking with a partial stage, not the
paper's semi-grokking, which holds its partial level to the end of long training.

``--quick`` (p = 59, the small preset's model: d_model 64, d_mlp 256, lr 3e-3, weight decay 1):
training sizes 1040, 1120, 1200 (30-34 % of the 3 481 pairs: the datafrac experiment's quick run
finds none of 3 seeds generalising within 4 000 steps at 1 044 pairs and 2 of 3 at 1 218), 2 model
seeds, 3 000 steps (what fits in 20 minutes on a loaded 2-core CPU; the paper's plateaus last far
longer). The full version (p = 113, the default model): 1300, 1532, 1750, 2000 pairs, 2 seeds,
40 000 steps, one stack of 8 members: 2 h 21 min measured on one core of a 2-core CPU (0.21 s a
step); none of the 8 generalised at all within that budget. ``--steps N`` sets another budget.

Summary (``DIR/summary.csv``): one row per member.

Members stop 200 (``--quick``) or 1 000 steps after their test accuracy first reaches 99 %
(``stop_after_grok``) and leave their stack, so the sweep costs what its slowest member needs rather
than the budget times the number of members; the step they reached 99 % at is unaffected.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Sequence

from interp import plots, runs
from interp.config import PRESETS
from interp.experiments.common import ok_rows, read_summary, results
from interp.sweep import Spec, SweepError, load_sweep
from interp.tables import fmt

DESCRIPTION = "semi-grokking: long runs near the critical training-set size, plateaus of partial test accuracy (Varma et al. 2023)"
LOW, HIGH, BAND, MIN_FRAC, MAX_DRIFT, TRAIN_LEVEL = 0.2, 0.9, 0.2, 0.25, 0.05, 0.99


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=None, metavar="N",
                   help="step budget of every member (default: 3 000 with --quick, 40 000 without); "
                        "a different budget is a different sweep, so it needs a new --out")


def spec(args: argparse.Namespace) -> Spec:
    if args.quick:
        base = {**{k: v for k, v in PRESETS["small"].items() if k != "frac"}, "steps": 3000, "eval_every": 50, "save_every": 1000, "stop_after_grok": 200}
        grid = {"train_size": [1040, 1120, 1200], "seed": [1, 2]}
    else:
        base = {"p": 113, "steps": 40000, "eval_every": 100, "save_every": 5000, "stop_after_grok": 1000}
        grid = {"train_size": [1300, 1532, 1750, 2000], "seed": [1, 2]}
    steps = getattr(args, "steps", None)
    if steps is not None:
        if steps <= 0:
            raise SweepError(f"--steps {steps}: must be a positive number of steps")
        base["steps"] = steps
    return Spec({"task": "mod_add", **base}, grid)


def find_plateau(steps: Sequence[int], train_acc: Sequence[float], test_acc: Sequence[float], budget: int | None = None,
                 low: float = LOW, high: float = HIGH, band: float = BAND, min_frac: float = MIN_FRAC,
                 max_drift: float = MAX_DRIFT, train_level: float = TRAIN_LEVEL) -> dict:
    """The longest plateau of partial test accuracy in one run's evaluations (pure; see the module docstring).

    Args:
        steps, train_acc, test_acc: the evaluations, in step order.
        budget: the run's step budget (default: the last step); a plateau must last ``min_frac`` of it.
    Returns:
        ``seen`` (bool), ``start``, ``end`` (steps of its first and last evaluation), ``length``
        (``end - start``), ``mean`` (its mean test accuracy), ``drift`` (mean of its last quarter of
        evaluations minus mean of its first quarter), ``to_end`` (it lasts to the last evaluation) and ``train_step`` (first step with train accuracy >= ``train_level``); the
        plateau fields are ``None`` when no stretch qualifies, the longest stretch's when one does
        but is too short.
    """
    budget = budget if budget is not None else (steps[-1] if len(steps) else 0)
    out = {"seen": False, "start": None, "end": None, "length": None, "mean": None, "drift": None, "to_end": None, "train_step": None}
    t0 = next((i for i, a in enumerate(train_acc) if a >= train_level), None)
    if t0 is None:
        return out
    out["train_step"] = steps[t0]
    best = None  # (length, i, j)
    i = t0
    while i < len(steps):
        if not low <= test_acc[i] <= high:
            i += 1
            continue
        j, lo, hi = i, test_acc[i], test_acc[i]
        while j + 1 < len(steps) and low <= test_acc[j + 1] <= high and max(hi, test_acc[j + 1]) - min(lo, test_acc[j + 1]) <= band:
            j += 1
            lo, hi = min(lo, test_acc[j]), max(hi, test_acc[j])
        if best is None or steps[j] - steps[i] > best[0]:
            best = (steps[j] - steps[i], i, j)
        i += 1
    if best is None:
        return out
    length, i, j = best
    stretch = list(test_acc[i : j + 1])
    q = max(1, len(stretch) // 4)
    drift = statistics.fmean(stretch[-q:]) - statistics.fmean(stretch[:q])
    out.update(start=steps[i], end=steps[j], length=length, mean=statistics.fmean(stretch), drift=drift, to_end=j == len(steps) - 1,
               seen=budget > 0 and length >= min_frac * budget and abs(drift) <= max_drift)
    return out


def summarise(out: Path) -> list[dict]:
    """One row per finished member: its size and seed, the plateau found, and how the run ended."""
    out = Path(out)
    # the budget is the configured steps, also for a member that stop_after_grok ended earlier
    budgets = {f"runs/{m.name}": m.config.steps for m in load_sweep(out)[1] if m.config}
    rows = []
    for r in ok_rows(out):
        m = runs.read_metrics(out / r["run"])
        budget = budgets[r["run"]]
        pl = find_plateau([x["step"] for x in m], [x["train_acc"] for x in m], [x["test_acc"] for x in m], budget)
        rows.append({"train_size": r["train_size"], "seed": r["seed"], "budget": budget, "train_99_step": pl["train_step"],
                     "plateau": pl["seen"], "plateau_start": pl["start"], "plateau_length": pl["length"],
                     "plateau_mean_test_acc": pl["mean"], "plateau_drift": pl["drift"], "plateau_to_end": pl["to_end"],
                     "test_99_step": r["test_99_step"], "final_test_acc": float(r["final_test_acc"])})
    return rows


def _stretch(r: dict) -> str:
    if r["plateau_start"] is None:
        return "none"
    return f"{fmt(r['plateau_start'])}, {fmt(r['plateau_length'])}, {r['plateau_mean_test_acc']:.2f}, {r['plateau_drift']:+.2f}"


TABLES = [{"columns": [
    ("D", "train_size"),
    ("seed", "seed"),
    ("train acc ≥ 99% at", "train_99_step"),
    ("longest partial stretch (start, length, mean, drift)", _stretch),
    ("plateau?", "plateau"),
    ("99% test acc at", lambda r: fmt(r["test_99_step"]) if r["test_99_step"] is not None else f"> {fmt(r['budget'])}"),
    ("final test acc", lambda r: f"{r['final_test_acc']:.2f}"),
]}]


def caption(rows: list[dict]) -> str:
    """What the summary shows: how many members had a plateau, where, and how their runs ended."""
    if not rows:
        return "No finished members yet."
    yes = bool  # rows from summarise or from summary.csv (interp.tables.read_csv): booleans either way
    seen = [r for r in rows if yes(r["plateau"])]
    sizes = sorted({int(r["train_size"]) for r in rows})
    out = [f"{len(rows)} members at training sizes {', '.join(map(str, sizes))}, {max(int(r['budget']) for r in rows)} steps each. "
           f"A plateau is at least {MIN_FRAC:.0%} of the budget with test accuracy in [{LOW}, {HIGH}] (spread <= {BAND}, drift <= {MAX_DRIFT}) "
           f"after train accuracy reached {TRAIN_LEVEL}."]
    if not seen:
        out.append("No member showed such a plateau within this budget: semi-grokking was not elicited here.")
    else:
        for r in seen:
            end = ("and lasts to the end of the run (a longer run would show whether it holds)" if yes(r["plateau_to_end"]) else
                   f"then test accuracy leaves it (final {float(r['final_test_acc']):.2f}"
                   + (f", 99 % at step {r['test_99_step']})" if r["test_99_step"] is not None else ")"))
            out.append(f"D = {r['train_size']}, seed {r['seed']}: plateau at mean test accuracy {float(r['plateau_mean_test_acc']):.2f} "
                       f"from step {r['plateau_start']} for {r['plateau_length']} steps, {end}.")
        to_end = sum(yes(r["plateau_to_end"]) for r in seen)
        out.append(f"{to_end} of the {len(seen)} plateaus last to the end of the run.")
    return " ".join(out)


def figures(out: Path) -> list:
    from interp.plots import Figure

    out = Path(out)
    done = [r for r in results(out) if (out / r["run"]).is_dir()]
    if not done:
        return []
    curves = {r["run"]: runs.read_metrics(out / r["run"]) for r in done}
    groups = {r["run"]: f"D {r['train_size']}" for r in done}
    fig = plots.member_curves(curves, groups, "test_acc", "test accuracy", "Semi-grokking: test accuracy of every member")
    for y in (LOW, HIGH):
        fig.add_hline(y=y, line=dict(dash="dot", color="grey", width=1))
    return [Figure("semigrok", fig, caption(read_summary(out)) + " Dotted lines: the plateau band.")]


NOTES = caption  # the report's caption, below the docs' table
