"""Semi-grokking (Varma et al. 2023): at a training-set size near D_crit, delayed generalisation to partial test accuracy.

Near the critical size the generalising and the memorising circuit are about equally efficient, so
weight decay has no strong reason to prefer either: the circuit-efficiency account predicts that a
network there, after memorising, rises late to a *partial* test accuracy and stays there for a long
time (the paper sees about 0.55 at D = 1532 for p = 113, and notes that it is hard to elicit).

This experiment trains fresh networks (model seeds) at training-set sizes around the transition,
for a long step budget, and looks in each member's test-accuracy curve for such a plateau.

Plateau (``find_plateau``): the longest stretch of consecutive evaluations, after the train
accuracy first reached 0.99, in which every test accuracy lies in [0.2, 0.9] and the highest and
lowest differ by at most 0.2; it counts when it lasts at least ``--plateau-frac`` (default 25 %) of
the steps the run has trained (its last evaluation, so a run that ended early is judged on what it
saw) and does not trend (the mean test accuracy of its last quarter is within 0.05 of its first
quarter's: a slow steady rise through the band is not a plateau). Its start, length, mean level,
drift and whether it lasts to the end of the run are reported, together with the member's final
test accuracy and the step it reached 99 % test accuracy, if it did.

Verdict per member (``verdict``): ``open plateau`` (semi-grokking as far as the run saw: a plateau
still open at the run's end; a longer run says whether it holds or later groks, as the paper's Fig. 6
run did near 1.8x10^7 steps), ``plateau, then grokked`` (a partial stage that ended in full
generalisation within the run), ``plateau, then left`` (it ended some other way), ``grokked`` (full
generalisation with no qualifying plateau) or ``not elicited`` (neither).

``--quick`` (p = 59, the small preset's model: d_model 64, d_mlp 256, lr 3e-3, weight decay 1):
training sizes 1040, 1120, 1200 (30-34 % of the 3 481 pairs: the datafrac experiment's quick run
finds none of 3 seeds generalising within 4 000 steps at 1 044 pairs and 2 of 3 at 1 218), 2 model
seeds, 3 000 steps (what fits in 20 minutes on a loaded 2-core CPU; the paper's plateaus last far
longer).

The full version (p = 113, the canonical model, weight decay 1) needs ``--dcrit DIR``, a finished
``python -m interp.experiment dcrit`` directory: its D grid is centred on the D_crit measured there
(``read_dcrit``: the primary ``D_crit`` row of ``DIR/summary.csv``), five sizes spaced geometrically
from the lower end of its 90 % interval through D_crit to the upper end (``dcrit_grid``; 0.8x to
1.25x D_crit when the interval is missing), 10 model seeds each (the paper's count), and a budget of
1.5x10^7 steps, evaluated every 1 000 steps: a GPU's job (``--plan`` says what it costs on the
machine it runs on). The budget is sized on Fig. 6's run (D = 1 532): partial accuracy from about
0.8x10^7 steps, full grokking near 1.8x10^7. A plateau that starts at 0.8x10^7 counts only in a run of
at least 0.8x10^7 / (1 - 0.25) = 1.07x10^7 steps (10^7 would see it for 20 %), and a run shorter
than 1.8x10^7 sees it still open; 1.5x10^7 sees it for 47 % of the run and would find a plateau
starting as late as 1.125x10^7.

``--proxy`` (with ``--dcrit``): a CPU proxy, labelled as such and never the default: weight decay 3
instead of 1, so that the decay's time scale 1/(lr x wd) is a third as long, 10^5 steps, the three
middle sizes of the grid, 2 seeds. Its lr x wd x steps is 300, against the full version's 1.5x10^4 (Fig.
6's plateau starts at 8x10^3): it can show a plateau starting, not the paper's ten-million-step one. It assumes D_crit does not move with the
weight decay (the circuit-efficiency account's prediction), while ``dcrit`` measured it at its own.

``--steps N`` sets another budget (a different sweep: use a new ``--out``). ``--plateau-frac F``
(0 < F < 1) sets the share of the run a plateau must last; it changes only the summary (recorded in
``DIR/plateau.json``), so re-running the same command with another F re-reads the finished members.

Summary (``DIR/summary.csv``): one row per member, with its verdict and the ``plateau_frac`` used.

Members stop 200 (``--quick``) or 1 000 steps after their test accuracy first reaches 99 %
(``stop_after_grok``) and leave their stack, so the sweep costs what its slowest member needs rather
than the budget times the number of members; the step they reached 99 % at is unaffected.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Sequence

from interp import plots, runs, tables
from interp.config import PRESETS, TrainConfig
from interp.experiments.common import ok_rows, read_summary, results
from interp.sweep import Spec, SweepError, load_sweep
from interp.tables import fmt

DESCRIPTION = "semi-grokking: long runs near the critical training-set size, plateaus of partial test accuracy (Varma et al. 2023)"
LOW, HIGH, BAND, MIN_FRAC, MAX_DRIFT, TRAIN_LEVEL = 0.2, 0.9, 0.2, 0.25, 0.05, 0.99
PLATEAU_FILE = "plateau.json"  # the --plateau-frac the summary uses
OPEN, THEN_GROKKED, THEN_LEFT, GROKKED, NONE = "open plateau", "plateau, then grokked", "plateau, then left", "grokked", "not elicited"


FULL = {"p": 113, "steps": 15_000_000, "eval_every": 1000, "save_every": 250_000, "stop_after_grok": 1000}
FULL_SEEDS = list(range(1, 11))
PROXY = {"p": 113, "wd": 3.0, "steps": 100_000, "eval_every": 200, "save_every": 10_000, "stop_after_grok": 1000}
PROXY_SEEDS = [1, 2]
GRID_POINTS = 5  # sizes in the full version's grid; the proxy takes the middle three


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=None, metavar="N",
                   help="step budget of every member (default: 3 000 with --quick, 1.5x10^7 for the full version, 10^5 with --proxy); "
                        "a different budget is a different sweep, so it needs a new --out")
    p.add_argument("--dcrit", type=Path, default=None, metavar="DIR",
                   help="a finished `interp.experiment dcrit` directory: the full version centres its D grid on the primary D_crit "
                        "of DIR/summary.csv (required without --quick)")
    p.add_argument("--proxy", action="store_true",
                   help="the CPU proxy of the full version (needs --dcrit): weight decay 3, 10^5 steps, 3 sizes x 2 seeds; "
                        "not the paper's setting")
    p.add_argument("--plateau-frac", type=float, default=MIN_FRAC, metavar="F",
                   help=f"a plateau counts when it lasts at least this share (0 < F < 1) of the steps the run has trained "
                        f"(default: {MIN_FRAC:g}); changes only the summary")


def _p_of_command(d: Path) -> int | None:
    """The modulus of the ``dcrit`` command recorded in ``d/experiment.json`` (a stored summary without
    its sweeps, as in ``docs/data``): its ``--p``, else the quick or full version's; None if unrecorded."""
    from interp.experiments import dcrit

    argv = tables.provenance(d).get("argv") or []
    if not argv or argv[0] != "dcrit":
        return None
    if "--p" in argv[:-1]:
        return int(argv[argv.index("--p") + 1])
    return dcrit.QUICK["p"] if "--quick" in argv else dcrit.FULL["p"]


def read_dcrit(d: Path, p: int | None = None, wd: float = 1.0) -> dict:
    """The primary D_crit measured by a ``dcrit`` experiment in ``d``: ``{"dcrit", "lo", "hi", "measure", "p"}``.

    Reads ``d/summary.csv``'s row whose ``row`` is ``D_crit`` and ``primary`` is true (its ``dcrit``,
    ``dcrit_lo``, ``dcrit_hi`` columns; ``lo``/``hi`` None where not finite); where the summary has one
    such row per weight decay (a ``wd`` column), the row at ``wd`` (the paper's 1; the proxy uses it
    too, assuming D_crit does not move with the weight decay). ``p`` is the modulus of
    the experiment's stages, read from the ``sweep.json`` of its stage directories when they are
    there, else from the command in its ``experiment.json`` (None if neither); when given, the
    argument ``p`` must match it.

    Raises:
        SweepError: no summary, no primary D_crit row, a D_crit that is not a finite positive number,
        or a dcrit experiment at another modulus.
    """
    import json
    import math

    d = Path(d)
    rows = tables.read_csv(d / tables.SUMMARY_FILE)
    if not rows:
        raise SweepError(f"--dcrit {d}: no {tables.SUMMARY_FILE} there (run `python -m interp.experiment dcrit --out {d}` first)")
    prim = [r for r in rows if r.get("row") == "D_crit" and r.get("primary") is True]
    if len(prim) > 1 and any(r.get("wd") is not None for r in prim):
        prim = [r for r in prim if r.get("wd") == wd]
    if not prim:
        raise SweepError(f"--dcrit {d}: its {tables.SUMMARY_FILE} has no primary D_crit row (row D_crit, primary True"
                         + (f", wd {wd:g})" if "wd" in rows[0] else ")"))
    if len(prim) > 1:
        raise SweepError(f"--dcrit {d}: its {tables.SUMMARY_FILE} has {len(prim)} primary D_crit rows; expected one")
    r = prim[0]

    def finite(x) -> float | None:
        return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0 else None

    dc = finite(r.get("dcrit"))
    if dc is None:
        raise SweepError(f"--dcrit {d}: its primary D_crit ({r.get('measure')}) has no finite value "
                         f"(status {r.get('status')!r}, dcrit {r.get('dcrit')!r}); nothing to centre the grid on")
    ps = set()
    for sj in sorted(d.glob(f"*/{tables.SWEEP_FILE}")):
        try:
            ps.add(int(json.loads(sj.read_text())["spec"]["base"].get("p", 113)))
        except (ValueError, KeyError, TypeError):
            raise SweepError(f"--dcrit {d}: {sj} is not a sweep file") from None
    if len(ps) > 1:
        raise SweepError(f"--dcrit {d}: its stages were trained at different moduli {sorted(ps)}")
    their_p = ps.pop() if ps else _p_of_command(d)
    if p is not None and their_p is not None and their_p != p:
        raise SweepError(f"--dcrit {d}: measured at p = {their_p}, but this experiment trains at p = {p}")
    return {"dcrit": dc, "lo": finite(r.get("dcrit_lo")), "hi": finite(r.get("dcrit_hi")), "measure": r.get("measure"), "p": their_p}


def dcrit_grid(dcrit: float, lo: float | None, hi: float | None, n_examples: int, points: int = GRID_POINTS) -> list[int]:
    """``points`` (odd) training-set sizes centred on ``dcrit``: geometric from ``lo`` to ``dcrit`` and on
    to ``hi`` (``0.8 dcrit`` and ``1.25 dcrit`` where the interval is missing or does not contain it),
    rounded, kept inside ``[1, n_examples - 1]`` and distinct."""
    lo = lo if lo is not None and lo < dcrit else 0.8 * dcrit
    hi = hi if hi is not None and hi > dcrit else 1.25 * dcrit
    half = points // 2
    xs = [lo * (dcrit / lo) ** (i / half) for i in range(half)] + [dcrit] + [dcrit * (hi / dcrit) ** (i / half) for i in range(1, half + 1)]
    return sorted({min(max(1, round(x)), n_examples - 1) for x in xs})


def spec(args: argparse.Namespace) -> Spec:
    """The sweep: ``--quick``'s fixed grid, or the full version's (or ``--proxy``'s) grid centred on ``--dcrit``'s D_crit.

    Raises:
        SweepError: a bad ``--steps`` or ``--plateau-frac``; ``--dcrit`` missing (full version), given with ``--quick``, or
        unreadable (``read_dcrit``); ``--proxy`` with ``--quick`` or without ``--dcrit``.
    """
    dcrit, proxy = getattr(args, "dcrit", None), getattr(args, "proxy", False)
    steps = getattr(args, "steps", None)
    if steps is not None and steps <= 0:
        raise SweepError(f"--steps {steps}: must be a positive number of steps")
    plateau_frac(args)
    if args.quick:
        if dcrit is not None or proxy:
            raise SweepError(f"{'--dcrit' if dcrit is not None else '--proxy'}: applies to the full version only (--quick has its own fixed grid)")
        base = {**{k: v for k, v in PRESETS["small"].items() if k != "frac"}, "steps": 3000, "eval_every": 50, "save_every": 1000, "stop_after_grok": 200}
        grid = {"train_size": [1040, 1120, 1200], "seed": [1, 2]}
    else:
        if dcrit is None:
            raise SweepError("--dcrit DIR: required for the full version (its D grid is centred on the D_crit that "
                             "`python -m interp.experiment dcrit` measured); --quick runs without it")
        base = dict(PROXY if proxy else FULL)
        found = read_dcrit(dcrit, base["p"])
        sizes = dcrit_grid(found["dcrit"], found["lo"], found["hi"], TrainConfig(**base).n_examples)
        if proxy:
            mid = len(sizes) // 2
            sizes = sizes[max(0, mid - 1): mid + 2]
        grid = {"train_size": sizes, "seed": PROXY_SEEDS if proxy else FULL_SEEDS}
    if steps is not None:
        base["steps"] = steps
    return Spec({"task": "mod_add", **base}, grid)


def plateau_frac(args: argparse.Namespace) -> float:
    """``--plateau-frac``, checked: a share strictly between 0 and 1 (``SweepError`` naming the flag otherwise)."""
    f = getattr(args, "plateau_frac", MIN_FRAC)
    if not 0 < f < 1:  # also refuses nan
        raise SweepError(f"--plateau-frac {f:g}: must lie strictly between 0 and 1 (the share of the run a plateau must last)")
    return f


def plan_specs(args: argparse.Namespace) -> list[Spec]:
    """``--plan``: the one sweep."""
    return [spec(args)]


def run(args: argparse.Namespace, sweep) -> dict[str, dict]:
    """Train the sweep (every input checked first), then record ``--plateau-frac`` for ``summarise``."""
    s = spec(args)
    rows = sweep(s)
    runs.write_text(Path(args.out) / PLATEAU_FILE, json.dumps({"plateau_frac": plateau_frac(args)}) + "\n")
    return rows


def find_plateau(steps: Sequence[int], train_acc: Sequence[float], test_acc: Sequence[float],
                 low: float = LOW, high: float = HIGH, band: float = BAND, min_frac: float = MIN_FRAC,
                 max_drift: float = MAX_DRIFT, train_level: float = TRAIN_LEVEL) -> dict:
    """The longest plateau of partial test accuracy in one run's evaluations (pure; see the module docstring).

    Args:
        steps, train_acc, test_acc: the evaluations, in step order.
        min_frac: a plateau must last this share of the steps the run has trained (its last evaluation's step).
    Returns:
        ``seen`` (bool), ``start``, ``end`` (steps of its first and last evaluation), ``length``
        (``end - start``), ``mean`` (its mean test accuracy), ``drift`` (mean of its last quarter of
        evaluations minus mean of its first quarter), ``to_end`` (it lasts to the last evaluation) and ``train_step`` (first step with train accuracy >= ``train_level``); the
        plateau fields are ``None`` when no stretch qualifies, the longest stretch's when one does
        but is too short.
    """
    seen_steps = steps[-1] if len(steps) else 0
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
               seen=seen_steps > 0 and length >= min_frac * seen_steps and abs(drift) <= max_drift)
    return out


def verdict(plateau: dict, test_99_step: int | None) -> str:
    """One member's verdict from its ``find_plateau`` result and the step its test accuracy reached 0.99
    (None if it never did): ``OPEN``, ``THEN_GROKKED``, ``THEN_LEFT``, ``GROKKED`` or ``NONE``."""
    if plateau["seen"]:
        if plateau["to_end"]:
            return OPEN
        return THEN_GROKKED if test_99_step is not None and test_99_step > plateau["end"] else THEN_LEFT
    return GROKKED if test_99_step is not None else NONE


def read_plateau_frac(out: Path) -> float:
    """The ``--plateau-frac`` recorded in ``out/plateau.json`` (``MIN_FRAC`` where there is none)."""
    path = Path(out) / PLATEAU_FILE
    return float(json.loads(path.read_text())["plateau_frac"]) if path.is_file() else MIN_FRAC


def summarise(out: Path) -> list[dict]:
    """One row per member that finished or diverged (``common.ok_rows``; ``diverged`` says which, and a diverged
    member has no final accuracy): its size and seed, the plateau found, and how the run ended."""
    out = Path(out)
    # the budget is the configured steps, also for a member that stop_after_grok ended earlier
    budgets = {f"runs/{m.name}": m.config.steps for m in load_sweep(out)[1] if m.config}
    frac = read_plateau_frac(out)
    rows = []
    for r in ok_rows(out):
        m = runs.read_metrics(out / r["run"])
        budget = budgets[r["run"]]
        pl = find_plateau([x["step"] for x in m], [x["train_acc"] for x in m], [x["test_acc"] for x in m], min_frac=frac)
        rows.append({"train_size": r["train_size"], "seed": r["seed"], "diverged": r["diverged"], "budget": budget, "final_step": m[-1]["step"] if m else None,
                     "train_99_step": pl["train_step"], "plateau": pl["seen"], "plateau_start": pl["start"],
                     "plateau_length": pl["length"], "plateau_mean_test_acc": pl["mean"], "plateau_drift": pl["drift"],
                     "plateau_to_end": pl["to_end"], "plateau_frac": frac, "verdict": verdict(pl, r["test_99_step"]),
                     "test_99_step": r["test_99_step"],
                     "final_test_acc": None if r["final_test_acc"] is None else float(r["final_test_acc"])})
    return rows


def _stretch(r: dict) -> str:
    if r["plateau_start"] is None:
        return "none"
    return f"{fmt(r['plateau_start'])}, {fmt(r['plateau_length'])}, {r['plateau_mean_test_acc']:.2f}, {r['plateau_drift']:+.2f}"


TABLES = [{"columns": [
    ("D", "train_size"),
    ("seed", "seed"),
    ("diverged", lambda r: "not recorded" if r.get("diverged") is None else "yes" if r["diverged"] else "no"),
    ("train acc ≥ 99% at", "train_99_step"),
    ("longest partial stretch (start, length, mean, drift)", _stretch),
    ("verdict", "verdict"),
    ("99% test acc at", lambda r: fmt(r["test_99_step"]) if r["test_99_step"] is not None else f"> {fmt(r['budget'])}"),
    ("final test acc", lambda r: "–" if r["final_test_acc"] is None else f"{r['final_test_acc']:.2f}"),
]}]


def caption(rows: list[dict]) -> str:
    """What the summary shows: how many members had a plateau, where, and how their runs ended."""
    if not rows:
        return "No finished members yet."
    yes = bool  # rows from summarise or from summary.csv (interp.tables.read_csv): booleans either way
    seen = [r for r in rows if yes(r["plateau"])]
    sizes = sorted({int(r["train_size"]) for r in rows})
    fracs = sorted({float(r["plateau_frac"]) for r in rows})
    out = [f"{len(rows)} members at training sizes {', '.join(map(str, sizes))}, {max(int(r['budget']) for r in rows)} steps each. "
           f"A plateau is at least {' / '.join(f'{f:.0%}' for f in fracs)} of the steps the run trained, with test accuracy in "
           f"[{LOW}, {HIGH}] (spread <= {BAND}, drift <= {MAX_DRIFT}) after train accuracy reached {TRAIN_LEVEL}."]
    counts = {v: sum(r["verdict"] == v for r in rows) for v in (OPEN, THEN_GROKKED, THEN_LEFT, GROKKED, NONE)}
    out.append("Verdicts: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n) + ".")
    if not seen:
        out.append("No member showed such a plateau within this budget: semi-grokking was not elicited here.")
    else:
        for r in seen:
            end = ("and lasts to the end of the run (an open plateau: a longer run would show whether it holds)" if yes(r["plateau_to_end"]) else
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
