"""Ungrokking (Varma et al. 2023): a grokked network, trained on a smaller training set, loses its test accuracy.

The circuit-efficiency account of grokking says that below a critical training-set size D_crit the
memorising circuit is the cheaper way (in parameter norm) to fit the training set, so weight decay
should favour it even over a generalising circuit that is already in place. The experiment takes a
grokked run's final weights and continues training them (``init_from``; the AdamW moments start
fresh) on random training subsets of size D' drawn from all p^2 pairs (``train_size`` = D', the
``data_seed`` draws the subset; test accuracy is measured on the pairs outside it), at two weight
decays, with the learning rate, betas and model shape of the source run.

Grid: 7 geometric D' in [390, 1494] for p = 113 (3-12 % of the pairs, as in the paper), the same
range scaled by p^2 / 113^2 for another p; weight decay 2 and 3; 2 subset seeds (3 with ``--quick``).

Step budget. AdamW's decoupled decay shrinks a weight that the loss does not hold up by
``1 - lr * wd`` per step, i.e. by 1/e in ``1 / (lr * wd)`` steps. Each member trains ``DECAY_TIMES``
= 3 such times at the smaller weight decay (4.5 at the larger; ``--decay-times N`` for another
budget): 1 500 steps from a default p = 113 run (lr 1e-3), 500 from the small preset (lr 3e-3). The
weight decays are 2 and 3 rather than the usual 1 so that this budget stays short for p = 113 (about
12 min on one core of a 2-core CPU, scaled from a 5 000-step run that took 41 min). The paper trains
far longer, so whether the accuracy has settled is part of the summary (``median_change_last_fifth``:
the median test accuracy's change over the last fifth of the budget).

``--quick``: without ``--from`` it first trains its own source run in ``DIR/source``, the small preset
(p = 59, d_model 64, d_mlp 256, lr 3e-3, weight decay 1, 40 % of the pairs, 3 000 steps, seed 999;
it must grok within them), then continues it (D' from 106 to 407). The continued members live in
``DIR/continue``.

Summary (``DIR/summary.csv``): per (weight decay, D'): seeds, median/min/max final test accuracy,
median and min final train accuracy, ``median_change_last_fifth``, the budget.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from interp import plots, runs
from interp.config import PRESETS, TrainConfig
from interp.experiments.common import group, is_sweep, median, ok_rows, read_summary, results, spread
from interp.runs import RunError
from interp.sweep import RUNS_DIR, Spec, SweepError, load_sweep
from interp.tables import fmt

DESCRIPTION = "ungrokking: continue a grokked run on smaller training sets, final test accuracy vs D' (Varma et al. 2023)"
SOURCE_STAGE, STAGE = "source", "continue"
GROKKED = 0.99  # the source's test accuracy at its last checkpoint must be at least this
DECAY_TIMES = 3  # step budget: this many 1 / (lr * wd) at the smallest weight decay
WDS = [2.0, 3.0]
SEEDS, QUICK_SEEDS = [1, 2], [1, 2, 3]
SUMMARY_COLUMNS = ["wd", "train_size", "frac_of_pairs", "seeds", "median_final_test_acc", "min_final_test_acc", "max_final_test_acc",
                   "median_final_train_acc", "min_final_train_acc", "median_change_last_fifth", "budget"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="source", type=Path, default=None, metavar="RUN_DIR",
                   help="the grokked run to continue (test accuracy >= 0.99 at its last checkpoint); its p and model shape are used. "
                        "Required without --quick; with --quick and no --from the experiment trains its own small source run first")
    p.add_argument("--decay-times", type=float, default=DECAY_TIMES, metavar="N",
                   help=f"step budget of the continued members, in weight-decay times 1/(lr*wd) at the smaller weight decay "
                        f"(default: {DECAY_TIMES}: 1500 steps at lr 1e-3); a longer budget shows whether the accuracy has settled")


def d_prime_grid(p: int) -> list[int]:
    """The training-set sizes D': 7 geometric values in [390, 1494] scaled by p^2 / 113^2."""
    lo, hi, n = 390 * p * p / 113**2, 1494 * p * p / 113**2, 7
    return sorted({round(lo * (hi / lo) ** (i / (n - 1))) for i in range(n)})


def source_spec() -> Spec:
    """``--quick`` without ``--from``: the small preset, one member, trained until it groks."""
    return Spec({"task": "mod_add", **{k: v for k, v in PRESETS["small"].items() if k != "seed"}, "save_every": 500}, {"seed": [999]})


def check_source(path: Path) -> tuple[TrainConfig, int]:
    """The source run's config and last checkpoint step; ``SweepError`` (one line) unless it is a grokked run."""
    try:
        cfg = runs.read_config(path)
        metrics = runs.read_metrics(path)
    except RunError as e:
        raise SweepError(f"--from {path}: not a run directory ({e})") from None
    steps = runs.checkpoint_steps(path)
    if not steps or not metrics:
        raise SweepError(f"--from {path}: the run has no checkpoints or metrics yet")
    step = steps[-1]
    row = next((r for r in metrics if r["step"] == step), metrics[-1])
    if row["test_acc"] < GROKKED:
        raise SweepError(f"--from {path}: not a grokked run (test accuracy {row['test_acc']:.4g} at its last step {row['step']})")
    return cfg, step


def continue_spec(src: TrainConfig, path: Path, step: int, quick: bool, decay_times: float = DECAY_TIMES) -> Spec:
    """The continued members: ``src``'s model and optimiser settings, started from its checkpoint ``step``,
    for ``decay_times`` times 1/(lr * wd) at the smaller weight decay (rounded up to 100 steps)."""
    steps = math.ceil(round(decay_times / (src.lr * min(WDS)) / 100, 6)) * 100
    grid = {"wd": WDS, "train_size": d_prime_grid(src.p), "data_seed": QUICK_SEEDS if quick else SEEDS}
    every = 25 if quick else 100
    base = {**src.to_dict(), "init_from": f"{Path(path).resolve()}@{step}", "steps": steps, "eval_every": every,
            "save_every": max(every, steps // 3 // every * every), "init_scale": 1.0, "fixed_norm": False, "label_noise": 0.0, "warmup": 0}
    return Spec({k: v for k, v in base.items() if k not in grid}, grid)


def run(args: argparse.Namespace, sweep) -> dict[str, dict]:
    if args.source is None and not args.quick:
        raise SweepError("--from: required without --quick (a grokked run directory, e.g. checkpoints/mod_add_p113)")
    decay_times = getattr(args, "decay_times", DECAY_TIMES)
    if not (math.isfinite(decay_times) and decay_times > 0):
        raise SweepError(f"--decay-times {decay_times:g}: must be a positive number of weight-decay times")
    rows: dict[str, dict] = {}
    if args.source is not None:
        source = args.source
        src, step = check_source(source)  # before anything is written
    else:
        spec = source_spec()
        rows.update({f"{SOURCE_STAGE}/{k}": v for k, v in sweep(spec, SOURCE_STAGE).items()})
        source = args.out / SOURCE_STAGE / RUNS_DIR / "seed999"
        src, step = check_source(source)
    rows.update({f"{STAGE}/{k}": v for k, v in sweep(continue_spec(src, source, step, args.quick, decay_times), STAGE).items()})
    return rows


# ---- summary ---------------------------------------------------------------------------------------
def _acc_at(metrics: list[dict], step: float) -> float:
    """Test accuracy of the last evaluation at or before ``step``."""
    return [r for r in metrics if r["step"] <= step][-1]["test_acc"]


def summarise(out: Path) -> list[dict]:
    """One row per (weight decay, D'), over the finished members of ``DIR/continue``."""
    d = Path(out) / STAGE
    _, members = load_sweep(d)
    n_pairs = next(m.config.n_examples for m in members if m.config)
    rows = []
    for (wd, size), rs in group(ok_rows(d), lambda r: (float(r["wd"]), r["train_size"])).items():
        test_med, test_lo, test_hi = spread(r["final_test_acc"] for r in rs)
        train_med, train_lo, _ = spread(r["final_train_acc"] for r in rs)
        changes = []
        for r in rs:
            metrics = runs.read_metrics(d / r["run"])
            if metrics:
                changes.append(metrics[-1]["test_acc"] - _acc_at(metrics, 0.8 * metrics[-1]["step"]))
        rows.append({"wd": wd, "train_size": size, "frac_of_pairs": size / n_pairs, "seeds": len(rs),
                     "median_final_test_acc": test_med, "min_final_test_acc": test_lo, "max_final_test_acc": test_hi,
                     "median_final_train_acc": train_med, "min_final_train_acc": train_lo,
                     "median_change_last_fifth": median(changes), "budget": max(r["final_step"] for r in rs)})
    return rows


def _by_size(rows: list[dict]) -> list[dict]:
    """One row per D', the weight decays side by side (the shape of the docs' table)."""
    wds = sorted({r["wd"] for r in rows})
    out = []
    for size, rs in group(rows, "train_size").items():
        by_wd = {r["wd"]: r for r in rs}
        out.append({"train_size": size, "frac_of_pairs": rs[0]["frac_of_pairs"], "seeds": rs[0]["seeds"], "wds": wds, "by_wd": by_wd})
    return out


def _acc(r: dict | None) -> str | None:
    if r is None:
        return None
    return f"{r['median_final_test_acc']:.3f} ({r['min_final_test_acc']:.3f}–{r['max_final_test_acc']:.3f})"


def _columns(rows: list[dict]) -> list[tuple]:
    """The docs' table (rows from ``_by_size``): per weight decay the median test accuracy (min–max),
    then the change over the last fifth and the lowest final train accuracy."""
    wds = rows[0]["wds"]

    def acc(w):
        return lambda r: _acc(r["by_wd"].get(w))

    def change(r):
        return " / ".join("–" if r["by_wd"].get(w) is None or r["by_wd"][w]["median_change_last_fifth"] is None
                          else f"{r['by_wd'][w]['median_change_last_fifth']:+.3f}" for w in wds)

    return ([("D′ (share of pairs)", lambda r: f"{r['train_size']} ({r['frac_of_pairs']:.1%})")]
            + [(f"wd {fmt(w)}: median test acc (min–max)", acc(w)) for w in wds]
            + [("change over the last fifth (" + " / ".join(f"wd {fmt(w)}" for w in wds) + ")", change),
               ("lowest final train acc", lambda r: f"{min(x['min_final_train_acc'] for x in r['by_wd'].values()):.3f}")])


TABLES = [{"transform": _by_size, "columns": _columns}]


# ---- figure ------------------------------------------------------------------------------------------
def _num(r: dict, k: str) -> float:
    return float(r[k])  # the rows may come from summarise (numbers) or summary.csv (strings in older callers)


def crossing(points: list[tuple[float, float]], level: float) -> float | None:
    """The first D' (ascending) where the accuracy goes from below ``level`` to ``level`` or above,
    interpolated linearly in log D'; ``None`` if it never does."""
    pts = sorted(points)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if y0 < level <= y1:
            t = (level - y0) / (y1 - y0)
            return math.exp(math.log(x0) + t * (math.log(x1) - math.log(x0)))
    return None


def caption(rows: list[dict]) -> str:
    """What the figure shows, from the summary rows (strings or numbers): per weight decay, the D'
    where the median final test accuracy is below 0.9 and where it crosses 0.5; whether the weight
    decays' seed ranges overlap; the final train accuracy and whether the accuracy had settled."""
    if not rows:
        return "No finished members yet."
    wds = sorted({_num(r, "wd") for r in rows})
    sizes = sorted({int(_num(r, "train_size")) for r in rows})
    seeds = sorted({int(_num(r, "seeds")) for r in rows})
    budget = max(int(_num(r, "budget")) for r in rows)
    out = [f"Final test accuracy after {budget} steps of training a grokked network on D' random pairs, against D' "
           f"({', '.join(map(str, sizes))}); median over {'/'.join(map(str, seeds))} subset seeds, bars from the lowest to the highest seed."]
    for wd in wds:
        pts = [(int(_num(r, "train_size")), _num(r, "median_final_test_acc")) for r in rows if _num(r, "wd") == wd]
        below = [x for x, y in sorted(pts) if y < 0.9]
        part = f"Weight decay {wd:g}: median from {min(y for _, y in pts):.2f} to {max(y for _, y in pts):.2f}; "
        part += ("below 0.9 at every D'" if len(below) == len(pts) else f"below 0.9 at D' = {', '.join(map(str, below))}" if below
                 else "at or above 0.9 at every D'")
        c = crossing(pts, 0.5)
        if c is not None:
            part += f"; it crosses 0.5 near D' = {c:.0f}"
        elif all(y >= 0.5 for _, y in pts):
            part += "; never below 0.5"
        elif all(y < 0.5 for _, y in pts):
            part += "; below 0.5 at every D'"
        out.append(part + ".")
    if len(wds) > 1:
        apart = []
        for size in sizes:
            rs = [r for r in rows if int(_num(r, "train_size")) == size]
            if len(rs) == len(wds) and max(_num(r, "min_final_test_acc") for r in rs) > min(_num(r, "max_final_test_acc") for r in rs):
                apart.append(size)
        out.append("The weight decays' seed ranges overlap at every D'." if not apart else
                   f"The weight decays' seed ranges do not overlap at D' = {', '.join(map(str, apart))} "
                   f"(they overlap at {len(sizes) - len(apart)} of {len(sizes)} D').")
    low_train = min(_num(r, "min_final_train_acc") for r in rows)
    out.append(f"Every member fits its training set (final train accuracy >= {low_train:.3f})." if low_train >= 0.99 else
               f"The lowest final train accuracy is {low_train:.3f}.")
    changes = [_num(r, "median_change_last_fifth") for r in rows if r.get("median_change_last_fifth") not in ("", None)]
    if changes:
        worst = max(changes, key=abs)
        out.append(f"Over the last fifth of the budget the median test accuracy changed by at most {abs(worst):.2f} at any point"
                   + (" (still moving: longer training may lower or raise it)." if abs(worst) >= 0.05 else " (settled within 0.05)."))
    return " ".join(out)


def figures(out: Path) -> list:
    from interp.plots import Figure

    out = Path(out)
    rows = read_summary(out)
    figs = []
    if rows:
        series = {}
        for wd in sorted({_num(r, "wd") for r in rows}):
            rs = sorted((r for r in rows if _num(r, "wd") == wd), key=lambda r: _num(r, "train_size"))
            series[f"weight decay {wd:g}"] = tuple([_num(r, k) for r in rs] for k in (
                "train_size", "median_final_test_acc", "min_final_test_acc", "max_final_test_acc"))
        fig = plots.median_with_range(series, "training-set size D' (log)", "final test accuracy",
                                      "Ungrokking: final test accuracy against D'", log_x=True, y_range=(0, 1.05))
        figs.append(Figure("ungrok", fig, caption(rows)))
    d = out / STAGE
    done = [r for r in results(d) if (d / r["run"]).is_dir()] if is_sweep(d) else []
    if done:
        curves = {r["run"]: runs.read_metrics(d / r["run"]) for r in done}
        groups = {r["run"]: f"D' {r['train_size']}" for r in done}
        figs.append(Figure("ungrok-curves", plots.member_curves(curves, groups, "test_acc", "test accuracy",
                                                               "Test accuracy of every continued member"),
                           f"Test accuracy against step for the {len(curves)} continued members (all weight decays), one colour per D'."))
    return figs


NOTES = caption  # the report's caption, below the docs' table
