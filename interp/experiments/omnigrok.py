"""Weight norm and grokking (Omnigrok, Liu et al. 2023): the LU picture, and grokking induced on digits.

Two stages, each a sweep in ``DIR/<stage>/``:

``lu``
    modular addition with the weight norm held fixed (``--fixed-norm``, weight decay 0: after every
    AdamW step all parameters are rescaled to their total norm at step 0) over a grid of initial
    scales alpha (``--init-scale``: every initial weight x alpha, so the fixed norm is alpha times the
    standard initialisation's). Omnigrok's "LU mechanism": at the end, train loss against the norm is
    L-shaped (high for small norms, low from some norm on) and test loss is U-shaped (lowest at an
    intermediate norm); and with alpha = 0.8 held fixed, train and test accuracy rise together (no
    grokking delay). The summary reports, per alpha, the final train and test loss and accuracy and the
    steps at which train and test accuracy first reached 99%; the figures say what they show.
``digits``
    the non-algorithmic task: scikit-learn's 8x8 digits, 1000 training images, the 64-200-200-10 ReLU
    MLP, MSE loss against one-hot targets, initial weights x 8, AdamW with weight decay (and the same
    run with weight decay 0 as the control whose norm cannot fall). Omnigrok: the large initial
    norm lets the network memorise first, and test accuracy rises late, as weight decay brings the
    norm down. ``analyses.timing.late_jump`` finds the memorisation step (train accuracy >= 99%), the
    plateau test accuracy there, and the jump: the first step where test accuracy has covered half of
    its rise from that plateau to its best; the summary gives the norm at each of these steps.

``--quick`` (about 10-15 min on a 2-core CPU; docs/experiments/omnigrok.md has the measured time): the small preset
(p = 59, d_model 64, d_mlp 256, lr 3e-3) for 2 500 steps at alpha = 0.25 ... 4, one seed; digits 16 000
steps, one seed, weight decay 0.05 and 0. The full version: 3 seeds, 6 000 steps per alpha and
30 000 digits steps.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from analyses.timing import late_jump
from interp import runs
from interp.config import PRESETS
from interp.experiments.common import is_sweep, ok_rows, run_stages
from interp.sweep import RUNS_DIR, Spec, load_sweep
from interp.tables import fmt, sig

DESCRIPTION = "weight norm: train/test loss against a fixed norm (LU) and grokking induced on digits (Omnigrok)"
STAGES = ("lu", "digits")
SUMMARY_COLUMNS = ["stage", "init_scale", "wd", "seed", "steps", "final_train_loss", "final_test_loss", "final_train_acc",
                   "final_test_acc", "train_99_step", "test_99_step", "mem_step", "plateau_test_acc", "top_test_acc",
                   "jump_step", "delay", "norm0", "mem_norm", "jump_norm", "final_norm"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass  # the common --quick and --out only


def settings(args: argparse.Namespace) -> dict[str, Spec]:
    """The sweep of each stage (``--quick`` or full). Tests replace this with tiny settings."""
    quick = args.quick
    lu_base = {**PRESETS["small"], "task": "mod_add", "wd": 0.0, "fixed_norm": True,
               "steps": 2500 if quick else 6000, "eval_every": 50, "save_every": 2500 if quick else 6000}
    alphas = [0.25, 0.5, 0.8, 1.0, 1.5, 2.0, 3.0, 4.0]
    seeds = [1] if quick else [1, 2, 3]
    digits_base = {**PRESETS["digits"], "task": "digits", "steps": 12000 if quick else 30000, "save_every": 3000}
    return {
        "lu": Spec(lu_base, {"init_scale": alphas, "seed": seeds}),
        "digits": Spec(digits_base, {"wd": [digits_base["wd"], 0.0], "seed": seeds}),
    }


def run(args: argparse.Namespace, sweep) -> dict[str, dict]:
    return run_stages(settings(args), sweep)


def member_rows(out: Path, stage: str) -> list[dict]:
    """One row per finished member of a stage: its grid values, final metrics, steps to 99% and
    ``analyses.timing.late_jump`` of its metrics (plus ``run``, its directory inside the stage)."""
    d = Path(out) / stage
    if not is_sweep(d):
        return []
    _, members = load_sweep(d)
    cfgs = {f"{RUNS_DIR}/{m.name}": m.config for m in members}
    rows = []
    for r in ok_rows(d):
        cfg = cfgs.get(r["run"])
        metrics = runs.read_metrics(d / r["run"]) if cfg is not None else []
        if not metrics:
            continue
        last = metrics[-1]
        rows.append({
            "stage": stage, "run": r["run"], "init_scale": cfg.init_scale, "wd": cfg.wd, "seed": cfg.seed, "steps": last["step"],
            "n_train": cfg.n_train, "loss": cfg.loss,
            "final_train_loss": last["train_loss"], "final_test_loss": last["test_loss"],
            "final_train_acc": last["train_acc"], "final_test_acc": last["test_acc"],
            "train_99_step": r["train_99_step"],
            "test_99_step": r["test_99_step"],
            **late_jump(metrics),
        })
    return rows


def summarise(out: Path) -> list[dict]:
    """One row per finished member of both stages (``SUMMARY_COLUMNS``)."""
    return [{k: r[k] for k in SUMMARY_COLUMNS} for stage in STAGES for r in member_rows(out, stage)]


def _never(key: str):
    return lambda r: "never" if r[key] is None else fmt(r[key])


def _loss(x: float | None) -> str:
    return "–" if x is None else sig(x) if x >= 0.01 else f"{x:.1e}"


TABLES = [
    {"title": "Fixed norm (`lu/`): the final losses and accuracies against α.", "rows": lambda r: r["stage"] == "lu", "columns": [
        ("α (fixed norm)", lambda r: fmt(r["init_scale"])),
        ("seed", "seed"),
        ("final train loss", lambda r: _loss(r["final_train_loss"])),
        ("final test loss", lambda r: _loss(r["final_test_loss"])),
        ("train acc", lambda r: f"{r['final_train_acc']:.3f}"),
        ("test acc", lambda r: f"{r['final_test_acc']:.3f}"),
        ("train 99% at", _never("train_99_step")),
        ("test 99% at", _never("test_99_step")),
    ]},
    {"title": "Digits (`digits/`): memorisation, the late rise of test accuracy and the parameter norm.",
     "rows": lambda r: r["stage"] == "digits", "columns": [
        ("weight decay", lambda r: fmt(r["wd"])),
        ("seed", "seed"),
        ("memorised at", _never("mem_step")),
        ("test acc then", lambda r: None if r["plateau_test_acc"] is None else f"{r['plateau_test_acc']:.3f}"),
        ("norm at step 0 → memorised", lambda r: f"{r['norm0']:.1f} → " + ("–" if r["mem_norm"] is None else f"{r['mem_norm']:.1f}")),
        ("half of the test rise at", _never("jump_step")),
        ("norm there", lambda r: None if r["jump_norm"] is None else f"{r['jump_norm']:.1f}"),
        ("best test acc", lambda r: None if r["top_test_acc"] is None else f"{r['top_test_acc']:.3f}"),
        ("final norm", lambda r: f"{r['final_norm']:.1f}"),
    ]},
]


# ---- figures ------------------------------------------------------------------------------------
def _by_alpha(rows: list[dict], key: str) -> dict[float, float]:
    """Median over seeds of ``key`` per alpha."""
    by: dict[float, list[float]] = {}
    for r in rows:
        by.setdefault(r["init_scale"], []).append(r[key])
    return {a: statistics.median(v) for a, v in sorted(by.items())}


def lu_caption(rows: list[dict]) -> str:
    """What the LU figure shows, every number from ``rows`` (the lu stage's summary rows)."""
    train, test = _by_alpha(rows, "final_train_loss"), _by_alpha(rows, "final_test_loss")
    alphas = list(train)
    seeds = len({r["seed"] for r in rows})
    a_tr, a_te = min(train, key=train.get), min(test, key=test.get)
    cap = (f"Loss after {rows[0]['steps']} steps with the weight norm held at its initial value, against alpha "
           f"(the initial weights x alpha; {'median over ' + str(seeds) + ' seeds' if seeds > 1 else 'one seed'}). "
           f"Train loss goes from {train[alphas[0]]:.3g} at alpha = {alphas[0]:g} to {train[alphas[-1]]:.3g} at alpha = {alphas[-1]:g}, "
           f"lowest ({train[a_tr]:.3g}) at alpha = {a_tr:g}. Test loss is lowest ({test[a_te]:.3g}) at alpha = {a_te:g}; "
           f"it is {test[alphas[0]]:.3g} at alpha = {alphas[0]:g} and {test[alphas[-1]]:.3g} at alpha = {alphas[-1]:g}. ")
    low = [a for a in alphas if train[a] < 0.1]
    if low and all(train[a] < 0.1 for a in alphas if a >= low[0]):
        cap += f"From alpha = {low[0]:g} on, train loss stays below 0.1 (at most {max(train[a] for a in alphas if a >= low[0]):.3g}). "
    if alphas[0] < a_te < alphas[-1]:
        cap += "Test loss is higher on both sides of its minimum (the U of the LU picture)."
    else:
        cap += f"Its minimum is at the {'smallest' if a_te == alphas[0] else 'largest'} alpha of the grid, so this grid shows no U."
    return cap


def gap_caption(rows: list[dict], alpha: float = 0.8) -> str:
    """Train and test 99% steps of the fixed-norm run at ``alpha``, then of the others."""
    def when(step):
        return "never" if step is None else f"step {step}"

    def line(r):
        return (f"alpha {r['init_scale']:g} seed {r['seed']}: train 99% {when(r['train_99_step'])}, test 99% {when(r['test_99_step'])} "
                f"(final train accuracy {r['final_train_acc']:.3f}, test {r['final_test_acc']:.3f})")

    at = [r for r in rows if r["init_scale"] == alpha]
    head = (f"Test accuracy of every fixed-norm run against step ({rows[0]['steps']} steps). "
            + ("; ".join(line(r) for r in at) + ". " if at else f"No run at alpha = {alpha:g} finished. "))
    rest = sorted((r for r in rows if r["init_scale"] != alpha), key=lambda r: (r["init_scale"], r["seed"]))
    return head + "The others: " + "; ".join(line(r) for r in rest) + "."


def digits_caption(rows: list[dict]) -> str:
    """What the digits figure shows: memorisation, plateau, jump and norms, per run."""
    parts = []
    for r in rows:
        head = f"wd {r['wd']:g}, seed {r['seed']}: "
        if r["mem_step"] is None:
            parts.append(head + f"train accuracy never reached 99% in {r['steps']} steps (final {r['final_train_acc']:.3f})")
            continue
        s = (f"memorised (train accuracy >= 99%) at step {r['mem_step']} with test accuracy {r['plateau_test_acc']:.3f} "
             f"and the norm at {r['mem_norm']:.1f} ({r['norm0']:.1f} at step 0)")
        if r["jump_step"] is None:
            s += (f"; test accuracy rose by less than 0.1 after that (best {r['top_test_acc']:.3f}), no jump; "
                  f"final norm {r['final_norm']:.1f}")
        else:
            s += (f"; test accuracy then rose from {r['plateau_test_acc']:.3f} to {r['top_test_acc']:.3f}, half of that rise covered "
                  f"at step {r['jump_step']} ({r['delay']:.1f}x the memorisation step) with the norm at {r['jump_norm']:.1f}; "
                  f"final norm {r['final_norm']:.1f}")
        parts.append(head + s)
    r = rows[0]
    return (f"{r['stage'].capitalize()} MLP ({r['n_train']} training images, initial weights x {r['init_scale']:g}, {r['loss']} loss), "
            "train and test accuracy and the parameter norm; the dotted lines mark memorisation and the test jump. "
            + "; ".join(parts) + ".")


def figures(out: Path) -> list:
    from interp import plots
    from interp.plots import Figure

    figs = []
    lu = member_rows(out, "lu")
    if lu:
        train, test = _by_alpha(lu, "final_train_loss"), _by_alpha(lu, "final_test_loss")
        figs.append(Figure("omnigrok-lu", plots.xy_lines({"train loss": (list(train), list(train.values())),
                                                           "test loss": (list(test), list(test.values()))},
                                                          "alpha (fixed norm / initial norm of the standard init)", "final loss",
                                                          "Final loss against the fixed weight norm (LU)", log_x=True, log_y=True),
                           lu_caption(lu)))
        curves = {r["run"]: runs.read_metrics(Path(out) / "lu" / r["run"]) for r in lu}
        groups = {r["run"]: f"alpha {r['init_scale']:g}" for r in lu}
        figs.append(Figure("omnigrok-fixed-norm-curves", plots.member_curves(curves, groups, "test_acc", "test accuracy",
                                                                             "Test accuracy with the weight norm held fixed"),
                           gap_caption(lu)))
    dg = member_rows(out, "digits")
    if dg:
        d = Path(out) / "digits"
        named = {f"wd{r['wd']:g}_seed{r['seed']}": r for r in dg}
        curves = {n: runs.read_metrics(d / r["run"]) for n, r in named.items()}
        marks = {n: {"memorised": r["mem_step"], "test jump": r["jump_step"]} for n, r in named.items()}
        figs.append(Figure("omnigrok-digits", plots.accuracy_and_norm(curves, marks, "Digits MLP: accuracy and weight norm"),
                           digits_caption(dg)))
    return figs
