"""Run every analyser over every checkpoint of a run and cache the tables in ``RUN_DIR/analysis/``.

    python -m interp.analyze checkpoints/mod_add_p113           # analyse new checkpoints only
    python -m interp.analyze checkpoints/mod_add_p113 --force   # recompute everything

Files (read them with ``load_analysis``, plain ``csv`` or ``pandas.read_csv``; an empty cell is NaN):

``analysis/checkpoints.csv`` (``ANALYSIS_TABLE``), one row per checkpoint:
    step                  the checkpoint's training step
    train_loss, test_loss cross-entropy (float64 log-softmax) on each split
    train_acc, test_acc   accuracy on each split
    restricted_loss       test loss of the logits kept to the key-frequency directions plus the
                          per-class mean (SCIENCE.md section 2)
    excluded_loss         train loss of the logits with the key-frequency directions removed
    sum_sq_weights        sum of squares of every parameter
    param_norm            sqrt(sum_sq_weights)
    gini_W_E, gini_W_L    Gini coefficient of the p Fourier-component norms (const, cos 1, sin 1, ...)
                          of W_E[:p] and of W_L = W_out @ W_U
    logit_cos_sim         cosine similarity of the logits (centred over classes) with their best fit
                          by the ideal terms cos(w_k(a +- b - c)), k in the key frequencies
    correct_logit         mean over the train split of logit[correct] - mean_c logit[c]
    cgen_logit            the same from the C_gen (key-frequency) part of the logits
    cmem_logit            the same from the C_mem part (the rest); cgen_logit + cmem_logit = correct_logit
    cgen_frac             fraction of the squared norm of the class-centred logits (all inputs) in C_gen
    cgen_param_norm       norm of C_gen's parameters: the key-frequency components of W_E[:p] (token
                          axis), W_U and b_U (class axis), and the MLP neurons with >= 85% of their
                          variance in the key frequencies on the final checkpoint (analyses.efficiency)
    cmem_param_norm       norm of C_mem's: the other non-constant frequency components of the same
                          matrices and every other neuron; cgen^2 + cmem^2 = the attributed weights' norm^2
    shared_param_norm     norm of the parameters in neither circuit: attention, W_pos, the '=' row,
                          b_out, and the constant components; cgen^2 + cmem^2 + shared^2 = sum_sq_weights
    cgen_efficiency       cgen_logit / cgen_param_norm: C_gen's correct-class logit per unit of its own norm
    cmem_efficiency       cmem_logit / cmem_param_norm

``analysis/frequencies.csv`` (``FREQUENCY_TABLE``), one row per (checkpoint, frequency k = 1..(p-1)/2):
    step, freq, W_E_norm, W_L_norm (sqrt(cos^2 + sin^2) Fourier norms), excluded_loss (train loss
    with only that frequency's two directions removed; key frequencies only, empty for the others)

``analysis/summary.json`` (``SUMMARY_FILE``): ``key_frequencies`` (neuron clustering on the final
checkpoint), ``key_frequencies_step``, ``key_frequencies_embedding`` (W_E Fourier norm > max/4),
``neurons_per_frequency``, ``unclustered_neurons``, ``cmem_neurons`` (the neurons the circuit
split gives to C_mem; the others are C_gen's), ``phases`` (steps, with their definitions in ``phase_definitions``), ``cgen_more_efficient_from``
(the step from which cgen_efficiency >= cmem_efficiency at every later checkpoint, or null),
``fourier_applies`` and ``note``, ``steps_computed`` (by the last call).

Conventions: the key frequencies of the final checkpoint, and its split of the neurons between
C_gen and C_mem, are used for every checkpoint (as Nanda et al. do). mod_add uses the sum directions cos/sin(w(a + b)), mod_sub
the difference directions cos/sin(w(a - b)). For the other tasks (and even p) the Fourier columns
are left empty and the command prints one line saying why.

Phases (steps; the full wording is in ``PHASE_DEFINITIONS`` and in the summary):
    memorised                first train_acc >= 0.99
    circuit_formation_start  minimum of excluded_loss after 'memorised' (before the cleanup peak): where
                             it stops falling and starts to rise (Nanda et al.'s end of memorisation)
    cgen_overtakes_cmem      first cgen_logit >= cmem_logit after 'memorised'
    cleanup_start            peak of excluded_loss after 'memorised', once it has fallen 10% below it:
                             the end of its rise through circuit formation
    test_acc_0.9, grokked    first test_acc >= 0.9, >= 0.99
The excluded-loss markers are used because the paper describes the phases by it (falls in
memorisation, rises in circuit formation, stops rising in cleanup). On the p = 113 and p = 59 runs the
peak lands where test accuracy crosses ~0.8-0.9, somewhat later than the paper's boundary.

Incremental: a re-run analyses only checkpoints missing from the table. The key frequencies and
the neuron split are recomputed when the final checkpoint changed; if either differs from the
cached one, every row is recomputed (the key-frequency and circuit columns depend on them),
otherwise only the new rows.

Speed: one HookedTransformer is built and each checkpoint's tensors are loaded into it; the logits
of all inputs come from one batched ``interp.model.fast_logits`` call; everything else works on
those logits and the small weight matrices. One torch thread by default (``--threads``).

Python: ``analyze_run`` (compute and cache), ``load_analysis`` / ``load_frequency_table`` (read the
cache), ``analysis_throughput`` (checkpoints per second, for ``interp.bench``), ``detect_phases``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm.auto import tqdm

from analyses import efficiency, fourier, progress
from interp import runs
from interp.cli import Parser
from interp.model import build_model, fast_applies, fast_logits, hooked_logits, loss_fn
from interp.runs import Run, RunError

log = logging.getLogger(__name__)

ANALYSIS_TABLE = "checkpoints.csv"
FREQUENCY_TABLE = "frequencies.csv"
SUMMARY_FILE = "summary.json"
ANALYSIS_VERSION = 2  # bump when a column's meaning changes: cached tables are then recomputed

COLUMNS = [
    "step", "train_loss", "test_loss", "train_acc", "test_acc", "restricted_loss", "excluded_loss",
    "sum_sq_weights", "param_norm", "gini_W_E", "gini_W_L", "logit_cos_sim", "correct_logit",
    "cgen_logit", "cmem_logit", "cgen_frac", "cgen_param_norm", "cmem_param_norm", "shared_param_norm",
    "cgen_efficiency", "cmem_efficiency",
]
FREQUENCY_COLUMNS = ["step", "freq", "W_E_norm", "W_L_norm", "excluded_loss"]
INT_COLUMNS = {"step", "freq"}

PHASE_DEFINITIONS = {
    "memorised": "first checkpoint with train_acc >= 0.99 (the training set is fitted)",
    "circuit_formation_start": "checkpoint of the smallest excluded_loss between 'memorised' and 'cleanup_start': "
                               "the end of memorisation in Nanda et al.'s sense, where the excluded loss stops falling "
                               "and starts to rise (Fourier tasks only; none if the minimum is the last checkpoint)",
    "cgen_overtakes_cmem": "first checkpoint after 'memorised' with cgen_logit >= cmem_logit: the key-frequency "
                           "circuit contributes more of the correct-class logit than the rest (Fourier tasks only)",
    "cleanup_start": "checkpoint of the largest excluded_loss after 'memorised', provided a later checkpoint is below "
                     "0.9 times that peak: the excluded loss rises through circuit formation and stops rising when "
                     "weight decay starts removing the memorising part (Fourier tasks only; none while still rising)",
    "test_acc_0.9": "first checkpoint with test_acc >= 0.9",
    "grokked": "first checkpoint with test_acc >= 0.99",
}


# ---- one checkpoint ----------------------------------------------------------------------------
class _Analyser:
    """Holds the run's tensors, one reusable model and the key-frequency directions."""

    def __init__(self, run: Run, key_freqs: list[int], cmem_neurons: list[int]):
        cfg, data = run.config, run.dataset
        self.run, self.cfg, self.data = run, cfg, data
        with torch.no_grad():
            self.model = build_model(cfg)
        self.model.eval()
        self.fast = fast_applies(self.model)
        self.key_freqs = [int(k) for k in key_freqs]
        self.note = fourier.fourier_applies(cfg.task, cfg.p)
        if self.note is None:
            n = cfg.p * cfg.p
            grid = data.inputs[:, 0] * cfg.p + data.inputs[:, 1]
            if len(data.labels) != n or not torch.equal(grid, torch.arange(n)):
                raise RunError(f"{run.path}: inputs are not the row-major p^2 grid the Fourier analysers need")
            self.sign = fourier.DIRECTION_SIGN[cfg.task]
            self.dirs = fourier.directions(cfg.p, self.key_freqs, self.sign)
            self.gen_neurons = efficiency.gen_neuron_mask(cfg.d_mlp, cmem_neurons)

    def load(self, step: int) -> None:
        path = runs.ckpt_path(self.run.path, step)
        state, _ = runs.read_tensors(path)
        runs.load_state_dict_into(self.model, state, path)

    @torch.no_grad()
    def logits(self) -> torch.Tensor:
        x = self.data.inputs
        if self.fast:
            return fast_logits(self.model, x[:, 0], x[:, 1], self.cfg.eq_token)
        return hooked_logits(self.model, x)

    @torch.no_grad()
    def __call__(self, step: int) -> tuple[dict, list[dict]]:
        """The table row of checkpoint ``step`` and its frequency-table rows."""
        self.load(step)
        model, data = self.model, self.data
        logits = self.logits().to(torch.float64)
        row = {c: math.nan for c in COLUMNS}
        row["step"] = step
        for split, idx in (("train", data.train_idx), ("test", data.test_idx)):
            lg, y = logits[idx], data.labels[idx]
            row[f"{split}_loss"] = loss_fn(lg, y).item()
            row[f"{split}_acc"] = (lg.argmax(-1) == y).double().mean().item()
        row["sum_sq_weights"] = progress.sum_squared_weights(model)
        row["param_norm"] = math.sqrt(row["sum_sq_weights"])
        row["correct_logit"] = efficiency.centred_correct_logit(logits[data.train_idx], data.labels[data.train_idx]).mean().item()
        if self.note is not None:
            return row, []

        p, labels = self.cfg.p, data.labels
        row["restricted_loss"] = progress.restricted_loss(logits, labels, self.dirs, data.test_idx)
        row["excluded_loss"] = progress.excluded_loss(logits, labels, self.dirs, data.train_idx)
        we = fourier.embedding_fourier_norms(model.W_E, p)
        wl = fourier.unembed_fourier_norms(fourier.neuron_logit_map(model))
        row["gini_W_E"], row["gini_W_L"] = progress.gini(we), progress.gini(wl)
        row["logit_cos_sim"] = progress.ideal_logit_cosine(logits, self.key_freqs, self.sign)
        split = efficiency.circuit_logits(logits, labels, self.dirs, data.train_idx)
        row.update({k: v for k, v in split.items() if k != "correct_logit"})
        row.update(efficiency.circuit_param_norms(model, self.key_freqs, self.gen_neurons))
        row["cgen_efficiency"] = efficiency.efficiency(row["cgen_logit"], row["cgen_param_norm"])
        row["cmem_efficiency"] = efficiency.efficiency(row["cmem_logit"], row["cmem_param_norm"])

        per_key = progress.excluded_loss_per_frequency(logits, labels, data.train_idx, self.key_freqs, self.sign)
        excluded = {k: per_key[i].item() for i, k in enumerate(self.key_freqs)}
        we_f, wl_f = fourier.frequency_norms(we), fourier.frequency_norms(wl)
        freq_rows = [
            {"step": step, "freq": k, "W_E_norm": we_f[k - 1].item(), "W_L_norm": wl_f[k - 1].item(), "excluded_loss": excluded.get(k, math.nan)}
            for k in range(1, fourier.n_frequencies(p) + 1)
        ]
        return row, freq_rows


def key_frequency_summary(run: Run, step: int) -> dict:
    """Key frequencies of checkpoint ``step`` by neuron clustering and by the embedding-norm check."""
    model = runs.load_checkpoint(run.path, step, run.config)
    p = run.config.p
    acts = fourier.mlp_activations(model, p, run.config.eq_token)
    clusters = fourier.cluster_neurons(acts)
    clustered = clusters.freq > 0
    gen = efficiency.gen_neurons(acts, clusters.key_frequencies)
    return {
        "key_frequencies": clusters.key_frequencies,
        "key_frequencies_step": step,
        "key_frequencies_embedding": fourier.embedding_key_frequencies(model.W_E.detach(), p),
        "neurons_per_frequency": {str(k): n for k, n in clusters.neurons_per_frequency().items()},
        "unclustered_neurons": clusters.unclustered,
        "mean_frac_explained_clustered": clusters.frac_explained[clustered].mean().item() if clustered.any() else None,
        "cmem_neurons": torch.nonzero(~gen).flatten().tolist(),
    }


# ---- phases ------------------------------------------------------------------------------------
def _first(rows: list[dict], cond) -> int | None:
    return next((r["step"] for r in rows if cond(r)), None)


def detect_phases(rows: list[dict]) -> dict[str, int | None]:
    """Phase boundaries (steps; ``None`` where not reached or not applicable) as defined in ``PHASE_DEFINITIONS``."""
    rows = sorted(rows, key=lambda r: r["step"])
    memorised = _first(rows, lambda r: r["train_acc"] >= 0.99)
    formation = overtake = cleanup = None
    late = [r for r in rows if memorised is not None and r["step"] >= memorised and not math.isnan(r["excluded_loss"])]
    if late:
        peak = max(range(len(late)), key=lambda i: late[i]["excluded_loss"])
        if any(r["excluded_loss"] <= 0.9 * late[peak]["excluded_loss"] for r in late[peak + 1 :]):
            cleanup = late[peak]["step"]
        before = late[: peak + 1] if cleanup is not None else late
        low = min(range(len(before)), key=lambda i: before[i]["excluded_loss"])
        if low < len(before) - 1:
            formation = before[low]["step"]
        overtake = _first(late, lambda r: r["cgen_logit"] >= r["cmem_logit"])
    return {
        "memorised": memorised,
        "circuit_formation_start": formation,
        "cgen_overtakes_cmem": overtake,
        "cleanup_start": cleanup,
        "test_acc_0.9": _first(rows, lambda r: r["test_acc"] >= 0.9),
        "grokked": _first(rows, lambda r: r["test_acc"] >= 0.99),
    }


# ---- tables on disk ------------------------------------------------------------------------------
def _to_csv(rows: list[dict], columns: list[str]) -> str:
    def cell(v):
        if isinstance(v, float):
            return "" if math.isnan(v) else repr(v)
        return str(v)

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([cell(r[c]) for c in columns])
    return buf.getvalue()


def _from_csv(path: Path, columns: list[str]) -> list[dict]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != columns:
            raise ValueError(f"columns {reader.fieldnames} are not {columns}")
        return [{k: (int(v) if k in INT_COLUMNS else float(v) if v != "" else math.nan) for k, v in r.items()} for r in reader]


def load_analysis(run_dir: str | Path) -> tuple[list[dict], dict]:
    """The cached analysis of a run: ``(rows of checkpoints.csv, summary.json)``; empty cells are NaN.

    Raises:
        RunError: the run has not been analysed (``python -m interp.analyze RUN_DIR``) or the files are corrupt.
    """
    d = Path(run_dir) / runs.ANALYSIS_DIR
    try:
        summary = json.loads((d / SUMMARY_FILE).read_text())
        rows = _from_csv(d / ANALYSIS_TABLE, COLUMNS)
    except FileNotFoundError as e:
        raise RunError(f"{e.filename}: missing; run python -m interp.analyze {run_dir}") from None
    except (ValueError, KeyError) as e:
        raise RunError(f"{d}: corrupt analysis tables ({e}); rerun with --force") from None
    return rows, summary


def load_frequency_table(run_dir: str | Path) -> list[dict]:
    """Rows of ``frequencies.csv`` (empty for tasks the Fourier analysers do not apply to)."""
    path = Path(run_dir) / runs.ANALYSIS_DIR / FREQUENCY_TABLE
    if not path.is_file():
        return []
    try:
        return _from_csv(path, FREQUENCY_COLUMNS)
    except (ValueError, KeyError) as e:
        raise RunError(f"{path}: corrupt ({e}); rerun with --force") from None


def _load_cache(run_dir: Path) -> tuple[list[dict], list[dict], dict] | None:
    try:
        rows, summary = load_analysis(run_dir)
        freq_rows = load_frequency_table(run_dir)
    except RunError as e:
        if (run_dir / runs.ANALYSIS_DIR / SUMMARY_FILE).exists():
            log.warning("ignoring the cached analysis: %s", e)
        return None
    if summary.get("version") != ANALYSIS_VERSION:
        return None
    return rows, freq_rows, summary


# ---- the whole run ------------------------------------------------------------------------------
@contextmanager
def torch_threads(n: int | None):
    """Run the block with ``n`` torch intra-op threads (``None``: leave the setting), then restore it."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def analyze_run(
    run_dir: str | Path, force: bool = False, progress: bool = False, write: bool = True, threads: int | None = 1
) -> tuple[list[dict], dict]:
    """Analyse every checkpoint of a run not yet in its cached tables, and write the tables.

    Args:
        run_dir: a run directory written by ``python -m interp.train``.
        force: ignore the cache and recompute every checkpoint.
        progress: show a progress bar.
        write: write the tables into ``run_dir/analysis/`` (``False``: compute only, for benchmarks).
        threads: torch threads for the analysis (restored afterwards; ``None`` leaves them). One by
            default: the per-checkpoint products are small, a second thread gained nothing on the
            2-core machine and made the analysis 3-14x slower whenever another process was busy.
    Returns:
        ``(rows, summary)``: one dict per checkpoint (the columns of ``COLUMNS``) sorted by step, and
        the summary (see the module docstring); ``summary["steps_computed"]`` lists the checkpoints
        this call analysed.
    Raises:
        RunError: the run directory, its config, split or a checkpoint is missing or corrupt (nothing
        is written then).
    """
    with torch_threads(threads):
        return _analyze_run(Path(run_dir), force, progress, write)


def _analyze_run(run_dir: Path, force: bool, progress: bool, write: bool) -> tuple[list[dict], dict]:
    t0 = time.perf_counter()
    run = runs.load_run(run_dir)
    if not run.steps:
        raise RunError(f"{run_dir / runs.CKPT_DIR}: run has no checkpoints")
    cfg = run.config
    final = run.steps[-1]
    note = fourier.fourier_applies(cfg.task, cfg.p)

    cache = None if force else _load_cache(run_dir)
    summary = {"version": ANALYSIS_VERSION, "task": cfg.task, "p": cfg.p, "fourier_applies": note is None, "note": note}
    if note is None:
        keys = ("key_frequencies", "key_frequencies_step", "key_frequencies_embedding", "neurons_per_frequency",
                "unclustered_neurons", "mean_frac_explained_clustered", "cmem_neurons")
        if cache and cache[2].get("key_frequencies_step") == final and all(k in cache[2] for k in keys):
            summary.update({k: cache[2][k] for k in keys})
        else:
            summary.update(key_frequency_summary(run, final))
        if cache and any(cache[2].get(k) != summary[k] for k in ("key_frequencies", "cmem_neurons")):
            log.info("key frequencies or neuron clusters changed (key frequencies %s -> %s): recomputing every checkpoint",
                     cache[2].get("key_frequencies"), summary["key_frequencies"])
            cache = None
    key_freqs = summary.get("key_frequencies", [])

    have = {r["step"]: r for r in cache[0]} if cache else {}
    have_freq: dict[int, list[dict]] = {}
    for r in cache[1] if cache else []:
        have_freq.setdefault(r["step"], []).append(r)
    todo = [s for s in run.steps if s not in have]

    analyser = _Analyser(run, key_freqs, summary.get("cmem_neurons", []))
    for step in tqdm(todo, desc=f"analyse {run_dir.name}", unit="ckpt", disable=not progress, dynamic_ncols=True):
        have[step], have_freq[step] = analyser(step)

    rows = [have[s] for s in run.steps]
    freq_rows = [r for s in run.steps for r in have_freq.get(s, [])]
    summary["phases"] = detect_phases(rows)
    summary["cgen_more_efficient_from"] = efficiency.more_efficient_from(
        [r["step"] for r in rows], [r["cgen_efficiency"] for r in rows], [r["cmem_efficiency"] for r in rows])
    summary["phase_definitions"] = PHASE_DEFINITIONS
    summary["n_checkpoints"] = len(rows)
    summary["steps_computed"] = todo
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    if write:
        d = run_dir / runs.ANALYSIS_DIR
        runs.write_text(d / ANALYSIS_TABLE, _to_csv(rows, COLUMNS))
        if note is None:
            runs.write_text(d / FREQUENCY_TABLE, _to_csv(freq_rows, FREQUENCY_COLUMNS))
        runs.write_text(d / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    log.info("%s: analysed %d of %d checkpoints in %.1fs", run_dir, len(todo), len(rows), summary["seconds"])
    return rows, summary


def analysis_throughput(run_dir: str | Path, threads: int | None = 1) -> dict[str, float]:
    """Time a full analysis of ``run_dir`` (no cache, nothing written): checkpoints per second.

    Args:
        run_dir: a run directory.
        threads: torch threads, as in ``analyze_run``.
    Returns:
        ``{"n_checkpoints", "seconds", "checkpoints_per_s"}``; the seconds include loading the run and
        finding the key frequencies.
    """
    t = time.perf_counter()
    rows, _ = analyze_run(run_dir, force=True, write=False, threads=threads)
    dt = time.perf_counter() - t
    return {"n_checkpoints": len(rows), "seconds": round(dt, 3), "checkpoints_per_s": round(len(rows) / dt, 2)}


# ---- command line ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m interp.analyze", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory written by python -m interp.train")
    p.add_argument("--force", action="store_true", help="ignore the cached tables and recompute every checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1; a second one only helps on an idle machine)")
    return p


def _fmt(v) -> str:
    return "-" if v is None else str(v)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads {args.threads}: must be >= 1")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        rows, summary = analyze_run(args.run_dir, force=args.force, progress=not args.quiet, threads=args.threads)
    except RunError as e:
        print(f"python -m interp.analyze: error: {e}", file=sys.stderr)
        return 2
    out = args.run_dir / runs.ANALYSIS_DIR
    print(f"{args.run_dir}: analysed {len(summary['steps_computed'])} new of {len(rows)} checkpoints "
          f"in {summary['seconds']:.1f}s -> {out}/{ANALYSIS_TABLE}")
    if not summary["fourier_applies"]:
        print(f"note: {summary['note']}; only losses, accuracies and weight norms were computed")
    else:
        per = ", ".join(f"{k} ({n} neurons)" for k, n in summary["neurons_per_frequency"].items())
        print(f"key frequencies (step {summary['key_frequencies_step']}): {summary['key_frequencies']}: {per or 'none'}; "
              f"{len(summary['unclustered_neurons'])} neurons unclustered; embedding check: {summary['key_frequencies_embedding']}")
    ph = summary["phases"]
    print("phases: " + ", ".join(f"{k} {_fmt(v)}" for k, v in ph.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
