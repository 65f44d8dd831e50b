"""The grokking accelerators compared fairly: one model, one split, several seeds, censored outcomes.

Each arm is one sweep over the model seeds in ``DIR/<arm>/``, on the same task, split, model and
step budget as the other arms of its group; an arm changes only what its row below names.

**The canonical group** (the 1-layer model of Nanda et al., full batch; ``--quick``: the small preset):

===============  ===========================================================================
adamw            the baseline: AdamW at the base learning rate, weight decay as the base
adamw_lr3x       the baseline at 3x the learning rate (Grokfast's lambda = 2 acts like a larger
                 step, so a filter must beat the better-tuned of the two baselines)
grokfast_ema     Grokfast EMA filter, alpha 0.98, lambda 2 (the paper's algorithmic setting)
grokfast_ma      Grokfast MA filter, window 100, lambda 5 (the Grokfast code's defaults)
softmax_wd0      (full version) the softmax cross-entropy in float64 with weight decay 0 and the
                 StableMax arm's Adam settings: what the loss alone changes, at full precision
softmax32_wd0    (full version) the same in float32 (``loss = softmax32``): Prieto et al.'s control,
                 whose float32 softmax collapses (``collapse`` below) and, they find, stalls
                 grokking without weight decay
stablemax        StableMax cross-entropy, weight decay 0 (Prieto et al. 2025 run it without weight
                 decay); in the full version at their Adam settings: eps 1e-25, beta2 0.999
orthoadamw       ⊥AdamW: the gradient's component along each weight removed, then AdamW with
                 weight decay 0; in the full version eps 1e-25 and beta2 0.99 (their code's defaults)
init_x0.5        initial weights x 0.5 (Omnigrok: a smaller initial norm)
ticket           with ``--tickets DIR``: the tickets experiment's final-checkpoint ticket of each seed
                 (its masks, ``DIR/masks/ticket_seed<s>.safetensors``; the same seed rebuilds the same
                 initial weights, so this is the rewound ticket); DIR must have trained the same
                 model on the same split with the same optimiser
===============  ===========================================================================

**The Grokfast group** (full version only; arms ``gf_*``): Grokfast's own setting (Lee et al. 2024,
their public code): x·y mod 97 for 0 <= x < 97 and 0 < y < 97 (task ``mod_mul_nz``), half of the
pairs for training, a 2-layer transformer (width 128, 4 heads, MLP 512, GELU, LayerNorm, trained
biases), mini-batches of 512, 10 warm-up steps, Adam with lr 1e-3, betas (0.9, 0.98) and their
decay as Adam's coupled L2 term (``l2``; no decoupled decay), none in the baseline; ``gf_adam``,
``gf_adam_lr3x``, ``gf_adam_l2_0.01`` (the baseline with the MA arm's L2, so a filter's speed-up is
not its decay's), ``gf_grokfast_ema`` (alpha 0.98, lambda 2, L2 0.005) and ``gf_grokfast_ma``
(window 100, lambda 5, L2 0.01).

**The Prieto-MLP group** (full version only; arms ``pm_*``): Prieto et al.'s own model and Fig. 1
setting (the ``stablemax-mlp`` preset, read from their code: one-hot a and b concatenated, two ReLU
layers of 200, no biases, p = 113, 40 % of the pairs, full batch, AdamW lr 0.01, weight decay 0, eps
1e-25, beta2 0.999, 80 000 steps); ``pm_softmax`` (float64 softmax cross-entropy, the baseline),
``pm_softmax32`` (float32, the collapsing control), ``pm_stablemax`` and ``pm_orthoadamw`` (⊥Grad at
their beta2 0.99).

Outcome per seed: the first step with test accuracy at the group's target (``target``): 99% in the
canonical and Prieto-MLP groups (``test_99_step``), 95% in the Grokfast group (their target, read from each
member's ``metrics.jsonl``). A seed that never got there within the budget is right-censored at its
last step, and so is a seed that diverged (training loss NaN or infinite), at the budget: it counts,
and every row says how many diverged. The arm's curve of the fraction of seeds generalised against
step is the Kaplan-Meier estimate (``analyses.timing``); the median is that curve's median (empty
when half or more of the seeds never generalised: "more than the budget"). The speed-up of an arm is
the median of its group's better baseline (the smallest median among ``adamw`` and ``adamw_lr3x``;
in the Grokfast group ``gf_adam``, ``gf_adam_lr3x`` and ``gf_adam_l2_0.01``; in the Prieto-MLP group
``pm_softmax``) divided by the arm's median.

Float32 softmax collapse, per arm, from the members' ``metrics.jsonl`` (``interp.train`` records it
at every evaluation whatever the loss; ``interp.losses.float32_collapse``): the largest fraction of
training examples whose float32 sum of exponentials (largest logit subtracted) is exactly 1, as
Prieto et al.'s code counts collapse (``max_collapse_frac``), and whose float32 loss term was
exactly 0 (``max_zero_loss_frac``), over seeds and evaluations, and the median over seeds of the
final evaluation's collapse fraction. A collapsed example's float32 loss is 0 but its gradient is
not: its wrong-class entries are about exp(-margin), which Adam at eps 1e-25 (the setting of the
three Prieto arms) turns into steps of the learning rate's size. So for ``softmax32_wd0`` the
columns say how much of the training set its float32 loss sees as solved, not where its gradient
stopped; whether it stalls is read off its steps to 99% against ``softmax_wd0``, which differs from
it only in computing the same loss in float64. For ``stablemax`` the columns describe the float32
softmax of its logits, which its loss does not use: StableMax lets the logits grow large, so its
column can read near 1 while its own loss is finite.

``--quick``: the small preset (p = 59, 40% of the pairs, d_model 64, d_mlp 256, lr 3e-3, weight
decay 1), the canonical group without the two softmax controls, 3 seeds, 4 000 steps, evaluated
every 50. The full version: the canonical p = 113 model (30%, lr 1e-3, weight decay 1) with every
arm of the canonical group, 3 seeds, 80 000 steps (Prieto et al.'s 80k full-batch epochs for
StableMax), evaluated every 100; and the Grokfast group, 3 seeds, 100 000 steps each. ``--p`` sets the
canonical group's modulus only.

Members stop 200 (``--quick``) or 1 000 steps after their test accuracy first reaches 99 %
(``stop_after_grok``) and leave their stack, so the sweep costs what its slowest member needs rather
than the budget times the number of members; the step they reached 99 % (or 95 %) at is unaffected. Arms
other than the plain-AdamW softmax ones (and every Grokfast-group arm: 2 layers, LayerNorm,
mini-batches) train one member at a time through ``interp.train``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from analyses.timing import kaplan_meier, km_median
from interp import runs
from interp.config import GROK_ACC, PRESETS, TrainConfig
from interp.experiments.common import first_step, is_sweep, median, ok_rows, results, run_stages
from interp.sweep import Spec, SweepError
from interp.tables import SWEEP_FILE, fmt

DESCRIPTION = ("Grokfast, StableMax, ⊥AdamW, a float32-softmax control and a small init against a tuned AdamW baseline: "
               "steps to 99% test (Grokfast's own setting: 95%), censored")
BASELINES = ("adamw", "adamw_lr3x")
GF = "gf_"  # prefix of the Grokfast group's arms
PM = "pm_"  # prefix of the Prieto-MLP group's arms
GF_BASELINES = ("gf_adam", "gf_adam_lr3x", "gf_adam_l2_0.01")
PM_BASELINES = ("pm_softmax",)  # Prieto et al.'s float64 softmax control on their MLP
GF_TARGET = 0.95  # Grokfast's target: 95 % validation accuracy (their README's tables)
SUMMARY_COLUMNS = ["group", "arm", "changes", "lr", "wd", "l2", "target_test_acc", "seeds", "generalised", "censored", "diverged",
                   "median_target_step", "min_target_step", "max_target_step", "target_steps", "speedup_vs_best_baseline", "budget", "max_collapse_frac", "max_zero_loss_frac",
                   "final_collapse_frac"]

# Prieto et al.'s Adam settings (their code's defaults and Fig. 1's StableMax run): eps 1e-25, and beta2
# 0.999 for StableMax (and the two softmax controls, so that they differ from it in the loss alone), 0.99 for ⊥Grad.
PRIETO_STABLEMAX = {"wd": 0.0, "adam_eps": 1e-25, "beta2": 0.999}
PRIETO_ORTHO = {"wd": 0.0, "adam_eps": 1e-25, "beta2": 0.99}
FULL_STEPS = 80_000  # Prieto et al.: 80k full-batch epochs for StableMax
GF_STEPS = 100_000  # Grokfast's baseline needs ~4x10^4 steps to 95 % validation accuracy (their README)

# Grokfast's setting (ironjr/grokfast main.py and README): x*y mod 97 with 0 <= x < 97, 0 < y < 97 (mod_mul_nz), 50 %
# train, 2 layers, width 128, 4 heads, MLP 4 x 128, GELU, LayerNorm, trained biases, batch 512, 10 warm-up steps,
# torch.optim.Adam with lr 1e-3, betas (0.9, 0.98) and its coupled weight_decay (here l2; no decoupled decay: wd 0).
GROKFAST_BASE = {"task": "mod_mul_nz", "p": 97, "frac": 0.5, "n_layers": 2, "normalization": "LN", "act_fn": "gelu", "freeze_biases": False,
                 "d_model": 128, "n_heads": 4, "d_mlp": 512, "batch_size": 512, "warmup": 10, "lr": 1e-3, "wd": 0.0, "beta1": 0.9,
                 "beta2": 0.98, "steps": GF_STEPS, "eval_every": 100, "save_every": 10_000, "stop_after_grok": 1000}


# Prieto et al.'s own MLP (the stablemax-mlp preset, their Fig. 1: one-hot a and b, two ReLU layers of 200, no biases,
# p = 113, 40 %, AdamW lr 0.01, wd 0, eps 1e-25, 80k full-batch epochs); the arms differ from it in the loss or optimiser.
PRIETO_MLP_BASE = {"task": "mod_add", **{k: v for k, v in PRESETS["stablemax-mlp"].items() if k not in ("loss", "seed")},
                   "eval_every": 100, "save_every": 10_000, "stop_after_grok": 1000}


def prieto_mlp_arms() -> dict[str, dict]:
    """``{arm: the fields it changes from PRIETO_MLP_BASE}``: the Prieto-MLP group of the full version (their Fig. 1
    on their model: float64 softmax, the collapsing float32 softmax, StableMax, and ⊥Grad at their beta2 0.99)."""
    return {
        "pm_softmax": {"loss": "softmax"},
        "pm_softmax32": {"loss": "softmax32"},
        "pm_stablemax": {"loss": "stablemax"},
        "pm_orthoadamw": {"optimizer": "orthoadamw", "beta2": 0.99},
    }


def arms(base: dict, tickets: Path | None = None, full: bool = False) -> dict[str, dict]:
    """``{arm: the config fields it changes}`` of the canonical group for a base config (``adamw_lr3x``:
    3x the base's lr); ``full``: with the two softmax controls and Prieto et al.'s Adam settings."""
    out = {
        "adamw": {},
        "adamw_lr3x": {"lr": round(3 * TrainConfig(**base).lr, 12)},
        "grokfast_ema": {"grad_filter": "ema", "filter_alpha": 0.98, "filter_lambda": 2.0},
        "grokfast_ma": {"grad_filter": "ma", "filter_window": 100, "filter_lambda": 5.0},
        "stablemax": {"loss": "stablemax", "wd": 0.0},
        "orthoadamw": {"optimizer": "orthoadamw", "wd": 0.0},
        "init_x0.5": {"init_scale": 0.5},
    }
    if full:
        out = {**{k: out[k] for k in ("adamw", "adamw_lr3x", "grokfast_ema", "grokfast_ma")},
               "softmax_wd0": dict(PRIETO_STABLEMAX),
               "softmax32_wd0": {"loss": "softmax32", **PRIETO_STABLEMAX},
               "stablemax": {"loss": "stablemax", **PRIETO_STABLEMAX},
               "orthoadamw": {"optimizer": "orthoadamw", **PRIETO_ORTHO},
               "init_x0.5": out["init_x0.5"]}
    ticket = ticket_arm(base, tickets)
    if ticket is not None:
        out["ticket"] = ticket
    return out


def grokfast_arms() -> dict[str, dict]:
    """``{arm: the fields it changes from GROKFAST_BASE}``: the Grokfast group of the full version."""
    return {
        "gf_adam": {},
        "gf_adam_lr3x": {"lr": 3e-3},
        "gf_adam_l2_0.01": {"l2": 0.01},
        "gf_grokfast_ema": {"grad_filter": "ema", "filter_alpha": 0.98, "filter_lambda": 2.0, "l2": 0.005},
        "gf_grokfast_ma": {"grad_filter": "ma", "filter_window": 100, "filter_lambda": 5.0, "l2": 0.01},
    }


# ---- the ticket arm ---------------------------------------------------------------------------
TICKET_MATCH = ("task", "p", "frac", "train_size", "data_seed", "d_model", "n_heads", "d_mlp", "lr", "wd", "l2", "beta1", "beta2", "warmup")


def ticket_arm(base: dict, tickets: Path | None) -> dict | None:
    """The ticket arm's config fields (``mask_from`` with a ``{seed}`` placeholder), or None without ``--tickets``.

    Raises:
        SweepError: ``tickets`` is not a tickets experiment whose dense runs share ``base``'s model,
        split and optimiser, or lacks a seed's masks.
    """
    if tickets is None:
        return None
    dense_sweep = Path(tickets) / "dense" / SWEEP_FILE
    if not dense_sweep.is_file():
        raise SweepError(f"--tickets {tickets}: not a tickets experiment directory (no dense/{SWEEP_FILE})")
    dense = TrainConfig(**{"seed": 1, **json.loads(dense_sweep.read_text())["spec"]["base"]})
    mine = TrainConfig(**base)
    diff = [f"{f} {getattr(dense, f)} there, {getattr(mine, f)} here" for f in TICKET_MATCH if getattr(dense, f) != getattr(mine, f)]
    if diff:
        raise SweepError(f"--tickets {tickets}: its dense runs differ from this comparison's base ({'; '.join(diff)})")
    return {"mask_from": str(Path(tickets).resolve() / "masks" / "ticket_seed{seed}.safetensors")}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--p", type=int, default=None, help="modulus of the canonical group (default: 59 with --quick, else 113); "
                                                       "the Grokfast group keeps Grokfast's p = 97")
    p.add_argument("--tickets", type=Path, default=None, metavar="DIR",
                   help="a finished `interp.experiment tickets` directory of the same model: adds its tickets as an arm")


def settings(args: argparse.Namespace) -> tuple[dict, list[int]]:
    """The base config the canonical group's arms share and the seeds (``--quick`` or full). Tests replace this."""
    if args.quick:
        base = {**PRESETS["small"], "task": "mod_add", "steps": 4000, "eval_every": 50, "save_every": 4000, "stop_after_grok": 200}
    else:
        base = {"task": "mod_add", "p": 113, "steps": FULL_STEPS, "eval_every": 100, "save_every": 5000, "stop_after_grok": 1000}
    if args.p is not None:
        base["p"] = args.p
    return base, [1, 2, 3]


def specs(args: argparse.Namespace) -> dict[str, Spec]:
    """Every arm's sweep, ``{arm: Spec}``: the canonical group, then (full version) the Grokfast and Prieto-MLP groups."""
    base, seeds = settings(args)
    tickets = getattr(args, "tickets", None)
    all_arms = arms(base, tickets, full=not args.quick)
    if "ticket" in all_arms:
        missing = [s for s in seeds if not Path(all_arms["ticket"]["mask_from"].format(seed=s)).is_file()]
        if missing:
            raise SweepError(f"--tickets {tickets}: no ticket masks for seed(s) {missing} (masks/ticket_seed<s>.safetensors)")
    out = {arm: Spec({**base, **fields}, {"seed": seeds}) for arm, fields in all_arms.items()}
    if not args.quick:
        out.update({arm: Spec({**GROKFAST_BASE, **fields}, {"seed": seeds}) for arm, fields in grokfast_arms().items()})
        out.update({arm: Spec({**PRIETO_MLP_BASE, **fields}, {"seed": seeds}) for arm, fields in prieto_mlp_arms().items()})
    return out


def run(args: argparse.Namespace, sweep) -> dict[str, dict]:
    return run_stages(specs(args), sweep)


def plan_specs(args: argparse.Namespace) -> list[Spec]:
    """Every arm's spec: no arm depends on another's results, so ``--plan`` counts them all."""
    return list(specs(args).values())


# ---- summary ------------------------------------------------------------------------------------
def group_of(arm: str) -> str:
    """``grokfast`` for the Grokfast group's arms (``gf_*``), ``prieto_mlp`` for the Prieto-MLP group's (``pm_*``),
    else ``canonical``."""
    return "grokfast" if arm.startswith(GF) else "prieto_mlp" if arm.startswith(PM) else "canonical"


# per group: its first arm (the reference of the "changes" column), its baselines and its name in captions
GROUPS = {"canonical": ("adamw", BASELINES, "Canonical"), "grokfast": ("gf_adam", GF_BASELINES, "Grokfast-setting"),
          "prieto_mlp": ("pm_softmax", PM_BASELINES, "Prieto-MLP")}


def target(arm: str) -> float:
    """The test accuracy an arm's outcome counts steps to: 0.99, or 0.95 (``GF_TARGET``) in the Grokfast group."""
    return GF_TARGET if group_of(arm) == "grokfast" else GROK_ACC


def collapse(run_dir: Path) -> dict[str, float | None]:
    """A member's float32 softmax collapse from its ``metrics.jsonl``: the largest collapsed and
    zero-loss fractions over its evaluations and the final collapsed fraction (None where not recorded)."""
    m = [r for r in runs.read_metrics(run_dir) if r.get("softmax_collapse_frac") is not None]  # [] without metrics
    if not m:
        return {"max_collapse": None, "max_zero_loss": None, "final_collapse": None}
    return {"max_collapse": max(r["softmax_collapse_frac"] for r in m), "max_zero_loss": max(r["zero_loss_frac"] for r in m),
            "final_collapse": m[-1]["softmax_collapse_frac"]}


def arm_outcomes(out: Path) -> dict[str, dict]:
    """Per arm found in ``out``: its base config (seed aside), per-seed ``(time, observed)``, the budget,
    how many members diverged and the members' float32 collapse (``collapse``).

    The time is the first step with test accuracy >= the arm's ``target`` (99%: ``results.csv``'s
    ``test_99_step``; 95% in the Grokfast group: from the member's ``metrics.jsonl``). A member that
    finished without reaching it is censored at its final step. A member that diverged (training
    loss NaN or infinite; ``common.ok_rows``) counts as one that never got there: censored at the
    budget, never dropped (censoring it at the step it diverged would take it out of the
    Kaplan-Meier risk set and so hide it), unless it had reached the target before diverging.
    """
    found = {}
    for d in sorted(p for p in Path(out).iterdir() if is_sweep(p)):
        cfg = TrainConfig(**json.loads((d / SWEEP_FILE).read_text())["spec"]["base"])
        times, observed, coll = [], [], []
        rows, goal = ok_rows(d), target(d.name)
        for r in rows:
            t = r["test_99_step"] if goal == GROK_ACC else first_step(runs.read_metrics(d / r["run"]), "test_acc", goal)
            if t is not None:
                times.append(t)
                observed.append(True)
            else:
                times.append(cfg.steps if r["diverged"] or r["final_step"] is None else r["final_step"])
                observed.append(False)
            coll.append(collapse(d / r["run"]))
        found[d.name] = {"config": cfg, "times": times, "observed": observed, "budget": cfg.steps, "collapse": coll,
                         "diverged": sum(r["diverged"] for r in rows)}
    return found


def _max(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return max(xs) if xs else None


def summarise(out: Path) -> list[dict]:
    """One row per arm: its group, seeds, how many generalised, Kaplan-Meier median and range of steps
    to the group's target test accuracy, the speed-up against its group's better baseline, and the float32 collapse."""
    found = arm_outcomes(out)
    if not found:
        return []
    medians = {arm: km_median(*kaplan_meier(f["times"], f["observed"])) if f["times"] else None for arm, f in found.items()}
    best, ref = {}, {}
    for group, (first, baselines, _) in GROUPS.items():
        ref[group] = found[first]["config"].to_dict() if first in found else None
        meds = [medians[b] for b in baselines if medians.get(b) is not None]
        best[group] = min(meds) if meds else None
    rows = []
    for arm, f in found.items():
        g = group_of(arm)
        seen = sorted(t for t, o in zip(f["times"], f["observed"]) if o)
        med = medians[arm]
        r0 = ref[g]
        rows.append({
            "group": g, "arm": arm,
            "changes": "?" if r0 is None else " ".join(f"{k}={v}" for k, v in f["config"].to_dict().items() if v != r0[k] and k != "seed") or "-",
            "lr": f["config"].lr, "wd": f["config"].wd, "l2": f["config"].l2, "target_test_acc": target(arm),
            "seeds": len(f["times"]), "generalised": len(seen), "censored": len(f["times"]) - len(seen), "diverged": f["diverged"],
            "median_target_step": med, "min_target_step": seen[0] if seen else None, "max_target_step": seen[-1] if seen else None,
            "target_steps": ";".join(str(t) if o else f">{t}" for t, o in sorted(zip(f["times"], f["observed"]))),
            "speedup_vs_best_baseline": best[g] / med if best[g] is not None and med else None,
            "budget": f["budget"],
            "max_collapse_frac": _max(c["max_collapse"] for c in f["collapse"]),
            "max_zero_loss_frac": _max(c["max_zero_loss"] for c in f["collapse"]),
            "final_collapse_frac": median(c["final_collapse"] for c in f["collapse"]),
        })
    order = [*arms({"task": "mod_add"}, full=True), "ticket", *grokfast_arms(), *prieto_mlp_arms()]
    return sorted(rows, key=lambda r: order.index(r["arm"]) if r["arm"] in order else len(order))


def _frac(x) -> str:
    return "–" if x is None else f"{x:.3f}"


TABLES = [{"columns": [
    ("group", "group"),
    ("arm", "arm"),
    ("changes", "changes"),
    ("target test acc", lambda r: f"{r['target_test_acc']:.0%}"),
    ("seeds at target", lambda r: f"{r['generalised']} of {r['seeds']}"),
    ("diverged", lambda r: "not recorded" if r.get("diverged") is None else f"{r['diverged']} of {r['seeds']}"),
    ("median steps (Kaplan–Meier)", lambda r: fmt(r["median_target_step"]) if r["median_target_step"] is not None
     else f"> {fmt(r['budget'])}"),
    ("per seed", lambda r: "; ".join(("> " + fmt(int(s[1:]))) if s.startswith(">") else fmt(int(s))
                                     for s in str(r["target_steps"]).split(";"))),
    ("speed-up vs best baseline", lambda r: None if r["speedup_vs_best_baseline"] is None else f"{r['speedup_vs_best_baseline']:.2f}"),
    ("float32 collapse: max / final (zero loss: max)", lambda r: "not recorded" if r["max_collapse_frac"] is None else
     f"{_frac(r['max_collapse_frac'])} / {_frac(r['final_collapse_frac'])} ({_frac(r['max_zero_loss_frac'])})"),
]}]


def summary_caption(rows: list[dict]) -> str:
    """What the survival figure shows: per arm the generalised count and median, per group the better
    baseline and the fastest arm, and the float32 collapse of the softmax controls and StableMax."""
    def med(r):
        return f"median {r['median_target_step']:g}" if r["median_target_step"] is not None else "median beyond the budget"

    seeds = max(r["seeds"] for r in rows)
    cap = (f"Fraction of seeds with test accuracy at their group's target against step (Kaplan-Meier; a seed that never got "
           f"there is censored at its arm's budget; {seeds} seeds per arm). ")
    for group, (_, baselines, label) in GROUPS.items():
        rs = [r for r in rows if r.get("group", "canonical") == group]
        if not rs:
            continue
        budget = max(r["budget"] for r in rs)
        cap += (f"{label} group ({budget} steps, target "
                f"{rs[0]['target_test_acc']:.0%} test accuracy): "
                + "; ".join(f"{r['arm']} {r['generalised']}/{r['seeds']} ({med(r)})" for r in rs) + ". ")
        base = [r for r in rs if r["arm"] in baselines and r["median_target_step"] is not None]
        if base:
            b = min(base, key=lambda r: r["median_target_step"])
            cap += f"The better baseline is {b['arm']} (median {b['median_target_step']:g}). "
            fast = [r for r in rs if r["speedup_vs_best_baseline"] is not None and r["arm"] not in baselines]
            if fast:
                top = max(fast, key=lambda r: r["speedup_vs_best_baseline"])
                cap += f"Against it the largest speed-up of the medians is {top['arm']}'s {top['speedup_vs_best_baseline']:.2f}x. "
        else:
            cap += "No baseline of this group reached a median within the budget, so no speed-up is computed. "
    div = [r for r in rows if r.get("diverged")]
    if div:
        cap += ("Diverged (training loss not finite; counted as never reaching the target, censored at the budget): "
                + "; ".join(f"{r['arm']} {r['diverged']} of {r['seeds']}" for r in div) + ". ")
    elif all(r.get("diverged") is not None for r in rows):
        cap += "No member diverged. "
    coll = [r for r in rows if r["arm"] in ("softmax_wd0", "softmax32_wd0", "stablemax", "pm_softmax", "pm_softmax32", "pm_stablemax")
            and r.get("max_collapse_frac") is not None]
    if coll:
        cap += ("Float32 softmax collapse on the training set (largest fraction over seeds and evaluations, final median): "
                + "; ".join(f"{r['arm']} {r['max_collapse_frac']:.3f}, {r['final_collapse_frac']:.3f}" for r in coll) + ". ")
        if any(r["arm"] in ("stablemax", "pm_stablemax") for r in coll):
            cap += "StableMax's is the float32 softmax of its logits, which its own loss does not use. "
    if not any(r["arm"] == "ticket" for r in rows):
        cap += "No ticket arm was run (it needs --tickets DIR, a finished tickets experiment of the same model)."
    return cap.strip()


def figures(out: Path) -> list:
    from interp import plots
    from interp.plots import Figure

    rows = summarise(out)
    if not rows:
        return []
    found = arm_outcomes(out)
    curves = {arm: kaplan_meier(found[arm]["times"], found[arm]["observed"]) for arm in (r["arm"] for r in rows)}
    budget = max(r["budget"] for r in rows)
    figs = [Figure("accelerate-survival", plots.generalised_fraction(curves, budget, "Seeds generalised (test accuracy at the target: 99%, "
                                                                                      "Grokfast group 95%) against step"),
                   summary_caption(rows))]
    members, groups = {}, {}
    for r in rows:
        for res in results(Path(out) / r["arm"]):
            name = f"{r['arm']}/{res['run']}"
            members[name] = runs.read_metrics(Path(out) / r["arm"] / res["run"])
            groups[name] = r["arm"]
    if members:
        figs.append(Figure("accelerate-curves", plots.member_curves(members, groups, "test_acc", "test accuracy", "Test accuracy of every seed, per arm"),
                           f"Test accuracy against step for the {len(members)} runs, one colour per arm."))
        recorded = {n: m for n, m in members.items() if m and all(r.get("softmax_collapse_frac") is not None for r in m)}
        if recorded:
            figs.append(Figure("accelerate-collapse", plots.member_curves(recorded, {n: groups[n] for n in recorded}, "softmax_collapse_frac",
                                                                           "fraction of training examples",
                                                                           "Float32 softmax collapse on the training set, every seed, per arm"),
                               "Fraction of training examples whose float32 softmax has collapsed (float32 sum of exponentials, "
                               "largest logit subtracted, exactly 1; their float32 loss is 0 where answered correctly, their gradient "
                               "is not), against step, one colour per arm."))
    return figs
