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

``threshold``
    Omnigrok's data-size threshold (the grokking slides: with weight decay 0, a critical training-set size of
    about 200 on MNIST, below which the network does not generalise): the digits MLP with its weight norm held
    at alpha x its initial norm (``--fixed-norm``, weight decay 0, as in Omnigrok's MNIST landscape code: AdamW
    lr 1e-3, batches of 100, MSE against one-hot targets, 10^4 steps) over a grid of training-set sizes and
    alphas. Each member's best test accuracy over training is what Omnigrok's phase diagram plots;
    ``critical_size`` reads off the threshold: the smallest training-set size from which on (at it and at every
    larger size of the grid) the best alpha's median-over-seeds best test accuracy reaches ``GENERALISES``.
    scikit-learn's 1 797 8x8 digits stand in for MNIST's 60 000 28x28 images, so the sizes cannot be compared one
    to one: the grid ends at 1 600 training images.

``teacher_lu`` and ``teacher``
    Omnigrok's teacher-student regression (the ``teacher`` task: a random tanh MLP 5-100-100-5 labels 200
    Gaussian inputs, 100 of them for training; the student has the teacher's shape). ``teacher_lu``: the LU
    picture, the student with its norm held at alpha x its initial norm (Adam lr 3e-4, no weight decay, 10^4
    steps, alpha = 10^-1 ... 10^1 on 11 points, as Omnigrok's landscape notebook). ``teacher``: grokking induced
    by a large initialisation (``--preset omnigrok-teacher``: initial parameters x 2, AdamW lr 3e-4, weight
    decay 0.05, 10^5 steps), with weight decay 0 as the control. Accuracy is Omnigrok's: the fraction of
    examples whose mean squared error is below 1e-3.

**What alpha is relative to** (``--alpha-relative-to``). Omnigrok's alpha multiplies *its* initial
weights: those of the original grokking code (Nanda et al.'s, which its modular-addition notebook
copies), where every weight matrix is drawn from N(0, 1/d_model) except the unembedding, N(0,
1/d_vocab), over d_vocab = p + 1 tokens. This project's model is initialised by TransformerLens
(every weight matrix N(0, (0.8/sqrt(d_model))^2)), whose norm is about 0.8x that: at p = 113, 33.6
against 42.2. ``original_init_norm`` computes the original code's expected norm from the model's
shapes, ``this_init_norm`` measures this project's by building the model; with ``original`` the
grid's alpha is the paper's, and each run's ``--init-scale`` is alpha x original / this (the
paper's alpha = 0.8 is this project's ~1.0). ``DIR/alpha.json`` records both norms and the ratio;
the summary gives every run's alpha both ways.

``--quick`` (docs/experiments/omnigrok.md has the measured time on a 2-core CPU): the small preset
(p = 59, d_model 64, d_mlp 256, lr 3e-3) for 2 500 steps at alpha = 0.25 ... 4 relative to this
project's init (``this``, as first measured), one seed; digits 12 000 steps, one seed, weight decay
0.05 and 0; threshold 3 000 steps at alpha 0.5, 1, 2, one seed; the teacher stages as in the full version, one
seed. The full version: the canonical model at
p = 113 (30 % of the pairs, lr 1e-3) for 15 000 steps at the paper's alpha = 0.25 ... 4 (relative to the
original code's init norm), 3 seeds; digits 30 000 steps, 3 seeds; threshold 10 000 steps at alpha 0.25 ... 4,
3 seeds; the teacher stages at Omnigrok's settings, 3 seeds. ``--stages`` runs some of the stages only.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from analyses.timing import late_jump
from interp import optim, runs
from interp.config import PRESETS, TrainConfig
from interp.experiments.common import is_sweep, ok_rows
from interp.sweep import RUNS_DIR, Spec, load_sweep
from interp.tables import fmt, sig

DESCRIPTION = "weight norm: train/test loss against a fixed norm (LU) and grokking induced on digits (Omnigrok)"
STAGES = ("lu", "digits", "threshold", "teacher_lu", "teacher")
TEACHER_ALPHAS = tuple(round(10 ** (k / 5 - 1), 4) for k in range(11))  # 10^linspace(-1, 1, 11), Omnigrok's landscape grid
SUMMARY_COLUMNS = ["stage", "init_scale", "wd", "seed", "diverged", "steps", "n_train", "final_train_loss", "final_test_loss", "final_train_acc",
                   "final_test_acc", "best_train_acc", "best_test_acc", "train_99_step", "test_99_step", "mem_step", "plateau_test_acc", "top_test_acc",
                   "jump_step", "delay", "norm0", "mem_norm", "jump_norm", "final_norm",
                   "p", "alpha", "alpha_relative_to", "alpha_original", "init_norm_here", "init_norm_original"]
ALPHAS = (0.25, 0.5, 0.8, 1.0, 1.5, 2.0, 3.0, 4.0)
ALPHA_REFS = ("original", "this")
PAPER_ALPHA = 0.8  # Omnigrok's fixed-norm run on modular addition (relative to the original init norm)
ALPHA_FILE = "alpha.json"
THRESHOLD_SIZES = (10, 20, 50, 100, 200, 400, 800, 1600)  # training images (the digits have 1 797)
THRESHOLD_ALPHAS = (0.25, 0.5, 1.0, 2.0, 4.0)
THRESHOLD_ALPHAS_QUICK = (0.5, 1.0, 2.0)
GENERALISES = 0.9  # the best test accuracy that counts as generalising (this suite's level: the slides give none)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated stages to run (default: all of {','.join(STAGES)})")
    p.add_argument("--alpha-relative-to", choices=ALPHA_REFS, default=None,
                   help="what the LU grid's alpha multiplies: 'original', the original grokking code's init norm (Omnigrok's alpha), "
                        "or 'this', this project's TransformerLens init norm (default: original; this with --quick, as first measured)")


# ---- alpha against the two initialisations ---------------------------------------------------------
def original_init_norm(cfg: TrainConfig) -> float:
    """The expected L2 norm at initialisation of ``cfg``'s transformer as the original grokking code
    (Nanda et al.; Omnigrok's notebook copies it) initialises it: W_E, W_pos, W_Q, W_K, W_V, W_O,
    W_in and W_out from N(0, 1/d_model), W_U from N(0, 1/d_vocab), biases zero, with embedding and
    unembedding over d_vocab = p + 1 tokens. The expected squared norm is the sum over matrices of
    entries x variance: d_vocab (W_E) + n_ctx (W_pos) + n_layers (4 n_heads d_head + 2 d_mlp) + d_model (W_U).
    """
    d_vocab = cfg.p + 1
    return math.sqrt(d_vocab + cfg.n_ctx + cfg.n_layers * (4 * cfg.n_heads * cfg.d_head + 2 * cfg.d_mlp) + cfg.d_model)


def this_init_norm(cfg: TrainConfig) -> float:
    """The L2 norm of this project's initial trainable parameters for ``cfg`` at ``init_scale`` 1
    (built, not estimated: the norm ``--fixed-norm`` holds at alpha = 1)."""
    from interp.families import build_model

    return float(optim.total_norm(optim.trainable(build_model(cfg.replace(init_scale=1.0)))))


def alpha_ratio(cfg: TrainConfig, relative_to: str) -> float:
    """``--init-scale`` per unit of alpha: original / this init norm for ``original``, 1 for ``this``."""
    return original_init_norm(cfg) / this_init_norm(cfg) if relative_to == "original" else 1.0


def alpha_reference(args: argparse.Namespace) -> str:
    ref = getattr(args, "alpha_relative_to", None)
    return ref if ref is not None else ("this" if args.quick else "original")


def settings(args: argparse.Namespace) -> dict[str, Spec]:
    """The sweep of each stage (``--quick`` or full). Tests replace this with tiny settings."""
    quick = args.quick
    if quick:
        lu_base = {**PRESETS["small"], "task": "mod_add", "wd": 0.0, "fixed_norm": True, "steps": 2500, "eval_every": 50, "save_every": 2500}
    else:  # the canonical model and optimiser at p = 113, Omnigrok's 15k steps
        lu_base = {"task": "mod_add", "p": 113, "wd": 0.0, "fixed_norm": True, "steps": 15000, "eval_every": 100, "save_every": 15000}
    seeds = [1] if quick else [1, 2, 3]
    ratio = alpha_ratio(TrainConfig(**{**lu_base, "seed": seeds[0]}), alpha_reference(args))
    digits_base = {**PRESETS["digits"], "task": "digits", "steps": 12000 if quick else 30000, "save_every": 3000}
    steps = 3000 if quick else 10000
    threshold_base = {**{k: v for k, v in PRESETS["digits"].items() if k not in ("train_size", "init_scale")}, "task": "digits",
                      "wd": 0.0, "fixed_norm": True, "lr": 1e-3, "batch_size": 100, "steps": steps, "eval_every": 100, "save_every": steps}
    teacher = {**PRESETS["omnigrok-teacher"], "task": "teacher", "save_every": 10000}
    teacher_lu = {**teacher, "wd": 0.0, "fixed_norm": True, "steps": 10000, "eval_every": 100, "save_every": 10000}
    teacher_lu.pop("init_scale")
    all_stages = {
        "lu": Spec(lu_base, {"init_scale": [round(a * ratio, 6) for a in ALPHAS], "seed": seeds}),
        "digits": Spec(digits_base, {"wd": [digits_base["wd"], 0.0], "seed": seeds}),
        "threshold": Spec(threshold_base, {"train_size": list(THRESHOLD_SIZES),
                                           "init_scale": list(THRESHOLD_ALPHAS_QUICK if quick else THRESHOLD_ALPHAS), "seed": seeds}),
        "teacher_lu": Spec(teacher_lu, {"init_scale": list(TEACHER_ALPHAS), "seed": seeds}),
        "teacher": Spec(teacher, {"wd": [teacher["wd"], 0.0], "seed": seeds}),
    }
    return {name: all_stages[name] for name in stages(args)}


def stages(args: argparse.Namespace) -> list[str]:
    """The stages ``--stages`` asks for, in their order.

    Raises:
        SweepError: an unknown stage, or none.
    """
    from interp.sweep import SweepError

    text = getattr(args, "stages", None) or ",".join(STAGES)
    asked = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in asked if t not in STAGES]
    if bad or not asked:
        raise SweepError(f"--stages {text}: each must be one of {', '.join(STAGES)}")
    return [t for t in STAGES if t in asked]


def alpha_facts(cfg: TrainConfig, relative_to: str) -> dict:
    """What ``DIR/alpha.json`` records: the reference, both init norms (of ``cfg``'s model) and their ratio."""
    here, orig = this_init_norm(cfg), original_init_norm(cfg)
    return {"relative_to": relative_to, "p": cfg.p, "seed": cfg.seed, "init_norm_here": here, "init_norm_original": orig,
            "ratio_original_to_here": orig / here, "init_scale_per_alpha": orig / here if relative_to == "original" else 1.0}


def plan_specs(args: argparse.Namespace) -> list[Spec]:
    """``--plan``: both stages (neither is built from the other's results)."""
    return list(settings(args).values())


def run(args: argparse.Namespace, sweep) -> dict[str, dict]:
    from interp.sweep import SweepError, check_values

    specs = settings(args)
    for spec in specs.values():  # refuse bad input before anything is written
        check_values(spec)
    path, facts = Path(args.out) / ALPHA_FILE, None
    if "lu" in specs:
        lu = specs["lu"]
        facts = alpha_facts(TrainConfig(**{**lu.base, "seed": lu.grid["seed"][0]}), alpha_reference(args))
        if path.is_file() and (before := json.loads(path.read_text()).get("relative_to")) != facts["relative_to"]:
            raise SweepError(f"--alpha-relative-to {facts['relative_to']}: {args.out} holds a grid relative to {before}; use another --out")
    rows = {}
    for stage, spec in specs.items():
        rows.update({f"{stage}/{name}": r for name, r in sweep(spec, stage).items()})
        if stage == "lu":  # after the first stage ran (--plan trains nothing, and must write nothing)
            runs.write_text(path, json.dumps(facts, indent=2) + "\n")
    return rows


def member_rows(out: Path, stage: str) -> list[dict]:
    """One row per member of a stage that finished or diverged (``common.ok_rows``; ``diverged`` says which): its grid values, final metrics, steps to 99% and
    ``analyses.timing.late_jump`` of its metrics (plus ``run``, its directory inside the stage)."""
    d = Path(out) / stage
    if not is_sweep(d):
        return []
    _, members = load_sweep(d)
    cfgs = {f"{RUNS_DIR}/{m.name}": m.config for m in members}
    facts = read_alpha_facts(out)
    rows = []
    for r in ok_rows(d):
        cfg = cfgs.get(r["run"])
        metrics = runs.read_metrics(d / r["run"]) if cfg is not None else []
        if not metrics:
            continue
        last = metrics[-1]
        rows.append({
            "stage": stage, "run": r["run"], "init_scale": cfg.init_scale, "wd": cfg.wd, "seed": cfg.seed, "diverged": r["diverged"],
            "steps": last["step"],
            "n_train": cfg.n_train, "loss": cfg.loss,
            "final_train_loss": last["train_loss"], "final_test_loss": last["test_loss"],
            "final_train_acc": last["train_acc"], "final_test_acc": last["test_acc"],
            "best_train_acc": max(m["train_acc"] for m in metrics), "best_test_acc": max(m["test_acc"] for m in metrics),
            "train_99_step": r["train_99_step"],
            "test_99_step": r["test_99_step"],
            **late_jump(metrics),
            **alpha_columns(cfg, facts),
        })
    return rows


def read_alpha_facts(out: Path) -> dict:
    """``DIR/alpha.json`` (what the grid's alpha is relative to); without one, alpha is this project's init (``this``)."""
    path = Path(out) / ALPHA_FILE
    return json.loads(path.read_text()) if path.is_file() else {"relative_to": "this", "init_scale_per_alpha": 1.0}


def alpha_columns(cfg: TrainConfig, facts: dict) -> dict:
    """A member's alpha both ways: ``alpha`` in the grid's terms (``alpha_relative_to``), ``alpha_original``
    = its initial norm / the original code's init norm, and both init norms of its model and seed
    (None for the digits MLP, which has no original-code counterpart)."""
    if not cfg.task_spec.token_pair:  # the original code's init is of the [a, b, =] transformer
        return {"p": None, "alpha": None, "alpha_relative_to": None, "alpha_original": None, "init_norm_here": None, "init_norm_original": None}
    here, orig = this_init_norm(cfg), original_init_norm(cfg)
    return {"p": cfg.p, "alpha": cfg.init_scale if facts["init_scale_per_alpha"] == 1.0 else round(cfg.init_scale / facts["init_scale_per_alpha"], 6), "alpha_relative_to": facts["relative_to"],
            "alpha_original": cfg.init_scale * here / orig, "init_norm_here": here, "init_norm_original": orig}


def summarise(out: Path) -> list[dict]:
    """One row per member of both stages that finished or diverged (``SUMMARY_COLUMNS``)."""
    return [{k: r[k] for k in SUMMARY_COLUMNS} for stage in STAGES for r in member_rows(out, stage)]


def _never(key: str):
    return lambda r: "never" if r[key] is None else fmt(r[key])


def _diverged(r: dict) -> str:
    return "not recorded" if r.get("diverged") is None else "yes" if r["diverged"] else "no"


def _loss(x: float | None) -> str:
    return "–" if x is None else sig(x) if x >= 0.01 else f"{x:.1e}"


def _lu_columns(rows: list[dict]) -> list:
    """The LU table's columns; alpha against the original init norm where the summary has it (summaries
    written before it was recorded have only ``init_scale``)."""
    both = any(r.get("alpha_original") is not None for r in rows)
    alpha = ([("α (× original init norm)", lambda r: "–" if r.get("alpha_original") is None else f"{r['alpha_original']:.3g}"),
              ("α (× this init norm)", lambda r: f"{r['init_scale']:.3g}")] if both else [("α (fixed norm)", lambda r: fmt(r["init_scale"]))])
    return alpha + [
        ("seed", "seed"),
        ("diverged", _diverged),
        ("final train loss", lambda r: _loss(r["final_train_loss"])),
        ("final test loss", lambda r: _loss(r["final_test_loss"])),
        ("train acc", lambda r: f"{r['final_train_acc']:.3f}"),
        ("test acc", lambda r: f"{r['final_test_acc']:.3f}"),
        ("train 99% at", _never("train_99_step")),
        ("test 99% at", _never("test_99_step")),
    ]


# ---- the data-size threshold -------------------------------------------------------------------------
def critical_size(acc_by_size: dict[int, float | None], level: float = GENERALISES) -> int | None:
    """The smallest training-set size from which on the accuracy reaches ``level``: at that size and at every
    larger one of the grid (a size without a value counts as not reaching it). ``None`` when even the largest
    size does not reach it."""
    out = None
    for n in sorted(acc_by_size, reverse=True):
        acc = acc_by_size[n]
        if acc is None or acc < level:
            break
        out = n
    return out


def threshold_table(rows: list[dict]) -> list[dict]:
    """One row per training-set size of the threshold stage: the median over seeds of the best test (and
    train) accuracy at each alpha, and the best alpha's. Keys ``n_train``, ``seeds``, ``best_alpha``,
    ``best_test_acc``, ``best_train_acc``, ``by_alpha`` ({alpha: median best test accuracy})."""
    by: dict[int, dict[float, list[dict]]] = {}
    for r in rows:
        by.setdefault(r["n_train"], {}).setdefault(r["init_scale"], []).append(r)
    out = []
    for n in sorted(by):
        med = {a: statistics.median(x["best_test_acc"] for x in rs) for a, rs in sorted(by[n].items())}
        best = max(med, key=med.get)
        out.append({"n_train": n, "seeds": max(len(rs) for rs in by[n].values()), "best_alpha": best, "best_test_acc": med[best],
                    "best_train_acc": statistics.median(x["best_train_acc"] for x in by[n][best]), "by_alpha": med})
    return out


def threshold_caption(rows: list[dict], level: float = GENERALISES) -> str:
    """What the threshold figure shows, every number from ``rows`` (the threshold stage's summary rows)."""
    table = threshold_table(rows)
    crit = critical_size({t["n_train"]: t["best_test_acc"] for t in table}, level)
    seeds = max(t["seeds"] for t in table)
    r = rows[0]
    head = (f"Best test accuracy over {r['steps']} steps against the training-set size, the digits MLP with its weight norm held at "
            f"alpha x its initial norm and weight decay 0 ({'median over ' + str(seeds) + ' seeds' if seeds > 1 else 'one seed'}; one line "
            f"per alpha). ")
    line = "; ".join(f"{t['n_train']} images: {t['best_test_acc']:.3f} (alpha {t['best_alpha']:g}, train {t['best_train_acc']:.3f})"
                     for t in table)
    if crit is None:
        verdict = f"No training-set size of the grid reaches {level:g} test accuracy at any alpha, so the grid shows no threshold."
    elif crit == table[0]["n_train"]:
        verdict = (f"Even the smallest size of the grid ({crit} images) reaches {level:g} test accuracy, so the threshold, if any, lies "
                   "below the grid.")
    else:
        below = max((t for t in table if t["n_train"] < crit), key=lambda t: t["n_train"])
        verdict = (f"From {crit} training images on, the best alpha reaches {level:g} test accuracy at every size of the grid; at "
                   f"{below['n_train']} images it reaches {below['best_test_acc']:.3f}: the threshold on this data lies between "
                   f"{below['n_train']} and {crit} images.")
    return head + "Best over alpha: " + line + ". " + verdict


def _threshold_columns(table: list[dict]) -> list:
    """The threshold table's columns (``table``: ``threshold_table``'s rows)."""
    alphas = sorted(set().union(*(t["by_alpha"] for t in table)))
    return [("training images", "n_train"), ("seeds", "seeds")] + [
        (f"α {a:g}", lambda t, a=a: "–" if a not in t["by_alpha"] else f"{t['by_alpha'][a]:.3f}") for a in alphas] + [
        ("best α", lambda t: f"{t['best_alpha']:g}"), ("its train acc", lambda t: f"{t['best_train_acc']:.3f}")]


_DIGITS_COLUMNS = [
    ("weight decay", lambda r: fmt(r["wd"])),
    ("seed", "seed"),
    ("diverged", _diverged),
    ("memorised at", _never("mem_step")),
    ("test acc then", lambda r: None if r["plateau_test_acc"] is None else f"{r['plateau_test_acc']:.3f}"),
    ("norm at step 0 → memorised", lambda r: f"{r['norm0']:.1f} → " + ("–" if r["mem_norm"] is None else f"{r['mem_norm']:.1f}")),
    ("half of the test rise at", _never("jump_step")),
    ("norm there", lambda r: None if r["jump_norm"] is None else f"{r['jump_norm']:.1f}"),
    ("best test acc", lambda r: None if r["top_test_acc"] is None else f"{r['top_test_acc']:.3f}"),
    ("final norm", lambda r: f"{r['final_norm']:.1f}"),
]

TABLES = [
    {"title": "Fixed norm (`lu/`): the final losses and accuracies against α.", "rows": lambda r: r["stage"] == "lu", "columns": _lu_columns},
    {"title": "Digits (`digits/`): memorisation, the late rise of test accuracy and the parameter norm.",
     "rows": lambda r: r["stage"] == "digits", "columns": _DIGITS_COLUMNS},
    {"title": "Teacher-student, fixed norm (`teacher_lu/`): the final losses and accuracies against α.",
     "rows": lambda r: r["stage"] == "teacher_lu", "columns": _lu_columns},
    {"title": "Teacher-student (`teacher/`): memorisation, the late rise of test accuracy and the parameter norm.",
     "rows": lambda r: r["stage"] == "teacher", "columns": _DIGITS_COLUMNS},
    {"title": "Data-size threshold (`threshold/`): the best test accuracy over training (median over seeds) at each training-set "
              "size and α, weight norm fixed, weight decay 0.", "rows": lambda r: r["stage"] == "threshold", "transform": threshold_table,
     "columns": _threshold_columns},
]


def notes(rows: list[dict]) -> str:
    """``--markdown``'s paragraph: the threshold figure's caption (empty without a threshold stage)."""
    th = [r for r in rows if r["stage"] == "threshold"]
    return threshold_caption(th) if th else ""


NOTES = notes


# ---- figures ------------------------------------------------------------------------------------
def _alpha(r: dict) -> float:
    """The member's alpha in its grid's terms (``alpha``; ``init_scale`` in rows without it)."""
    return r["alpha"] if r.get("alpha") is not None else r["init_scale"]


def _by_alpha(rows: list[dict], key: str) -> dict[float, float]:
    """Median over seeds of ``key`` per alpha."""
    by: dict[float, list[float]] = {}
    for r in rows:
        by.setdefault(_alpha(r), []).append(r[key])
    return {a: statistics.median(v) for a, v in sorted(by.items())}


def alpha_text(rows: list[dict]) -> str:
    """What alpha multiplies, with both init norms when the rows have them."""
    r = rows[0]
    if r.get("init_norm_original") is None:
        return "the initial weights x alpha"
    norms = (f"this project's initial norm {r['init_norm_here']:.1f}, the original grokking code's {r['init_norm_original']:.1f} "
             f"at p = {r['p']}")
    if r.get("alpha_relative_to") == "original":
        return f"alpha x the original grokking code's initial norm, as in Omnigrok; {norms}"
    return f"alpha x this project's initial norm; {norms}"


def lu_caption(rows: list[dict]) -> str:
    """What the LU figure shows, every number from ``rows`` (the lu stage's summary rows)."""
    train, test = _by_alpha(rows, "final_train_loss"), _by_alpha(rows, "final_test_loss")
    alphas = list(train)
    seeds = len({r["seed"] for r in rows})
    a_tr, a_te = min(train, key=train.get), min(test, key=test.get)
    cap = (f"Loss after {rows[0]['steps']} steps with the weight norm held at its initial value, against alpha "
           f"({alpha_text(rows)}; {'median over ' + str(seeds) + ' seeds' if seeds > 1 else 'one seed'}). "
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


def paper_alpha_rows(rows: list[dict], alpha: float = PAPER_ALPHA) -> list[dict]:
    """The runs nearest Omnigrok's fixed-norm alpha (0.8 x the original code's init norm): the grid
    value whose ``alpha_original`` is closest to ``alpha``; rows without it: ``init_scale == alpha``."""
    if any(r.get("alpha_original") is None for r in rows):
        return [r for r in rows if r["init_scale"] == alpha]
    best = min({_alpha(r) for r in rows}, key=lambda a: min(abs(r["alpha_original"] - alpha) for r in rows if _alpha(r) == a))
    return [r for r in rows if _alpha(r) == best]


def gap_caption(rows: list[dict], alpha: float = PAPER_ALPHA) -> str:
    """Train and test 99% steps of the fixed-norm runs nearest Omnigrok's alpha (``paper_alpha_rows``), then of the others."""
    def when(step):
        return "never" if step is None else f"step {step}"

    def line(r):
        orig = "" if r.get("alpha_original") is None else f" ({r['alpha_original']:.3g} x the original init norm)"
        return (f"alpha {_alpha(r):g}{orig} seed {r['seed']}: train 99% {when(r['train_99_step'])}, test 99% {when(r['test_99_step'])} "
                f"(final train accuracy {r['final_train_acc']:.3f}, test {r['final_test_acc']:.3f})")

    at = paper_alpha_rows(rows, alpha)
    head = (f"Test accuracy of every fixed-norm run against step ({rows[0]['steps']} steps). "
            + (f"Nearest Omnigrok's alpha = {alpha:g}: " + "; ".join(line(r) for r in at) + ". " if at else f"No run at alpha = {alpha:g} finished. "))
    rest = sorted((r for r in rows if r not in at), key=lambda r: (_alpha(r), r["seed"]))
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
    what = "training images" if r["stage"] == "digits" else "training examples, accuracy: mean squared error below 1e-3"
    return (f"{r['stage'].capitalize()} MLP ({r['n_train']} {what}, initial weights x {r['init_scale']:g}, {r['loss']} loss), "
            "train and test accuracy and the parameter norm; the dotted lines mark memorisation and the test jump. "
            + "; ".join(parts) + ".")


def _lu_figure(name: str, rows: list[dict], x_title: str, title: str):
    """The final train and test loss against alpha (median over seeds), with ``lu_caption``."""
    from interp import plots
    from interp.plots import Figure

    train, test = _by_alpha(rows, "final_train_loss"), _by_alpha(rows, "final_test_loss")
    return Figure(name, plots.xy_lines({"train loss": (list(train), list(train.values())), "test loss": (list(test), list(test.values()))},
                                       x_title, "final loss", title, log_x=True, log_y=True), lu_caption(rows))


def _late_figure(name: str, out: Path, stage: str, rows: list[dict], title: str):
    """Accuracy and norm of each member of ``stage``, memorisation and the test jump marked, with ``digits_caption``."""
    from interp import plots
    from interp.plots import Figure

    named = {f"wd{r['wd']:g}_seed{r['seed']}": r for r in rows}
    curves = {n: runs.read_metrics(Path(out) / stage / r["run"]) for n, r in named.items()}
    marks = {n: {"memorised": r["mem_step"], "test jump": r["jump_step"]} for n, r in named.items()}
    return Figure(name, plots.accuracy_and_norm(curves, marks, title), digits_caption(rows))


def figures(out: Path) -> list:
    from interp import plots
    from interp.plots import Figure

    figs = []
    lu = member_rows(out, "lu")
    if lu:
        ref = "original code's" if lu[0].get("alpha_relative_to") == "original" else "this project's"
        figs.append(_lu_figure("omnigrok-lu", lu, f"alpha (fixed norm / initial norm, {ref})", "Final loss against the fixed weight norm (LU)"))
        curves = {r["run"]: runs.read_metrics(Path(out) / "lu" / r["run"]) for r in lu}
        groups = {r["run"]: f"alpha {_alpha(r):g}" for r in lu}
        figs.append(Figure("omnigrok-fixed-norm-curves", plots.member_curves(curves, groups, "test_acc", "test accuracy",
                                                                             "Test accuracy with the weight norm held fixed"),
                           gap_caption(lu)))
    dg = member_rows(out, "digits")
    if dg:
        figs.append(_late_figure("omnigrok-digits", out, "digits", dg, "Digits MLP: accuracy and weight norm"))
    tl = member_rows(out, "teacher_lu")
    if tl:
        figs.append(_lu_figure("omnigrok-teacher-lu", tl, "alpha (fixed norm / initial norm)",
                               "Teacher-student: final loss against the fixed weight norm (LU)"))
    te = member_rows(out, "teacher")
    if te:
        figs.append(_late_figure("omnigrok-teacher", out, "teacher", te, "Teacher-student: accuracy and weight norm"))
    th = member_rows(out, "threshold")
    if th:
        table = threshold_table(th)
        lines = {f"alpha {a:g}": ([t["n_train"] for t in table if a in t["by_alpha"]], [t["by_alpha"][a] for t in table if a in t["by_alpha"]])
                 for a in sorted({r["init_scale"] for r in th})}
        figs.append(Figure("omnigrok-threshold", plots.xy_lines(lines, "training images", "best test accuracy",
                                                                "Digits: best test accuracy against the training-set size (fixed norm, wd 0)",
                                                                log_x=True), threshold_caption(th)))
    return figs
