"""Phase changes with infinite data, grokking with finite data (the grokking slides; Nanda et al.'s non-modular tasks).

The slides explain grokking as a phase change that limited data makes visible: a task whose loss falls
suddenly even when every step sees fresh examples (infinite data) groks when trained on a small fixed
training set with weight decay: the model memorises first, and the generalising solution, "hard to reach",
arrives much later. This experiment trains each sequence task both ways over seeds, with the same model
and optimiser, and reports:

- infinite data: the step of the phase change (the steepest fall of the test loss, on log loss against the
  step: ``analyses.phase.fall_step``; with fresh batches the test loss is the training loss) and of each
  answer position's own fall (5-digit addition: which digits fall together);
- finite data: the step of memorisation (train accuracy first >= 99 %), of generalisation (test accuracy
  first >= 99 %; the slides' 5-digit run stays at test loss ~0.2, so the steepest fall of the test loss is
  reported too) and their ratio;
- ``repeat_subseq``: the first checkpoint at which a head's induction score reaches 0.4 (``interp.analyze``'s
  ``heads`` analyser), next to the phase change, so that the two can be compared.

``--quick`` (a 2-core CPU: ``--plan`` prices it): both tasks, seeds 1 and 2, smaller models than the
presets (5-digit addition at width 64, MLP 256, AdamW lr 2e-3, weight decay 0.3; repeated subsequences at
width 64, lr 3e-3, weight decay 0.6), 10 warm-up steps, 3000 steps; each member stops 300 steps after its
test accuracy first reaches 99 %. The full version trains the presets (``--preset add5``: Nanda et al.'s width-512 model at lr
1e-4, 3000 steps; ``--preset repeat_subseq``) over seeds 1-3.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from interp import runs
from interp.config import GROK_ACC, PRESETS
from interp.experiments.common import censored_median, first_step, is_sweep, read_summary, results, run_stages, seed_list
from interp.sweep import Spec, SweepError, load_sweep
from interp.tables import fmt

DESCRIPTION = "phase changes with infinite data vs grokking with finite data on the sequence tasks (the grokking slides)"
TASKS = ("add5", "repeat_subseq")
SUMMARY_COLUMNS = ["task", "data", "seed", "phase_step", "position_falls", "memorised_step", "generalised_step",
                   "test_fall_step", "ratio", "induction_step", "induction_start", "induction_at_fall", "induction_final", "final_train_loss",
                   "final_test_loss", "final_test_acc", "steps"]
INDUCTION = 0.4  # the induction score that counts as an induction head (interp.analysers.INDUCTION_HEAD)

QUICK = {
    "add5": dict(d_model=64, n_heads=4, d_mlp=256, freeze_biases=False, lr=2e-3, wd=0.3, warmup=10, steps=3000,
                 eval_every=50, save_every=250, stop_after_grok=300),
    "repeat_subseq": dict(n_layers=2, attn_only=True, d_model=64, n_heads=4, freeze_biases=False, lr=3e-3, wd=0.6, warmup=10,
                          steps=3000, eval_every=25, save_every=125, stop_after_grok=300),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated sequence tasks (default: {','.join(TASKS)})")
    p.add_argument("--seeds", default=None, help="comma-separated model seeds (default: 1,2 with --quick, 1,2,3 otherwise)")


def _tasks(args: argparse.Namespace) -> list[str]:
    tasks = [t.strip() for t in str(getattr(args, "tasks", None) or ",".join(TASKS)).split(",") if t.strip()]
    bad = [t for t in tasks if t not in TASKS]
    if bad or not tasks:
        raise SweepError(f"--tasks {getattr(args, 'tasks', '')}: each must be one of {', '.join(TASKS)}")
    return tasks


def _seeds(args: argparse.Namespace) -> list[int]:
    return seed_list(getattr(args, "seeds", None), [1, 2] if args.quick else [1, 2, 3])


def specs(args: argparse.Namespace) -> dict[str, Spec]:
    """One sweep per task: infinite and finite data x seeds, the quick setting or the task's preset."""
    out = {}
    for task in _tasks(args):
        base = dict(QUICK[task]) if args.quick else {**PRESETS[task], "stop_after_grok": 300}
        out[task] = Spec({"task": task, **base}, {"infinite_data": [True, False], "seed": _seeds(args)})
    return out


def plan_specs(args: argparse.Namespace) -> list[Spec]:
    return list(specs(args).values())


def run(args: argparse.Namespace, sweep) -> dict[str, dict]:
    return run_stages(specs(args), sweep)


# ---- summary ---------------------------------------------------------------------------------------
def _induction(run_dir: Path, fall: int | None) -> dict:
    """From the run's analysis (computed first if needed): the first checkpoint whose largest induction score
    reaches ``INDUCTION``, and the largest induction score at the first checkpoint, at the first checkpoint at or
    after ``fall`` (the steepest fall of the test loss) and at the last one."""
    from interp.analyze import analyze_run

    rows, _ = analyze_run(run_dir, progress=False)
    at_fall = next((r["induction_max"] for r in rows if fall is not None and r["step"] >= fall), None)
    return {"induction_step": next((r["step"] for r in rows if (r.get("induction_max") or 0) >= INDUCTION), None),
            "induction_start": round(rows[0]["induction_max"], 3), "induction_at_fall": None if at_fall is None else round(at_fall, 3),
            "induction_final": round(rows[-1]["induction_max"], 3)}


def member_row(task: str, seed: int, run_dir: Path) -> dict:
    """The summary row of one member (its metrics, and for ``repeat_subseq`` its induction heads)."""
    from analyses import phase

    cfg, m = runs.read_config(run_dir), runs.read_metrics(run_dir)
    steps = [r["step"] for r in m]
    test_fall = phase.fall_step(steps, [r["test_loss"] for r in m])
    row = {c: None for c in SUMMARY_COLUMNS}
    row.update(task=task, data="infinite" if cfg.infinite_data else "finite", seed=seed, final_train_loss=m[-1]["train_loss"],
               final_test_loss=m[-1]["test_loss"], final_test_acc=m[-1]["test_acc"], steps=m[-1]["step"])
    if cfg.infinite_data:
        falls = phase.positions_falls(steps, [r["test_loss_pos"] for r in m])
        row.update(phase_step=test_fall, position_falls=" ".join("-" if f is None else str(f) for f in falls))
    else:
        mem, gen = first_step(m, "train_acc", GROK_ACC), first_step(m, "test_acc", GROK_ACC)
        row.update(memorised_step=mem, generalised_step=gen, test_fall_step=test_fall,
                   ratio=None if mem is None or gen is None or mem == 0 else round(gen / mem, 2))
    if task == "repeat_subseq":
        row.update(_induction(run_dir, test_fall))
    return row


def summarise(out: Path) -> list[dict]:
    """One row per member (task, data, seed): the steps above, from its metrics and analysis."""
    rows = []
    for task in TASKS:
        d = Path(out) / task
        if not is_sweep(d):
            continue
        _, members = load_sweep(d)
        seeds = {f"runs/{m.name}": m.config.seed for m in members if m.config}
        for r in results(d):
            if r["status"] == "ok":
                rows.append(member_row(task, seeds[r["run"]], d / r["run"]))
    return rows


def _med(rows: list[dict], key: str) -> str:
    """The censored median over seeds (a seed without the event counts as later than all): '> budget' when half
    or more never had it."""
    v = censored_median(r.get(key) for r in rows)
    return "beyond the budget" if v is None else fmt(round(v))


def _range(xs) -> str:
    xs = [x for x in xs if x is not None]
    return "–" if not xs else f"{min(xs):.2f}" if min(xs) == max(xs) else f"{min(xs):.2f}–{max(xs):.2f}"



def caption(rows: list[dict]) -> str:
    """The report's and the docs' paragraph, from the summary rows."""
    out = []
    for task in TASKS:
        inf = [r for r in rows if r["task"] == task and r["data"] == "infinite"]
        fin = [r for r in rows if r["task"] == task and r["data"] == "finite"]
        if not inf and not fin:
            continue
        parts = []
        if inf:
            n = sum(r.get("phase_step") is not None for r in inf)
            parts.append(f"with infinite data {n} of {len(inf)} seeds show a phase change (median step {_med(inf, 'phase_step')})")
        if fin:
            gen = sum(r.get("generalised_step") is not None for r in fin)
            parts.append(f"with finite data {gen} of {len(fin)} reach 99 % test accuracy (median memorisation step "
                         f"{_med(fin, 'memorised_step')}, generalisation {_med(fin, 'generalised_step')})")
        ind = [r for r in inf + fin if r.get("induction_step") is not None]
        if task == "repeat_subseq" and (inf or fin):
            at = [r for r in inf + fin if r.get("induction_at_fall") is not None]
            parts.append(f"an induction head (score >= {INDUCTION}) forms in {len(ind)} of {len(inf) + len(fin)} members; the largest "
                         f"induction score is {_range(r['induction_at_fall'] for r in at)} at the steepest fall of the test loss "
                         f"({len(at)} members with one) and {_range(r['induction_final'] for r in inf + fin)} at the end, from "
                         f"{_range(r['induction_start'] for r in inf + fin)} at step 0")
        out.append(f"{task}: " + "; ".join(parts) + ".")
    return " ".join(out)


def figures(out: Path) -> list:
    from interp import plots
    from interp.plots import Figure

    out = Path(out)
    figs = []
    for task in TASKS:
        d = out / task
        if not is_sweep(d):
            continue
        curves, groups = {}, {}
        _, members = load_sweep(d)
        for m in members:
            if m.config and (d / "runs" / m.name / runs.METRICS_FILE).is_file():
                curves[m.name] = runs.read_metrics(d / "runs" / m.name)
                groups[m.name] = "infinite data" if m.config.infinite_data else "finite data: test"
        if curves:
            fig = plots.member_curves(curves, groups, "test_loss", "test loss (log)", f"{task}: test loss, infinite vs finite data",
                                      log_y=True)
            figs.append(Figure(f"phase-{task}", fig, f"{task}: the test loss of every member against the step, one colour for "
                                                     f"infinite data and one for the finite training set. {caption(read_summary(out))}"))
    return figs


NOTES = caption


def _ind(r: dict) -> str:
    if r["task"] != "repeat_subseq":
        return "n/a"
    at = r.get("induction_at_fall")
    return f"{'–' if at is None else f'{at:.2f}'} / {r['induction_final']:.2f}" if r.get("induction_final") is not None else "–"


def _step(v) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt(v)


TABLES = [
    {"title": "Infinite data", "rows": lambda r: r["data"] == "infinite", "columns": [
        ("task", "task"), ("seed", "seed"), ("phase change (steepest fall of test loss)", lambda r: _step(r.get("phase_step"))),
        ("each answer position's fall", lambda r: r.get("position_falls") or "–"),
        ("induction head from", lambda r: _step(r.get("induction_step")) if r["task"] == "repeat_subseq" else "n/a"),
        ("induction score at the fall / final", _ind),
        ("final test loss", lambda r: f"{r['final_test_loss']:.3g}"), ("steps", "steps")]},
    {"title": "Finite data", "rows": lambda r: r["data"] == "finite", "columns": [
        ("task", "task"), ("seed", "seed"), ("memorised (train acc 99 %)", lambda r: _step(r.get("memorised_step"))),
        ("generalised (test acc 99 %)", lambda r: _step(r.get("generalised_step"))),
        ("ratio", lambda r: _step(r.get("ratio"))),
        ("steepest fall of test loss", lambda r: _step(r.get("test_fall_step"))),
        ("induction head from", lambda r: _step(r.get("induction_step")) if r["task"] == "repeat_subseq" else "n/a"),
        ("induction score at the fall / final", _ind),
        ("final train loss", lambda r: f"{r['final_train_loss']:.3g}"), ("final test loss", lambda r: f"{r['final_test_loss']:.3g}"),
        ("steps", "steps")]},
]
