"""Run every analyser over every checkpoint of a run and cache the tables in ``RUN_DIR/analysis/``.

    python -m interp.analyze checkpoints/mod_add_p113           # analyse new checkpoints only
    python -m interp.analyze checkpoints/mod_add_p113 --force   # recompute everything
    python -m interp.analyze checkpoints/mod_add_p113 --readme  # print the README's results block
    python -m interp.analyze checkpoints/s4 --irrep standard    # a group run: one irrep's rows of irreps.csv
    python -m interp.analyze checkpoints/mod_add_p113 --llc     # also the LLC (devinterp; interp.llc)

Files (read them with ``load_analysis``, plain ``csv`` or ``pandas.read_csv``; an empty cell is NaN):

``analysis/checkpoints.csv`` (``ANALYSIS_TABLE``), one row per checkpoint:
    step                  the checkpoint's training step
    train_loss, test_loss cross-entropy (float64 log-softmax) on each split
    train_acc, test_acc   accuracy on each split
    restricted_loss       test loss of the restricted logits (see "Restricted and excluded loss")
    excluded_loss         train loss of the excluded logits
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
    softmax_collapse_frac fraction of the train split whose float32 softmax gives the correct class a
                          probability of exactly 1 (no gradient left; Prieto et al. 2025; analyses.stability)
    zero_loss_frac        fraction of the train split whose float32 cross-entropy is exactly 0
    min_train_margin      minimum over the train split of the correct logit minus the largest other
    loss_f32_minus_f64    mean train cross-entropy in float32 minus the same in float64 (same float32 logits)
    grad_symmetricity     mean cosine between the gradients of logit c with respect to the embedding
                          vectors of a and of b, over 256 triples (a, b, c) drawn with seed 0 (Zhong et
                          al. 2023; analyses.mechanism): ~1 pizza, lower clock (their medians: 0.99 / 0.56)
    distance_irrelevance  mean over d = a - b of the std of the correct logit at that difference over its
                          overall std: ~1 clock, small pizza (their medians: 0.80 / 0.28)
    circularity           mean over the top 4 principal components of W_E[:p] of the largest fraction of
                          the component in one frequency (1: circles)
                          The three mechanism columns are mod_add only (odd p); for the other tasks they
                          are empty and summary.json's ``mechanism_note`` says why.

``analysis/frequencies.csv`` (``FREQUENCY_TABLE``), one row per (checkpoint, frequency k = 1..(p-1)/2):
    step, freq, W_E_norm, W_L_norm (sqrt(cos^2 + sin^2) Fourier norms), excluded_loss (train loss
    with only that frequency's two directions removed; key frequencies only, empty for the others)

``analysis/llc.csv`` and ``llc.json`` (only with ``--llc``; ``interp.llc``, optional extra ``llc``): the local
learning coefficient of every ``--llc-every``-th checkpoint (llc_mean after the burn-in, llc_std over SGLD
chains, per-chain values, n_beta, whether the calibration passed the settings) with the sampler's settings and
loss traces; ``--llc-calibrate`` writes ``llc_calibration.csv`` / ``.json`` / ``.html`` (an epsilon x gamma grid
on one checkpoint judged by the stability rule; ``--llc`` uses the chosen point and refuses settings that did
not pass unless ``--llc-force``).

``analysis/summary.json`` (``SUMMARY_FILE``): ``key_frequencies`` (neuron clustering on the final
checkpoint, ``analyses.fourier``), ``key_frequencies_step``, ``key_frequencies_embedding`` (W_E
Fourier norm > max/4), ``neurons_per_frequency``, ``unclustered_neurons``, ``dead_neurons``,
``small_clusters`` (frequencies with fewer than ``min_cluster_neurons`` neurons: not key),
``cluster_threshold``, ``mechanism_note`` (why the clock/pizza columns are empty, or null), the stability of the set (``key_frequencies_by_threshold`` at thresholds
0.8 / 0.85 / 0.9, ``key_frequencies_by_step`` on the last three checkpoints, ``key_frequencies_stable``
if all of them agree), ``phases`` (steps, with their definitions in ``phase_definitions`` and, where
Fourier phases are left out, the reason in ``phases_note``), ``fourier_applies`` and ``note``,
``cmem_neurons`` (the neurons the circuit split gives to C_mem; the others
are C_gen's), ``cgen_more_efficient_from`` (the step from which cgen_efficiency >= cmem_efficiency at
every later checkpoint, or null), ``steps_computed`` (by the last call) and ``tables``: the SHA-256 of each table written with it.
``summary.json`` is written last and read as the manifest of the set: tables whose hash does not
match it (left by an analysis that was interrupted between files) are not used, and a re-run
recomputes them.

Restricted and excluded loss (Nanda et al. 2023): treat each logit column (one output class) as a
function over the p^2 inputs and project it onto the key-frequency directions (``analyses.fourier``:
cos/sin(w_k(a + b)) for each key frequency k, w_k = 2 pi k / p; orthonormal and orthogonal to the
constant). The *restricted* logits keep only that projection plus the per-class mean over inputs;
their loss on the test split shows how well the Fourier circuit alone already generalises. The
*excluded* logits are the logits minus the projection; their loss on the train split shows how
much the model still fits the training set without the circuit (memorisation).

Conventions: the key frequencies of the final checkpoint, and its split of the neurons between
C_gen and C_mem, are used for every checkpoint (as Nanda et al. do). mod_add uses the sum directions cos/sin(w(a + b)), mod_sub
the difference directions cos/sin(w(a - b)). For the other tasks (and even p) the Fourier columns
are left empty and the command prints one line saying why.

Groups (``interp.group_analysis``, whose docstring has the details): ``mod_mul`` and ``mod_div`` with a
prime p are analysed in the *log basis* (Z_{p-1} in discrete-log coordinates, over the (p - 1)^2 pairs of
non-zero residues: zero has no logarithm), the group tasks ``s4``/``s5``/``a5`` in the *irreps basis*
(``analyses.groups``). Every column above is then filled with "key frequency" read as "key irrep"
(a frequency of Z_{p-1} in the log basis) and the projections onto its isotypic directions; Gini is
over the norms of the element rows of W_E and element columns of W_L in the isotypic basis.
``analysis/irreps.csv`` (``group_analysis.IRREP_TABLE``) replaces ``frequencies.csv``: one row per
(checkpoint, irrep) with ``step, irrep, dim, W_E_frac, W_U_frac, W_L_frac, mlp_frac, excluded_loss``.
The summary says which basis was used (``basis``: ``fourier`` is absent, ``log`` or ``irreps``, with
``basis_note``) and holds the key irreps (``key_irreps``, ``key_irrep_names``, ...).

Phases (steps; the full wording is in ``PHASE_DEFINITIONS`` and in the summary):
    memorised                first train_acc >= 0.99
    circuit_formation_start  the excluded loss starts its rise: last checkpoint before the peak at
                             which the smoothed log excluded loss is within 10% of its rise from its
                             minimum (after 'memorised') to its peak (a rise of at least 2x)
    cgen_overtakes_cmem      first cgen_logit >= cmem_logit after 'memorised'
    cleanup_start            peak of the smoothed excluded loss after 'memorised', once it has fallen
                             10% below it: the end of its rise through circuit formation
    test_acc_0.9, grokked    first test_acc >= 0.9, >= 0.99
"Smoothed" is a centred running mean of log10(excluded_loss) over 5 checkpoints (fewer at the ends
of the run): after memorisation the excluded loss can sit near 1e-3, where checkpoint-to-checkpoint
noise is large on a log scale, so neither its raw minimum nor its raw peak is used. The
excluded-loss markers follow Nanda et al., who describe the phases by it (falls in memorisation,
rises in circuit formation, stops rising in cleanup); they read their boundaries off the curves
(memorisation ends at 1.4k steps, cleanup starts at 9.4k for their p = 113 run) rather than by a
rule, so the steps here need not match theirs, even for the same curves. The three Fourier phases
are only defined when key frequencies were found: without them the excluded loss is just the train
loss and C_gen is empty, so they are ``None`` and ``phases_note`` says why.

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
import hashlib
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

from analyses import efficiency, fourier, mechanism, progress, stability
from interp import group_analysis, runs
from interp.cli import Parser
from interp.config import ConfigError
from interp.device import resolve
from interp.model import build_model, criterion, fast_applies, fast_logits, hooked_logits, to_device
from interp.runs import Run, RunError
from interp.speed import flush_denormals
from interp.text import fmt_num, fmt_set, fmt_step
from interp.train import split_metrics

log = logging.getLogger(__name__)

ANALYSIS_TABLE = "checkpoints.csv"
FREQUENCY_TABLE = "frequencies.csv"
SUMMARY_FILE = "summary.json"
ANALYSIS_VERSION = 5  # bump when a column's meaning changes: cached tables are then recomputed

COLUMNS = [
    "step", "train_loss", "test_loss", "train_acc", "test_acc", "restricted_loss", "excluded_loss",
    "sum_sq_weights", "param_norm", "gini_W_E", "gini_W_L", "logit_cos_sim", "correct_logit",
    "cgen_logit", "cmem_logit", "cgen_frac", "cgen_param_norm", "cmem_param_norm", "shared_param_norm",
    "cgen_efficiency", "cmem_efficiency",
    *stability.COLUMNS,  # analyses.stability
    *mechanism.COLUMNS,  # analyses.mechanism
]
FREQUENCY_COLUMNS = ["step", "freq", "W_E_norm", "W_L_norm", "excluded_loss"]
INT_COLUMNS = {"step", "freq", *group_analysis.INT_COLUMNS}

SMOOTH_CHECKPOINTS = 5  # window of the centred running mean of log10(excluded_loss)
RISE_FRACTION = 0.1  # circuit formation starts where the smoothed rise has not yet covered this fraction
MIN_RISE = math.log10(2)  # a smoothed rise smaller than 2x is not called a rise
CLEANUP_DROP = 0.9  # the peak counts once a later smoothed value is this fraction of it or less
STABILITY_THRESHOLDS = (0.8, 0.85, 0.9)  # clustering thresholds the key frequencies are also found at
STABILITY_CHECKPOINTS = 3  # ... and the last checkpoints they are found on

PHASE_DEFINITIONS = {
    "memorised": "first checkpoint with train_acc >= 0.99 (the training set is fitted)",
    "circuit_formation_start": "the excluded loss starts to rise: the last checkpoint before its peak at which the smoothed "
                               "log excluded loss is still within 10% of its rise from its minimum after 'memorised' to "
                               "its peak (none if that rise is less than 2x). Smoothed: a centred running mean of "
                               "log10(excluded_loss) over 5 checkpoints. Nanda et al. put the end of memorisation at 1.4k "
                               "steps for their p = 113 run, read off the same curve (Fourier tasks with key frequencies only)",
    "cgen_overtakes_cmem": "first checkpoint after 'memorised' with cgen_logit >= cmem_logit: the key-frequency "
                           "circuit contributes more of the correct-class logit than the rest (Fourier tasks with key "
                           "frequencies only)",
    "cleanup_start": "checkpoint of the peak of the smoothed excluded loss after 'memorised', provided a later smoothed "
                     "value is at most 0.9 times the peak: the excluded loss rises through circuit formation and stops "
                     "rising when weight decay starts removing the memorising part. Nanda et al. start cleanup at 9.4k "
                     "steps for their p = 113 run, read off the curves (Fourier tasks with key frequencies only; none "
                     "while still rising)",
    "test_acc_0.9": "first checkpoint with test_acc >= 0.9",
    "grokked": "first checkpoint with test_acc >= 0.99",
}
FOURIER_PHASES = ("circuit_formation_start", "cgen_overtakes_cmem", "cleanup_start")


# ---- one checkpoint ----------------------------------------------------------------------------
class _Analyser:
    """Holds the run's tensors, one reusable model and the key-frequency directions."""

    def __init__(self, run: Run, key_freqs: list[int], cmem_neurons: list[int], device: str | torch.device = "cpu"):
        cfg, data = run.config, run.dataset
        self.run, self.cfg, self.data = run, cfg, data
        with torch.no_grad():
            self.model = build_model(cfg)
        self.model.eval()
        self.device = torch.device(device)  # where the forward over all inputs runs (the analysers stay on the CPU)
        self.dev_model = self.model if self.device.type == "cpu" else to_device(build_model(cfg), self.device).eval()
        self.fast = fast_applies(self.model)
        self.key_freqs = [int(k) for k in key_freqs]
        self.note = fourier.fourier_applies(cfg.task, cfg.p)
        view = group_analysis.view_for(cfg) if self.note is not None else None
        self.group = None if view is None else group_analysis.GroupAnalyser(run, view, key_freqs, cmem_neurons)
        if self.note is None:
            n = cfg.p * cfg.p
            grid = data.inputs[:, 0] * cfg.p + data.inputs[:, 1]
            if len(data.labels) != n or not torch.equal(grid, torch.arange(n)):
                raise RunError(f"{run.path}: inputs are not the row-major p^2 grid the Fourier analysers need")
            self.sign = fourier.DIRECTION_SIGN[cfg.task]
            self.dirs = fourier.directions(cfg.p, self.key_freqs, self.sign)
            self.gen_neurons = efficiency.gen_neuron_mask(cfg.d_mlp, cmem_neurons)
        self.mechanism_note = mechanism.mechanism_applies(cfg.task, cfg.p)
        if self.mechanism_note is None:
            self.triples = mechanism.sample_triples(cfg.p)
            self.logit_fn = mechanism.transformer_logit_fn(self.model, cfg.eq_token)

    def load(self, step: int) -> None:
        path = runs.ckpt_path(self.run.path, step)
        state, _ = runs.read_tensors(path)
        runs.load_state_dict_into(self.model, state, path)
        if self.dev_model is not self.model:
            self.dev_model.load_state_dict(self.model.state_dict())

    @torch.no_grad()
    def logits(self) -> torch.Tensor:
        x = self.data.inputs.to(self.device)
        if self.fast:
            return fast_logits(self.dev_model, x[:, 0], x[:, 1], self.cfg.eq_token).cpu()
        return hooked_logits(self.dev_model, x).cpu()

    @torch.no_grad()
    def __call__(self, step: int) -> tuple[dict, list[dict]]:
        """The table row of checkpoint ``step`` and its frequency-table rows."""
        self.load(step)
        model, data = self.model, self.data
        logits32 = self.logits()
        logits = logits32.to(torch.float64)
        row = {c: math.nan for c in COLUMNS}
        row["step"] = step
        row.update(stability.stability_measures(logits32[data.train_idx], data.train_labels))
        if self.mechanism_note is None:
            p = self.cfg.p
            row["grad_symmetricity"] = mechanism.grad_symmetricity(self.logit_fn, model.W_E[:p], self.triples)
            correct = logits.gather(-1, data.labels[:, None]).reshape(p, p)
            row["distance_irrelevance"] = mechanism.distance_irrelevance(correct)
            row["circularity"] = mechanism.circularity(model.W_E[:p])
        row.update(split_metrics(logits, data, criterion(self.cfg.loss)))
        row["sum_sq_weights"] = progress.sum_squared_weights(model)
        row["param_norm"] = math.sqrt(row["sum_sq_weights"])
        row["correct_logit"] = efficiency.centred_correct_logit(logits[data.train_idx], data.labels[data.train_idx]).mean().item()
        if self.group is not None:  # log basis (mod_mul, mod_div) or irreps (group tasks): interp.group_analysis
            return row, self.group(model, row, logits)
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
    """Key frequencies of checkpoint ``step`` by neuron clustering and by the embedding-norm check,
    with the counts of unclustered, dead and small-cluster neurons and the stability of the set
    across ``STABILITY_THRESHOLDS`` and the last ``STABILITY_CHECKPOINTS`` checkpoints up to ``step``."""
    p, eq = run.config.p, run.config.eq_token
    model = runs.load_checkpoint(run.path, step, run.config)
    acts = fourier.mlp_activations(model, p, eq)
    fracs, variance = fourier.neuron_spectrum(acts)
    clusters = fourier.assign_clusters(fracs, variance)
    clustered = clusters.freq > 0
    gen = efficiency.gen_neurons(acts, clusters.key_frequencies)
    by_threshold = {f"{t:g}": fourier.assign_clusters(fracs, variance, t).key_frequencies for t in STABILITY_THRESHOLDS}
    by_step = {}
    for s in [s for s in run.steps if s <= step][-STABILITY_CHECKPOINTS:]:
        m = model if s == step else runs.load_checkpoint(run.path, s, run.config)
        by_step[str(s)] = fourier.cluster_neurons(fourier.mlp_activations(m, p, eq)).key_frequencies
    sets = [*by_threshold.values(), *by_step.values()]
    return {
        "key_frequencies": clusters.key_frequencies,
        "key_frequencies_step": step,
        "key_frequencies_embedding": fourier.embedding_key_frequencies(model.W_E.detach(), p),
        "neurons_per_frequency": {str(k): n for k, n in clusters.neurons_per_frequency().items()},
        "unclustered_neurons": clusters.unclustered,
        "dead_neurons": clusters.dead,
        "small_clusters": {str(k): len(v) for k, v in clusters.small_clusters.items()},
        "min_cluster_neurons": clusters.min_neurons,
        "cluster_threshold": clusters.threshold,
        "mean_frac_explained_clustered": clusters.frac_explained[clustered].mean().item() if clustered.any() else None,
        "key_frequencies_by_threshold": by_threshold,
        "key_frequencies_by_step": by_step,
        "key_frequencies_stable": all(x == clusters.key_frequencies for x in sets),
        "cmem_neurons": torch.nonzero(~gen).flatten().tolist(),
    }


KEY_FREQUENCY_FIELDS = ("key_frequencies", "key_frequencies_step", "key_frequencies_embedding", "neurons_per_frequency",
                        "unclustered_neurons", "dead_neurons", "small_clusters", "min_cluster_neurons", "cluster_threshold",
                        "mean_frac_explained_clustered", "key_frequencies_by_threshold", "key_frequencies_by_step",
                        "key_frequencies_stable", "cmem_neurons")  # what key_frequency_summary returns, cached in summary.json


# ---- phases ------------------------------------------------------------------------------------
def _first(rows: list[dict], cond) -> int | None:
    return next((r["step"] for r in rows if cond(r)), None)


def smoothed_log10(values: list[float], window: int = SMOOTH_CHECKPOINTS) -> list[float]:
    """Centred running mean of ``log10(values)`` over ``window`` points (fewer at both ends)."""
    logs = [math.log10(max(v, 1e-300)) for v in values]
    h = window // 2
    return [sum(logs[max(0, i - h): i + h + 1]) / len(logs[max(0, i - h): i + h + 1]) for i in range(len(logs))]


def detect_phases(rows: list[dict], fourier_phases: bool = True) -> dict[str, int | None]:
    """Phase boundaries (steps; ``None`` where not reached or not applicable) as defined in ``PHASE_DEFINITIONS``.

    Args:
        rows: the analysis table (``step``, ``train_acc``, ``test_acc``, ``excluded_loss``,
            ``cgen_logit``, ``cmem_logit``), in any order.
        fourier_phases: whether key frequencies were found; without them the three Fourier phases
            (``FOURIER_PHASES``) are ``None``.
    """
    rows = sorted(rows, key=lambda r: r["step"])
    memorised = _first(rows, lambda r: r["train_acc"] >= 0.99)
    formation = overtake = cleanup = None
    late = [r for r in rows if memorised is not None and r["step"] >= memorised and not math.isnan(r["excluded_loss"])]
    if fourier_phases and late:
        s = smoothed_log10([r["excluded_loss"] for r in late])
        peak = max(range(len(s)), key=s.__getitem__)
        if any(v <= s[peak] + math.log10(CLEANUP_DROP) for v in s[peak + 1:]):
            cleanup = late[peak]["step"]
        low = min(range(peak + 1), key=s.__getitem__)
        rise = s[peak] - s[low]
        if rise >= MIN_RISE:
            level = s[low] + RISE_FRACTION * rise
            formation = late[max(i for i in range(low, peak + 1) if s[i] <= level)]["step"]
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


def _parse_csv(text: str, columns: list[str]) -> list[dict]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if reader.fieldnames != columns:
        raise ValueError(f"columns {reader.fieldnames} are not {columns}")
    return [{k: (int(v) if k in INT_COLUMNS else float(v) if v != "" else math.nan) for k, v in r.items()} for r in reader]


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _read_table(d: Path, name: str, columns: list[str], summary: dict) -> list[dict]:
    """Rows of table ``name``, if it is the one ``summary`` (the manifest) was written with."""
    text = (d / name).read_text()
    want = summary.get("tables", {}).get(name)
    if want != _sha256(text):
        raise RunError(f"{d / name}: does not match {SUMMARY_FILE} (left by an interrupted or older analysis); "
                       f"rerun python -m interp.analyze {d.parent}")
    try:
        return _parse_csv(text, columns)
    except (ValueError, KeyError) as e:
        raise RunError(f"{d / name}: corrupt ({e}); rerun python -m interp.analyze {d.parent} --force") from None


def _read_summary(d: Path) -> dict:
    try:
        return json.loads((d / SUMMARY_FILE).read_text())
    except FileNotFoundError as e:
        raise RunError(f"{e.filename}: missing; run python -m interp.analyze {d.parent}") from None
    except ValueError as e:
        raise RunError(f"{d / SUMMARY_FILE}: corrupt ({e}); rerun python -m interp.analyze {d.parent} --force") from None


def load_analysis(run_dir: str | Path) -> tuple[list[dict], dict]:
    """The cached analysis of a run: ``(rows of checkpoints.csv, summary.json)``; empty cells are NaN.

    Raises:
        RunError: the run has not been analysed (``python -m interp.analyze RUN_DIR``), or the files
        are corrupt or do not belong together (``summary.json`` lists the hash of each table).
    """
    d = Path(run_dir) / runs.ANALYSIS_DIR
    summary = _read_summary(d)
    try:
        rows = _read_table(d, ANALYSIS_TABLE, COLUMNS, summary)
    except FileNotFoundError as e:
        raise RunError(f"{e.filename}: missing; run python -m interp.analyze {run_dir}") from None
    return rows, summary


def load_frequency_table(run_dir: str | Path) -> list[dict]:
    """Rows of ``frequencies.csv`` (empty for tasks the Fourier analysers do not apply to).

    Raises:
        RunError: the table is corrupt or was not written with the run's ``summary.json``.
    """
    d = Path(run_dir) / runs.ANALYSIS_DIR
    if not (d / FREQUENCY_TABLE).is_file():
        return []
    return _read_table(d, FREQUENCY_TABLE, FREQUENCY_COLUMNS, _read_summary(d))


def load_irrep_table(run_dir: str | Path) -> list[dict]:
    """Rows of ``irreps.csv`` (``interp.group_analysis``; empty for tasks that are not analysed as a group).

    Raises:
        RunError: the table is corrupt or was not written with the run's ``summary.json``.
    """
    d = Path(run_dir) / runs.ANALYSIS_DIR
    if not (d / group_analysis.IRREP_TABLE).is_file():
        return []
    return _read_table(d, group_analysis.IRREP_TABLE, group_analysis.IRREP_COLUMNS, _read_summary(d))


def _load_cache(run_dir: Path) -> tuple[list[dict], list[dict], dict] | None:
    d = run_dir / runs.ANALYSIS_DIR
    if not (d / SUMMARY_FILE).exists():
        return None
    try:
        summary = _read_summary(d)
        if summary.get("version") != ANALYSIS_VERSION:
            return None
        return load_analysis(run_dir)[0], load_frequency_table(run_dir) or load_irrep_table(run_dir), summary
    except RunError as e:
        log.warning("ignoring the cached analysis: %s", e)
        return None


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


def check_analysable(run: Run) -> None:
    """Refuse (``RunError``) a run whose model is not the modular-arithmetic transformer these
    analyses are about (the digits MLP): its losses, accuracies and weight norm are in its metrics."""
    cfg = run.config
    if cfg.model_kind != "transformer":
        raise RunError(f"{run.path}: a {cfg.task} run trains the {cfg.model_kind.upper()}, not the modular-arithmetic transformer "
                       f"that this analysis is about; its losses, accuracies and weight norm are in {runs.METRICS_FILE}")
    if cfg.n_layers != 1 or cfg.normalization != "none":
        raise RunError(f"{run.path}: a {cfg.n_layers}-layer model with normalization {cfg.normalization!r}; these analysers "
                       f"(Fourier, circuits, efficiency) take the 1-layer model without LayerNorm; its losses, accuracies "
                       f"and weight norm are in {runs.METRICS_FILE}")


def analyze_run(
    run_dir: str | Path, force: bool = False, progress: bool = False, write: bool = True, threads: int | None = 1,
    device: str | torch.device = "cpu",
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
        device: where the model's forward over every input runs (the analysers' products, which
            are small, stay on the CPU).
    Returns:
        ``(rows, summary)``: one dict per checkpoint (the columns of ``COLUMNS``) sorted by step, and
        the summary (see the module docstring); ``summary["steps_computed"]`` lists the checkpoints
        this call analysed.
    Raises:
        RunError: the run directory, its config, split or a checkpoint is missing or corrupt, or the
        run is not of the transformer (``check_analysable``); nothing is written then.
    """
    with torch_threads(threads), flush_denormals():  # interp.speed: denormals slow every thread they reach
        return _analyze_run(Path(run_dir), force, progress, write, torch.device(device))


def _analyze_run(run_dir: Path, force: bool, progress: bool, write: bool, device: torch.device) -> tuple[list[dict], dict]:
    t0 = time.perf_counter()
    run = runs.load_run(run_dir)
    check_analysable(run)
    if not run.steps:
        raise RunError(f"{run_dir / runs.CKPT_DIR}: run has no checkpoints")
    cfg = run.config
    final = run.steps[-1]
    note = fourier.fourier_applies(cfg.task, cfg.p)

    cache = None if force else _load_cache(run_dir)
    summary = {"version": ANALYSIS_VERSION, "task": cfg.task, "p": cfg.p, "fourier_applies": note is None, "note": note}
    if note is None:
        if cache and cache[2].get("key_frequencies_step") == final and all(k in cache[2] for k in KEY_FREQUENCY_FIELDS):
            summary.update({k: cache[2][k] for k in KEY_FREQUENCY_FIELDS if k in cache[2]})
        else:
            summary.update(key_frequency_summary(run, final))
        if cache and any(cache[2].get(k) != summary[k] for k in ("key_frequencies", "cmem_neurons")):
            log.info("key frequencies or neuron clusters changed (key frequencies %s -> %s): recomputing every checkpoint",
                     cache[2].get("key_frequencies"), summary["key_frequencies"])
            cache = None
    view = group_analysis.view_for(cfg) if note is not None else None
    if view is not None:
        summary.update(group_analysis.base_summary(view))
        fields = group_analysis.KEY_FIELDS
        if cache and cache[2].get("key_irreps_step") == final and all(k in cache[2] for k in fields):
            summary.update({k: cache[2][k] for k in fields})
        else:
            summary.update(group_analysis.key_irrep_summary(run, final, view))
        if cache and any(cache[2].get(k) != summary[k] for k in ("key_irreps", "cmem_neurons")):
            cache = None
    key_freqs = summary.get("key_frequencies", summary.get("key_irreps", []))

    have = {r["step"]: r for r in cache[0]} if cache else {}
    have_freq: dict[int, list[dict]] = {}
    for r in cache[1] if cache else []:
        have_freq.setdefault(r["step"], []).append(r)
    todo = [s for s in run.steps if s not in have]

    analyser = _Analyser(run, key_freqs, summary.get("cmem_neurons", []), device)
    for step in tqdm(todo, desc=f"analyse {run_dir.name}", unit="ckpt", disable=not progress, dynamic_ncols=True):
        have[step], have_freq[step] = analyser(step)

    rows = [have[s] for s in run.steps]
    freq_rows = [r for s in run.steps for r in have_freq.get(s, [])]
    summary["phases"] = detect_phases(rows, fourier_phases=bool(key_freqs))
    summary["cgen_more_efficient_from"] = efficiency.more_efficient_from(
        [r["step"] for r in rows], [r["cgen_efficiency"] for r in rows], [r["cmem_efficiency"] for r in rows])
    summary["phase_definitions"] = PHASE_DEFINITIONS
    summary["mechanism_note"] = analyser.mechanism_note
    if note is None and not key_freqs:
        summary["phases_note"] = (f"no key frequency was found on the final checkpoint (step {final}): the excluded loss is "
                                  "then just the train loss and C_gen is empty, so the Fourier phases "
                                  f"({', '.join(FOURIER_PHASES)}) are not defined")
    summary["n_checkpoints"] = len(rows)
    summary["steps_computed"] = todo
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    tables = {ANALYSIS_TABLE: _to_csv(rows, COLUMNS)}
    if note is None:
        tables[FREQUENCY_TABLE] = _to_csv(freq_rows, FREQUENCY_COLUMNS)
    elif view is not None:
        tables[group_analysis.IRREP_TABLE] = _to_csv(freq_rows, group_analysis.IRREP_COLUMNS)
    summary["tables"] = {name: _sha256(text) for name, text in tables.items()}
    if write:  # the tables first, the summary (their manifest) last
        d = run_dir / runs.ANALYSIS_DIR
        for name, text in tables.items():
            runs.write_text(d / name, text)
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


# ---- the README's results block ----------------------------------------------------------------
def _at(rows: list[dict], step: int | None) -> dict | None:
    return next((r for r in rows if r["step"] == step), None)


def cluster_counts(summary: dict) -> dict[str, int]:
    """How the final checkpoint's MLP neurons split: ``key`` (in a key frequency's cluster), ``unclustered``,
    ``dead``, ``small`` (passed the threshold for a frequency with too few neurons) and their ``total``."""
    out = {"key": sum(summary.get("neurons_per_frequency", {}).values()),
           "unclustered": len(summary.get("unclustered_neurons", [])),
           "dead": len(summary.get("dead_neurons", [])),
           "small": sum(summary.get("small_clusters", {}).values())}
    out["total"] = sum(out.values())
    return out


def key_frequency_sentence(summary: dict) -> str:
    """The key frequencies of a run and how stable they are, in words, from its summary."""
    keys, n = summary.get("key_frequencies", []), cluster_counts(summary)
    thr = summary.get("cluster_threshold", 0.85)
    if not keys:
        head = f"no key frequency (no frequency explains ≥ {thr:.0%} of the variance of ≥ {summary.get('min_cluster_neurons')} neurons)"
    else:
        per = ", ".join(str(v) for v in summary["neurons_per_frequency"].values())
        head = (f"{fmt_set(keys)} ({per} neurons; a frequency needs ≥ {summary.get('min_cluster_neurons')} neurons with "
                f"≥ {thr:.0%} of their variance in it)")
    parts = [f"{n['unclustered']} of {n['total']} neurons explain < {thr:.0%} of their variance with one frequency",
             f"{n['dead']} are dead (no variance)"]
    if n["small"]:
        small = ", ".join(f"{k} ({v})" for k, v in summary["small_clusters"].items())
        parts.append(f"{n['small']} pass the threshold for a frequency with too few neurons ({small})")
    stable, stab = key_frequency_stability(summary)
    return f"{head}; {', '.join(parts)}; {stab if stable else 'the set is not stable: ' + stab}"


def key_frequency_stability(summary: dict) -> tuple[bool, str]:
    """Whether the key-frequency set is the same at the nearby clustering thresholds and on the last
    checkpoints, and in words: where it is the same, or each threshold and step that finds another set."""
    keys = summary.get("key_frequencies", [])
    by_t, by_s = summary.get("key_frequencies_by_threshold", {}), summary.get("key_frequencies_by_step", {})
    if summary.get("key_frequencies_stable"):
        return True, (f"the same set at thresholds {', '.join(by_t)} and on the last {len(by_s)} checkpoints "
                      f"(steps {', '.join(fmt_step(int(x)) for x in by_s)})")
    diff = [f"threshold {t}: {fmt_set(v)}" for t, v in by_t.items() if v != keys]
    diff += [f"step {fmt_step(int(x))}: {fmt_set(v)}" for x, v in by_s.items() if v != keys]
    return False, "; ".join(diff)


def loss_crossings(rows: list[dict], phases: dict) -> dict[str, dict | None]:
    """The first checkpoints after memorisation where restricted and test loss fall below 1 and 0.1
    (``restricted_1``, ``restricted_0.1``, ``test_1``, ``test_0.1``; rows, or None where never)."""
    late = [r for r in rows if phases.get("memorised") is not None and r["step"] >= phases["memorised"]]
    return {f"{col}_{lvl:g}": next((r for r in late if r[f"{col}_loss"] < lvl), None)
            for col in ("restricted", "test") for lvl in (1, 0.1)}


def mechanism_sentence(rows: list[dict], summary: dict) -> str:
    """Clock or pizza, in words, from the final checkpoint's mechanism columns (``analyses.mechanism``).

    Each measure is placed between the medians of Zhong et al.'s pizza-like and clock-like runs
    (``mechanism_position``: 0 pizza, 1 clock); the verdict is "firmly" clock (pizza) when both are at
    or beyond the clock (pizza) median, "closer to" when both are on the same side of halfway, and
    "between" when the two measures disagree. Circularity below 0.99 (the authors' cut) is said.
    """
    if summary.get("mechanism_note"):
        return f"{summary['mechanism_note'][0].upper()}{summary['mechanism_note'][1:]}."
    final = rows[-1]
    gs, di, circ = final["grad_symmetricity"], final["distance_irrelevance"], final["circularity"]
    if not all(math.isfinite(x) for x in (gs, di, circ)):
        return f"The mechanism measures are not defined at step {fmt_step(final['step'])} (a constant correct logit)."
    pz, ck = mechanism.PIZZA_REFERENCE, mechanism.CLOCK_REFERENCE
    t = mechanism.mechanism_position(gs, di)
    ts = list(t.values())
    if all(x >= 1 for x in ts) or all(x <= 0 for x in ts):
        verdict = f"firmly {'clock' if ts[0] >= 1 else 'pizza'}-like: both measures are at or beyond the {'clock' if ts[0] >= 1 else 'pizza'} runs' medians"
    elif all(x > 0.5 for x in ts) or all(x < 0.5 for x in ts):
        side = "clock" if ts[0] > 0.5 else "pizza"
        verdict = f"closer to the {side}: both measures are on its side of halfway, not both beyond its median"
    else:
        says = lambda x: "clock" if x > 0.5 else "pizza"  # noqa: E731
        verdict = (f"between the two: gradient symmetricity says {says(ts[0])}, distance irrelevance says "
                   f"{says(ts[1])}")
    circ_text = (f"circularity {circ:.3f} (top 4 embedding components are circles)" if circ >= 0.99 else
                 f"circularity {circ:.3f}, below the 0.99 the authors required before comparing, so the comparison is loose")
    return (f"At step {fmt_step(final['step'])}, gradient symmetricity {gs:.3f} and distance irrelevance {di:.3f} lie "
            f"{t['grad_symmetricity']:.0%} and {t['distance_irrelevance']:.0%} of the way from the medians of Zhong et al.'s "
            f"pizza-like runs ({pz['grad_symmetricity']}, {pz['distance_irrelevance']}) to their clock-like runs' "
            f"({ck['grad_symmetricity']}, {ck['distance_irrelevance']}; 1-layer, p = 59): {verdict}; {circ_text}.")


def stability_sentence(rows: list[dict], summary: dict) -> str:
    """The float32 softmax collapse before and after grokking, in words, from ``softmax_collapse_frac``,
    ``zero_loss_frac``, ``min_train_margin`` and ``loss_f32_minus_f64`` at the phase steps."""
    ph = summary.get("phases", {})
    points = [("memorisation", ph.get("memorised")), ("grokking", ph.get("grokked")), ("the last checkpoint", rows[-1]["step"])]
    parts = []
    for name, step in points:
        r = _at(rows, step)
        if r is None:
            parts.append(f"{name} not reached")
            continue
        parts.append(f"at {name} (step {fmt_step(step)}) {r['softmax_collapse_frac']:.1%} of the training examples have "
                     f"collapsed (zero loss: {r['zero_loss_frac']:.1%}), minimum margin {fmt_num(r['min_train_margin'])}, "
                     f"float32 minus float64 train loss {r['loss_f32_minus_f64']:.2g}")
    top = max(rows, key=lambda r: r["softmax_collapse_frac"])
    return (f"Float32 softmax collapse: {'; '.join(parts)}. The largest collapsed fraction is "
            f"{top['softmax_collapse_frac']:.1%} at step {fmt_step(top['step'])}.")


def results_block(rows: list[dict], summary: dict, irrep_rows: list[dict] | None = None) -> str:
    """What a run's analysis shows, as the README's Markdown list (``python -m interp.analyze RUN --readme``).

    Every number comes from ``rows`` (``checkpoints.csv``) and ``summary`` (``summary.json``), and
    every verb (falls, rises) is chosen by the numbers, so the text stays true for any run.
    """
    ph = summary["phases"]
    final = rows[-1]
    lines = []
    if summary.get("fourier_applies"):
        emb = summary.get("key_frequencies_embedding", [])
        same = "the same set" if emb == summary.get("key_frequencies") else fmt_set(emb)
        lines.append(f"- **Key frequencies** {key_frequency_sentence(summary)}; the embedding check (norm > max/4) gives "
                     f"{same}. The paper's model had {{14, 35, 41, 42, 52}}; other seeds find other sets.")
        late = [r for r in rows if ph["memorised"] is not None and r["step"] >= ph["memorised"]]
        x = loss_crossings(rows, ph)
        r1, r01 = x["restricted_1"], x["restricted_0.1"]
        t1, t01 = (None if x[k] is None else x[k]["step"] for k in ("test_1", "test_0.1"))
        if r1 is not None:
            earlier = t1 is None or r1["step"] < t1
            there = f"test loss {fmt_num(r1['test_loss'])}"
            lines.append(
                f"- **Restricted loss {'falls before' if earlier else 'does not fall before'} test loss**: it is first below 1 "
                f"at step {fmt_step(r1['step'])} ({there})"
                + (f" and below 0.1 at {fmt_step(r01['step'])} (test loss {fmt_num(r01['test_loss'])})" if r01 else "")
                + f"; test loss is first below 1 at {fmt_step(t1)} and below 0.1 at {fmt_step(t01)}.")
        if ph["circuit_formation_start"] is not None:
            start, peak = _at(rows, ph["circuit_formation_start"]), max(late, key=lambda r: r["excluded_loss"])
            low = min(late, key=lambda r: r["excluded_loss"])
            verb = "rises" if peak["excluded_loss"] > start["excluded_loss"] else "does not rise"
            lines.append(
                f"- **Excluded loss {verb} during circuit formation**: {fmt_num(low['excluded_loss'])} at its lowest "
                f"after memorisation (step {fmt_step(low['step'])}), {fmt_num(start['excluded_loss'])} where circuit formation "
                f"starts (step {fmt_step(start['step'])}), peak {fmt_num(peak['excluded_loss'])} at step {fmt_step(peak['step'])}, "
                f"then {fmt_num(final['excluded_loss'])} at step {fmt_step(final['step'])}.")
        if ph["cleanup_start"] is not None:
            c = _at(rows, ph["cleanup_start"])
            top = max(rows, key=lambda r: r["sum_sq_weights"])

            def change(a, b):
                return "falls" if b < a else "rises"

            lines.append(
                f"- **Cleanup**: from the cleanup start (step {fmt_step(c['step'])}) to step {fmt_step(final['step'])} the sum of "
                f"squared weights {change(c['sum_sq_weights'], final['sum_sq_weights'])} from {fmt_num(c['sum_sq_weights'])} to "
                f"{fmt_num(final['sum_sq_weights'])} (peak {fmt_num(top['sum_sq_weights'])} at step {fmt_step(top['step'])}); "
                f"the Gini coefficient of the Fourier norms of W_E {change(c['gini_W_E'], final['gini_W_E'])} from "
                f"{c['gini_W_E']:.2f} to {final['gini_W_E']:.2f}, that of W_L {change(c['gini_W_L'], final['gini_W_L'])} from "
                f"{c['gini_W_L']:.2f} to {final['gini_W_L']:.2f}.")
    elif summary.get("basis") in ("log", "irreps"):
        lines += group_analysis.results_lines(rows, irrep_rows or [], summary)
    elif summary.get("note"):
        lines.append(f"- {summary['note']}.")
    lines.append(
        f"- **Phases** (`summary.json`): memorised {fmt_step(ph['memorised'])}, circuit formation starts "
        f"{fmt_step(ph['circuit_formation_start'])} (paper: 1.4k), C_gen overtakes C_mem {fmt_step(ph['cgen_overtakes_cmem'])}, "
        f"cleanup starts {fmt_step(ph['cleanup_start'])} (excluded-loss peak; paper: 9.4k), test accuracy ≥ 90% at "
        f"{fmt_step(ph['test_acc_0.9'])}, grokked (test accuracy ≥ 99%) {fmt_step(ph['grokked'])}."
        + (f" {summary['phases_note'][0].upper()}{summary['phases_note'][1:]}." if summary.get("phases_note") else ""))
    return "\n".join(_wrap(line) for line in lines) + "\n"


def _wrap(bullet: str, width: int = 100) -> str:
    """A Markdown bullet wrapped at ``width`` with its continuation lines indented."""
    import re
    import textwrap

    glued = re.sub(r"(?<=\d) (?=\d{3}\b)", "\0", bullet)  # never break inside "10 500"
    lines = textwrap.wrap(glued, width=width, subsequent_indent="  ", break_on_hyphens=False, break_long_words=False)
    return "\n".join(lines).replace("\0", " ")


# ---- command line ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m interp.analyze", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory written by python -m interp.train")
    p.add_argument("--force", action="store_true", help="ignore the cached tables and recompute every checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1; a second one only helps on an idle machine)")
    p.add_argument("--device", default="cpu", help="where the model's forward runs: cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--readme", action="store_true", help="print only the README's results block (Markdown) for this run")
    p.add_argument("--irrep", default=None, metavar="NAME", help="group and log-basis runs: also print this irrep's shares "
                   "and excluded loss per checkpoint (its name, e.g. 'standard', '[3,2]', 'freq 5', or its index)")
    from interp import llc
    llc.add_arguments(p)
    return p


def _fmt(v) -> str:
    return "-" if v is None else str(v)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads {args.threads}: must be >= 1")
    from interp import llc
    try:
        llc_cfg = llc.config_from_args(args)
    except llc.LLCError as e:
        parser.error(str(e))
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        device = resolve(args.device)
        irrep = None if args.irrep is None else group_analysis.irrep_from_flag(args.run_dir, args.irrep)
        rows, summary = analyze_run(args.run_dir, force=args.force, progress=not args.quiet, threads=args.threads, device=device)
    except (RunError, ConfigError) as e:
        print(f"python -m interp.analyze: error: {e}", file=sys.stderr)
        return 2
    if irrep is not None:
        print(group_analysis.irrep_lines(load_irrep_table(args.run_dir), summary, irrep), end="")
    if args.readme:
        print(results_block(rows, summary, load_irrep_table(args.run_dir)), end="")
        return 0
    out = args.run_dir / runs.ANALYSIS_DIR
    print(f"{args.run_dir}: analysed {len(summary['steps_computed'])} new of {len(rows)} checkpoints "
          f"in {summary['seconds']:.1f}s -> {out}/{ANALYSIS_TABLE}")
    if summary.get("basis") in ("log", "irreps"):
        print(f"{summary['basis_note']}")
        print(f"key irreps (step {summary['key_irreps_step']}): {group_analysis.key_irrep_sentence(summary)}")
    elif not summary["fourier_applies"]:
        print(f"note: {summary['note']}; only losses, accuracies and weight norms were computed")
    else:
        print(f"key frequencies (step {summary['key_frequencies_step']}): {key_frequency_sentence(summary)}; "
              f"embedding check: {summary['key_frequencies_embedding']}")
    if summary.get("mechanism_note"):
        print(f"note: {summary['mechanism_note']}")
    ph = summary["phases"]
    print("phases: " + ", ".join(f"{k} {_fmt(v)}" for k, v in ph.items()))
    if summary.get("phases_note"):
        print(f"note: {summary['phases_note']}")
    if llc_cfg is not None:
        try:
            llc.main_part(args, llc_cfg)
        except (llc.LLCError, RunError) as e:
            print(f"python -m interp.analyze: error: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
