"""Lazy to rich (Kumar, Bordelon, Gershman and Pehlevan 2024): is grokking the late switch from kernel to feature learning?

Their Section 5 setting, on the ``poly`` task and the ``twolayer`` family: inputs ``x`` from N(0, I/100) in 100
dimensions, targets ``(beta . x)^2 / 2``, 550 training and 1 000 test points; the network
``f(x) = alpha * mean_i [phi(w_i . x) - phi(w0_i . x)]`` with 500 hidden units, ``phi(z) = z + 0.02 z^2 / 2``, the
first layer trained by full-batch gradient descent (no momentum, no weight decay) at learning rate ``500 / alpha^2``,
the mean squared error. ``alpha`` (the output scale) sets the rate of feature learning: the larger it is, the lazier
the training, the longer the network behaves as kernel regression with its initial tangent kernel. They report that
the train loss falls first (the kernel fits the training set) and the test loss much later, once the features have
moved and the tangent kernel has aligned with the target; and that the delay grows with laziness.

One sweep per alpha (the learning rate depends on it), seeds as the grid. Per member the summary gives:

- ``fit_step``: the first evaluation at which the train loss is at most ``FALL`` (0.1) of its value at step 0;
- ``gen_step``: the same for the test loss; ``delay``: ``gen_step / fit_step`` (``analyses.timing``-style rule:
  ``fell_by``; a member without the event is censored at its budget);
- the tangent kernel's alignment with the test targets at step 0, at ``fit_step`` and at the end, and how far the
  hidden features had moved by then (``interp.analyze``'s ``kernel`` analyser).

``--quick`` (a 2-core CPU; ``--plan`` prices it): alpha 0.5, 1, 2, seed 1, 30 000 steps. The full version: alpha 0.25,
0.5, 1, 2, 4, seeds 1-3, Kumar et al.'s 10^5 steps.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from interp import runs
from interp.cli import number_list
from interp.experiments.common import censored_median, is_sweep, read_summary, results, run_stages, seed_list
from interp.sweep import Spec, SweepError, load_sweep
from interp.tables import fmt

DESCRIPTION = "lazy to rich: the delay between the train and the test loss's fall against the output scale (Kumar et al.)"
WIDTH = 500  # N, the hidden units
FALL = 0.1  # a loss has fallen when it is at most this fraction of its step-0 value
ALPHAS, ALPHAS_QUICK = (0.25, 0.5, 1.0, 2.0, 4.0), (0.5, 1.0, 2.0)
SUMMARY_COLUMNS = ["alpha", "seed", "lr", "fit_step", "gen_step", "delay", "align_start", "align_fit", "align_final",
                   "features_fit", "features_final", "final_train_loss", "final_test_loss", "steps"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--alphas", default=None, help="comma-separated output scales (default: 0.5,1,2 with --quick, 0.25,0.5,1,2,4 otherwise)")
    p.add_argument("--seeds", default=None, help="comma-separated model seeds (default: 1 with --quick, 1,2,3 otherwise)")


def base_config(alpha: float, steps: int, width: int = WIDTH) -> dict:
    """Kumar et al.'s setting at output scale ``alpha`` (the module docstring): learning rate ``width / alpha^2``."""
    return dict(task="poly", family="twolayer", d_mlp=width, output_scale=alpha, quad_eps=0.02, optimizer="sgd", lr=width / alpha ** 2,
                wd=0.0, loss="mse", steps=steps, eval_every=max(1, steps // 200), save_every=max(1, steps // 40))


def specs(args: argparse.Namespace) -> dict[str, Spec]:
    text = getattr(args, "alphas", None)
    alphas = list(ALPHAS_QUICK if args.quick else ALPHAS) if text is None else number_list(text, "--alphas", positive=True, error=SweepError)
    seeds = seed_list(getattr(args, "seeds", None), [1] if args.quick else [1, 2, 3])
    steps = 30_000 if args.quick else 100_000
    return {f"alpha{a:g}": Spec(base_config(a, steps), {"seed": seeds}) for a in alphas}


def plan_specs(args: argparse.Namespace) -> list[Spec]:
    return list(specs(args).values())


def run(args: argparse.Namespace, sweep) -> dict[str, dict]:
    return run_stages(specs(args), sweep)


# ---- the summary ----------------------------------------------------------------------------------
def fell_by(steps: list[int], values: list[float], fraction: float = FALL) -> int | None:
    """The first step at which ``values`` is at most ``fraction`` of its first value (after any rise); None if never."""
    if not values:
        return None
    return next((s for s, v in zip(steps, values) if v <= fraction * values[0]), None)


def member_row(run_dir: Path) -> dict:
    """The summary row of one member: its fall steps from ``metrics.jsonl`` and its kernel measures from the analysis
    (computed first if needed)."""
    from interp.analyze import analyze_run

    cfg, m = runs.read_config(run_dir), runs.read_metrics(run_dir)
    steps = [r["step"] for r in m]
    fit, gen = fell_by(steps, [r["train_loss"] for r in m]), fell_by(steps, [r["test_loss"] for r in m])
    rows, _ = analyze_run(run_dir, progress=False)
    at_fit = next((r for r in rows if fit is not None and r["step"] >= fit), None)
    return {"alpha": cfg.output_scale, "seed": cfg.seed, "lr": cfg.lr, "fit_step": fit, "gen_step": gen,
            "delay": None if fit is None or gen is None or fit == 0 else round(gen / fit, 2),
            "align_start": rows[0]["ntk_alignment"], "align_fit": None if at_fit is None else at_fit["ntk_alignment"],
            "align_final": rows[-1]["ntk_alignment"], "features_fit": None if at_fit is None else at_fit["feature_distance"],
            "features_final": rows[-1]["feature_distance"], "final_train_loss": m[-1]["train_loss"],
            "final_test_loss": m[-1]["test_loss"], "steps": m[-1]["step"]}


def _stages(out: Path) -> list[Path]:
    return sorted((d for d in Path(out).iterdir() if d.name.startswith("alpha") and is_sweep(d)),
                  key=lambda d: float(d.name[len("alpha"):])) if Path(out).is_dir() else []


def summarise(out: Path) -> list[dict]:
    """One row per finished member, by alpha then seed."""
    rows = []
    for d in _stages(out):
        for r in results(d):
            if r["status"] == "ok":
                rows.append(member_row(d / r["run"]))
    return sorted(rows, key=lambda r: (r["alpha"], r["seed"]))


def _by_alpha(rows: list[dict]) -> dict[float, list[dict]]:
    out: dict[float, list[dict]] = {}
    for r in rows:
        out.setdefault(r["alpha"], []).append(r)
    return dict(sorted(out.items()))


def _med(rs: list[dict], key: str) -> str:
    v = censored_median(r.get(key) for r in rs)
    return "beyond the budget" if v is None else fmt(round(v))


def caption(rows: list[dict]) -> str:
    """What the runs show, every number from the rows."""
    if not rows:
        return ""
    parts = []
    for a, rs in _by_alpha(rows).items():
        n = len(rs)
        fit, gen = _med(rs, "fit_step"), _med(rs, "gen_step")
        delays = [r["delay"] for r in rs if r.get("delay") is not None]
        al = [f"{r['align_start']:.2f} -> {r['align_final']:.2f}" for r in rs]
        parts.append(f"alpha {a:g} ({n} seed{'s' if n > 1 else ''}): the train loss fell {1 / FALL:g}x at step {fit}, the test loss "
                     f"at step {gen}" + (f" (test/train {', '.join(f'{d:g}' for d in delays)})" if delays else "")
                     + f"; kernel alignment {', '.join(al)}")
    by = _by_alpha(rows)
    meds = {a: censored_median(r.get("delay") for r in rs) for a, rs in by.items()}
    known = [(a, d) for a, d in meds.items() if d is not None]
    if len(known) >= 2:
        rising = all(d2 >= d1 for (_, d1), (_, d2) in zip(known, known[1:]))
        trend = ("the median delay grows with alpha over the alphas where both losses fell" if rising
                 else "the median delay does not grow steadily with alpha")
    else:
        trend = "too few alphas had both losses fall to compare delays"
    steps = rows[0]["steps"]
    return (f"Kumar et al.'s polynomial regression, {steps} steps of gradient descent at learning rate 500/alpha^2. "
            + "; ".join(parts) + f". Across alpha, {trend}.")


NOTES = caption


def _s(v) -> str:
    return "–" if v is None else fmt(v)


def _f(v) -> str:
    return "–" if v is None else f"{v:.3g}"


TABLES = [{"title": "Per member: when each loss fell to a tenth of its start, and the tangent kernel's alignment", "columns": [
    ("α", lambda r: f"{r['alpha']:g}"), ("seed", "seed"), ("lr", lambda r: f"{r['lr']:g}"),
    ("train loss fell at", lambda r: _s(r["fit_step"])), ("test loss fell at", lambda r: _s(r["gen_step"])),
    ("test / train", lambda r: _s(r["delay"])),
    ("alignment: start → at the train fall → final", lambda r: f"{_f(r['align_start'])} → {_f(r['align_fit'])} → {_f(r['align_final'])}"),
    ("features moved (at the train fall, final)", lambda r: f"{_f(r['features_fit'])}, {_f(r['features_final'])}"),
    ("final train / test loss", lambda r: f"{_f(r['final_train_loss'])} / {_f(r['final_test_loss'])}"), ("steps", "steps")]}]


def figures(out: Path) -> list:
    from interp import plots
    from interp.analyze import load_analysis
    from interp.plots import Figure

    curves, groups, align = {}, {}, {}
    for d in _stages(out):
        _, members = load_sweep(d)
        for m in members:
            run_dir = d / "runs" / m.name
            if m.config and (run_dir / runs.METRICS_FILE).is_file():
                name = f"{d.name}_seed{m.config.seed}"
                curves[name] = runs.read_metrics(run_dir)
                groups[name] = f"alpha {m.config.output_scale:g}"
                try:
                    rows, _ = load_analysis(run_dir)
                    align[name] = ([r["step"] for r in rows], [r["ntk_alignment"] for r in rows])
                except runs.RunError:
                    pass
    figs = []
    rows = read_summary(out)
    if curves:
        figs.append(Figure("lazyrich-test", plots.member_curves(curves, groups, "test_loss", "test loss (log)",
                                                                "Test loss against the step, one colour per output scale alpha", log_y=True),
                           caption(rows)))
        figs.append(Figure("lazyrich-train", plots.member_curves(curves, groups, "train_loss", "train loss (log)",
                                                                 "Train loss against the step", log_y=True),
                           "The train loss of the same members: it falls before the test loss (the table gives the steps)."))
    if align:
        figs.append(Figure("lazyrich-alignment", plots.xy_lines(align, "step", "centred alignment of the tangent kernel with y",
                                                                "Tangent-kernel alignment with the test targets"),
                           "The empirical tangent kernel's centred alignment with the test targets (256 points) at every checkpoint: "
                           "it stays near its initial value while training is lazy and rises as the features are learned."))
    return figs
