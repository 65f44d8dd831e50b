"""Grokking tickets (Minegishi et al. 2024): pruned, rewound subnetworks against dense and norm-matched controls.

Minegishi et al. train a dense network until it groks, keep the largest-magnitude weights of the
grokked model, rewind the kept weights to their initial values and retrain under that mask. They
report that these "grokking tickets" generalise several times sooner than the dense network, that
the dense initial weights rescaled to the ticket's L1 or L2 norm do not, and that neither do tickets
taken before the network generalised nor masks chosen at initialisation; and that at a critical
pruning rate (k ~ 0.81) a ticket groks even without weight decay. This experiment runs the same
comparison on this project's transformer.

**The pruning rate k** is the fraction of the weight matrices' entries *removed* (k = 0.6 keeps 40 %).
The authors' code calls the fraction *kept* ``sparsity`` (their ``sparsity = 0.4`` is k = 0.6 here).

**t_mem / t_gen** are the first evaluations with train / test accuracy >= 95 %, the paper's threshold.

**Which dense runs give a ticket** (``ticket_step``): the ticket is taken at or after the dense run's
t_gen, since tickets taken earlier do not fully generalise (the paper's Fig. 4a). It is the dense
run's last checkpoint, provided that checkpoint is at or after t_gen (95 %, the same threshold as the
reported t_gen). A dense run that never reached 95 % test accuracy within its cap gives no ticket:
its seed is listed in the dense row of the summary (``no_ticket_seeds``) and left out of every arm.
In the full version the dense run stops 500 steps after its test accuracy first reached 99 %
(``stop_after_grok``), so its last checkpoint is of a network at >= 99 % test accuracy, as the
paper's final model (trained far beyond its t_gen) was.

Stages (each a sweep directory under ``DIR``; seeds vary the initial weights, the split is shared):

``dense``
    the dense network, the baseline; trains up to its cap (``--cap``), and in the full version
    stops 500 steps after it grokked; its checkpoints give the tickets.
``masks/``
    the masks every arm trains under, ``<arm>_seed<s>.safetensors`` (the k sweep's
    ``ticket_k<k>_seed<s>.safetensors``), and ``masks.json`` (per dense seed its t_gen and the
    ticket's step, or null; per mask the checkpoint it came from, k, the kept fraction; the
    norms of the masked initial weights and the rescale factors).
``ticket``
    magnitude pruning at rate ``--k`` of the dense run's ticket checkpoint (``--scope global``: one
    threshold over all weight matrices; ``layer``: each matrix its own), the kept weights rewound
    to the dense run's step-0 weights (the same model seed builds the same initial weights) and
    retrained under the mask.
``dense_l1/seed<s>``, ``dense_l2/seed<s>``
    the dense initial weights, every one multiplied by one factor (``init_scale``) so that the
    weight matrices' L1 (or L2) norm equals the ticket's at step 0; no mask.
``ticket_mem``, ``ticket_mid``
    tickets from the first checkpoint at or after memorisation (t_mem) and from the checkpoint
    nearest the midpoint between t_mem and t_gen.
``random``, ``snip``, ``grasp``, ``synflow``
    masks chosen at initialisation at the same k (``interp.prune``: random scores, SNIP
    ``|g * theta|``, GraSP ``theta * H g`` on the loss at temperature 200, SynFlow with 100 rounds
    on all p^2 inputs without labels).
``ticket_wd0``
    the ticket (its masks file) trained with weight decay 0.
``ticket_k/k<k>``, ``ticket_wd0_k/k<k>``
    the k sweep (``--k-sweep``, on by default in the full version): tickets at k = 0.3 ... 0.9
    with the dense run's weight decay, and at k = 0.80 ... 0.90 with weight decay 0 (the paper's
    App. H finds a critical k ~ 0.81 without weight decay); a k equal to ``--k`` is the main arm.

Every arm gets the dense run's cap as its step budget (in the full version it, too, stops 500 steps
after it grokked, which cannot move its t_gen).

``--quick`` (p = 59, the small preset; dense and every arm 3 000 steps, no early stop, no k sweep):
every arm at k = 0.6, 3 seeds. The full version: p = 113, the canonical model, dense up to 50 000
steps (the authors' code trains 50 000 full-batch epochs) with ``stop_after_grok 500``, every arm and
the k sweep, 3 seeds. ``DIR/summary.csv`` has a row per arm and k: steps to 95 % train accuracy
(t_mem) and to 95 % test accuracy (t_gen), median and range over seeds, and how many seeds never
generalised within the budget (counted as later than any that did: a median is empty when half or
more never did).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path

import torch
from torch.func import functional_call

from interp import plots, prune, runs
from interp.config import PRESETS, ConfigError, TrainConfig
from interp.experiments import common
from interp.experiments.common import censored_median, ok_rows, spread
from interp.families import build_model
from interp.model import loss_fn
from interp.runs import RunError
from interp.sweep import RUNS_DIR, Spec
from interp.tables import RESULTS_FILE, fmt
from interp.tasks import make_dataset

log = logging.getLogger(__name__)

DESCRIPTION = "grokking tickets vs dense, norm-matched and pruned-at-init controls (Minegishi et al. 2024)"
SEEDS = [1, 2, 3]
THRESHOLD = 0.95  # t_mem / t_gen: first evaluation at or above this train / test accuracy (the paper's)
MASKED_ARMS = ("ticket", "ticket_mem", "ticket_mid", "random", "snip", "grasp", "synflow", "ticket_wd0")
RESCALED_ARMS = ("dense_l1", "dense_l2")
METHODS = ("dense", "ticket", "dense_l1", "dense_l2", "ticket_mem", "ticket_mid", "random", "snip", "grasp", "synflow", "ticket_wd0")
QUICK_CAP, FULL_CAP = 3000, 50_000  # dense step cap, and every arm's budget
STOP_AFTER_GROK = 500  # full version: steps after test accuracy first reached 99% before a run ends
K_SWEEP = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # with weight decay (the paper: 0.7 best, 0.9 fails)
K_SWEEP_WD0 = (0.80, 0.81, 0.82, 0.83, 0.85, 0.87, 0.90)  # without weight decay (critical k ~ 0.81, App. H)
SWEEP_STAGES = {"ticket": "ticket_k", "ticket_wd0": "ticket_wd0_k"}  # arm -> the directory of its k sweep
GRASP_TEMPERATURE = 200.0
SYNFLOW_ROUNDS = 100
MASKS_DIR = "masks"
SUMMARY_COLUMNS = ["method", "k", "seeds", "budget", "memorised", "median_t_mem", "min_t_mem", "max_t_mem",
                   "generalised", "never", "median_t_gen", "min_t_gen", "max_t_gen", "speedup_vs_dense", "no_ticket_seeds"]


def _rates(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


_rates.__name__ = "comma-separated list of pruning rates"  # argparse names the expected type by __name__


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--p", type=int, default=None, help="modulus (default: 59 with --quick, else 113)")
    p.add_argument("--k", type=float, default=0.6,
                   help="pruning rate of the arms: the fraction of the weight matrices' entries removed, in (0, 1) (default: 0.6, the paper's; "
                        "the authors' code's sparsity is the fraction kept, 1 - k)")
    p.add_argument("--scope", choices=prune.SCOPES, default="global", help="magnitude threshold over all weight matrices together, or per matrix (default: global)")
    p.add_argument("--cap", type=int, default=None,
                   help=f"step cap of the dense run, and every arm's budget (default: {QUICK_CAP} with --quick, {FULL_CAP} otherwise)")
    p.add_argument("--k-sweep", action=argparse.BooleanOptionalAction, default=None,
                   help="also train tickets over a grid of k, with and without weight decay (default: on; off with --quick unless --ks or --ks-wd0 is given)")
    p.add_argument("--ks", type=_rates, default=None, metavar="K1,K2,...",
                   help=f"the k sweep with the dense run's weight decay (default: {','.join(f'{k:g}' for k in K_SWEEP)})")
    p.add_argument("--ks-wd0", type=_rates, default=None, metavar="K1,K2,...",
                   help=f"the k sweep with weight decay 0 (default: {','.join(f'{k:g}' for k in K_SWEEP_WD0)})")


def cap(args: argparse.Namespace) -> int:
    """The dense run's step cap (``--cap``), which is every arm's budget too."""
    c = getattr(args, "cap", None)
    c = (QUICK_CAP if args.quick else FULL_CAP) if c is None else c
    if c < 1:
        raise ConfigError(f"--cap {c}: the dense run's step cap must be >= 1")
    return c


def dense_spec(args: argparse.Namespace) -> Spec:
    """The dense stage: ``--quick`` the small preset for the cap (no early stop, as first measured);
    the full version the canonical model, stopping ``STOP_AFTER_GROK`` steps after it grokked."""
    steps = cap(args)
    if args.quick:
        base = {"task": "mod_add", **PRESETS["small"], "steps": steps, "eval_every": 50, "save_every": 100}
    else:
        base = {"task": "mod_add", "p": 113, "steps": steps, "eval_every": 100, "save_every": 500, "stop_after_grok": STOP_AFTER_GROK}
    if args.p is not None:
        base["p"] = args.p
    return Spec(base, {"seed": SEEDS})


def sweep_rates(args: argparse.Namespace) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The k sweep's rates ``(with weight decay, without)``, ascending; both empty when there is no
    k sweep (``--no-k-sweep``, or ``--quick`` without ``--k-sweep``, ``--ks`` or ``--ks-wd0``).

    Raises:
        ConfigError: a rate outside (0, 1), or an empty list (checked whether or not the sweep runs).
    """
    given = {"--ks": getattr(args, "ks", None), "--ks-wd0": getattr(args, "ks_wd0", None)}
    out = []
    for (flag, ks), default in zip(given.items(), (K_SWEEP, K_SWEEP_WD0)):
        ks = default if ks is None else ks
        if not ks:
            raise ConfigError(f"{flag}: give at least one pruning rate")
        for k in ks:
            if not 0.0 < k < 1.0:
                raise ConfigError(f"{flag} {k!r}: a pruning rate (fraction of weights removed) must lie strictly between 0 and 1")
        out.append(tuple(sorted(set(ks))))
    on = getattr(args, "k_sweep", None)
    if on is None:
        on = not args.quick or any(v is not None for v in given.values())
    return (out[0], out[1]) if on else ((), ())


def arm_base(args: argparse.Namespace, dense: Spec) -> dict:
    """The fields every arm shares: the dense run's, with its cap as the budget (and its early stop);
    fewer checkpoints at full size, where only the dense run's are needed."""
    steps = dense.base["steps"]
    save = dense.base["save_every"] if args.quick else max(dense.base["save_every"], steps // 10)
    return {**dense.base, "save_every": min(save, steps)}


# ---- masks from the dense runs ------------------------------------------------------------------
def first_step(rows: list[dict], key: str, threshold: float | None = None) -> int | None:
    """``interp.experiments.common.first_step`` at this experiment's threshold (``THRESHOLD``, 95%)."""
    return common.first_step(rows, key, THRESHOLD if threshold is None else threshold)


def ticket_step(metrics: list[dict], checkpoint_steps: list[int], threshold: float | None = None) -> int | None:
    """The checkpoint the grokked ticket comes from: the dense run's last checkpoint, if it is at or
    after t_gen (the first evaluation with test accuracy >= ``threshold``, default ``THRESHOLD``: 95 %
    as in the paper).

    None when the run never generalised, or when it has no checkpoint at or after t_gen: such a
    run gives no ticket (a ticket taken before t_gen is not a grokked ticket).
    """
    t_gen = first_step(metrics, "test_acc", THRESHOLD if threshold is None else threshold)
    if t_gen is None:
        return None
    after = [s for s in checkpoint_steps if s >= t_gen]
    return max(after) if after else None


def source_steps(metrics: list[dict], ckpts: list[int]) -> dict[str, int | None]:
    """The checkpoints the tickets come from: ``ticket`` from ``ticket_step`` (None: no ticket),
    ``ticket_mem`` the first at or after t_mem (else the last), ``ticket_mid`` the nearest to
    (t_mem + t_gen) / 2 (t_gen: the last checkpoint if the run never generalised)."""
    last = ckpts[-1]
    t_mem, t_gen = first_step(metrics, "train_acc"), first_step(metrics, "test_acc")
    mem = next((s for s in ckpts if t_mem is not None and s >= t_mem), last)
    mid_target = ((t_mem if t_mem is not None else 0) + (t_gen if t_gen is not None else last)) / 2
    mid = min(ckpts, key=lambda s: (abs(s - mid_target), s))
    return {"ticket": ticket_step(metrics, ckpts), "ticket_mem": mem, "ticket_mid": mid}


def _prunable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters() if prune.is_prunable(n)}


def init_masks(cfg: TrainConfig, method: str, k: float, scope: str) -> dict[str, torch.Tensor]:
    """Masks chosen at initialisation (``random``, ``snip``, ``grasp``, ``synflow``) for ``cfg``'s model."""
    model = build_model(cfg)
    theta = _prunable(model)
    if method == "random":
        return prune.keep_top(prune.random_scores(theta, cfg.seed), k, scope)
    data = make_dataset(cfg)
    x, y = data.inputs[data.train_idx], data.train_labels

    def logits(params, inputs):
        return functional_call(model, params, (inputs,))[:, -1]

    if method == "snip":
        return prune.keep_top(prune.snip(theta, lambda p: loss_fn(logits(p, x), y)), k, scope)
    if method == "grasp":
        return prune.keep_top(prune.grasp(theta, lambda p: loss_fn(logits(p, x) / GRASP_TEMPERATURE, y)), k, scope)
    # synflow: every parameter made non-negative, the sum of the logits over all p^2 inputs (no labels)
    rest = {n: p.detach().abs() for n, p in model.named_parameters() if n not in theta}
    return prune.synflow(theta, lambda p: logits({**rest, **p}, data.inputs).double().sum(), k, scope, SYNFLOW_ROUNDS)


def make_masks(dense_dir: Path, jobs: dict[str, tuple[str, float]], scope: str) -> tuple[dict[str, dict], dict[str, dict]]:
    """The masks of one dense run: ``jobs`` maps a mask's name to ``(method, k)`` (the k sweep's
    tickets are named ``ticket_k<k>``). Returns ``({name: masks}, {name: facts})``; ``facts`` holds
    the source step (tickets; None for masks chosen at initialisation), k and the kept fraction.
    The dense run must give a ticket (``ticket_step`` not None)."""
    cfg = runs.read_config(dense_dir)
    sources = source_steps(runs.read_metrics(dense_dir), runs.checkpoint_steps(dense_dir))
    weights: dict[int, dict] = {}
    out, facts = {}, {}
    for name, (method, k) in jobs.items():
        if method in sources:
            step = sources[method]
            if step not in weights:
                weights[step] = _prunable(runs.load_checkpoint(dense_dir, step, cfg))
            out[name] = prune.keep_top(prune.magnitude(weights[step]), k, scope)
        else:
            step = None
            out[name] = init_masks(cfg, method, k, scope)
        n = sum(t.numel() for t in out[name].values())
        facts[name] = {"from_step": step, "k": k, "scope": scope, "kept": sum(t.sum().item() for t in out[name].values()) / n}
    return out, facts


def rescale_factors(cfg: TrainConfig, ticket: dict[str, torch.Tensor]) -> dict[str, float]:
    """``init_scale`` factors that bring the dense initial weight matrices to the ticket's L1 / L2 norm."""
    theta = _prunable(build_model(cfg))
    (l1, l2), (t1, t2) = prune.norms(theta), prune.norms(theta, ticket)
    return {"dense_l1": t1 / l1, "dense_l2": t2 / l2, "init_l1": l1, "init_l2": l2, "ticket_l1": t1, "ticket_l2": t2}


def mask_name(k: float, main_k: float) -> str:
    """The masks file stem of the ticket at rate ``k``: ``ticket`` at the arms' rate, else ``ticket_k<k>``."""
    return "ticket" if k == main_k else f"ticket_k{k:g}"


# ---- the stages ---------------------------------------------------------------------------------
def plan_specs(args: argparse.Namespace) -> list[Spec]:
    """``--plan``: the dense stage and every arm at the dense cap, as if every seed gave a ticket (an
    upper bound: seeds that never generalise train no arms, and every member may stop early)."""
    prune.check_rate(args.k)
    ks, ks0 = sweep_rates(args)
    dense = dense_spec(args)
    base = arm_base(args, dense)
    wd0 = {"wd": 0.0}
    arms = [Spec({**base, **(wd0 if a == "ticket_wd0" else {})}, {"seed": SEEDS}) for a in METHODS[1:]]
    arms += [Spec({**base, **extra}, {"seed": SEEDS}) for rates, extra in ((ks, {}), (ks0, wd0)) for k in rates if k != args.k]
    return [dense, *arms]


def run(args: argparse.Namespace, sweep) -> dict[str, dict]:
    from interp.sweep import check_values

    prune.check_rate(args.k)
    ks, ks0 = sweep_rates(args)
    dense = dense_spec(args)
    check_values(dense)  # bad --p or --cap: refused before anything is written
    base = arm_base(args, dense)
    out = Path(args.out)
    rows = {f"dense/{n}": r for n, r in sweep(dense, "dense").items()}
    mask_dir = (out / MASKS_DIR).resolve()  # absolute: member configs name their masks file
    info_path = mask_dir / "masks.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    jobs = {a: (a, args.k) for a in MASKED_ARMS if a != "ticket_wd0"}
    jobs.update({mask_name(k, args.k): ("ticket", k) for k in (*ks, *ks0) if k != args.k})
    done = []
    for seed in SEEDS:
        dense_dir = out / "dense" / RUNS_DIR / f"seed{seed}"
        if rows.get(f"dense/seed{seed}", {}).get("status") != "ok":
            log.warning("%s did not finish; its seed is left out of the arms", dense_dir)
            continue
        metrics = runs.read_metrics(dense_dir)
        step = ticket_step(metrics, runs.checkpoint_steps(dense_dir))
        info[f"dense_seed{seed}"] = {"t_gen": first_step(metrics, "test_acc"), "ticket_step": step}
        if step is None:
            log.warning("%s never reached %.0f%% test accuracy within %d steps: no ticket, seed %d is left out of the arms",
                        dense_dir, 100 * THRESHOLD, dense.base["steps"], seed)
            runs.write_text(info_path, json.dumps(info, indent=2) + "\n")
            continue
        todo = {n: j for n, j in jobs.items() if not (mask_dir / f"{n}_seed{seed}.safetensors").is_file() or f"{n}_seed{seed}" not in info}
        if todo:
            masks, facts = make_masks(dense_dir, todo, args.scope)
            for n, m in masks.items():
                prune.write_masks(mask_dir / f"{n}_seed{seed}.safetensors", m)
                info[f"{n}_seed{seed}"] = facts[n]
            if "ticket" in masks:
                info[f"rescale_seed{seed}"] = rescale_factors(runs.read_config(dense_dir), masks["ticket"])
        runs.write_text(info_path, json.dumps(info, indent=2) + "\n")
        done.append(seed)
    if not done:
        return rows
    for a in METHODS[1:]:
        if a in MASKED_ARMS:
            masks = "ticket" if a == "ticket_wd0" else a
            spec = Spec({**base, "mask_from": str(mask_dir / f"{masks}_seed{{seed}}.safetensors"), **({"wd": 0.0} if a == "ticket_wd0" else {})},
                        {"seed": done})
            rows.update({f"{a}/{n}": r for n, r in sweep(spec, a).items()})
        else:
            for s in done:
                factor = info[f"rescale_seed{s}"][a]
                spec = Spec({**base, "init_scale": base.get("init_scale", 1.0) * factor}, {"seed": [s]})
                rows.update({f"{a}/seed{s}/{n}": r for n, r in sweep(spec, f"{a}/seed{s}").items()})
    for arm, rates, extra in (("ticket", ks, {}), ("ticket_wd0", ks0, {"wd": 0.0})):
        for k in rates:
            if k == args.k:
                continue  # the arm itself
            stage = f"{SWEEP_STAGES[arm]}/k{k:g}"
            spec = Spec({**base, "mask_from": str(mask_dir / f"{mask_name(k, args.k)}_seed{{seed}}.safetensors"), **extra}, {"seed": done})
            rows.update({f"{stage}/{n}": r for n, r in sweep(spec, stage).items()})
    return rows


# ---- summary and figures ------------------------------------------------------------------------
def members(out: Path, method: str) -> list[Path]:
    """The finished run directories of ``method`` (its sweep, or its per-seed sweeps; ``method`` may
    also be a path inside ``out``, such as ``ticket_k/k0.3``)."""
    d = Path(out) / method
    sweeps = [d] if (d / RESULTS_FILE).is_file() else sorted(p for p in d.glob("seed*") if (p / RESULTS_FILE).is_file())
    return [s / r["run"] for s in sweeps for r in ok_rows(s)]


def _info(out: Path) -> dict:
    path = Path(out) / MASKS_DIR / "masks.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def main_k(info: dict) -> float | None:
    """The arms' pruning rate, from ``masks.json`` (None if there are no masks, or several rates)."""
    arm = re.compile(rf"^({'|'.join(MASKED_ARMS)})_seed\d+$")
    ks = {v["k"] for key, v in info.items() if arm.match(key) and "k" in v}
    return next(iter(ks)) if len(ks) == 1 else None


def arm_groups(out: Path) -> list[tuple[str, float | None, list[Path]]]:
    """``(method, k, finished run directories)`` per row of the summary: every method at the arms' k
    (dense: None), then the k sweep's tickets with and without weight decay, in ascending k."""
    k0 = main_k(_info(out))
    groups = [(m, None if m == "dense" else k0, members(out, m)) for m in METHODS]
    for arm, stage in SWEEP_STAGES.items():
        subs = [d for d in (Path(out) / stage).glob("k*") if d.is_dir()]
        for d in sorted(subs, key=lambda d: float(d.name[1:])):
            groups.append((arm, float(d.name[1:]), members(out, f"{stage}/{d.name}")))
    return [g for g in groups if g[2]]


def _budget(run_dir: Path, metrics: list[dict]) -> int:
    """The run's step budget (its configured steps: a run that stopped early still had them)."""
    try:
        return runs.read_config(run_dir).steps
    except RunError:
        return metrics[-1]["step"]


def no_ticket_seeds(out: Path) -> list[int]:
    """Dense seeds that gave no ticket (they never generalised within the cap), from ``masks.json``."""
    info = _info(out)
    return sorted(int(key[len("dense_seed"):]) for key, v in info.items() if key.startswith("dense_seed") and v.get("ticket_step") is None)


def summarise(out: Path) -> list[dict]:
    """One row per method and k with finished members (see the module doc)."""
    rows = []
    for method, k, dirs in arm_groups(out):
        metrics = [runs.read_metrics(d) for d in dirs]
        t_mem = [first_step(m, "train_acc") for m in metrics]
        t_gen = [first_step(m, "test_acc") for m in metrics]
        (_, mem_lo, mem_hi), (_, gen_lo, gen_hi) = spread(t_mem), spread(t_gen)
        n_gen = sum(t is not None for t in t_gen)
        rows.append({
            "method": method,
            "k": k,
            "seeds": len(dirs),
            "budget": max(_budget(d, m) for d, m in zip(dirs, metrics)),
            "memorised": sum(t is not None for t in t_mem),
            "median_t_mem": censored_median(t_mem),
            "min_t_mem": mem_lo,
            "max_t_mem": mem_hi,
            "generalised": n_gen,
            "never": len(dirs) - n_gen,
            "median_t_gen": censored_median(t_gen),
            "min_t_gen": gen_lo,
            "max_t_gen": gen_hi,
            "speedup_vs_dense": None,
            "no_ticket_seeds": (" ".join(map(str, no_ticket_seeds(out))) or None) if method == "dense" else None,
        })
    dense = next((r for r in rows if r["method"] == "dense"), None)
    for r in rows:
        if dense and dense["median_t_gen"] and r["median_t_gen"]:
            r["speedup_vs_dense"] = round(dense["median_t_gen"] / r["median_t_gen"], 2)
    return rows


def _fmt(x) -> str:
    return "never" if x is None else f"{x:g}"


def _median_range(r: dict, what: str) -> str:
    """``650 (350–950)``; ``> budget`` for a median beyond the budget, with the range of the seeds that got there."""
    lo, hi = r[f"min_{what}"], r[f"max_{what}"]
    rng = "" if lo is None else f" ({fmt(lo)})" if lo == hi else f" ({fmt(lo)}–{fmt(hi)})"
    med = r[f"median_{what}"]
    return (fmt(med) if med is not None else f"> {fmt(r['budget'])}") + rng


TABLES = [{"columns": [
    ("method", "method"),
    ("k", "k"),
    ("seeds", "seeds"),
    ("budget", "budget"),
    ("t_mem median (range)", lambda r: _median_range(r, "t_mem")),
    ("generalised", lambda r: f"{r['generalised']} of {r['seeds']}"),
    ("t_gen median (range)", lambda r: _median_range(r, "t_gen")),
    ("speed-up vs dense", lambda r: None if r["speedup_vs_dense"] is None else f"{r['speedup_vs_dense']:.2f}×"),
]}]


def tickets_note(rows: list[dict]) -> str:
    """Which dense seeds gave a ticket: those that generalised (test accuracy >= 95 %) within the cap."""
    d = next((r for r in rows if r["method"] == "dense"), None)
    if d is None:
        return "No dense run finished, so there are no tickets."
    missing = d.get("no_ticket_seeds")
    if missing:
        seeds = str(missing).split()
        return (f"Dense seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)} never reached {THRESHOLD:.0%} test accuracy within "
                f"{fmt(d['budget'])} steps: no ticket was taken from {'them' if len(seeds) > 1 else 'it'}, and every arm left "
                f"{'them' if len(seeds) > 1 else 'it'} out.")
    if d["never"]:
        return f"{d['never']} of {d['seeds']} dense seeds never reached {THRESHOLD:.0%} test accuracy within {fmt(d['budget'])} steps."
    return (f"All {d['seeds']} dense seeds reached {THRESHOLD:.0%} test accuracy within {fmt(d['budget'])} steps, "
            f"so each gave a ticket (its last checkpoint, at or after its t_gen).")


def labels(rows: list[dict]) -> list[str]:
    """A name per summary row: the method, with its k for the k sweep's rows (a method's later rows)."""
    seen, out = set(), []
    for r in rows:
        out.append(r["method"] if r["method"] not in seen else f"{r['method']} k={r['k']:g}")
        seen.add(r["method"])
    return out


def caption(rows: list[dict]) -> str:
    """The figure's caption, every number from the summary ``rows``."""
    parts = [(f"Test accuracy against step, the median over seeds per method (band: lowest to highest seed); "
              f"t_gen is the first evaluation with test accuracy >= {THRESHOLD:.0%}. {tickets_note(rows)}")]
    for m, r in zip(labels(rows), rows):
        reached = f"{r['generalised']} of {r['seeds']} seeds generalised within {fmt(r['budget'])} steps"
        if r["median_t_gen"] is None:
            parts.append(f"{m}: {reached}, so no median.")
            continue
        speed = f", speed-up vs dense {r['speedup_vs_dense']:g}x" if r["speedup_vs_dense"] and m != "dense" else ""
        parts.append(f"{m}: median t_gen {_fmt(r['median_t_gen'])} ({reached}{speed}).")
    return " ".join(parts)


NOTES = caption  # the report's caption, below the docs' table


def figures(out: Path) -> list:
    from interp.plots import Figure

    groups = arm_groups(out)
    if not groups:
        return []
    rows = summarise(out)  # the same groups, in the same order
    curves = {name: [runs.read_metrics(d) for d in dirs] for name, (_, _, dirs) in zip(labels(rows), groups)}
    fig = plots.median_curves(curves, "test_acc", "test accuracy", "Test accuracy of each method (median over seeds)")
    return [Figure("tickets-test-acc", fig, caption(rows))]
