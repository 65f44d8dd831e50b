"""Critical dataset size D_crit (Varma et al. 2023): where memorising stops being cheaper than generalising.

Two families of networks, each trained at several weight decays (one pair of sweeps, i.e. stages,
per weight decay ``w``, each a sweep directory under ``--out``):

``mem_wd<w>``
    **C_mem-only** networks: every training label replaced by a seeded uniform random label
    (``label_noise = 1``), so there is nothing to generalise and all the network learns is a lookup
    table. Training-set sizes D on a geometric grid (a fixed range of fractions of p^2) x model seeds.
``gen_wd<w>``
    **C_gen-only** networks: the true labels on a large D (60 % and 90 % of p^2) x model seeds; they
    generalise. Each is checked: its key frequencies are found by clustering its MLP neurons
    (``analyses.fourier``), and at least 95 % of the squared norm of its logits over all p^2 inputs
    (centred over classes) must lie in the key-frequency directions ``cos/sin(w_k(a + b))``
    (``cgen_frac`` of ``analyses.efficiency.circuit_logits``), and its test accuracy must be >= 0.99.

The data split's seed is the same for every member, so a smaller training set (and its random
labels) is a prefix of a larger one; the seeds vary the initial weights.

**Equilibrium.** The paper compares the networks at convergence, once weight decay and the loss
hold the parameter norm still. Every member trains full-batch AdamW until its parameter norm has
moved by less than ``EQUILIBRIUM_TOL`` (1 %) of itself over the last fifth of the steps so far
(``equilibrium_tol``, ``interp.stopping``), but not before ``min_steps`` and at most ``steps``. Both
are set in decay times: AdamW's decoupled decay shrinks an unsupported weight by 1/e in 1 / (lr * wd)
steps, so ``steps = decay_times / (lr * wd)`` and every weight decay, and every learning rate, gets the
same number of decay times (``decay_steps``; the plans below). A member that reaches the cap without
equilibrium (the rule also counts when the window ending at the cap is flat) is flagged and left out
of the estimate; so is one whose norm sat still while its training loss still fell more than
``LOSS_DROP_MAX`` (2) times over the last fifth: the norm can pause on its way down while the logits
still grow (seen at p = 31), and the run stops there although it is not at equilibrium. Also left
out: a member that does not fit every training label (train accuracy < 1) and a C_gen member that
fails its check. The step each member stopped at is in ``members.csv``.

**Per member** (``member_record``, in ``DIR/members.csv``), at its last checkpoint (its equilibrium):
the parameter norm (L2 over all parameters), the correct-class logit (the mean over the training set
of the centred correct-class logit ``l[y] - mean_c l[c]``, with y the label the member was trained
on: random for C_mem, true for C_gen), the training loss, and logit / norm (``efficiency``).

**Matched logit and matched loss.** At equilibrium the two families do not make the same logits:
comparing their norms at one weight decay compares networks doing different amounts of work. A
larger weight decay holds a network at a smaller norm, a smaller logit and a larger loss, so the
weight decays trace how much norm each network (family, D, seed) needs for a given logit or loss.
``analyses.critical_size.norm_at`` fits ``log norm`` against ``log logit`` (and against ``log loss``) over
its weight decays and reads the fit at the matched value: C_gen's median equilibrium logit (loss) at
the reference weight decay ``REFERENCE_WD`` = 1 (or the middle one trained). Reads outside the range
a network's weight decays span are extrapolations, counted in the summary.

**The estimates** (``analyses.critical_size.crossing``: a power-law fit of C_mem's measure against D, the
geometric mean of the C_gen members as the level, a 90 % interval from a bootstrap over seeds; a
crossing outside the grid is reported as a bound, never as a number), one ``D_crit`` row each:
``norm_at_loss`` (the norm at the matched training loss; the **primary** one), ``norm_at_logit`` (at
the matched correct-class logit), and ``norm`` at each weight decay on its own (the equilibrium norms
compared directly: D_crit per weight decay).

**C_gen's level must not depend on D.** For each estimate, ``analyses.critical_size.level_check`` compares
C_gen's medians at its smallest and largest D: their ratio against the seeds' spread (max / min)
within each size. When the ratio is larger, the row's ``gen_check`` says ``depends on D`` and its
``flags`` say so: the estimate then rests on a level that moved.

``DIR/summary.csv``: one row per family, weight decay and D (seeds, how many were used and flagged,
the median and min-max over seeds of the norm, logit, loss and efficiency, the median step of
equilibrium), one row per family and D with the matched reads (``wd`` empty), then the ``D_crit``
rows (``wd`` set on the per-weight-decay ones; ``primary`` is True on the matched-loss row only).
``python -m interp.report DIR`` draws every measure against D with its estimate.

``--quick`` and the full version: see ``QUICK`` and ``FULL`` below and ``docs/experiments/dcrit.md``
(cost and measured results).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch

from analyses import critical_size as est
from analyses import efficiency
from interp import runs, stopping, tables
from interp.config import PRESETS, TrainConfig, is_prime
from interp.experiments.common import is_sweep, ok_rows, run_stages, spread
from interp.tables import sig
from interp.sweep import Spec, SweepError, load_sweep

DESCRIPTION = "critical dataset size: C_mem-only vs C_gen-only networks over D, at equilibrium (Varma et al. 2023)"
FAMILY = {"mem": "C_mem", "gen": "C_gen"}
EQUILIBRIUM_TOL = 0.01
LOSS_DROP_MAX = 2.0  # a member whose train loss fell more than this factor over its last fifth is not at equilibrium
REFERENCE_WD = 1.0
SUBSPACE_MIN = est.SUBSPACE_MIN
TEST_ACC_MIN = 0.99
MIN_P = 11
MEMBERS_FILE = "members.csv"
MATCHED = {"norm_at_loss": "final_train_loss", "norm_at_logit": "correct_logit"}  # measure: what is matched; the first is primary
MEASURES = {"norm_at_loss": +1, "norm_at_logit": +1, "norm": +1}  # direction of C_mem's measure with D; "norm" is per weight decay

# A plan's budget is in decay times 1 / (lr * wd), the time AdamW's decoupled decay takes to shrink an
# unsupported weight by 1/e: ``decay_times`` (the cap) and ``min_decay_times`` (no equilibrium stop before),
# so every weight decay, and a plan at another learning rate, gets the same number of them.
# The pilot at p = 31 (C_mem, lr 3e-3, weight decay 1, no stopping rule) met the rule with a settled loss at
# steps 2 900 (D = 19) and 3 200 (D = 77): PILOT_DECAY_TIMES = 3 200 x 3e-3 x 1 = 9.6 decay times. The full
# version (lr 1e-3) waits at least that long before the rule may stop a member and caps at twice it;
# min_decay_times keeps runs past the pause of the norm near its early peak (1-2 decay times in the pilot).
# --quick: the small preset's model and lr (3e-3), weight decays 1 and 2 (0.5 would double its cost), 15 and 7.5
# decay times (5 000 and 2 500 steps at weight decay 1), the configuration its measured table comes from.
PILOT_DECAY_TIMES = 3200 * 3e-3 * 1.0
_SMALL = {k: PRESETS["small"][k] for k in ("d_model", "d_mlp", "lr")}
QUICK = {"p": 31, "base": {**_SMALL, "eval_every": 50}, "wds": [1.0, 2.0], "decay_times": 15.0, "min_decay_times": 7.5,
         "mem_fracs": np.geomspace(0.02, 0.32, 5).tolist(), "gen_fracs": [0.6, 0.9], "seeds": [1, 2, 3]}
FULL = {"p": 113, "base": {"lr": 1e-3, "eval_every": 50}, "wds": [0.5, 1.0, 2.0], "decay_times": 20.0, "min_decay_times": 10.0,
        "mem_fracs": np.geomspace(0.02, 0.32, 7).tolist(), "gen_fracs": [0.6, 0.9], "seeds": [1, 2, 3, 4, 5]}

MEMBER_COLUMNS = ["family", "run", "diverged", "wd", "D", "seed", "steps", "cap", "equilibrium", "ended", "loss_drop", "final_train_loss", "final_train_acc",
                  "final_test_acc", "param_norm", "correct_logit", "efficiency", "key_frequencies", "cgen_frac", "flags"]
SUMMARY_COLUMNS = ["row", "wd", "D", "seeds", "used", "diverged", "flags", "norm_median", "norm_min", "norm_max", "logit_median", "loss_median",
                   "efficiency_median", "efficiency_min", "efficiency_max", "steps_median", "cap",
                   "norm_at_loss_median", "norm_at_loss_min", "norm_at_loss_max", "norm_at_logit_median", "norm_at_logit_min",
                   "norm_at_logit_max", "extrapolated", "max_final_train_loss", "min_cgen_frac", "median_final_test_acc",
                   "measure", "primary", "status", "dcrit", "dcrit_lo", "dcrit_hi", "slope", "gen_level", "matched_at",
                   "gen_check", "gen_ratio", "gen_spread"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--p", type=int, default=None, help=f"prime modulus >= {MIN_P} (default: {QUICK['p']} with --quick, else {FULL['p']})")


def sizes(p: int, fracs: list[float]) -> list[int]:
    """Training-set sizes ``round(f * p^2)``, at least 2 and below p^2, without repeats."""
    return sorted({min(max(2, round(f * p * p)), p * p - 1) for f in fracs})


def decay_steps(times: float, lr: float, wd: float, every: int) -> int:
    """``times`` decay times ``1 / (lr * wd)`` in steps, a whole number of evaluations, at least one."""
    return max(every, round(times / (lr * wd) / every) * every)


def stage_name(family: str, wd: float) -> str:
    """``mem_wd0.5``: the stage of one family (``mem`` or ``gen``) at one weight decay."""
    return f"{family}_wd{wd:g}"


def plan_of(args: argparse.Namespace) -> dict:
    return QUICK if args.quick else FULL


def specs(args: argparse.Namespace) -> dict[str, Spec]:
    """Every stage's sweep, by stage name (raises ``SweepError`` for a bad ``--p``)."""
    plan = plan_of(args)
    p = plan["p"] if args.p is None else args.p
    if p < MIN_P or not is_prime(p):
        raise SweepError(f"--p {p}: must be a prime >= {MIN_P} (the key-frequency check needs an odd prime modulus with a few frequencies)")
    base, every = plan["base"], plan["base"]["eval_every"]
    lr = base.get("lr", TrainConfig.lr)
    out = {}
    for wd in plan["wds"]:
        steps = decay_steps(plan["decay_times"], lr, wd, every)
        b = {"task": "mod_add", "equilibrium_tol": EQUILIBRIUM_TOL, **base, "p": p, "wd": wd, "steps": steps,
             "min_steps": min(steps, decay_steps(plan["min_decay_times"], lr, wd, every)) if plan["min_decay_times"] else 0,
             "save_every": max(every, steps // 4)}
        out[stage_name("mem", wd)] = Spec({**b, "label_noise": 1.0}, {"train_size": sizes(p, plan["mem_fracs"]), "seed": plan["seeds"]})
        out[stage_name("gen", wd)] = Spec(b, {"train_size": sizes(p, plan["gen_fracs"]), "seed": plan["seeds"]})
    return out


def plan_specs(args: argparse.Namespace) -> list[Spec]:
    """``--plan``: every stage (they do not depend on each other), so the estimate counts them all."""
    return list(specs(args).values())


def run(args: argparse.Namespace, sweep) -> dict[str, dict]:
    return run_stages(specs(args), sweep)  # every input checked before anything is written


def stages(out: Path) -> list[tuple[str, Path]]:
    """``(family, directory)`` of every stage found under ``out`` (``mem_wd*``/``gen_wd*`` sweeps), in name order."""
    found = []
    for d in sorted(Path(out).iterdir()) if Path(out).is_dir() else []:
        fam = d.name.split("_wd")[0]
        if d.is_dir() and fam in FAMILY and d.name.startswith(f"{fam}_wd"):
            found.append((FAMILY[fam], d))
    return found


# ---- per member --------------------------------------------------------------------------------
def equilibrium(metrics: list[dict], cap: int, min_steps: int, ended: dict | None, tol: float = EQUILIBRIUM_TOL) -> bool:
    """Whether a member's last evaluation is at equilibrium: it ended by the equilibrium rule, or it ran
    to the cap (not before ``min_steps``) and its norm moved < ``tol`` of itself over the last fifth."""
    if ended is not None:
        return str(ended.get("reason", "")).startswith("equilibrium_tol")
    step = metrics[-1]["step"]
    d = stopping.moved(metrics, step, "param_norm", relative=True)
    return step >= min_steps and d is not None and d < tol


def loss_drop(metrics: list[dict]) -> float | None:
    """How many times the training loss fell over the last fifth of the steps (its first value in that
    window over its last); None with fewer than two evaluations there."""
    w = stopping.window(metrics, metrics[-1]["step"], "train_loss")
    return w[0] / w[-1] if len(w) >= 2 and w[-1] > 0 else None


def equilibrium_flag(at_eq: bool, drop: float | None, cap: int) -> str:
    """Why a member is not at equilibrium ("" if it is): it reached the cap with its norm still moving,
    or its norm sat still while its training loss still fell more than ``LOSS_DROP_MAX`` times over the
    last fifth (a pause of the norm on its way, not the balance of weight decay and loss)."""
    if not at_eq:
        return f"no equilibrium by the cap ({cap} steps)"
    if drop is not None and drop > LOSS_DROP_MAX:
        return f"norm flat but train loss still falling (x{drop:.3g} over the last fifth)"
    return ""


@torch.no_grad()
def member_record(run_dir: Path, family: str, diverged: bool = False) -> dict:
    """The measures of one member at its last checkpoint (see the module docstring); ``flags`` names what failed
    (a member that diverged, ``common.ok_rows``, is flagged so and never used)."""
    r = runs.load_run(run_dir)
    cfg, data, last = r.config, r.dataset, r.metrics[-1]
    if diverged:  # its weights are not finite: nothing to measure, and it is never used
        return {c: None for c in MEMBER_COLUMNS} | {"family": family, "run": str(run_dir.name), "wd": cfg.wd, "D": cfg.n_train,
                                                    "seed": cfg.seed, "steps": last["step"], "cap": cfg.steps, "flags": "diverged",
                                                    "diverged": True}
    model = r.load_model()
    logits = model(data.inputs)[:, -1].double()
    norm = efficiency.parameter_norm(model)
    logit = efficiency.centred_correct_logit(logits[data.train_idx], data.train_labels).mean().item()
    end = runs.ended(run_dir)
    at_eq = equilibrium(r.metrics, cfg.steps, cfg.min_steps, end, cfg.equilibrium_tol or EQUILIBRIUM_TOL)
    drop = loss_drop(r.metrics)
    flags = [f] if (f := equilibrium_flag(at_eq, drop, cfg.steps)) else []
    if last["train_acc"] < 1.0:
        flags.append("train acc < 1")
    keys, frac = None, None
    if family == "C_gen":
        keys, frac = est.key_subspace_fraction(model, logits, data.labels, data.train_idx, cfg.task)
        if not keys:
            flags.append("no key frequencies")
        elif not frac >= SUBSPACE_MIN:
            flags.append(f"logits {frac:.0%} in key subspace")
        if last["test_acc"] < TEST_ACC_MIN:
            flags.append("test acc < 0.99")
    return {"family": family, "run": str(run_dir.name), "wd": cfg.wd, "D": cfg.n_train, "seed": cfg.seed, "steps": last["step"],
            "cap": cfg.steps, "equilibrium": at_eq, "ended": (end or {}).get("reason", ""), "loss_drop": drop,
            "final_train_loss": last["train_loss"], "final_train_acc": last["train_acc"], "final_test_acc": last["test_acc"],
            "param_norm": norm, "correct_logit": logit, "efficiency": efficiency.efficiency(logit, norm),
            "key_frequencies": " ".join(map(str, keys)) if keys is not None else None, "cgen_frac": frac, "flags": "; ".join(flags),
            "diverged": diverged}


def members(out: Path) -> list[dict]:
    """``member_record`` of every member of every stage that finished or diverged (``common.ok_rows``; other
    failures, a bad config or a crash, are left out)."""
    recs = []
    for family, d in stages(out):
        if is_sweep(d):
            recs += [member_record(d / r["run"], family, r["diverged"]) for r in ok_rows(d)]
    return recs


MEMBER_TEXT = frozenset({"family", "run", "ended", "key_frequencies", "flags"})  # read back as strings, whatever they look like


def read_members(out: Path) -> list[dict]:
    """``DIR/members.csv`` (written by ``summarise``) with numbers parsed; ``[]`` if there is none."""
    return tables.read_csv(Path(out) / MEMBERS_FILE, text=MEMBER_TEXT)


# ---- matched reads and the estimates ------------------------------------------------------------
def reference_wd(recs: list[dict]) -> float | None:
    """The weight decay whose C_gen equilibria set the matched values: ``REFERENCE_WD`` if trained, else the middle one."""
    wds = sorted({r["wd"] for r in recs})
    if not wds:
        return None
    return REFERENCE_WD if REFERENCE_WD in wds else wds[(len(wds) - 1) // 2]


def matched_levels(recs: list[dict]) -> dict[str, float | None]:
    """The matched value of each matched measure: the median over the used C_gen members at the
    reference weight decay of their equilibrium training loss / correct-class logit (None if none)."""
    ref = reference_wd(recs)
    gen = [r for r in recs if r["family"] == "C_gen" and not r["flags"] and r["wd"] == ref]
    return {m: statistics.median(r[col] for r in gen) if gen else None for m, col in MATCHED.items()}


def matched(recs: list[dict]) -> list[dict]:
    """One row per (family, D, seed) with the used members' norms read at the matched loss and logit
    (``analyses.critical_size.norm_at`` across the weight decays), and which reads were extrapolated."""
    levels = matched_levels(recs)
    used = [r for r in recs if not r["flags"]]
    out = []
    for (family, d, seed), rs in sorted(_by(used, ("family", "D", "seed")).items(), key=lambda kv: (kv[0][0] != "C_mem", kv[0][1], kv[0][2])):
        row = {"family": family, "D": d, "seed": seed, "wds": len(rs), "extrapolated": []}
        for m, col in MATCHED.items():
            got = est.norm_at([(r[col], r["param_norm"]) for r in rs], levels[m]) if levels[m] is not None else None
            row[m] = got[0] if got else None
            if got and got[1]:
                row["extrapolated"].append(m)
        out.append(row)
    return out


def _by(rows: list[dict], keys: tuple[str, ...]) -> dict[tuple, list[dict]]:
    """Rows by the tuple of ``keys``' values, in the order the rows come (``common.group`` sorts them)."""
    out: dict[tuple, list[dict]] = {}
    for r in rows:
        out.setdefault(tuple(r[k] for k in keys), []).append(r)
    return out


def estimates(recs: list[dict]) -> dict[str, dict]:
    """``analyses.critical_size.crossing`` and ``analyses.critical_size.level_check`` for each measure, from the used
    (unflagged) members: the matched loss (primary) and logit, then the equilibrium norm at each
    weight decay (``norm@wd=<w>``). Each value also has ``wd`` (None for the matched ones), ``at``
    (the matched value) and ``check`` (the C_gen level check)."""
    levels = matched_levels(recs)
    rows = matched(recs)
    out = {}
    for m in MATCHED:
        mem = [(r["D"], r["seed"], r[m]) for r in rows if r["family"] == "C_mem"]
        gen = [(r["seed"], r[m]) for r in rows if r["family"] == "C_gen"]
        check = est.level_check({d: [r[m] for r in rs] for (d,), rs in _by([r for r in rows if r["family"] == "C_gen"], ("D",)).items()})
        out[m] = {**est.crossing(mem, gen, MEASURES[m]), "wd": None, "at": levels[m], "check": check, "measure": m}
    used = [r for r in recs if not r["flags"]]
    for wd in sorted({r["wd"] for r in recs}):
        rs = [r for r in used if r["wd"] == wd]
        mem = [(r["D"], r["seed"], r["param_norm"]) for r in rs if r["family"] == "C_mem"]
        gen = [(r["seed"], r["param_norm"]) for r in rs if r["family"] == "C_gen"]
        check = est.level_check({d: [r["param_norm"] for r in g] for (d,), g in _by([r for r in rs if r["family"] == "C_gen"], ("D",)).items()})
        out[f"norm@wd={wd:g}"] = {**est.crossing(mem, gen, MEASURES["norm"]), "wd": wd, "at": None, "check": check, "measure": "norm"}
    return out


# ---- the summary -------------------------------------------------------------------------------
def _mm(row: dict, col: str, values: list) -> None:
    row[f"{col}_median"], row[f"{col}_min"], row[f"{col}_max"] = spread(values)


def _check_flag(c: dict) -> str:
    if c["status"] == "depends on D":
        return (f"C_gen level depends on D (median at D = {c['d_hi']:.0f} / at D = {c['d_lo']:.0f} = {c['ratio']:.3g}, "
                f"beyond the seed spread {c['spread']:.3g})")
    if c["status"] in ("one size", "too few seeds"):
        return f"C_gen level not checked ({c['status']})"
    return ""


def summary_rows(recs: list[dict]) -> list[dict]:
    """One row per family, weight decay and D (median and min-max over the used seeds); one row per
    family and D with the matched reads (``wd`` empty); then one ``D_crit`` row per estimate."""
    rows = []
    for family in ("C_mem", "C_gen"):
        for wd in sorted({r["wd"] for r in recs if r["family"] == family}):
            for d in sorted({r["D"] for r in recs if r["family"] == family and r["wd"] == wd}):
                rs = [r for r in recs if r["family"] == family and r["wd"] == wd and r["D"] == d]
                used = [r for r in rs if not r["flags"]]
                row = {"row": family, "wd": wd, "D": d, "seeds": len(rs), "used": len(used), "cap": max(r["cap"] for r in rs),
                       "diverged": sum(bool(r.get("diverged")) for r in rs),
                       "flags": "; ".join(f"seed {r['seed']}: {r['flags']}" for r in rs if r["flags"])}
                _mm(row, "norm", [r["param_norm"] for r in used])
                _mm(row, "efficiency", [r["efficiency"] for r in used])
                row["logit_median"] = spread([r["correct_logit"] for r in used])[0]
                row["loss_median"] = spread([r["final_train_loss"] for r in used])[0]
                row["steps_median"] = spread([r["steps"] for r in rs])[0]  # where each stopped (a diverged one too)
                finished = [r for r in rs if not r.get("diverged")]  # a diverged member has no final state
                row["max_final_train_loss"] = max((r["final_train_loss"] for r in finished), default=None)
                fracs = [r["cgen_frac"] for r in rs if r["cgen_frac"] is not None]
                row["min_cgen_frac"] = min(fracs) if fracs else None
                row["median_final_test_acc"] = statistics.median(r["final_test_acc"] for r in finished) if finished else None
                rows.append(row)
    for (family, d), ms in _by(matched(recs), ("family", "D")).items():
        row = {"row": family, "wd": None, "D": d, "seeds": len({r["seed"] for r in recs if r["family"] == family and r["D"] == d}),
               "used": sum(r["norm_at_loss"] is not None or r["norm_at_logit"] is not None for r in ms),
               "extrapolated": sum(bool(r["extrapolated"]) for r in ms),
               "flags": "; ".join(f"seed {r['seed']}: {' and '.join(r['extrapolated'])} extrapolated" for r in ms if r["extrapolated"])}
        for m in MATCHED:
            _mm(row, m, [r[m] for r in ms])
        rows.append(row)
    for i, (name, e) in enumerate(estimates(recs).items()):
        edges = [s for s, at in (("lower end at the grid", e["lo_at_grid"]), ("upper end at the grid", e["hi_at_grid"])) if at]
        rows.append({"row": "D_crit", "wd": e["wd"], "measure": e["measure"], "primary": i == 0, "status": e["status"], "dcrit": e["dcrit"],
                     "dcrit_lo": e["lo"], "dcrit_hi": e["hi"], "slope": e["slope"], "gen_level": e["gen_level"], "matched_at": e["at"],
                     "gen_check": e["check"]["status"], "gen_ratio": e["check"]["ratio"], "gen_spread": e["check"]["spread"],
                     "used": e["n_mem"] + e["n_gen"], "flags": "; ".join(x for x in [*edges, _check_flag(e["check"])] if x)})
    return [{c: r.get(c) for c in SUMMARY_COLUMNS} for r in rows]


def summarise(out: Path) -> list[dict]:
    """Measure every member (``DIR/members.csv``) and return the rows of ``DIR/summary.csv``."""
    for _, d in stages(out):  # a directory that is not a dcrit experiment says so (load_sweep raises)
        load_sweep(d)
    recs = members(out)
    tables.write_csv(Path(out) / MEMBERS_FILE, recs, MEMBER_COLUMNS, digits=6)
    return summary_rows(recs)


def _mmm(r: dict, col: str) -> str | None:
    """``21.1 (20.4–21.4)``: the median and min–max over the used seeds (just the median for one seed)."""
    med, lo, hi = r[f"{col}_median"], r[f"{col}_min"], r[f"{col}_max"]
    if med is None:
        return None
    return sig(med) if lo == hi else f"{sig(med)} ({sig(lo)}–{sig(hi)})"


def _estimate(r: dict) -> str:
    if r["status"] == "crossed":
        return f"{r['dcrit']:.0f} (90% interval {r['dcrit_lo']:.0f}–{r['dcrit_hi']:.0f})"
    if r["status"] in ("below grid", "above grid"):
        return f"{r['status']} ({'<' if r['status'] == 'below grid' else '>'} {(r['dcrit_hi'] if r['status'] == 'below grid' else r['dcrit_lo']):.0f})"
    return f"no estimate ({r['status']})"


def _label(r: dict) -> str:
    """The estimate's measure in a table cell."""
    if r["measure"] == "norm":
        return f"norm at equilibrium, wd {sig(r['wd'])}"
    return f"norm at matched {'loss' if r['measure'] == 'norm_at_loss' else 'logit'} {sig(r['matched_at'])}"


TABLES = [
    {"title": "At equilibrium, per family, weight decay and training-set size D (medians over the used seeds, min–max in brackets):",
     "rows": lambda r: r["row"] != "D_crit" and r["wd"] is not None, "columns": [
        ("family", "row"),
        ("wd", lambda r: sig(r["wd"])),
        ("D", "D"),
        ("used / seeds", lambda r: f"{r['used']} / {r['seeds']}"),
        ("diverged", lambda r: "not recorded" if r.get("diverged") is None else f"{r['diverged']} of {r['seeds']}"),
        ("step stopped (median; cap)", lambda r: f"{r['steps_median']:.0f} ({r['cap']})"),
        ("norm", lambda r: _mmm(r, "norm")),
        ("correct logit", lambda r: sig(r["logit_median"])),
        ("train loss", lambda r: sig(r["loss_median"])),
        ("flagged", lambda r: r["flags"] or "–"),
    ]},
    {"title": "Norms at the matched loss and logit, read across the weight decays (medians over seeds, min–max in brackets):",
     "rows": lambda r: r["row"] != "D_crit" and r["wd"] is None, "columns": [
        ("family", "row"),
        ("D", "D"),
        ("seeds read", lambda r: f"{r['used']} / {r['seeds']}"),
        ("norm at matched loss", lambda r: _mmm(r, "norm_at_loss")),
        ("norm at matched logit", lambda r: _mmm(r, "norm_at_logit")),
        ("extrapolated", lambda r: r["flags"] or "–"),
    ]},
    {"title": "The estimates (`analyses.critical_size.crossing`; the first is the primary one):",
     "rows": lambda r: r["row"] == "D_crit", "columns": [
        ("measure", _label),
        ("D_crit", _estimate),
        ("C_mem slope (log-log)", lambda r: sig(r["slope"])),
        ("C_gen level", lambda r: sig(r["gen_level"])),
        ("C_gen level vs D", lambda r: f"{r['gen_check']}" + (f" (ratio {sig(r['gen_ratio'])}, seed spread {sig(r['gen_spread'])})"
                                                              if r["gen_spread"] is not None else "")),
        ("members used", "used"),
        ("flags", lambda r: r["flags"] or "–"),
    ]},
]


def _what(e: dict, measure: str) -> str:
    if e.get("measure") == "norm" or measure.startswith("norm@"):
        return f"parameter norm at equilibrium (wd {e['wd']:g})"
    at = "–" if e.get("at") is None else f"{e['at']:.3g}"
    return f"parameter norm at train loss {at}" if measure == "norm_at_loss" else f"parameter norm at correct-class logit {at}"


def sentence(e: dict, measure: str) -> str:
    """The D_crit estimate of one measure in words, from its numbers (``estimates``)."""
    what = _what(e, measure)
    s = e["status"]
    check = e.get("check") or {}
    tail = "" if check.get("status") in (None, "independent") else f"; {_check_flag(check)}"
    if s == "crossed":
        cut = [w for w, at in (("lower", e["lo_at_grid"]), ("upper", e["hi_at_grid"])) if at]
        return (f"D_crit by {what}: {e['dcrit']:.0f} (90% interval {e['lo']:.0f}-{e['hi']:.0f}"
                + (f", its {' and '.join(cut)} end cut at the grid" if cut else "") + ")" + tail)
    if s == "below grid":
        return f"D_crit by {what}: below the grid (< {e['hi']:.0f}); C_mem's fitted line meets C_gen's level there" + tail
    if s == "above grid":
        return f"D_crit by {what}: above the grid (> {e['lo']:.0f}); C_mem's fitted line meets C_gen's level there" + tail
    if s == "no trend":
        return (f"D_crit by {what}: no estimate; C_mem's slope against D ({e['slope']:.3g}, 90% interval "
                f"{e['slope_lo']:.3g} to {e['slope_hi']:.3g}) does not move the expected way")
    return f"D_crit by {what}: no estimate; too few unflagged members ({e['n_mem']} C_mem over < 2 sizes or {e['n_gen']} C_gen)"


def _values(recs: list[dict], name: str, e: dict) -> list[dict]:
    """``{family, D, value, flagged}`` of each point of one measure's panel."""
    if e["measure"] == "norm":
        return [{"family": r["family"], "D": r["D"], "value": r["param_norm"], "flagged": bool(r["flags"])}
                for r in recs if r["wd"] == e["wd"]]
    return [{"family": r["family"], "D": r["D"], "value": r[name], "flagged": bool(r["extrapolated"])} for r in matched(recs)]


def _trend(recs: list[dict], name: str, e: dict) -> str:
    """C_mem's median measure at its smallest and largest D, and C_gen's level, in words."""
    used = [v for v in _values(recs, name, e) if v["family"] == "C_mem" and v["value"] is not None
            and (e["measure"] != "norm" or not v["flagged"])]
    if not used or e["gen_level"] is None or e["slope"] is None:
        return ""
    ds = sorted({v["D"] for v in used})
    med = {d: statistics.median(v["value"] for v in used if v["D"] == d) for d in (ds[0], ds[-1])}
    return (f"By {_what(e, name)}, C_mem's median goes from {med[ds[0]]:.3g} at D = {ds[0]} to {med[ds[-1]]:.3g} at D = {ds[-1]} "
            f"(fitted slope {e['slope']:.3g} in log-log) and C_gen's level is {e['gen_level']:.3g}.")


# ---- figures -----------------------------------------------------------------------------------
def figures(out: Path) -> list:
    """Every measure against D for both families (each seed a point), the fitted C_mem line, C_gen's
    level and the D_crit estimate with its interval."""
    from interp.plots import Figure, crossing_panels

    recs = read_members(out)
    if not recs:
        return []
    ests = estimates(recs)
    xs = np.geomspace(min(r["D"] for r in recs), max(r["D"] for r in recs), 50)
    panels = []
    for name, e in ests.items():
        series = []
        vals = [v for v in _values(recs, name, e) if v["value"] is not None]
        for family in ("C_mem", "C_gen"):
            for flagged in (False, True):
                vs = [v for v in vals if v["family"] == family and v["flagged"] == flagged]
                if vs:
                    series.append((f"{family}{' (flagged)' if flagged else ''}", [v["D"] for v in vs], [v["value"] for v in vs], flagged))
        panels.append({"title": _what(e, name), "series": series, "level": e["gen_level"],
                       "fit": (xs, np.exp(e["intercept"]) * xs ** e["slope"]) if e["slope"] is not None else None,
                       "crossing": (e["dcrit"], e["lo"], e["hi"]) if e["status"] == "crossed" else None})
    fig = crossing_panels(panels, "C_mem-only vs C_gen-only networks at equilibrium, against training-set size")
    _, first = stages(out)[0]
    p = runs.read_config(next(first.glob("runs/*"))).p
    n_mem = sum(r["family"] == "C_mem" for r in recs)
    n_gen = sum(r["family"] == "C_gen" for r in recs)
    n_flag = sum(bool(r["flags"]) for r in recs)
    wds = ", ".join(f"{w:g}" for w in sorted({r["wd"] for r in recs}))
    cap = (f"p = {p}: {n_mem} C_mem-only members (random labels) and {n_gen} C_gen-only members (true labels, large D) "
           f"at weight decays {wds}, each seed a point; {n_flag} flagged (not at equilibrium, or a failed check) "
           f"and left out. The matched panels read each seed's norm across its weight decays at the matched value "
           f"(crosses: extrapolated reads). Dotted: the power-law fit of C_mem against D; dashed: C_gen's level "
           f"(geometric mean of its members). " + " ".join(t for t in (_trend(recs, n, e) for n, e in ests.items()) if t)
           + " " + "; ".join(sentence(e, n) for n, e in ests.items()) + " (shaded: the 90% interval, bootstrap over seeds).")
    return [Figure("dcrit", fig, cap)]
