"""Critical dataset size D_crit (Varma et al. 2023): where memorising stops being cheaper than generalising.

Two sweeps (stages), each a sweep directory under ``--out``:

``mem``
    **C_mem-only** networks: every training label replaced by a seeded uniform random label
    (``label_noise = 1``), so there is nothing to generalise and all the network learns is a lookup
    table. Training-set sizes D on a geometric grid (a fixed range of fractions of p^2) x model seeds.
``gen``
    **C_gen-only** networks: the true labels on a large D (60 % and 90 % of p^2) x model seeds; they
    generalise. Each is checked: its key frequencies are found by clustering its MLP neurons
    (``analyses.fourier``), and at least 95 % of the squared norm of its logits over all p^2 inputs
    (centred over classes) must lie in the key-frequency directions ``cos/sin(w_k(a + b))``
    (``cgen_frac`` of ``analyses.efficiency.circuit_logits``), and its test accuracy must be >= 0.99.
    A member that fails is flagged in the summary and left out of the estimate.

The data split's seed is the same for every member, so a smaller training set (and its random
labels) is a prefix of a larger one; the seeds vary the initial weights.

**Convergence.** Every member trains a fixed budget of full-batch AdamW steps (weight decay 1). It
counts as converged when, at its last step, it fits every training label (train accuracy 1) with a
training loss <= ``CONVERGED_LOSS`` (1e-4); the final training loss is recorded. Members that do not
converge are flagged and left out of the estimate.

**Per member** (``member_record``, in ``DIR/members.csv``), at the final checkpoint: the parameter
norm (L2 over all parameters, as the metrics report it), the correct-class logit (the mean over the
training set of the centred correct-class logit ``l[y] - mean_c l[c]``, with y the label the member
was trained on: random for C_mem, true for C_gen) and their ratio, the ``efficiency``. And
``norm_at_loss``: the parameter norm at the point of the training curve where the training loss
first comes down to ``MATCHED_LOSS`` (the convergence threshold 1e-4, so every converged member has
it), interpolated in log-loss between evaluations. With weight decay 1 and lr 3e-3 the loss gets there
after about 500 steps, when the initial weights have decayed to about a fifth of their size (a few per
cent of the squared norm); the rest of the norm is what the network built to fit its labels.

**Which measure D_crit uses.** A 1-layer transformer's logits grow like a power of its weight scale,
so logit / norm is not a property of a circuit alone: it also grows with the norm the network
happens to sit at. At a matched training loss the two families produce (nearly) the same
correct-class logits, so the norm each needs there compares their efficiency without assuming
logits linear in the norm, as the paper compares them. The **primary** D_crit is therefore where
C_mem's ``norm_at_loss`` (rising with D) reaches C_gen's; the ratio-based crossing (C_mem's
``efficiency`` falling to C_gen's) is reported next to it for comparison. Both come from
``analyses.dcrit.crossing``: a power-law fit of C_mem's measure against D, the geometric mean of the
C_gen members as the level, and a 90 % interval from a bootstrap over seeds. A crossing outside the
grid is reported as a bound, never as a number.

``DIR/summary.csv``: one row per family and D (seeds, how many are used and flagged, the median and
the min-max over seeds of each measure), then one ``D_crit`` row per measure.
``python -m interp.report DIR`` draws both measures against D with the estimate.

``--quick`` (2 min 8 s measured on a quiet core of a 2-core CPU, 9 min 57 s at load average 8-10): p = 31, the small preset's
model (d_model 64, d_mlp 256, lr 3e-3), 1 500 steps, C_mem at 6 sizes (2-32 % of p^2) x 3 seeds,
C_gen at 2 sizes x 3 seeds. The full version: p = 113, the canonical model (lr 1e-3), 6 000 steps,
C_mem at 7 sizes (2-32 % of p^2, 255-4 086) x 3 seeds, C_gen at 2 sizes x 3 seeds; 2 h measured on
one core of the same CPU, which gave D_crit = 967 (90 % interval 797-1 174) by norm at matched loss.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch

from analyses import dcrit as est
from analyses import efficiency
from interp import runs, tables
from interp.config import PRESETS, is_prime
from interp.experiments.common import is_sweep, ok_rows, run_stages, spread
from interp.tables import sig
from interp.sweep import Spec, SweepError, load_sweep

DESCRIPTION = "critical dataset size: C_mem-only vs C_gen-only networks over D (Varma et al. 2023)"
STAGES = ("mem", "gen")
FAMILY = {"mem": "C_mem", "gen": "C_gen"}
CONVERGED_LOSS = 1e-4
MATCHED_LOSS = CONVERGED_LOSS  # so every converged member has a norm at the matched loss
SUBSPACE_MIN = est.SUBSPACE_MIN
TEST_ACC_MIN = 0.99
MIN_P = 11
MEMBERS_FILE = "members.csv"
MEASURES = {"norm_at_loss": +1, "efficiency": -1}  # direction of C_mem's measure with D; the first is primary

_SMALL = {k: PRESETS["small"][k] for k in ("d_model", "d_mlp", "lr", "wd")}
QUICK = {"p": 31, "base": {**_SMALL, "steps": 1500, "eval_every": 25, "save_every": 500},
         "mem_fracs": np.geomspace(0.02, 0.32, 6).tolist(), "gen_fracs": [0.6, 0.9], "seeds": [1, 2, 3]}
FULL = {"p": 113, "base": {"steps": 6000, "eval_every": 50, "save_every": 1000},
        "mem_fracs": np.geomspace(0.02, 0.32, 7).tolist(), "gen_fracs": [0.6, 0.9], "seeds": [1, 2, 3]}

MEMBER_COLUMNS = ["family", "run", "D", "seed", "steps", "final_train_loss", "final_train_acc", "final_test_acc", "param_norm",
                  "correct_logit", "efficiency", "norm_at_loss", "key_frequencies", "cgen_frac", "flags"]
SUMMARY_COLUMNS = ["row", "D", "seeds", "used", "flags", "norm_median", "norm_min", "norm_max", "logit_median",
                   "efficiency_median", "efficiency_min", "efficiency_max", "norm_at_loss_median", "norm_at_loss_min",
                   "norm_at_loss_max", "max_final_train_loss", "min_cgen_frac", "median_final_test_acc",
                   "measure", "primary", "status", "dcrit", "dcrit_lo", "dcrit_hi", "slope", "gen_level"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--p", type=int, default=None, help=f"prime modulus >= {MIN_P} (default: {QUICK['p']} with --quick, else {FULL['p']})")


def sizes(p: int, fracs: list[float]) -> list[int]:
    """Training-set sizes ``round(f * p^2)``, at least 2 and below p^2, without repeats."""
    return sorted({min(max(2, round(f * p * p)), p * p - 1) for f in fracs})


def specs(args: argparse.Namespace) -> dict[str, Spec]:
    """The two stages' sweeps (raises ``SweepError`` for a bad ``--p``)."""
    plan = QUICK if args.quick else FULL
    p = plan["p"] if args.p is None else args.p
    if p < MIN_P or not is_prime(p):
        raise SweepError(f"--p {p}: must be a prime >= {MIN_P} (the key-frequency check needs an odd prime modulus with a few frequencies)")
    base = {"task": "mod_add", **plan["base"], "p": p}
    return {"mem": Spec({**base, "label_noise": 1.0}, {"train_size": sizes(p, plan["mem_fracs"]), "seed": plan["seeds"]}),
            "gen": Spec(base, {"train_size": sizes(p, plan["gen_fracs"]), "seed": plan["seeds"]})}


def run(args: argparse.Namespace, sweep) -> dict[str, dict]:
    plan = specs(args)  # every input checked before anything is written
    return run_stages({stage: plan[stage] for stage in STAGES}, sweep)


# ---- per member --------------------------------------------------------------------------------
@torch.no_grad()
def member_record(run_dir: Path, family: str) -> dict:
    """The measures of one finished member (see the module docstring); ``flags`` names what failed."""
    r = runs.load_run(run_dir)
    cfg, data, last = r.config, r.dataset, r.metrics[-1]
    model = r.load_model()
    logits = model(data.inputs)[:, -1].double()
    norm = efficiency.parameter_norm(model)
    logit = efficiency.centred_correct_logit(logits[data.train_idx], data.train_labels).mean().item()
    flags = []
    if not (last["train_acc"] == 1.0 and last["train_loss"] <= CONVERGED_LOSS):
        flags.append("not converged")
    keys, frac = None, None
    if family == "C_gen":
        keys, frac = est.key_subspace_fraction(model, logits, data.labels, data.train_idx, cfg.task)
        if not keys:
            flags.append("no key frequencies")
        elif not frac >= SUBSPACE_MIN:
            flags.append(f"logits {frac:.0%} in key subspace")
        if last["test_acc"] < TEST_ACC_MIN:
            flags.append("test acc < 0.99")
    at_loss = est.norm_at_loss([(m["train_loss"], m["param_norm"]) for m in r.metrics], MATCHED_LOSS)
    return {"family": family, "run": str(run_dir.name), "D": cfg.n_train, "seed": cfg.seed, "steps": last["step"],
            "final_train_loss": last["train_loss"], "final_train_acc": last["train_acc"], "final_test_acc": last["test_acc"],
            "param_norm": norm, "correct_logit": logit, "efficiency": efficiency.efficiency(logit, norm), "norm_at_loss": at_loss,
            "key_frequencies": " ".join(map(str, keys)) if keys is not None else None, "cgen_frac": frac, "flags": "; ".join(flags)}


def members(out: Path) -> list[dict]:
    """``member_record`` of every finished member of both stages (failed members are left out)."""
    recs = []
    for stage in STAGES:
        d = Path(out) / stage
        if is_sweep(d):
            recs += [member_record(d / r["run"], FAMILY[stage]) for r in ok_rows(d)]
    return recs


MEMBER_TEXT = frozenset({"family", "run", "key_frequencies", "flags"})  # read back as strings, whatever they look like


def read_members(out: Path) -> list[dict]:
    """``DIR/members.csv`` (written by ``summarise``) with numbers parsed; ``[]`` if there is none."""
    return tables.read_csv(Path(out) / MEMBERS_FILE, text=MEMBER_TEXT)


# ---- the summary -------------------------------------------------------------------------------
def estimates(recs: list[dict]) -> dict[str, dict]:
    """``analyses.dcrit.crossing`` for each measure, from the unflagged members."""
    used = [r for r in recs if not r["flags"]]
    out = {}
    for measure, direction in MEASURES.items():
        mem = [(r["D"], r["seed"], r[measure]) for r in used if r["family"] == "C_mem"]
        gen = [(r["seed"], r[measure]) for r in used if r["family"] == "C_gen"]
        out[measure] = est.crossing(mem, gen, direction)
    return out


def summary_rows(recs: list[dict]) -> list[dict]:
    """One row per family and D (median and min-max over the used seeds), then one ``D_crit`` row per measure."""
    rows = []
    for family in ("C_mem", "C_gen"):
        for d in sorted({r["D"] for r in recs if r["family"] == family}):
            rs = [r for r in recs if r["family"] == family and r["D"] == d]
            used = [r for r in rs if not r["flags"]]
            row = {"row": family, "D": d, "seeds": len(rs), "used": len(used),
                   "flags": "; ".join(f"seed {r['seed']}: {r['flags']}" for r in rs if r["flags"])}
            for col, key in (("norm", "param_norm"), ("efficiency", "efficiency"), ("norm_at_loss", "norm_at_loss")):
                row[f"{col}_median"], row[f"{col}_min"], row[f"{col}_max"] = spread([r[key] for r in used])
            row["logit_median"] = spread([r["correct_logit"] for r in used])[0]
            row["max_final_train_loss"] = max(r["final_train_loss"] for r in rs)
            fracs = [r["cgen_frac"] for r in rs if r["cgen_frac"] is not None]
            row["min_cgen_frac"] = min(fracs) if fracs else None
            row["median_final_test_acc"] = statistics.median(r["final_test_acc"] for r in rs)
            rows.append(row)
    for i, (measure, e) in enumerate(estimates(recs).items()):
        edges = [s for s, at in (("lower end at the grid", e["lo_at_grid"]), ("upper end at the grid", e["hi_at_grid"])) if at]
        rows.append({"row": "D_crit", "measure": measure, "primary": i == 0, "status": e["status"], "dcrit": e["dcrit"],
                     "dcrit_lo": e["lo"], "dcrit_hi": e["hi"], "slope": e["slope"], "gen_level": e["gen_level"],
                     "used": e["n_mem"] + e["n_gen"], "flags": "; ".join(edges)})
    return [{c: r.get(c) for c in SUMMARY_COLUMNS} for r in rows]


def summarise(out: Path) -> list[dict]:
    """Measure every member (``DIR/members.csv``) and return the rows of ``DIR/summary.csv``."""
    for stage in STAGES:  # a directory that is not a dcrit experiment says so (load_sweep raises)
        if (Path(out) / stage).exists():
            load_sweep(Path(out) / stage)
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


TABLES = [
    {"title": "Per family and training-set size D (medians over the used seeds, min–max in brackets):",
     "rows": lambda r: r["row"] != "D_crit", "columns": [
        ("family", "row"),
        ("D", "D"),
        ("used / seeds", lambda r: f"{r['used']} / {r['seeds']}"),
        (f"norm at train loss {MATCHED_LOSS:g}", lambda r: _mmm(r, "norm_at_loss")),
        ("efficiency (final)", lambda r: _mmm(r, "efficiency")),
        ("flagged", lambda r: r["flags"] or "–"),
    ]},
    {"title": "The estimates (`analyses.dcrit.crossing`; the first is the primary one):",
     "rows": lambda r: r["row"] == "D_crit", "columns": [
        ("measure", "measure"),
        ("D_crit", _estimate),
        ("C_mem slope (log-log)", lambda r: sig(r["slope"])),
        ("C_gen level", lambda r: sig(r["gen_level"])),
        ("members used", "used"),
        ("interval cut at the grid", lambda r: r["flags"] or "no"),
    ]},
]


def sentence(e: dict, measure: str) -> str:
    """The D_crit estimate of one measure in words, from its numbers (``analyses.dcrit.crossing``)."""
    what = {"norm_at_loss": f"parameter norm at train loss {MATCHED_LOSS:g}", "efficiency": "efficiency (logit / norm)"}[measure]
    s = e["status"]
    if s == "crossed":
        cut = [w for w, at in (("lower", e["lo_at_grid"]), ("upper", e["hi_at_grid"])) if at]
        return (f"D_crit by {what}: {e['dcrit']:.0f} (90% interval {e['lo']:.0f}-{e['hi']:.0f}"
                + (f", its {' and '.join(cut)} end cut at the grid" if cut else "") + ")")
    if s == "below grid":
        return f"D_crit by {what}: below the grid (< {e['hi']:.0f}); C_mem's fitted line meets C_gen's level there"
    if s == "above grid":
        return f"D_crit by {what}: above the grid (> {e['lo']:.0f}); C_mem's fitted line meets C_gen's level there"
    if s == "no trend":
        return (f"D_crit by {what}: no estimate; C_mem's slope against D ({e['slope']:.3g}, 90% interval "
                f"{e['slope_lo']:.3g} to {e['slope_hi']:.3g}) does not move the expected way")
    return f"D_crit by {what}: no estimate; too few unflagged members ({e['n_mem']} C_mem over < 2 sizes or {e['n_gen']} C_gen)"


def _trend(recs: list[dict], measure: str, e: dict) -> str:
    """C_mem's median ``measure`` at its smallest and largest D, and C_gen's level, in words."""
    used = [r for r in recs if r["family"] == "C_mem" and not r["flags"] and r[measure] is not None]
    if not used or e["gen_level"] is None:
        return ""
    ds = sorted({r["D"] for r in used})
    med = {d: statistics.median(r[measure] for r in used if r["D"] == d) for d in (ds[0], ds[-1])}
    name = {"norm_at_loss": f"norm at train loss {MATCHED_LOSS:g}", "efficiency": "efficiency"}[measure]
    return (f"C_mem's median {name} goes from {med[ds[0]]:.3g} at D = {ds[0]} to {med[ds[-1]]:.3g} at D = {ds[-1]} "
            f"(fitted slope {e['slope']:.3g} in log-log); C_gen's level is {e['gen_level']:.3g}.")


# ---- figures -----------------------------------------------------------------------------------
def figures(out: Path) -> list:
    """Both measures against D for both families (each seed a point), the fitted C_mem line, C_gen's
    level and the D_crit estimate with its interval."""
    from interp.plots import crossing_panels
    from interp.plots import Figure

    recs = read_members(out)
    if not recs:
        return []
    ests = estimates(recs)
    titles = {"norm_at_loss": f"parameter norm at train loss {MATCHED_LOSS:g}",
              "efficiency": "efficiency: correct-class logit / parameter norm (final)"}
    xs = np.geomspace(min(r["D"] for r in recs), max(r["D"] for r in recs), 50)
    panels = []
    for measure, e in ests.items():
        series = []
        for family in ("C_mem", "C_gen"):
            for flagged in (False, True):
                rs = [r for r in recs if r["family"] == family and bool(r["flags"]) == flagged and r[measure] is not None]
                if rs:
                    series.append((f"{family}{' (flagged)' if flagged else ''}", [r["D"] for r in rs], [r[measure] for r in rs], flagged))
        panels.append({"title": titles[measure], "series": series, "level": e["gen_level"],
                       "fit": (xs, np.exp(e["intercept"]) * xs ** e["slope"]) if e["slope"] is not None else None,
                       "crossing": (e["dcrit"], e["lo"], e["hi"]) if e["status"] == "crossed" else None})
    fig = crossing_panels(panels, "C_mem-only vs C_gen-only networks against training-set size")
    p = runs.read_config(next(Path(out).glob("*/runs/*"))).p
    n_mem = sum(r["family"] == "C_mem" for r in recs)
    n_gen = sum(r["family"] == "C_gen" for r in recs)
    n_flag = sum(bool(r["flags"]) for r in recs)
    cap = (f"p = {p}: {n_mem} C_mem-only members (random labels) and {n_gen} C_gen-only members (true labels, large D), "
           f"each seed a point; {n_flag} flagged (crosses) and left out of the fits. Dotted: the power-law fit of C_mem "
           f"against D; dashed: C_gen's level (geometric mean of its unflagged members). "
           + " ".join(_trend(recs, m, e) for m, e in ests.items())
           + " " + "; ".join(sentence(e, m) for m, e in ests.items()) + " (shaded: the 90% interval, bootstrap over seeds).")
    return [Figure("dcrit", fig, cap)]
