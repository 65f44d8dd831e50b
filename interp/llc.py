"""The local learning coefficient (LLC) of checkpoints, estimated with ``devinterp``'s SGLD sampler.

    python -m interp.analyze RUN --llc-calibrate          # choose the SGLD settings for this run (the rule below)
    python -m interp.analyze RUN --llc                    # every 10th checkpoint and the last, at the chosen settings
    python -m interp.analyze RUN --llc --llc-every 5      # every 5th

Needs the optional extra ``llc`` (``pip install .[llc]``: devinterp and its dependencies). Without it
the flags exit 2 with one line saying so; nothing else in the project imports devinterp.

What is estimated (Lau et al. 2023, as devinterp samples it): starting at the checkpoint's weights
``w*``, ``chains`` SGLD chains draw ``w`` from the tempered, localised posterior
``exp(-n beta L_n(w) - gamma/2 |w - w*|^2)``, where ``L_n`` is the training loss; then
``LLC = n beta (E_w[L_n(w)] - L_n(w*))``. devinterp's ``llc`` does the sampling (SGLD steps
``dw = -(epsilon/2)(n beta grad L + gamma (w - w*)) + N(0, epsilon)``, one draw per step); this module
averages the loss over the draws after ``burnin`` only (devinterp's own ``llc_mean`` averages every
draw, burn-in included; it is kept as ``llc_all_draws`` to compare) against the loss at ``w*`` over
``INIT_LOSS_BATCHES`` batches. Only the trainable parameters move (frozen biases stay 0).

What the number means depends on the settings. For a loss that is quadratic around ``w*`` with Hessian
eigenvalues ``h_i`` the estimate is ``sum_i n beta h_i / (2 (n beta h_i + gamma))``: ``d/2`` (the
learning coefficient of a regular model) only when ``n beta h_i >> gamma`` for the directions that
count; when the localisation dominates (``n beta h_i << gamma``) it is ``n beta tr(H) / (2 gamma)``, a
sharpness that scales with ``n beta / gamma``, and the chains wander ``sqrt(d / gamma)`` from ``w*``
whatever the loss. Hence the calibration rule.

The calibration rule (``judge``; ``--llc-calibrate``, ``calibrate``). A setting (epsilon, gamma, with
n beta, draws, burn-in and batch fixed) passes at a checkpoint when all four hold:
  1. gamma: the estimate changes by at most ``TOLERANCE`` (20 %) when gamma is multiplied by 10;
  2. epsilon: it changes by at most 20 % when epsilon is halved;
  3. flat trace: after the burn-in, the loss rise (chains' mean trace minus the loss at ``w*``) of the
     second half of the draws is within 20 % of the first half's;
  4. distance: the chains' distance from ``w*`` (root mean square over the chains and the draws after
     the burn-in) is at most ``DISTANCE_MAX`` (0.9) times the distance the localisation and the noise
     alone give over the same steps, ``sqrt(d (1 - r^(2t)) / (gamma (1 - epsilon gamma / 4)))`` after
     ``t`` steps with ``r = 1 - epsilon gamma / 2`` and ``d`` parameters (``sqrt(d / gamma)`` once the
     chains have settled): the loss, not only the prior, must hold the chains. A model with many
     exactly flat directions fails it even where the estimate is stable (the flat directions are held
     by the prior alone): the rule is conservative there.
The calibration samples a grid (``CALIBRATE_EPSILONS`` x ``CALIBRATE_GAMMAS``, or ``--llc-epsilons`` x
``--llc-gammas``) on one checkpoint; a
grid point is a candidate when its 10x-gamma and half-epsilon neighbours are in the grid. The chosen
point is the passing candidate with the smallest gamma (the weakest prior, the closest to the
LLC's definition, where the localisation tends to 0), then the largest epsilon (the fewest draws).
``--llc`` uses it; a setting that did not pass exits 2 unless ``--llc-force`` is given, and forced rows
say ``forced`` in the table's ``rule`` column. The rule is checked at one checkpoint (by default the
last); a run's other checkpoints (memorised, with larger gradients) may need their own check
(``--llc-step``).

n beta: by default ``n / ln n`` of the run's training-set size ``n`` (``default_n_beta``; beta = 1/ln n,
the WBIC temperature, devinterp's ``default_nbeta``), so that the tempered posterior of two runs with
different training sets is the one singular learning theory compares; it is recorded per row.
An estimate still depends on how well the rule is met: compare runs' LLCs only at passing settings.

The model and data: devinterp takes a dataset of ``input_ids`` and a per-token loss
``(model, input_ids) -> [batch, seq - 1]``. Each training example is stored as the two ids
``[a * p + b, label]`` (so there is one "token" of loss per example) and ``loss_fn`` decodes them and
computes the float64 cross-entropy of the family's logits (the fast forward where it applies; differentiable,
equal to ``HookedTransformer.forward``'s logits): this wraps devinterp, nothing of it is copied.

Hyper-parameters (``LLCConfig``; flags ``--llc-epsilon`` ...): ``epsilon`` (SGLD step size), ``gamma``
(localisation), ``n_beta`` (``None``: the rule above), ``chains``, ``draws`` (SGLD steps per chain; one
draw per step), ``burnin`` (the first draws, left out of ``llc_mean``), ``batch_size`` (examples per SGLD
step, drawn from the training set), ``seed`` (devinterp's ``init_seed``: chain ``i`` uses ``seed + i``,
and all chains see the same batches).

Diagnostics (``analysis/llc.csv``, one row per checkpoint estimated):
    step, llc_mean, llc_std   mean and standard deviation (ddof 1) over the chains of the post-burn-in estimate
    llc_per_chain             each chain's estimate, space-separated: chains that disagree show here
    llc_all_draws             devinterp's llc_mean: every draw averaged, burn-in included
    init_loss                 the training loss at the checkpoint, mean of ``INIT_LOSS_BATCHES`` batches
    n_beta, burnin            the settings of the row
    burn_in_draws             first draw at which the chains' mean loss trace has covered 90 % of its rise
                              from ``init_loss`` to the mean of its second half (``burn_in``); above
                              ``burnin``: the trace had not settled when the average began
    drift                     criterion 3's figure: relative change of the rise between the two halves after burn-in
    rule                      ``passed``: the settings passed this run's calibration; ``forced``: they did not
                              (or none was run) and ``--llc-force`` was given
    seconds                   wall time of this checkpoint's sampling
``analysis/llc.json``: the settings, devinterp's version and every chain's loss trace per step. A re-run
with the same settings only estimates checkpoints missing from the table; other settings start the
table afresh.

``--llc-calibrate`` writes ``analysis/llc_calibration.csv`` (a row per grid point: the estimate, the
four criteria's figures, and for candidates whether they passed and why not),
``analysis/llc_calibration.json`` (the same, the rule's thresholds and the chosen point, which
``--llc`` reads) and ``analysis/llc_calibration.html`` (the loss traces, one panel per grid point). Its
cost is ``len(CALIBRATE_EPSILONS) * len(CALIBRATE_GAMMAS)`` estimates at the given chains and draws.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from interp import runs
from interp.cli import number_list
from interp.families import family_of

LLC_TABLE = "llc.csv"
LLC_FILE = "llc.json"
CALIBRATION_TABLE = "llc_calibration.csv"
CALIBRATION_FILE = "llc_calibration.json"
CALIBRATION_FIGURE = "llc_calibration.html"
LLC_COLUMNS = ["step", "llc_mean", "llc_std", "llc_per_chain", "llc_all_draws", "init_loss", "n_beta", "burnin",
               "burn_in_draws", "drift", "rule", "seconds"]
INIT_LOSS_BATCHES = 16  # batches averaged for the checkpoint's own loss (more than one: a baseline, not one batch's noise)
BURN_IN_FRACTION = 0.9  # burn-in_draws: where the trace has covered this fraction of its rise to its late level
TOLERANCE = 0.2  # criteria 1-3: at most a 20 % change
DISTANCE_MAX = 0.9  # criterion 4: the chains' distance at most this fraction of the localisation's alone
GAMMA_FACTOR = 10.0  # criterion 1: gamma times this
EPSILON_FACTOR = 0.5  # criterion 2: epsilon times this
CALIBRATE_EPSILONS = (2e-4, 1e-4, 5e-5)  # each half the one before
CALIBRATE_GAMMAS = (10.0, 100.0, 1000.0, 10000.0)  # each 10x the one before
DEFAULT_EVERY = 10
MATCH = ("epsilon", "gamma", "n_beta", "draws", "burnin", "batch_size")  # a setting passed by the calibration: these agree


class LLCError(ValueError):
    """Bad LLC settings, or devinterp missing: the message is one line naming the flag or the fix."""


@dataclass(frozen=True)
class LLCConfig:
    """SGLD settings of one LLC estimate (see the module docstring). ``n_beta`` ``None``: ``default_n_beta``."""

    epsilon: float = 1e-4
    gamma: float = 1000.0
    n_beta: float | None = None
    chains: int = 4
    draws: int = 200
    burnin: int = 100
    batch_size: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise LLCError(f"--llc-epsilon {self.epsilon!r}: must be a finite number > 0")
        if self.n_beta is not None and not (math.isfinite(self.n_beta) and self.n_beta > 0):
            raise LLCError(f"--llc-nbeta {self.n_beta!r}: must be a finite number > 0")
        if not (math.isfinite(self.gamma) and self.gamma >= 0):
            raise LLCError(f"--llc-gamma {self.gamma!r}: must be a finite number >= 0")
        for name, low in (("chains", 1), ("draws", 4), ("batch_size", 1), ("burnin", 0)):
            if getattr(self, name) < low:
                raise LLCError(f"--llc-{name.replace('_', '-')} {getattr(self, name)!r}: must be >= {low}")
        if self.draws - self.burnin < 2:
            raise LLCError(f"--llc-burnin {self.burnin!r}: must leave at least 2 of the {self.draws} draws")


def default_n_beta(n: int) -> float:
    """``n / ln n`` for a training set of ``n`` examples (beta = 1 / ln n, the WBIC temperature)."""
    if n < 2:
        raise LLCError(f"the LLC needs at least 2 training examples (the run has {n})")
    return n / math.log(n)


def devinterp_version() -> str | None:
    """devinterp's version, or ``None`` if it is not installed."""
    import importlib.metadata as md

    try:
        return md.version("devinterp")
    except md.PackageNotFoundError:
        return None


def require_devinterp() -> None:
    """Raise ``LLCError`` (one line) when the optional extra is missing."""
    try:
        import datasets  # noqa: F401
        import devinterp.slt.llc  # noqa: F401
    except ImportError as e:
        raise LLCError(f"the LLC needs the optional extra 'llc' (pip install '.[llc]'; {e.name} is missing)") from None


# ---- the estimator: any model, dataset and loss --------------------------------------------------
class IdsDataset(torch.utils.data.Dataset):
    """A map-style dataset of ``{"input_ids": row}``: what devinterp's sampler reads from its dataset
    (it is typed as a HuggingFace ``Dataset``, whose per-row indexing is far slower)."""

    def __init__(self, ids: torch.Tensor):
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i]}


def burn_in(trace: list[float], init_loss: float, fraction: float = BURN_IN_FRACTION) -> int:
    """First draw at which ``trace`` has covered ``fraction`` of its rise from ``init_loss`` to the mean
    of its second half (0 when it does not rise: nothing to burn in).

    Args:
        trace: the loss per draw (chains averaged).
        init_loss: the loss at the start point.
        fraction: the fraction of the rise.
    """
    late = sum(trace[len(trace) // 2:]) / len(trace[len(trace) - len(trace) // 2:])
    rise = late - init_loss
    if not math.isfinite(rise) or rise <= 0:
        return 0
    level = init_loss + fraction * rise
    return next((i for i, v in enumerate(trace) if v >= level), len(trace))


def prior_distance(d: int, epsilon: float, gamma: float, steps: int) -> float:
    """The root-mean-square distance from ``w*`` of ``d`` coordinates moved by the SGLD noise and the
    localisation alone (no loss) after ``steps`` steps: ``sqrt(d / gamma)`` once settled.

    Each coordinate follows ``x <- r x + N(0, epsilon)`` with ``r = 1 - epsilon gamma / 2``, so its variance
    after ``T`` steps is ``epsilon (1 - r^(2T)) / (1 - r^2)``.
    """
    r = 1.0 - epsilon * gamma / 2
    var = epsilon * steps if gamma == 0 else epsilon * (1 - r ** (2 * steps)) / (1 - r * r)
    return math.sqrt(d * var)


def summarise(traces: list[list[float]], init_loss: float, n_beta: float, burnin: int) -> dict:
    """The estimate from the loss traces: ``llc_mean, llc_std, llc_per_chain`` (draws after ``burnin``),
    ``llc_all_draws`` (every draw, devinterp's average), ``burn_in_draws`` and ``drift`` (criterion 3).

    Args:
        traces: ``[chain][draw]`` training losses.
        init_loss: the loss at ``w*``.
        n_beta: n times the inverse temperature.
        burnin: draws left out.
    """
    per_chain = [n_beta * (sum(c[burnin:]) / len(c[burnin:]) - init_loss) for c in traces]
    mean = sum(per_chain) / len(per_chain)
    std = math.sqrt(sum((x - mean) ** 2 for x in per_chain) / (len(per_chain) - 1)) if len(per_chain) > 1 else math.nan
    every = sum(sum(c) / len(c) for c in traces) / len(traces)
    mean_trace = [sum(c[i] for c in traces) / len(traces) for i in range(len(traces[0]))]
    post = mean_trace[burnin:]
    half = len(post) // 2
    first, second = sum(post[:half]) / half - init_loss, sum(post[half:]) / (len(post) - half) - init_loss
    drift = rel_change(first, second)
    return {"llc_mean": mean, "llc_std": std, "llc_per_chain": per_chain, "llc_all_draws": n_beta * (every - init_loss),
            "burn_in_draws": burn_in(mean_trace, init_loss), "drift": drift}


def rel_change(a: float, b: float) -> float:
    """``|b - a| / |a|`` (``inf`` when ``a`` is 0 or either is not finite)."""
    if not (math.isfinite(a) and math.isfinite(b)) or a == 0:
        return math.inf
    return abs(b - a) / abs(a)


@contextlib.contextmanager
def _quiet_devinterp():
    """devinterp's per-chain progress bars off, its warnings silenced and its full garbage collection
    around each chain skipped (on the CPU it frees nothing the chains need and took seconds in a test
    process), for the block."""
    from devinterp.slt import sampler

    trange, gc = sampler.trange, sampler._gc_and_empty_cache
    sampler.trange = lambda *a, **k: trange(*a, **{**k, "disable": True})
    sampler._gc_and_empty_cache = lambda: None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        sampler.trange, sampler._gc_and_empty_cache = trange, gc


def sample(model, dataset, loss_fn, cfg: LLCConfig, n_beta: float, metrics: bool = False) -> dict:
    """Run devinterp's SGLD chains from ``model``'s weights and summarise them (``summarise``).

    Args:
        model: a torch module at ``w*`` (not changed: devinterp samples copies); its trainable parameters move.
        dataset: an ``IdsDataset`` (rows of at least two ids).
        loss_fn: ``(model, input_ids) -> [batch, seq - 1]`` per-token losses.
        cfg: SGLD settings (its ``n_beta`` is ignored: ``n_beta`` is used).
        n_beta: n times the inverse temperature.
        metrics: also record devinterp's per-step metrics for ``distance`` (NaN without; they cost
            about a quarter of the sampling time).
    Returns:
        ``summarise``'s values and ``init_loss``, ``n_beta``, ``burnin``, ``distance`` (root mean square over
        chains and the steps after the burn-in of ``|w - w*|``), ``prior_distance`` (the same for the
        localisation and noise alone) and ``distance_ratio`` (criterion 4),
        ``d`` (parameters sampled), ``finite``, ``seconds`` and ``traces`` (``[chain][draw]``).
    """
    require_devinterp()
    from devinterp.slt.llc import llc

    t0 = time.perf_counter()
    masks = {name: None for name, q in model.named_parameters() if q.requires_grad}
    d = sum(q.numel() for q in model.parameters() if q.requires_grad)
    with tempfile.TemporaryDirectory() as tmp, _quiet_devinterp():
        out = llc(model, dataset, {}, lr=cfg.epsilon, n_beta=n_beta, localization=cfg.gamma, num_chains=cfg.chains,
                  num_draws=cfg.draws, batch_size=min(cfg.batch_size, len(dataset)), num_init_loss_batches=INIT_LOSS_BATCHES,
                  init_seed=cfg.seed, param_masks=masks, loss_fn=loss_fn, device="cpu", save_metrics=metrics,
                  output_path=Path(tmp) / "samples.zarr")
        traces = out.loss_trace.values.astype(float)  # [chain, step]
        init = float(out.init_loss)
        distance = math.nan
        if metrics:
            from xarray import open_datatree

            tree = open_datatree(str(Path(tmp) / "samples.zarr"), engine="zarr", consolidated=False)
            dist = tree.dataset["metrics_distance"].values[:, cfg.burnin:]  # [chain, step] |w - w*|
            distance = float((dist.astype(float) ** 2).mean() ** 0.5)
    traces = traces.tolist()
    finite = all(math.isfinite(x) for c in traces for x in c) and len(traces[0]) == cfg.draws
    est = summarise(traces, init, n_beta, cfg.burnin) if finite else {
        "llc_mean": math.nan, "llc_std": math.nan, "llc_per_chain": [math.nan] * len(traces), "llc_all_draws": math.nan,
        "burn_in_draws": 0, "drift": math.inf}
    prior = math.sqrt(sum(prior_distance(d, cfg.epsilon, cfg.gamma, t + 1) ** 2 for t in range(cfg.burnin, cfg.draws))
                      / (cfg.draws - cfg.burnin))
    return {**est, "init_loss": init, "n_beta": n_beta, "burnin": cfg.burnin, "distance": distance,
            "prior_distance": prior, "distance_ratio": distance / prior if finite else math.nan, "d": d,
            "finite": finite, "seconds": round(time.perf_counter() - t0, 3), "traces": traces}


# ---- the calibration rule -------------------------------------------------------------------------
def judge(base: dict, stiffer: dict, finer: dict) -> dict:
    """The calibration rule (module docstring) for one setting.

    Args:
        base: ``sample``'s result at the setting (with ``metrics``: its ``distance_ratio`` is used).
        stiffer: at ``GAMMA_FACTOR`` times its gamma.
        finer: at ``EPSILON_FACTOR`` times its epsilon.
    Returns:
        ``gamma_change``, ``epsilon_change``, ``drift``, ``distance_ratio``, ``passed`` and ``why`` (the
        failed criteria in words; empty when passed).
    """
    g, e = rel_change(base["llc_mean"], stiffer["llc_mean"]), rel_change(base["llc_mean"], finer["llc_mean"])
    drift, ratio = base["drift"], base["distance_ratio"]
    why = []
    if not base["finite"]:
        why.append("the loss trace is not finite")
    if not g <= TOLERANCE:
        why.append(f"gamma x{GAMMA_FACTOR:g} changes it by {g:.0%}")
    if not e <= TOLERANCE:
        why.append(f"epsilon x{EPSILON_FACTOR:g} changes it by {e:.0%}")
    if not drift <= TOLERANCE:
        why.append(f"the trace drifts by {drift:.0%} after burn-in")
    if not ratio <= DISTANCE_MAX:
        why.append(f"the chains' distance is {ratio:.2f} of the localisation's alone")
    return {"gamma_change": g, "epsilon_change": e, "drift": drift, "distance_ratio": ratio, "passed": not why, "why": why}


def calibrate_grid(sample_at, cfg: LLCConfig, epsilons=CALIBRATE_EPSILONS, gammas=CALIBRATE_GAMMAS,
                   progress: bool = False) -> tuple[list[dict], dict | None]:
    """Sample every (epsilon, gamma) of the grid, judge every candidate, choose a point.

    Args:
        sample_at: ``LLCConfig -> sample(...)`` result (with metrics).
        cfg: the other settings (n beta, chains, draws, burn-in, batch, seed).
        epsilons, gammas: the grid; a point is a candidate when ``epsilon * EPSILON_FACTOR`` and
            ``gamma * GAMMA_FACTOR`` are in it too.
        progress: a progress bar over the grid's estimates.
    Returns:
        ``(rows, chosen)``: a row per grid point (``epsilon, gamma`` and ``sample``'s values but the traces,
        with ``traces`` kept under ``_traces``; candidates also carry ``judge``'s values, others
        ``passed`` ``None``) and the chosen row (``None`` when no candidate passed).
    """
    from tqdm.auto import tqdm

    est = {}
    for eps, gam in tqdm([(e, g) for e in epsilons for g in gammas], desc="LLC calibration", unit="estimate",
                         disable=not progress, dynamic_ncols=True):
        est[eps, gam] = sample_at(dataclasses.replace(cfg, epsilon=eps, gamma=gam))
    rows = []
    for (eps, gam), e in est.items():
        row = {"epsilon": eps, "gamma": gam, **{k: v for k, v in e.items() if k != "traces"}, "_traces": e["traces"],
               "gamma_change": math.nan, "epsilon_change": math.nan, "passed": None, "why": ""}
        stiff, fine = _find(est, eps, gam * GAMMA_FACTOR), _find(est, eps * EPSILON_FACTOR, gam)
        if stiff is not None and fine is not None:
            v = judge(e, stiff, fine)
            row.update(gamma_change=v["gamma_change"], epsilon_change=v["epsilon_change"], passed=v["passed"], why="; ".join(v["why"]))
        rows.append(row)
    passing = [r for r in rows if r["passed"]]
    chosen = min(passing, key=lambda r: (r["gamma"], -r["epsilon"])) if passing else None
    return rows, chosen


def _find(est: dict, eps: float, gam: float):
    return next((v for (e, g), v in est.items() if math.isclose(e, eps, rel_tol=1e-9) and math.isclose(g, gam, rel_tol=1e-9)), None)


# ---- a run -------------------------------------------------------------------------------------
def training_dataset(run: runs.Run) -> IdsDataset:
    """The training split for devinterp: ``input_ids = [a * p + b, label]`` per example."""
    data, p = run.dataset, run.config.p
    idx = data.train_idx
    return IdsDataset(torch.stack([data.a[idx] * p + data.b[idx], data.train_labels], dim=1))


def make_loss_fn(cfg):
    """devinterp's per-token loss for ``training_dataset``'s ids: float64 cross-entropy of the family's logits
    (its fast path where it applies, else its forward: ``interp.families``), ``[batch, 1]``."""
    family, p = family_of(cfg), cfg.p

    def loss_fn(model, input_ids: torch.Tensor) -> torch.Tensor:
        a, b, y = input_ids[:, 0] // p, input_ids[:, 0] % p, input_ids[:, 1]
        x = torch.stack([a, b, torch.full_like(a, cfg.eq_token)], dim=1)
        fast = family.fast is not None and family.fast.applies(model, cfg)
        logits = family.fast.logits(model, cfg, x) if fast else family.forward(model, cfg, x)
        return F.cross_entropy(logits.to(torch.float64), y, reduction="none")[:, None].float()

    return loss_fn


def resolve(cfg: LLCConfig, n_train: int) -> LLCConfig:
    """``cfg`` with ``n_beta`` filled in by ``default_n_beta`` when it is ``None``."""
    return cfg if cfg.n_beta is not None else dataclasses.replace(cfg, n_beta=default_n_beta(n_train))


def estimate(model, run: runs.Run, cfg: LLCConfig, dataset=None, metrics: bool = False) -> dict:
    """The LLC of ``model`` on ``run``'s training set (``sample`` with the run's data and loss).

    Args:
        model: the run's HookedTransformer with the checkpoint loaded (not changed: devinterp samples copies).
        run: the run (its split and ``p``).
        cfg: SGLD settings (``n_beta`` ``None``: ``default_n_beta`` of the training-set size).
        dataset: ``training_dataset(run)`` if already built.
        metrics: also the chains' distance (criterion 4).
    """
    dataset = training_dataset(run) if dataset is None else dataset
    cfg = resolve(cfg, len(dataset))
    return sample(model, dataset, make_loss_fn(run.config), cfg, cfg.n_beta, metrics=metrics)


def select_steps(steps: list[int], every: int) -> list[int]:
    """Every ``every``-th checkpoint from the first, and the last one."""
    chosen = steps[::every]
    return chosen if chosen[-1] == steps[-1] else chosen + [steps[-1]]


def _table(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(LLC_COLUMNS)
    for r in rows:
        w.writerow([" ".join(repr(x) for x in r[c]) if c == "llc_per_chain" else repr(r[c]) if isinstance(r[c], float) else r[c]
                    for c in LLC_COLUMNS])
    return buf.getvalue()


def load_llc(run_dir: str | Path) -> tuple[list[dict], dict]:
    """``(rows of llc.csv, llc.json)``; ``([], {})`` when no LLC was estimated. ``llc_per_chain`` is a list."""
    d = Path(run_dir) / runs.ANALYSIS_DIR
    if not (d / LLC_TABLE).is_file() or not (d / LLC_FILE).is_file():
        return [], {}
    meta = json.loads((d / LLC_FILE).read_text())
    rows = []
    with open(d / LLC_TABLE, newline="") as f:
        for r in csv.DictReader(f):
            rows.append({k: (int(v) if k in ("step", "burnin", "burn_in_draws") else v if k == "rule"
                             else [float(x) for x in v.split()] if k == "llc_per_chain" else float(v)) for k, v in r.items()})
    return rows, meta


def load_calibration(run_dir: str | Path) -> dict:
    """``llc_calibration.json`` (``{}`` when the run was not calibrated)."""
    f = Path(run_dir) / runs.ANALYSIS_DIR / CALIBRATION_FILE
    return json.loads(f.read_text()) if f.is_file() else {}


def verdict(cfg: LLCConfig, calibration: dict) -> tuple[bool, str]:
    """Whether the calibration passed ``cfg`` (its ``MATCH`` settings agree with a passing candidate),
    and why not in words."""
    if not calibration:
        return False, "this run has no LLC calibration (python -m interp.analyze RUN --llc-calibrate)"
    want = dataclasses.asdict(cfg)
    for c in calibration["candidates"]:
        if all(math.isclose(float(c["settings"][k]), float(want[k]), rel_tol=1e-9) for k in MATCH):
            return (True, "") if c["passed"] else (False, f"it failed the calibration at step {calibration['step']}: {c['why']}")
    return False, f"the calibration at step {calibration['step']} did not check it"


def describe(cfg: LLCConfig) -> str:
    """The settings in a few words."""
    nb = "n/ln n" if cfg.n_beta is None else f"{cfg.n_beta:.4g}"
    return f"ε {cfg.epsilon:g}, γ {cfg.gamma:g}, nβ {nb}, {cfg.draws} draws (burn-in {cfg.burnin}), batch {cfg.batch_size}"


def run_llc(run_dir: str | Path, cfg: LLCConfig, every: int = DEFAULT_EVERY, progress: bool = False, write: bool = True,
            force: bool = False) -> list[dict]:
    """Estimate the LLC of the selected checkpoints of a run (those not yet in ``llc.csv`` with the same
    settings) and write ``llc.csv`` and ``llc.json``.

    Args:
        run_dir: a run directory.
        cfg: SGLD settings (``n_beta`` ``None``: ``default_n_beta``).
        every: estimate every ``every``-th checkpoint (and the last).
        progress: a progress bar over the checkpoints.
        write: write the files (``False``: compute only).
        force: estimate even when the run's calibration did not pass ``cfg`` (rows say ``forced``).
    Returns:
        The table's rows, sorted by step.
    Raises:
        LLCError: ``every`` < 1, devinterp missing, or ``cfg`` not passed by the calibration and not ``force``;
        RunError: the run is missing or corrupt.
    """
    from tqdm.auto import tqdm

    if every < 1:
        raise LLCError(f"--llc-every {every!r}: must be >= 1")
    require_devinterp()
    run_dir = Path(run_dir)
    run = runs.load_run(run_dir)
    if not run.steps:
        raise runs.RunError(f"{run_dir / runs.CKPT_DIR}: run has no checkpoints")
    dataset = training_dataset(run)
    cfg = resolve(cfg, len(dataset))
    passed, why = verdict(cfg, load_calibration(run_dir))
    if not passed and not force:
        raise LLCError(f"--llc-force: the settings {describe(cfg)} are refused: {why}; add --llc-force to estimate anyway")
    settings = dataclasses.asdict(cfg)
    old_rows, meta = load_llc(run_dir)
    if meta.get("settings") != settings:
        old_rows, meta = [], {}
    have = {r["step"]: r for r in old_rows}
    traces = dict(meta.get("traces", {}))
    todo = [s for s in select_steps(run.steps, every) if s not in have]
    model = run.load_model(run.steps[0])
    for step in tqdm(todo, desc=f"LLC {run_dir.name}", unit="ckpt", disable=not progress, dynamic_ncols=True):
        state, _ = runs.read_tensors(runs.ckpt_path(run_dir, step))
        runs.load_state_dict_into(model, state, runs.ckpt_path(run_dir, step))
        est = estimate(model, run, cfg, dataset)
        traces[str(step)] = est["traces"]
        have[step] = {"step": step, **{c: est[c] for c in LLC_COLUMNS if c in est}}
    rule = "passed" if passed else "forced"  # the verdict is on the settings: cached rows take today's
    rows = [{**have[s], "rule": rule} for s in sorted(have)]
    if write:
        d = run_dir / runs.ANALYSIS_DIR
        runs.write_text(d / LLC_TABLE, _table(rows))
        runs.write_text(d / LLC_FILE, json.dumps({"settings": settings, "devinterp": devinterp_version(),
                                                  "init_loss_batches": INIT_LOSS_BATCHES, "traces": traces}) + "\n")
    return rows


CALIBRATION_COLUMNS = ["epsilon", "gamma", "n_beta", "llc_mean", "llc_std", "llc_all_draws", "burn_in_draws", "drift",
                       "distance", "prior_distance", "distance_ratio", "gamma_change", "epsilon_change", "passed", "why", "seconds"]


def calibrate(run_dir: str | Path, cfg: LLCConfig, step: int | None = None, epsilons=CALIBRATE_EPSILONS,
              gammas=CALIBRATE_GAMMAS, write: bool = True, progress: bool = False) -> tuple[list[dict], dict | None, object]:
    """The calibration (``calibrate_grid``) on one checkpoint of a run.

    Args:
        run_dir: a run directory.
        cfg: the other SGLD settings (n beta, chains, draws, burn-in, batch size, seed).
        step: the checkpoint (``None``: the last).
        epsilons, gammas: the grid.
        write: write ``llc_calibration.csv``, ``.json`` and ``.html`` into ``analysis/``.
        progress: a progress bar over the grid's estimates.
    Returns:
        ``(rows, chosen row or None, plotly figure)``.
    """
    from interp import plots

    require_devinterp()
    run_dir = Path(run_dir)
    run = runs.load_run(run_dir)
    if not run.steps:
        raise runs.RunError(f"{run_dir / runs.CKPT_DIR}: run has no checkpoints")
    step = run.steps[-1] if step is None else step
    if step not in run.steps:
        raise LLCError(f"--llc-step {step}: not a checkpoint of {run_dir} (steps {run.steps[0]} .. {run.steps[-1]})")
    model = run.load_model(step)
    dataset = training_dataset(run)
    cfg = resolve(cfg, len(dataset))
    rows, chosen = calibrate_grid(lambda c: estimate(model, run, c, dataset, metrics=True), cfg, epsilons, gammas, progress)
    traces = {f"ε {r['epsilon']:g}, γ {r['gamma']:g}: LLC {r['llc_mean']:.3g}": r["_traces"] for r in rows}
    fig = plots.llc_traces(traces, f"SGLD loss traces at step {step} of {run_dir.name} (nβ {cfg.n_beta:.4g}, "
                           f"{cfg.chains} chains; shaded: burn-in)", burn_in=cfg.burnin)
    if write:
        d = run_dir / runs.ANALYSIS_DIR
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=CALIBRATION_COLUMNS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        runs.write_text(d / CALIBRATION_TABLE, buf.getvalue())
        candidates = [{"settings": dataclasses.asdict(dataclasses.replace(cfg, epsilon=r["epsilon"], gamma=r["gamma"])),
                       "passed": r["passed"], "why": r["why"], "llc_mean": r["llc_mean"]} for r in rows if r["passed"] is not None]
        chosen_settings = None if chosen is None else dataclasses.asdict(dataclasses.replace(cfg, epsilon=chosen["epsilon"], gamma=chosen["gamma"]))
        runs.write_text(d / CALIBRATION_FILE, json.dumps({
            "step": step, "devinterp": devinterp_version(), "n_train": len(dataset),
            "rule": {"tolerance": TOLERANCE, "distance_max": DISTANCE_MAX, "gamma_factor": GAMMA_FACTOR,
                     "epsilon_factor": EPSILON_FACTOR},
            "candidates": candidates, "chosen": chosen_settings}, indent=1) + "\n")
        runs.write_text(d / CALIBRATION_FIGURE, fig.to_html(include_plotlyjs=True, full_html=True))
    return rows, chosen, fig


# ---- words and the command line (python -m interp.analyze RUN --llc ...) ------------------------------
def llc_sentence(llc_rows: list[dict], rows: list[dict], meta: dict) -> str:
    """The LLC's shape over training against the test loss, in words, from ``llc.csv`` and the analysis table."""
    from interp.text import fmt_step

    if not llc_rows:
        return "No LLC was estimated (python -m interp.analyze RUN --llc)."
    s = meta.get("settings", {})
    test = {r["step"]: r["test_loss"] for r in rows}
    first, last = llc_rows[0], llc_rows[-1]
    peak = max(llc_rows, key=lambda r: r["llc_mean"])
    pairs = [(r["llc_mean"], test[r["step"]]) for r in llc_rows if r["step"] in test]
    corr = (f"Spearman correlation with the test loss {spearman([a for a, _ in pairs], [b for _, b in pairs]):.2f}"
            if len(pairs) >= 3 else "too few checkpoints for a rank correlation with the test loss")
    secs = sum(r["seconds"] for r in llc_rows) / len(llc_rows)
    verb = "then falls to" if last["llc_mean"] < peak["llc_mean"] else "and stays at"
    forced = sum(r.get("rule") == "forced" for r in llc_rows)
    rule = (f"settings NOT passed by the calibration rule (forced) at {forced} of {len(llc_rows)} checkpoints: a sampler "
            f"reading, not a calibrated LLC" if forced else "settings passed by the run's calibration rule")
    return (f"LLC (devinterp {meta.get('devinterp')}, SGLD ε {s.get('epsilon')}, γ {s.get('gamma')}, nβ {s.get('n_beta', 0):.4g}, "
            f"{s.get('chains')} chains × {s.get('draws')} draws, the first {s.get('burnin')} left out, batch "
            f"{s.get('batch_size')}, training set; error bars: std over chains; {rule}) over {len(llc_rows)} checkpoints: "
            f"{first['llc_mean']:.3g} at step {fmt_step(first['step'])}, highest "
            f"{peak['llc_mean']:.3g} at step {fmt_step(peak['step'])} (test loss {test.get(peak['step'], math.nan):.3g}), {verb} "
            f"{last['llc_mean']:.3g} at step {fmt_step(last['step'])} (test loss {test.get(last['step'], math.nan):.3g}); {corr}; "
            f"{secs:.1f} s per checkpoint.")


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def add_arguments(p) -> None:
    """The ``--llc*`` flags of ``python -m interp.analyze``."""
    d = LLCConfig()
    g = p.add_argument_group("local learning coefficient (optional extra 'llc': devinterp)")
    g.add_argument("--llc", action="store_true", help="also estimate the LLC of every --llc-every-th checkpoint (analysis/llc.csv) "
                   "at the settings chosen by --llc-calibrate")
    g.add_argument("--llc-every", type=int, default=None, metavar="N", help=f"with --llc: every N-th checkpoint and the last (default {DEFAULT_EVERY})")
    g.add_argument("--llc-calibrate", action="store_true", help=f"choose the SGLD settings on one checkpoint: an epsilon x gamma grid "
                   f"({len(CALIBRATE_EPSILONS)} x {len(CALIBRATE_GAMMAS)} estimates) judged by the stability rule "
                   "(analysis/llc_calibration.*)")
    g.add_argument("--llc-step", type=int, default=None, metavar="STEP", help="with --llc-calibrate: the checkpoint (default: the last)")
    g.add_argument("--llc-epsilons", default=None, metavar="E1,E2,...", help="with --llc-calibrate: the grid's step sizes "
                   f"(default {','.join(f'{e:g}' for e in CALIBRATE_EPSILONS)}; a point is judged when epsilon x{EPSILON_FACTOR:g} "
                   "is in the grid too)")
    g.add_argument("--llc-gammas", default=None, metavar="G1,G2,...", help="with --llc-calibrate: the grid's localisation "
                   f"strengths (default {','.join(f'{x:g}' for x in CALIBRATE_GAMMAS)}; a point is judged when gamma "
                   f"x{GAMMA_FACTOR:g} is in the grid too)")
    g.add_argument("--llc-force", action="store_true", help="with --llc: estimate at settings the calibration did not pass (rows say 'forced')")
    g.add_argument("--llc-epsilon", type=float, default=None, help=f"SGLD step size (default: the calibration's choice; forced: {d.epsilon:g})")
    g.add_argument("--llc-gamma", type=float, default=None, help=f"localisation strength (default: the calibration's choice; forced: {d.gamma:g})")
    g.add_argument("--llc-nbeta", type=float, default=None, help="n times the inverse temperature (default: n / ln n of the training set)")
    g.add_argument("--llc-chains", type=int, default=d.chains, help=f"SGLD chains (default {d.chains})")
    g.add_argument("--llc-draws", type=int, default=None, help=f"SGLD steps per chain (default: the calibration's, else {d.draws})")
    g.add_argument("--llc-burnin", type=int, default=None, help=f"first draws left out of the estimate (default: the calibration's, else {d.burnin})")
    g.add_argument("--llc-batch-size", type=int, default=None, help=f"training examples per SGLD step (default: the calibration's, else {d.batch_size})")
    g.add_argument("--llc-seed", type=int, default=d.seed, help=f"devinterp's init_seed (default {d.seed})")


_FLAGS = {"epsilon": "llc_epsilon", "gamma": "llc_gamma", "n_beta": "llc_nbeta", "draws": "llc_draws", "burnin": "llc_burnin",
          "batch_size": "llc_batch_size"}


def config_from_args(args) -> LLCConfig | None:
    """The ``LLCConfig`` the flags ask for (``None`` when neither --llc nor --llc-calibrate is given). With
    ``--llc`` alone the settings not given default to the run's calibrated choice, and settings the
    calibration did not pass are refused without ``--llc-force``.

    Raises:
        LLCError: a bad value, a flag without the one it needs, a refused setting, or devinterp missing (one line).
    """
    if args.llc_every is not None and not args.llc:
        raise LLCError(f"--llc-every {args.llc_every}: needs --llc")
    if args.llc_force and not args.llc:
        raise LLCError("--llc-force: needs --llc")
    if args.llc_step is not None and not args.llc_calibrate:
        raise LLCError(f"--llc-step {args.llc_step}: needs --llc-calibrate")
    for flag in ("llc_epsilons", "llc_gammas"):
        if getattr(args, flag, None) is not None and not args.llc_calibrate:
            raise LLCError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: needs --llc-calibrate")
    if args.llc_calibrate:
        calibration_grid(args)  # bad grids fail here, before anything is sampled
    if not (args.llc or args.llc_calibrate):
        return None
    if args.llc_every is not None and args.llc_every < 1:
        raise LLCError(f"--llc-every {args.llc_every}: must be >= 1")
    given = {k: getattr(args, a) for k, a in _FLAGS.items() if getattr(args, a) is not None}
    cal = load_calibration(args.run_dir) if args.llc and not args.llc_calibrate else {}
    base = {**(cal.get("chosen") or {}), "chains": args.llc_chains, "seed": args.llc_seed} if cal.get("chosen") else {
        "chains": args.llc_chains, "seed": args.llc_seed}
    cfg = LLCConfig(**{**base, **given})
    require_devinterp()
    if args.llc and not args.llc_calibrate and not args.llc_force:
        n = cal.get("n_train")
        passed, why = verdict(cfg if n is None else resolve(cfg, n), cal)
        if not passed:
            raise LLCError(f"--llc-force: the settings {describe(cfg)} are refused: {why}; add --llc-force to estimate anyway")
    return cfg


def calibration_grid(args) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The ``(epsilons, gammas)`` of ``--llc-epsilons`` / ``--llc-gammas`` (the defaults where not given).

    Raises:
        LLCError: a value that is not a positive number, or a grid with no candidate (no epsilon whose
            half, or no gamma whose tenfold, is in the grid too); one line naming the flag.
    """
    grids = {}
    for flag, default, factor in (("llc_epsilons", CALIBRATE_EPSILONS, EPSILON_FACTOR), ("llc_gammas", CALIBRATE_GAMMAS, GAMMA_FACTOR)):
        text, name = getattr(args, flag, None), "--" + flag.replace("_", "-")
        if text is None:
            grids[flag] = tuple(default)
            continue
        values = number_list(text, name, positive=True, error=LLCError)
        if not any(any(math.isclose(v * factor, w, rel_tol=1e-9) for w in values) for v in values):
            raise LLCError(f"{name} {text}: needs a value and that value x{factor:g} too, or no grid point can be judged")
        grids[flag] = tuple(sorted(set(values), reverse=flag == "llc_epsilons"))
    return grids["llc_epsilons"], grids["llc_gammas"]


def main_part(args, cfg: LLCConfig) -> None:
    """What ``python -m interp.analyze RUN --llc / --llc-calibrate`` does after the analysis, and prints."""
    out = Path(args.run_dir) / runs.ANALYSIS_DIR
    if args.llc_calibrate:
        epsilons, gammas = calibration_grid(args)
        rows, chosen, _ = calibrate(args.run_dir, cfg, step=args.llc_step, epsilons=epsilons, gammas=gammas,
                                    progress=not args.quiet)
        print(calibration_text(rows, chosen, cfg, step=load_calibration(args.run_dir)["step"]))
        print(f"-> {out / CALIBRATION_TABLE}, {out / CALIBRATION_FILE}, {out / CALIBRATION_FIGURE}")
        if args.llc:
            if chosen is None and not args.llc_force:
                raise LLCError("--llc-force: no setting passed the calibration; add --llc-force to estimate at "
                               f"{describe(cfg)} anyway")
            if chosen is not None:
                cfg = dataclasses.replace(cfg, epsilon=chosen["epsilon"], gamma=chosen["gamma"])
    if args.llc:
        rows = run_llc(args.run_dir, cfg, every=args.llc_every or DEFAULT_EVERY, progress=not args.quiet, force=args.llc_force)
        secs = sum(r["seconds"] for r in rows) / len(rows)
        print(f"LLC of {len(rows)} checkpoints ({secs:.1f} s per checkpoint, {cfg.chains} chains x {cfg.draws} draws, "
              f"nβ {rows[-1]['n_beta']:.4g}; {rows[-1]['rule']}) -> {out / LLC_TABLE}")
        for r in rows:
            print(f"  step {r['step']:>7}  llc {r['llc_mean']:9.4g} ± {r['llc_std']:<8.3g} all draws {r['llc_all_draws']:9.4g}  "
                  f"burn-in {r['burn_in_draws']:>4} draws  drift {r['drift']:.0%}  init loss {r['init_loss']:.3g}  {r['rule']}")


def calibration_text(rows: list[dict], chosen: dict | None, cfg: LLCConfig, step: int) -> str:
    """What ``--llc-calibrate`` prints: the rule, every grid point's figures and the chosen point."""
    lines = [f"LLC calibration at step {step}: nβ {rows[0]['n_beta']:.4g}, {cfg.chains} chains x {cfg.draws} draws "
             f"(first {cfg.burnin} left out), batch {cfg.batch_size}; {sum(r['seconds'] for r in rows):.0f} s for "
             f"{len(rows)} estimates",
             f"rule: the estimate changes by <= {TOLERANCE:.0%} with gamma x{GAMMA_FACTOR:g} and with epsilon x{EPSILON_FACTOR:g}, "
             f"the trace drifts by <= {TOLERANCE:.0%} after burn-in, and the chains' distance is <= {DISTANCE_MAX:g} of the "
             f"localisation's alone (sqrt(d/gamma) once settled)",
             f"  {'eps':>8} {'gamma':>7} {'llc':>10} {'± std':>8} {'all draws':>10} {'gamma x10':>9} {'eps /2':>7} "
             f"{'drift':>6} {'dist':>7} {'/prior':>6}  verdict"]
    for r in rows:
        verdict_ = "-" if r["passed"] is None else "PASS" if r["passed"] else "fail: " + r["why"]
        lines.append(f"  {r['epsilon']:>8g} {r['gamma']:>7g} {r['llc_mean']:>10.4g} {r['llc_std']:>8.3g} {r['llc_all_draws']:>10.4g} "
                     f"{_pct(r['gamma_change']):>9} {_pct(r['epsilon_change']):>7} {_pct(r['drift']):>6} {r['distance']:>7.3g} "
                     f"{r['distance_ratio']:>6.2f}  {verdict_}")
    if chosen is None:
        lines.append("chosen: none; no candidate passed the rule, so --llc refuses every setting here without --llc-force")
    else:
        lines.append(f"chosen: ε {chosen['epsilon']:g}, γ {chosen['gamma']:g} (the passing candidate with the smallest γ, then "
                     f"the largest ε): LLC {chosen['llc_mean']:.4g} ± {chosen['llc_std']:.3g}; γ x{GAMMA_FACTOR:g} changes it by "
                     f"{chosen['gamma_change']:.0%}, ε x{EPSILON_FACTOR:g} by {chosen['epsilon_change']:.0%}, drift "
                     f"{chosen['drift']:.0%}, distance {chosen['distance_ratio']:.2f} of the localisation's alone")
    return "\n".join(lines)


def _pct(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else "inf" if math.isinf(x) else f"{x:.0%}"
