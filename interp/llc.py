"""The local learning coefficient (LLC) of checkpoints, estimated with ``devinterp``'s SGLD sampler.

    python -m interp.analyze RUN --llc                    # every 10th checkpoint and the last
    python -m interp.analyze RUN --llc --llc-every 5      # every 5th
    python -m interp.analyze RUN --llc-calibrate          # epsilon x n*beta grid on one checkpoint

Needs the optional extra ``llc`` (``pip install .[llc]``: devinterp and its dependencies). Without it
the flags exit 2 with one line saying so; nothing else in the project imports devinterp.

What is estimated (singular learning theory; Lau et al. 2023, as devinterp computes it): starting at
the checkpoint's weights ``w*``, ``chains`` SGLD chains draw ``w`` from the tempered, localised
posterior ``exp(-n beta L_n(w) - gamma/2 |w - w*|^2)``, where ``L_n`` is the training loss; then
``LLC = n beta (E_w[L_n(w)] - L_n(w*))``. devinterp's ``llc`` does the sampling (``sample``:
SGLD steps ``dw = -(epsilon/2)(n beta grad L + gamma (w - w*)) + N(0, epsilon)``) and averages the
loss over every step of every chain (burn-in included) against the initial loss of
``INIT_LOSS_BATCHES`` batches. Only the trainable parameters move (frozen biases stay 0).

The model and data: devinterp takes a HuggingFace ``Dataset`` of ``input_ids`` and a per-token loss
``(model, input_ids) -> [batch, seq - 1]``. Each training example is stored as the two ids
``[a * p + b, label]`` (so there is one "token" of loss per example) and ``loss_fn`` decodes them and
computes the float64 cross-entropy of ``interp.model.fast_logits`` (the fast forward; differentiable,
equal to ``HookedTransformer.forward``'s logits): this wraps devinterp, nothing of it is copied.

Hyper-parameters (``LLCConfig``; flags ``--llc-epsilon`` ...): ``epsilon`` (SGLD step size),
``n_beta`` (n times the inverse temperature), ``gamma`` (localisation), ``chains``, ``draws`` (SGLD
steps per chain; one draw per step), ``batch_size`` (examples per SGLD step, drawn from the training
set), ``seed`` (devinterp's ``init_seed``: chain ``i`` uses ``seed + i``, and all chains see the same
batches). The defaults were chosen with ``--llc-calibrate`` on the canonical run (see
docs/analyses/stability_mechanism_llc.md): a step size and temperature at which the loss traces rise
from the checkpoint's loss and level off within the draws, rather than drifting or blowing up.

Diagnostics (``analysis/llc.csv``, one row per checkpoint estimated):
    step, llc_mean, llc_std   mean and standard deviation over the chains (devinterp's ``llc_mean``, ``llc_std``)
    llc_per_chain             each chain's estimate, space-separated: chains that disagree show here
    init_loss                 the training loss at the checkpoint, mean of ``INIT_LOSS_BATCHES`` batches
    llc_late                  the estimate from the second half of the draws only (burn-in discarded)
    burn_in_draws             first draw at which the chains' mean loss trace has covered 90 % of its rise
                              from ``init_loss`` to the mean of its second half (``burn_in``); near
                              ``draws / 2`` or more: the chains had not settled, trust llc_late more, or
                              sample longer
    seconds                   wall time of this checkpoint's sampling
``analysis/llc.json``: the hyper-parameters, devinterp's version and every chain's loss trace per
step. A re-run with the same hyper-parameters only estimates checkpoints missing from the table;
other hyper-parameters start the table afresh.

``--llc-calibrate`` samples one checkpoint (``--llc-step``, default the last) for every epsilon in
``CALIBRATE_EPSILONS`` times every n*beta in ``CALIBRATE_NBETAS`` and writes
``analysis/llc_calibration.csv`` (one row per pair: llc_mean, llc_std, burn_in_draws, ``distance``,
the mean over chains of |w - w*| after the last step from devinterp's metrics, i.e. how far the
localised chains wandered from the checkpoint, and whether the trace stayed finite and above the
initial loss) and ``analysis/llc_calibration.html`` (the loss
traces, one panel per pair).
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
from interp.model import fast_logits

LLC_TABLE = "llc.csv"
LLC_FILE = "llc.json"
CALIBRATION_TABLE = "llc_calibration.csv"
CALIBRATION_FIGURE = "llc_calibration.html"
LLC_COLUMNS = ["step", "llc_mean", "llc_std", "llc_per_chain", "init_loss", "llc_late", "burn_in_draws", "seconds"]
INIT_LOSS_BATCHES = 16  # batches averaged for the checkpoint's own loss (more than one: a baseline, not one batch's noise)
BURN_IN_FRACTION = 0.9  # burn-in ends where the trace has covered this fraction of its rise to its late level
CALIBRATE_EPSILONS = (3e-5, 1e-4, 3e-4)
CALIBRATE_NBETAS = (100.0, 500.0, 2000.0)
DEFAULT_EVERY = 10


class LLCError(ValueError):
    """Bad LLC settings, or devinterp missing: the message is one line naming the flag or the fix."""


@dataclass(frozen=True)
class LLCConfig:
    """SGLD settings of one LLC estimate (see the module docstring)."""

    epsilon: float = 1e-4
    n_beta: float = 500.0
    gamma: float = 1000.0
    chains: int = 4
    draws: int = 150
    batch_size: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epsilon", "n_beta"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise LLCError(f"--llc-{name.replace('_', '')} {v!r}: must be a finite number > 0")
        if not (math.isfinite(self.gamma) and self.gamma >= 0):
            raise LLCError(f"--llc-gamma {self.gamma!r}: must be a finite number >= 0")
        for name, low in (("chains", 1), ("draws", 2), ("batch_size", 1)):
            if getattr(self, name) < low:
                raise LLCError(f"--llc-{name.replace('_', '-')} {getattr(self, name)!r}: must be >= {low}")


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


# ---- one checkpoint ------------------------------------------------------------------------------
class IdsDataset(torch.utils.data.Dataset):
    """A map-style dataset of ``{"input_ids": row}``: what devinterp's sampler reads from its dataset
    (it is typed as a HuggingFace ``Dataset``, whose per-row indexing is far slower)."""

    def __init__(self, ids: torch.Tensor):
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i]}


def training_dataset(run: runs.Run) -> IdsDataset:
    """The training split for devinterp: ``input_ids = [a * p + b, label]`` per example."""
    data, p = run.dataset, run.config.p
    idx = data.train_idx
    return IdsDataset(torch.stack([data.a[idx] * p + data.b[idx], data.train_labels], dim=1))


def make_loss_fn(p: int, eq_token: int):
    """devinterp's per-token loss for ``training_dataset``'s ids: float64 cross-entropy of ``fast_logits``, ``[batch, 1]``."""

    def loss_fn(model, input_ids: torch.Tensor) -> torch.Tensor:
        a, b, y = input_ids[:, 0] // p, input_ids[:, 0] % p, input_ids[:, 1]
        logits = fast_logits(model, a, b, eq_token)
        return F.cross_entropy(logits.to(torch.float64), y, reduction="none")[:, None].float()

    return loss_fn


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


@contextlib.contextmanager
def _quiet_devinterp():
    """devinterp's per-chain progress bars off and its warnings silenced, for the block."""
    from devinterp.slt import sampler

    trange = sampler.trange
    sampler.trange = lambda *a, **k: trange(*a, **{**k, "disable": True})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        sampler.trange = trange


def estimate(model, run: runs.Run, cfg: LLCConfig, dataset=None, metrics: bool = False) -> dict:
    """The LLC of ``model`` on ``run``'s training set.

    Args:
        model: the run's HookedTransformer with the checkpoint loaded (not changed: devinterp samples copies).
        run: the run (its split and ``p``).
        cfg: SGLD settings.
        dataset: ``training_dataset(run)`` if already built.
        metrics: also record devinterp's per-step metrics for ``distance`` (NaN without); they cost
            about a quarter of the sampling time, so only the calibration asks for them.
    Returns:
        The ``LLC_COLUMNS`` values but ``step`` (``llc_per_chain`` a list), and ``traces``: ``[chain][draw]`` losses.
    """
    require_devinterp()
    from devinterp.slt.llc import llc

    t0 = time.perf_counter()
    dataset = training_dataset(run) if dataset is None else dataset
    masks = {name: None for name, q in model.named_parameters() if q.requires_grad}
    with tempfile.TemporaryDirectory() as tmp, _quiet_devinterp():
        out = llc(model, dataset, {}, lr=cfg.epsilon, n_beta=cfg.n_beta, localization=cfg.gamma, num_chains=cfg.chains,
                  num_draws=cfg.draws, batch_size=min(cfg.batch_size, len(dataset)), num_init_loss_batches=INIT_LOSS_BATCHES,
                  init_seed=cfg.seed, param_masks=masks, loss_fn=make_loss_fn(run.config.p, run.config.eq_token),
                  device="cpu", save_metrics=metrics, output_path=Path(tmp) / "samples.zarr")
        traces = out.loss_trace.values.astype(float)  # [chain, step]
        init = float(out.init_loss)
        distance = math.nan
        if metrics:
            from xarray import open_datatree

            tree = open_datatree(str(Path(tmp) / "samples.zarr"), engine="zarr", consolidated=False)
            distance = float(tree.dataset["metrics_distance"].values[:, -1].mean())
    mean_trace = traces.mean(0).tolist()
    half = traces.shape[1] // 2
    late = cfg.n_beta * (float(traces[:, half:].mean()) - init)
    return {
        "llc_mean": float(out.llc_mean), "llc_std": float(out.llc_std),
        "llc_per_chain": [float(x) for x in out.llc_per_chain.values], "init_loss": init, "llc_late": late,
        "burn_in_draws": burn_in(mean_trace, init), "distance": distance, "seconds": round(time.perf_counter() - t0, 3),
        "traces": traces.tolist(),
    }


# ---- a run -------------------------------------------------------------------------------------
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
            rows.append({k: (int(v) if k in ("step", "burn_in_draws") else [float(x) for x in v.split()] if k == "llc_per_chain"
                             else float(v)) for k, v in r.items()})
    return rows, meta


def run_llc(run_dir: str | Path, cfg: LLCConfig, every: int = DEFAULT_EVERY, progress: bool = False, write: bool = True) -> list[dict]:
    """Estimate the LLC of the selected checkpoints of a run (those not yet in ``llc.csv`` with the same
    settings) and write ``llc.csv`` and ``llc.json``.

    Args:
        run_dir: a run directory.
        cfg: SGLD settings.
        every: estimate every ``every``-th checkpoint (and the last).
        progress: a progress bar over the checkpoints.
        write: write the files (``False``: compute only).
    Returns:
        The table's rows, sorted by step.
    Raises:
        LLCError: ``every`` < 1 or devinterp missing; RunError: the run is missing or corrupt.
    """
    from tqdm.auto import tqdm

    if every < 1:
        raise LLCError(f"--llc-every {every!r}: must be >= 1")
    require_devinterp()
    run_dir = Path(run_dir)
    run = runs.load_run(run_dir)
    if not run.steps:
        raise runs.RunError(f"{run_dir / runs.CKPT_DIR}: run has no checkpoints")
    settings = dataclasses.asdict(cfg)
    old_rows, meta = load_llc(run_dir)
    if meta.get("settings") != settings:
        old_rows, meta = [], {}
    have = {r["step"]: r for r in old_rows}
    traces = dict(meta.get("traces", {}))
    todo = [s for s in select_steps(run.steps, every) if s not in have]
    dataset = training_dataset(run)
    model = run.load_model(run.steps[0])
    for step in tqdm(todo, desc=f"LLC {run_dir.name}", unit="ckpt", disable=not progress, dynamic_ncols=True):
        state, _ = runs.read_tensors(runs.ckpt_path(run_dir, step))
        runs.load_state_dict_into(model, state, runs.ckpt_path(run_dir, step))
        est = estimate(model, run, cfg, dataset)
        traces[str(step)] = est.pop("traces")
        est.pop("distance")
        have[step] = {"step": step, **est}
    rows = [have[s] for s in sorted(have)]
    if write:
        d = run_dir / runs.ANALYSIS_DIR
        runs.write_text(d / LLC_TABLE, _table(rows))
        runs.write_text(d / LLC_FILE, json.dumps({"settings": settings, "devinterp": devinterp_version(),
                                                  "init_loss_batches": INIT_LOSS_BATCHES, "traces": traces}) + "\n")
    return rows


def calibrate(run_dir: str | Path, cfg: LLCConfig, step: int | None = None, epsilons=CALIBRATE_EPSILONS,
              n_betas=CALIBRATE_NBETAS, write: bool = True) -> tuple[list[dict], object]:
    """The epsilon x n*beta grid on one checkpoint: a table row per pair and the figure of the loss traces.

    Args:
        run_dir: a run directory.
        cfg: the other SGLD settings (gamma, chains, draws, batch size, seed).
        step: the checkpoint (``None``: the last).
        epsilons, n_betas: the grid.
        write: write ``llc_calibration.csv`` and ``llc_calibration.html`` into ``analysis/``.
    Returns:
        ``(rows, plotly figure)``; each row has ``epsilon, n_beta, llc_mean, llc_std, llc_late, burn_in_draws,
        distance, finite, above_init, seconds``.
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
    rows, traces = [], {}
    for eps in epsilons:
        for nb in n_betas:
            est = estimate(model, run, dataclasses.replace(cfg, epsilon=eps, n_beta=nb), dataset, metrics=True)
            tr = est.pop("traces")
            finite = all(math.isfinite(x) for chain in tr for x in chain)
            rows.append({"epsilon": eps, "n_beta": nb, **{k: v for k, v in est.items() if k != "llc_per_chain"},
                         "llc_per_chain": " ".join(f"{x:.4g}" for x in est["llc_per_chain"]),
                         "finite": finite, "above_init": finite and est["llc_mean"] > 0})
            traces[f"eps {eps:g}, nβ {nb:g}: LLC {est['llc_mean']:.3g}"] = tr
    fig = plots.llc_traces(traces, f"SGLD loss traces at step {step} of {run_dir.name} (γ {cfg.gamma:g}, {cfg.chains} chains)")
    if write:
        d = run_dir / runs.ANALYSIS_DIR
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        runs.write_text(d / CALIBRATION_TABLE, buf.getvalue())
        runs.write_text(d / CALIBRATION_FIGURE, fig.to_html(include_plotlyjs=True, full_html=True))
    return rows, fig


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
    return (f"LLC (devinterp {meta.get('devinterp')}, SGLD ε {s.get('epsilon')}, nβ {s.get('n_beta')}, γ {s.get('gamma')}, "
            f"{s.get('chains')} chains × {s.get('draws')} draws, batch {s.get('batch_size')}, training set; error bars: std over "
            f"chains) over {len(llc_rows)} checkpoints: {first['llc_mean']:.3g} at step {fmt_step(first['step'])}, highest "
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
    g.add_argument("--llc", action="store_true", help="also estimate the LLC of every --llc-every-th checkpoint (analysis/llc.csv)")
    g.add_argument("--llc-every", type=int, default=None, metavar="N", help=f"with --llc: every N-th checkpoint and the last (default {DEFAULT_EVERY})")
    g.add_argument("--llc-calibrate", action="store_true", help="sample one checkpoint over an epsilon x n*beta grid (analysis/llc_calibration.*)")
    g.add_argument("--llc-step", type=int, default=None, metavar="STEP", help="with --llc-calibrate: the checkpoint (default: the last)")
    g.add_argument("--llc-epsilon", type=float, default=d.epsilon, help=f"SGLD step size (default {d.epsilon:g})")
    g.add_argument("--llc-nbeta", type=float, default=d.n_beta, help=f"n times the inverse temperature (default {d.n_beta:g})")
    g.add_argument("--llc-gamma", type=float, default=d.gamma, help=f"localisation strength (default {d.gamma:g})")
    g.add_argument("--llc-chains", type=int, default=d.chains, help=f"SGLD chains (default {d.chains})")
    g.add_argument("--llc-draws", type=int, default=d.draws, help=f"SGLD steps per chain (default {d.draws})")
    g.add_argument("--llc-batch-size", type=int, default=d.batch_size, help=f"training examples per SGLD step (default {d.batch_size})")
    g.add_argument("--llc-seed", type=int, default=d.seed, help=f"devinterp's init_seed (default {d.seed})")


def config_from_args(args) -> LLCConfig | None:
    """The ``LLCConfig`` the flags ask for (``None`` when neither --llc nor --llc-calibrate is given).

    Raises:
        LLCError: a bad value, a flag without the one it needs, or devinterp missing (one line).
    """
    if args.llc_every is not None and not args.llc:
        raise LLCError(f"--llc-every {args.llc_every}: needs --llc")
    if args.llc_step is not None and not args.llc_calibrate:
        raise LLCError(f"--llc-step {args.llc_step}: needs --llc-calibrate")
    if not (args.llc or args.llc_calibrate):
        return None
    if args.llc_every is not None and args.llc_every < 1:
        raise LLCError(f"--llc-every {args.llc_every}: must be >= 1")
    cfg = LLCConfig(epsilon=args.llc_epsilon, n_beta=args.llc_nbeta, gamma=args.llc_gamma, chains=args.llc_chains,
                    draws=args.llc_draws, batch_size=args.llc_batch_size, seed=args.llc_seed)
    require_devinterp()
    return cfg


def main_part(args, cfg: LLCConfig) -> None:
    """What ``python -m interp.analyze RUN --llc / --llc-calibrate`` does after the analysis, and prints."""
    out = Path(args.run_dir) / runs.ANALYSIS_DIR
    if args.llc:
        rows = run_llc(args.run_dir, cfg, every=args.llc_every or DEFAULT_EVERY, progress=not args.quiet)
        secs = sum(r["seconds"] for r in rows) / len(rows)
        print(f"LLC of {len(rows)} checkpoints ({secs:.1f} s per checkpoint, {cfg.chains} chains x {cfg.draws} draws) -> {out / LLC_TABLE}")
        for r in rows:
            print(f"  step {r['step']:>7}  llc {r['llc_mean']:9.4g} ± {r['llc_std']:<8.3g} late {r['llc_late']:9.4g}  "
                  f"burn-in {r['burn_in_draws']:>4} draws  init loss {r['init_loss']:.3g}")
    if args.llc_calibrate:
        rows, _ = calibrate(args.run_dir, cfg, step=args.llc_step)
        print(f"LLC calibration -> {out / CALIBRATION_TABLE}, {out / CALIBRATION_FIGURE}")
        for r in rows:
            print(f"  eps {r['epsilon']:<8g} n*beta {r['n_beta']:<6g} llc {r['llc_mean']:9.4g} ± {r['llc_std']:<8.3g} "
                  f"late {r['llc_late']:9.4g} burn-in {r['burn_in_draws']:>4}  distance {r['distance']:.3g}  "
                  f"{'ok' if r['above_init'] else 'NOT above the initial loss or not finite'}")
