"""Ungrokking (Varma et al. 2023): a grokked network, trained on a smaller training set, loses its test accuracy.

The circuit-efficiency account of grokking says that below a critical training-set size D_crit the
memorising circuit is the cheaper way (in parameter norm) to fit the training set, so weight decay
should favour it even over a generalising circuit that is already in place. The experiment takes a
generalising network's final weights and continues training them (``init_from``; the AdamW moments
start fresh) on random training subsets of size D' drawn from all p^2 pairs (``train_size`` = D', the
``data_seed`` draws the subset; test accuracy is measured on the pairs outside it), with the learning
rate, betas and model shape of the source run.

**Source.** As in the paper, by default the experiment first trains its own source on **all** p^2
pairs (``DIR/source``; no test split, so it counts as generalising when its accuracy on every pair is
>= 0.99 at its last step): the canonical model (p = 113, lr 1e-3, weight decay 1) for ``SOURCE_STEPS``
steps, or with ``--quick`` the small preset (p = 59, d_model 64, d_mlp 256, lr 3e-3). ``--from RUN_DIR``
takes another run instead (its test accuracy must be >= 0.99 at its last checkpoint), e.g. the
canonical run trained on 30 % of the pairs.

**Grid.** 7 geometric D' in [390, 1494] for p = 113 (3-12 % of the pairs, as in the paper), the same
range scaled by p^2 / 113^2 for another p; weight decays 1, 0.5 and 2 (``--quick``: 1 and 2); 10
subset seeds (``--quick``: 2).

**Budget and the settle rule.** AdamW's decoupled decay shrinks a weight that the loss does not hold
up by ``1 - lr * wd`` per step, i.e. by 1/e in one *decay time* ``1 / (lr * wd)`` steps. Every weight
decay gets the same number of decay times, so steps are proportional to 1 / wd: ``DECAY_TIMES`` = 100
(10^5 steps at lr 1e-3 and weight decay 1, the paper's budget; ``--quick``: 4; ``--decay-times N``
for another). A member stops earlier once its test accuracy has *settled*: it moved by less than
``SETTLE_TOL`` = 0.01 over the last fifth of its steps so far (``settle_tol``, ``interp.stopping``)
*after* leaving its source's level (it lies more than ``interp.stopping.LEFT_START`` = 0.05 from
its first evaluation, the source's accuracy on the member's test pairs), and never before
``MIN_DECAY_TIMES`` (10; ``--quick`` 2) decay times. Near D_crit, where ungrokking is slowest, a
member can hold its source's accuracy for tens of decay times before it falls; a flat curve at that
level is therefore never taken as settled, and a member that never leaves it runs to the budget.
Each sweep (one per weight decay) lives in ``DIR/continue/wd<wd>``.

Summary (``DIR/summary.csv``): per (weight decay, D'): seeds, how many settled (the rest ran to the
budget), median/min/max final test accuracy, median and min final train accuracy,
``median_change_last_fifth`` (the test accuracy's change over the last fifth of each member's run),
the median final step and the budget.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from interp import plots, runs
from interp.config import PRESETS, TrainConfig
from interp.experiments.common import group, is_sweep, median, ok_rows, read_summary, results, spread
from interp.runs import RunError
from interp.sweep import RUNS_DIR, Spec, SweepError, check_values, load_sweep
from interp.tables import fmt

DESCRIPTION = "ungrokking: continue a generalising run on smaller training sets, final test accuracy vs D' (Varma et al. 2023)"
SOURCE_STAGE, STAGE = "source", "continue"
GROKKED = 0.99  # the source's accuracy (test, or on all pairs for a source without a test split) at its last checkpoint
SOURCE_STEPS, QUICK_SOURCE_STEPS = 10_000, 1_500  # 10 and 4.5 decay times at weight decay 1
DECAY_TIMES, QUICK_DECAY_TIMES = 100.0, 4.0  # the budget, in decay times 1 / (lr * wd), the same at every weight decay
MIN_DECAY_TIMES, QUICK_MIN_DECAY_TIMES = 10.0, 2.0  # the settle rule stops no member before this (nor one still at its source's level)
SETTLE_TOL = 0.01
WDS, QUICK_WDS = [0.5, 1.0, 2.0], [1.0, 2.0]
SEEDS, QUICK_SEEDS = list(range(1, 11)), [1, 2]
SUMMARY_COLUMNS = ["wd", "train_size", "frac_of_pairs", "seeds", "diverged", "settled", "median_final_test_acc", "min_final_test_acc",
                   "max_final_test_acc", "median_final_train_acc", "min_final_train_acc", "median_change_last_fifth",
                   "median_final_step", "budget"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="source", type=Path, default=None, metavar="RUN_DIR",
                   help="continue this generalising run (test accuracy >= 0.99 at its last checkpoint; its p and model shape are used) "
                        "instead of training a source on all pairs first (the default, as in the paper)")
    p.add_argument("--decay-times", type=float, default=None, metavar="N",
                   help=f"step budget of the continued members in weight-decay times 1/(lr*wd), the same at every weight decay "
                        f"(default: {DECAY_TIMES:g}, i.e. 10^5 steps at lr 1e-3 and wd 1; {QUICK_DECAY_TIMES:g} with --quick); "
                        "members stop earlier once their test accuracy has settled")


def d_prime_grid(p: int) -> list[int]:
    """The training-set sizes D': 7 geometric values in [390, 1494] scaled by p^2 / 113^2."""
    lo, hi, n = 390 * p * p / 113**2, 1494 * p * p / 113**2, 7
    return sorted({round(lo * (hi / lo) ** (i / (n - 1))) for i in range(n)})


def source_spec(quick: bool) -> Spec:
    """The source: one member trained on all p^2 pairs (the small preset with ``--quick``, else the canonical model)."""
    if quick:
        base = {**{k: v for k, v in PRESETS["small"].items() if k not in ("seed", "frac")}, "steps": QUICK_SOURCE_STEPS, "save_every": 500}
    else:
        base = {"p": 113, "steps": SOURCE_STEPS, "eval_every": 100, "save_every": 1000}
    return Spec({"task": "mod_add", **base, "train_size": base["p"] ** 2}, {"seed": [999]})


def check_source(path: Path) -> tuple[TrainConfig, int]:
    """The source run's config and last checkpoint step; ``SweepError`` (one line) unless it generalises:
    test accuracy >= 0.99 at its last checkpoint, or, for a run trained on all pairs, train accuracy."""
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
    every_pair = cfg.n_train == cfg.n_examples
    acc = row["train_acc"] if every_pair else row["test_acc"]
    if not acc >= GROKKED:
        what = "accuracy on all pairs" if every_pair else "test accuracy"
        raise SweepError(f"--from {path}: not a grokked run ({what} {acc:.4g} at its last step {row['step']})")
    return cfg, step


def budget(src: TrainConfig, wd: float, decay_times: float, every: int) -> int:
    """``decay_times`` decay times 1 / (lr * wd) in steps, rounded up to a multiple of ``every``."""
    return math.ceil(round(decay_times / (src.lr * wd) / every, 6)) * every


def continue_specs(src: TrainConfig, path: Path, step: int, quick: bool, decay_times: float | None = None) -> dict[str, Spec]:
    """The continued members, one sweep per weight decay (``{"continue/wd<wd>": Spec}``): ``src``'s model
    and optimiser settings, started from its checkpoint ``step``, for ``decay_times`` decay times, stopped
    early by the settle rule after ``MIN_DECAY_TIMES``."""
    decay_times = (QUICK_DECAY_TIMES if quick else DECAY_TIMES) if decay_times is None else decay_times
    min_times = min(QUICK_MIN_DECAY_TIMES if quick else MIN_DECAY_TIMES, decay_times)
    specs = {}
    for wd in (QUICK_WDS if quick else WDS):
        steps = budget(src, wd, decay_times, 1)
        every = steps // 200 // 25 * 25 if steps >= 5000 else max(1, min(25, steps // 40))  # 40-200 evaluations a run
        steps = budget(src, wd, decay_times, every)
        base = {**src.to_dict(), "init_from": f"{Path(path).resolve()}@{step}", "wd": wd, "steps": steps, "eval_every": every,
                "save_every": max(every, steps // 4 // every * every), "settle_tol": SETTLE_TOL,
                "min_steps": min(steps, budget(src, wd, min_times, every)), "init_scale": 1.0, "fixed_norm": False,
                "label_noise": 0.0, "warmup": 0, "stop_after_grok": None, "equilibrium_tol": None}
        grid = {"train_size": d_prime_grid(src.p), "data_seed": QUICK_SEEDS if quick else SEEDS}
        specs[f"{STAGE}/wd{wd:g}"] = Spec({k: v for k, v in base.items() if k not in grid}, grid)
    return specs


def _decay_times(args: argparse.Namespace) -> float | None:
    d = getattr(args, "decay_times", None)
    if d is not None and not (math.isfinite(d) and d > 0):
        raise SweepError(f"--decay-times {d:g}: must be a positive number of weight-decay times")
    return d


def plan_specs(args: argparse.Namespace) -> list[Spec]:
    """``--plan``: every stage, the continued members built from the source's config before it exists."""
    decay_times = _decay_times(args)
    if args.source is not None:
        src, step = check_source(args.source)
        return list(continue_specs(src, args.source, step, args.quick, decay_times).values())
    spec = source_spec(args.quick)
    src = TrainConfig(**spec.base, seed=999)
    return [spec, *continue_specs(src, args.out / SOURCE_STAGE / RUNS_DIR / "seed999", src.steps, args.quick, decay_times).values()]


def run(args: argparse.Namespace, sweep) -> dict[str, dict]:
    decay_times = _decay_times(args)
    rows: dict[str, dict] = {}
    if args.source is not None:
        source = args.source
        src, step = check_source(source)  # before anything is written
    else:
        spec = source_spec(args.quick)
        check_values(spec)
        rows.update({f"{SOURCE_STAGE}/{k}": v for k, v in sweep(spec, SOURCE_STAGE).items()})
        source = args.out / SOURCE_STAGE / RUNS_DIR / "seed999"
        src, step = check_source(source)
    for stage, spec in continue_specs(src, source, step, args.quick, decay_times).items():
        rows.update({f"{stage}/{k}": v for k, v in sweep(spec, stage).items()})
    return rows


def stage_dirs(out: Path) -> list[Path]:
    """The continued sweeps of an experiment directory (``DIR/continue/wd*``), by weight decay."""
    d = Path(out) / STAGE
    found = [c for c in d.iterdir() if is_sweep(c)] if d.is_dir() else []
    return sorted(found, key=lambda c: float(c.name[2:]) if c.name.startswith("wd") else math.inf)


# ---- summary ---------------------------------------------------------------------------------------
def _acc_at(metrics: list[dict], step: float) -> float:
    """Test accuracy of the last evaluation at or before ``step``."""
    return [r for r in metrics if r["step"] <= step][-1]["test_acc"]


def summarise(out: Path) -> list[dict]:
    """One row per (weight decay, D'), over the members of the ``DIR/continue/wd*`` sweeps that finished or diverged
    (``common.ok_rows``: a diverged member has no final accuracy, and ``diverged`` counts it)."""
    rows = []
    for d in stage_dirs(out):
        _, members = load_sweep(d)
        cfgs = {f"{RUNS_DIR}/{m.name}": m.config for m in members if m.config}
        n_pairs = next(iter(cfgs.values())).n_examples
        for (wd, size), rs in group(((r, cfgs[r["run"]]) for r in ok_rows(d)), lambda rc: (rc[1].wd, rc[0]["train_size"])).items():
            test_med, test_lo, test_hi = spread(r["final_test_acc"] for r, _ in rs)
            train_med, train_lo, _ = spread(r["final_train_acc"] for r, _ in rs)
            changes = []
            for r, _ in rs:
                metrics = runs.read_metrics(d / r["run"])
                if metrics:
                    changes.append(metrics[-1]["test_acc"] - _acc_at(metrics, 0.8 * metrics[-1]["step"]))
            rows.append({"wd": wd, "train_size": size, "frac_of_pairs": size / n_pairs, "seeds": len(rs),
                         "diverged": sum(r["diverged"] for r, _ in rs),
                         "settled": sum((r.get("reason") or "").startswith("settle_tol") for r, _ in rs),
                         "median_final_test_acc": test_med, "min_final_test_acc": test_lo, "max_final_test_acc": test_hi,
                         "median_final_train_acc": train_med, "min_final_train_acc": train_lo,
                         "median_change_last_fifth": median(changes), "median_final_step": median(r["final_step"] for r, _ in rs),
                         "budget": max(c.steps for _, c in rs)})
    return sorted(rows, key=lambda r: (r["wd"], r["train_size"]))


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

    def diverged(r):
        return " / ".join("–" if r["by_wd"].get(w) is None else "not recorded" if r["by_wd"][w].get("diverged") is None
                          else f"{r['by_wd'][w]['diverged']} of {r['by_wd'][w]['seeds']}" for w in wds)

    def settled(r):
        return " / ".join("–" if r["by_wd"].get(w) is None else f"{r['by_wd'][w]['settled']} of {r['by_wd'][w]['seeds']}" for w in wds)

    return ([("D′ (share of pairs)", lambda r: f"{r['train_size']} ({r['frac_of_pairs']:.1%})")]
            + [(f"wd {fmt(w)}: median test acc (min–max)", acc(w)) for w in wds]
            + [("diverged (" + " / ".join(f"wd {fmt(w)}" for w in wds) + ")", diverged),
               ("settled before the budget (" + " / ".join(f"wd {fmt(w)}" for w in wds) + ")", settled),
               ("change over the last fifth (" + " / ".join(f"wd {fmt(w)}" for w in wds) + ")", change),
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
    budgets = {wd: max(int(_num(r, "budget")) for r in rows if _num(r, "wd") == wd) for wd in wds}
    settled = sum(int(_num(r, "settled")) for r in rows if r.get("settled") not in ("", None))
    members = sum(int(_num(r, "seeds")) for r in rows)
    out = [f"Final test accuracy of a generalising network trained on D' random pairs, against D' "
           f"({', '.join(map(str, sizes))}); median over {'/'.join(map(str, seeds))} subset seeds, bars from the lowest to the highest seed.",
           f"Budget {', '.join(f'{b} steps at weight decay {wd:g}' for wd, b in budgets.items())}; "
           f"{settled} of {members} members stopped earlier because their test accuracy had settled."]
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
    curves, groups = {}, {}
    for d in stage_dirs(out):
        for r in results(d):
            if (d / r["run"]).is_dir():
                name = f"{d.name}/{r['run']}"
                curves[name], groups[name] = runs.read_metrics(d / r["run"]), f"D' {r['train_size']}"
    if curves:
        figs.append(Figure("ungrok-curves", plots.member_curves(curves, groups, "test_acc", "test accuracy",
                                                               "Test accuracy of every continued member"),
                           f"Test accuracy against step for the {len(curves)} continued members (all weight decays), one colour per D'."))
    return figs


NOTES = caption  # the report's caption, below the docs' table
