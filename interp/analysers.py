"""The analysers ``python -m interp.analyze`` runs over every checkpoint: one list, one entry per measure.

An ``Analyser`` declares its columns of ``analysis/checkpoints.csv`` with their docs (the column list
of ``docs/analysis_tables.md`` is generated from these entries), whether it applies to a run (a
task, a model family, a config) and why not, an optional per-run summary (merged into
``summary.json``), optional per-run set-up and the values of one checkpoint's row. The maths lives
in ``analyses/``; an entry only says which function fills which column from what.

A new measure is a function in ``analyses/`` and one ``register_analyser(Analyser(...))`` line (here
for the built-in ones, or in your own module or notebook): every run then gets its columns, and a
run it does not apply to gets empty cells and its reason in ``summary.json`` under ``skipped``,
never a refusal of the whole run. See ``docs/extending.md`` for a worked example.
"""

from __future__ import annotations

import contextvars
import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable

import torch
from torch import Tensor, nn

from analyses import efficiency, fourier, groups, mechanism, progress_measures, representations, stability
from interp import group_analysis, runs
from interp.families import TRANSFORMER, build_model, family_of, grid_inputs, hidden_activations, last_layer, operand_embedding
from interp.losses import criterion
from interp.runs import Run, RunError
from interp.train import split_metrics

FREQUENCY_TABLE = "frequencies.csv"
ATTENTION_TABLE = "attention.csv"
ATTENTION_COLUMNS = ["step", "head", "a", "b", "weight"]
FREQUENCY_COLUMNS = ["step", "freq", "W_E_norm", "W_L_norm", "excluded_loss"]
STABILITY_THRESHOLDS = (0.8, 0.85, 0.9)  # clustering thresholds the key frequencies are also found at
STABILITY_CHECKPOINTS = 3  # ... and the last checkpoints they are found on


@dataclass
class Checkpoint:
    """One checkpoint, loaded, as every analyser's ``row`` sees it.

    Attributes:
        run: the run (config, dataset with its split, metrics, steps).
        step: the checkpoint's step.
        model: the run's model with this checkpoint's weights, on the CPU, in eval mode.
        logits32: ``[N, d_vocab_out]`` float32 logits of every example (``run.dataset.inputs``) at the
            answer position, from the family's fast path where it applies, else its reference forward.
    """

    run: Run
    step: int
    model: nn.Module
    logits32: Tensor

    @property
    def cfg(self):
        return self.run.config

    @property
    def data(self):
        return self.run.dataset

    @cached_property
    def logits(self) -> Tensor:
        """``logits32`` in float64 (what the losses are computed from)."""
        return self.logits32.to(torch.float64)


@dataclass(frozen=True)
class Analyser:
    """One measure of every checkpoint (see the module docstring).

    Attributes:
        name: a short key (``summary.json``'s ``skipped`` names analysers by it).
        columns: ``{column: doc}``, the columns of ``checkpoints.csv`` it fills, each with one line (or
            a few) of documentation.
        row: ``(checkpoint, state) -> {column: value}`` or ``({column: value}, {table: [rows]})`` for an
            analyser that also writes a per-checkpoint table of its own (``tables``).
        applies: ``run -> reason | None``: ``None`` where it applies, else why not (its cells stay empty).
        summarise: ``(run, cached summary or None) -> dict``, merged into ``summary.json`` before any row is
            computed (e.g. the key frequencies of the final checkpoint).
        depends_on: summary keys whose change makes every cached row stale (recomputed).
        start: ``(run, summary) -> state``, computed once per analysis and passed to ``row``.
        tables: ``{file name: columns}`` of the extra tables ``row`` may return rows for.
    """

    name: str
    columns: dict[str, str]
    row: Callable[[Checkpoint, Any], dict | tuple[dict, dict[str, list[dict]]]]
    applies: Callable[[Run], str | None] = lambda run: None
    summarise: Callable[[Run, dict | None], dict] | None = None
    depends_on: tuple[str, ...] = ()
    start: Callable[[Run, dict], Any] | None = None
    tables: dict[str, list[str]] = field(default_factory=dict)


ANALYSERS: list[Analyser] = []


def register_analyser(analyser: Analyser) -> Analyser:
    """Append ``analyser`` to ``ANALYSERS`` (names and columns must be new) and return it."""
    taken = {c for a in ANALYSERS for c in a.columns}
    if any(a.name == analyser.name for a in ANALYSERS) or taken & set(analyser.columns) or "step" in analyser.columns:
        raise ValueError(f"analyser {analyser.name!r}: its name or one of its columns is already registered")
    ANALYSERS.append(analyser)
    return analyser


def analysis_columns() -> list[str]:
    """The columns of ``checkpoints.csv``: ``step``, then every registered analyser's, in order."""
    return ["step", *(c for a in ANALYSERS for c in a.columns)]


def extra_tables() -> dict[str, list[str]]:
    """Every registered analyser's extra tables, ``{file name: columns}``."""
    return {name: cols for a in ANALYSERS for name, cols in a.tables.items()}


# ---- losses and accuracies ------------------------------------------------------------------------
def _answer_tokens(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """``([tokens, classes], [tokens])``: every answer token one row (a sequence task's answers flattened)."""
    return logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)


def _metrics(ck: Checkpoint, state) -> dict:
    data = ck.data
    out = {k: v for k, v in split_metrics(ck.logits, data, criterion(ck.cfg.loss)).items()
           if k in ("train_loss", "test_loss", "train_acc", "test_acc")}
    lg, y = ck.logits[data.train_idx], data.labels[data.train_idx]
    if not ck.cfg.task_spec.regression:  # a regression has no correct class
        out["correct_logit"] = efficiency.centred_correct_logit(*_answer_tokens(lg, y)).mean().item()
    return out


register_analyser(Analyser("metrics", {
    "train_loss": "the run's loss (TrainConfig.loss; cross-entropy with a float64 log-softmax by default) on the train split",
    "test_loss": "the same on the test split",
    "train_acc": "accuracy on the train split (against the labels training uses; a regression task: the fraction of examples "
                 "whose mean squared error is below 1e-3, Omnigrok's teacher-student accuracy)",
    "test_acc": "accuracy on the test split",
    "correct_logit": "mean over the train split of logit[correct] - mean_c logit[c] (empty for a regression task)",
}, _metrics))


# ---- weight norm ----------------------------------------------------------------------------------
def _weights(ck: Checkpoint, state) -> dict:
    s = progress_measures.sum_squared_weights(ck.model)
    return {"sum_sq_weights": s, "param_norm": math.sqrt(s)}


register_analyser(Analyser("weights", {
    "sum_sq_weights": "sum of squares of every parameter",
    "param_norm": "sqrt(sum_sq_weights)",
}, _weights))


# ---- the Fourier (or group) circuit ---------------------------------------------------------------
def _token_operands(run: Run) -> str | None:
    """Why the circuit analysers cannot read this run's model (``None``: they can): they need the two
    operand tokens of ``[a, b, =]`` inputs, which every family's ``WeightViews.embed`` maps into the model."""
    cfg = run.config
    if not cfg.task_spec.token_pair:
        return f"they read how the operands a and b of [a, b, =] enter the model; {cfg.task} has no such tokens"
    return None


def fourier_note(run: Run) -> str | None:
    """Why the Fourier-over-Z_p analysis does not apply to ``run`` (``None``: it does)."""
    cfg = run.config
    why = _token_operands(run)
    if why is not None:
        return f"the Fourier analysers do not apply: {why}"
    structure = cfg.task_spec.structure
    if structure is None or structure.kind != "cyclic":
        return (f"the Fourier analysers do not apply to {cfg.task}: its labels are not a function of a + b or a - b "
                f"mod p, so there are no key-frequency directions to measure")
    if cfg.p % 2 == 0 or cfg.p < 3:
        return f"the Fourier analysers need an odd modulus p >= 3 (p = {cfg.p})"
    return None


def _circuit_applies(run: Run) -> str | None:
    note = fourier_note(run)
    if note is None or (_token_operands(run) is None and group_analysis.view_for(run.config) is not None):
        return None
    return note


def key_frequency_summary(run: Run, step: int) -> dict:
    """Key frequencies of checkpoint ``step`` by clustering the last hidden layer's neurons and by the
    embedding-norm check, with the counts of unclustered, dead and small-cluster neurons, the stability of
    the set across ``STABILITY_THRESHOLDS`` and the last ``STABILITY_CHECKPOINTS`` checkpoints up to ``step``,
    and the clustering of every hidden layer (``key_frequencies_by_layer``)."""
    cfg = run.config
    p, x = cfg.p, grid_inputs(cfg.p, cfg.eq_token)
    model = runs.load_checkpoint(run.path, step, cfg)
    layers = {name: a.reshape(p, p, -1) for name, a in hidden_activations(model, cfg, x).items()}
    acts = list(layers.values())[-1]
    fracs, variance = fourier.neuron_spectrum(acts)
    clusters = fourier.assign_clusters(fracs, variance)
    clustered = clusters.freq > 0
    gen = efficiency.gen_neurons(acts, clusters.key_frequencies)
    by_threshold = {f"{t:g}": fourier.assign_clusters(fracs, variance, t).key_frequencies for t in STABILITY_THRESHOLDS}
    by_step = {}
    for s in [s for s in run.steps if s <= step][-STABILITY_CHECKPOINTS:]:
        m = model if s == step else runs.load_checkpoint(run.path, s, cfg)
        by_step[str(s)] = fourier.cluster_neurons(last_layer(m, cfg, x).reshape(p, p, -1)).key_frequencies
    sets = [*by_threshold.values(), *by_step.values()]
    return {
        "key_frequencies": clusters.key_frequencies,
        "key_frequencies_step": step,
        "key_frequencies_embedding": fourier.embedding_key_frequencies(operand_embedding(model, cfg), p),
        "key_frequencies_by_layer": {name: fourier.cluster_neurons(a).key_frequencies for name, a in layers.items()},
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
        "neuron_frequency": clusters.freq.tolist(),
        "neuron_frac_explained": clusters.frac_explained.tolist(),
    }


KEY_FREQUENCY_FIELDS = ("key_frequencies", "key_frequencies_step", "key_frequencies_embedding", "key_frequencies_by_layer",
                        "neurons_per_frequency",
                        "unclustered_neurons", "dead_neurons", "small_clusters", "min_cluster_neurons", "cluster_threshold",
                        "mean_frac_explained_clustered", "key_frequencies_by_threshold", "key_frequencies_by_step",
                        "key_frequencies_stable", "cmem_neurons", "neuron_frequency", "neuron_frac_explained")
# (what key_frequency_summary returns, cached in summary.json; neuron_frequency / neuron_frac_explained: each last-layer
# neuron's key frequency, 0 for none, and the fraction of its variance in its best frequency, as the report draws them)


def _circuit_summary(run: Run, cached: dict | None) -> dict:
    final = run.steps[-1]
    if fourier_note(run) is None:
        if cached and cached.get("key_frequencies_step") == final and all(k in cached for k in KEY_FREQUENCY_FIELDS):
            return {k: cached[k] for k in KEY_FREQUENCY_FIELDS}
        return key_frequency_summary(run, final)
    view = group_analysis.view_for(run.config)
    out = group_analysis.base_summary(view)
    fields = group_analysis.KEY_FIELDS
    if cached and cached.get("key_irreps_step") == final and all(k in cached for k in fields):
        out.update({k: cached[k] for k in fields})
    else:
        out.update(group_analysis.key_irrep_summary(run, final, view))
    return out


@dataclass
class _Circuit:
    """Per-run state of the circuit analyser: the key-frequency directions and the neuron split."""

    key_freqs: list[int]
    sign: int = 0
    dirs: Tensor | None = None
    gen_neurons: Tensor | None = None
    group: Any = None
    roles: dict = field(default_factory=dict)


def _circuit_start(run: Run, summary: dict) -> _Circuit:
    cfg, data = run.config, run.dataset
    key_freqs = [int(k) for k in summary.get("key_frequencies", summary.get("key_irreps", []))]
    cmem = summary.get("cmem_neurons", [])
    if fourier_note(run) is not None:
        view = group_analysis.view_for(cfg)
        return _Circuit(key_freqs, group=group_analysis.GroupAnalyser(run, view, key_freqs, cmem))
    n = cfg.p * cfg.p
    grid = data.inputs[:, 0] * cfg.p + data.inputs[:, 1]
    if len(data.labels) != n or not torch.equal(grid, torch.arange(n)):
        raise RunError(f"{run.path}: inputs are not the row-major p^2 grid the Fourier analysers need")
    sign = cfg.task_spec.structure.sign
    views = family_of(cfg).views(build_model(cfg))  # the roles and the last layer's width depend on the shape only
    return _Circuit(key_freqs, sign, fourier.directions(cfg.p, key_freqs, sign),
                    efficiency.gen_neuron_mask(views.neuron_logits.shape[0], cmem), roles=views.roles)


def _circuit_row(ck: Checkpoint, st: _Circuit) -> tuple[dict, dict[str, list[dict]]]:
    model, data, logits = ck.model, ck.data, ck.logits
    if st.group is not None:  # log basis (mod_mul, mod_div) or irreps (group tasks): interp.group_analysis
        row: dict = {"step": ck.step}
        irrep_rows = st.group(model, row, logits)
        return row, {group_analysis.IRREP_TABLE: irrep_rows}
    p, labels = ck.cfg.p, data.labels
    row = {"restricted_loss": progress_measures.restricted_loss(logits, labels, st.dirs, data.test_idx),
           "excluded_loss": progress_measures.excluded_loss(logits, labels, st.dirs, data.train_idx)}
    views = family_of(ck.cfg).views(model)
    we = fourier.embedding_fourier_norms(operand_embedding(model, ck.cfg), p)
    wl = fourier.unembed_fourier_norms(views.neuron_logits)
    row["gini_W_E"], row["gini_W_L"] = progress_measures.gini(we), progress_measures.gini(wl)
    row["logit_cos_sim"] = progress_measures.ideal_logit_cosine(logits, st.key_freqs, st.sign)
    split = efficiency.circuit_logits(logits, labels, st.dirs, data.train_idx)
    row.update({k: v for k, v in split.items() if k != "correct_logit"})
    row.update(efficiency.circuit_param_norms(model, st.key_freqs, st.gen_neurons, st.roles))
    row["cgen_efficiency"] = efficiency.efficiency(row["cgen_logit"], row["cgen_param_norm"])
    row["cmem_efficiency"] = efficiency.efficiency(row["cmem_logit"], row["cmem_param_norm"])

    per_key = progress_measures.excluded_loss_per_frequency(logits, labels, data.train_idx, st.key_freqs, st.sign)
    excluded = {k: per_key[i].item() for i, k in enumerate(st.key_freqs)}
    we_f, wl_f = fourier.frequency_norms(we), fourier.frequency_norms(wl)
    freq_rows = [
        {"step": ck.step, "freq": k, "W_E_norm": we_f[k - 1].item(), "W_L_norm": wl_f[k - 1].item(), "excluded_loss": excluded.get(k, math.nan)}
        for k in range(1, fourier.n_frequencies(p) + 1)
    ]
    return row, {FREQUENCY_TABLE: freq_rows}


register_analyser(Analyser("circuit", {
    "restricted_loss": "test loss of the restricted logits (see \"Restricted and excluded loss\")",
    "excluded_loss": "train loss of the excluded logits",
    "gini_W_E": "Gini coefficient of the p Fourier-component norms (const, cos 1, sin 1, ...) of the operand embeddings' "
                "residue rows (W_E[:p]; an MLP's embeddings of a and b side by side)",
    "gini_W_L": "the same of W_L, the last hidden layer's neuron-to-logit map (W_out @ W_U of the last block, the direct path; "
                "an MLP's output layer)",
    "logit_cos_sim": "cosine similarity of the logits (centred over classes) with their best fit by the ideal terms "
                     "cos(w_k(a +- b - c)), k in the key frequencies",
    "cgen_logit": "the correct_logit of the C_gen (key-frequency) part of the logits",
    "cmem_logit": "the same from the C_mem part (the rest); cgen_logit + cmem_logit = correct_logit",
    "cgen_frac": "fraction of the squared norm of the class-centred logits (all inputs) in C_gen",
    "cgen_param_norm": "norm of C_gen's parameters: the key-frequency components of the embeddings' residue rows (token "
                       "axis) and of W_U and b_U (class axis), and the last hidden layer's neurons with >= 85% of their "
                       "variance in the key frequencies on the final checkpoint (analyses.efficiency; the family's "
                       "WeightViews.roles name the parameters)",
    "cmem_param_norm": "norm of C_mem's: the other non-constant frequency components of the same matrices and every other "
                       "neuron; cgen^2 + cmem^2 = the attributed weights' norm^2",
    "shared_param_norm": "norm of the parameters in neither circuit: attention, W_pos, the '=' row, b_out, and the constant "
                         "components; cgen^2 + cmem^2 + shared^2 = sum_sq_weights",
    "cgen_efficiency": "cgen_logit / cgen_param_norm: C_gen's correct-class logit per unit of its own norm",
    "cmem_efficiency": "cmem_logit / cmem_param_norm",
}, _circuit_row, applies=_circuit_applies, summarise=_circuit_summary, depends_on=("key_frequencies", "key_irreps", "cmem_neurons"),
    start=_circuit_start, tables={FREQUENCY_TABLE: FREQUENCY_COLUMNS, group_analysis.IRREP_TABLE: group_analysis.IRREP_COLUMNS}))


# ---- each hidden layer: feature rank and key-frequency share ---------------------------------------
LAYER_TABLE = "layers.csv"
LAYER_COLUMNS = ["step", "layer", "width", "feature_rank", "key_frac"]


RANK_ROWS = 2048  # feature rank over at most this many test examples (a seeded choice): the covariance is the cost


@dataclass
class _Layers:
    """Per-run state of the layers analyser."""

    rank_rows: Tensor  # the examples whose features the rank is taken over
    grid: Tensor | None = None  # the dataset row of each grid position (a, b), row-major
    basis: Tensor | None = None  # orthonormal basis over one input
    blocks: list[list[int]] = field(default_factory=list)  # each key's block of basis rows


def _layers_start(run: Run, summary: dict) -> _Layers:
    cfg, data = run.config, run.dataset
    pool = data.test_idx if len(data.test_idx) > 1 else data.train_idx
    gen = torch.Generator().manual_seed(0)
    st = _Layers(pool[torch.randperm(len(pool), generator=gen)[:RANK_ROWS]].sort().values)
    keys = [int(k) for k in summary.get("key_frequencies", summary.get("key_irreps", []))]
    if not keys or _circuit_applies(run) is not None:
        return st
    if fourier_note(run) is None:
        st.grid, st.basis = torch.arange(cfg.p * cfg.p), fourier.fourier_basis(cfg.p)
        st.blocks = [[0, fourier.cos_row(k), fourier.sin_row(k)] for k in keys]
    else:
        view = group_analysis.view_for(cfg)
        st.basis, owner = groups.isotypic_basis(view.irreps)
        st.grid = group_analysis.grid_rows(run, view)[0]
        st.blocks = [torch.nonzero((owner == 0) | (owner == k)).flatten().tolist() for k in keys]
    return st


def _layers_row(ck: Checkpoint, st: _Layers) -> tuple[dict, dict[str, list[dict]]]:
    out = []
    for i, a in enumerate(hidden_activations(ck.model, ck.cfg, ck.data.inputs).values()):
        frac = math.nan
        if st.grid is not None:
            n = st.basis.shape[0]
            frac = representations.key_fraction(a[st.grid].reshape(n, n, -1), st.basis, st.blocks)
        out.append({"step": ck.step, "layer": i, "width": a.shape[1], "feature_rank": representations.feature_rank(a[st.rank_rows]),
                    "key_frac": frac})
    return {}, {LAYER_TABLE: out}


def _layers_applies(run: Run) -> str | None:
    if run.config.task_spec.sequence:
        return "layers.csv reads the hidden layer at one answer position; the sequence tasks have positions.csv and heads.csv"
    model = build_model(run.config)
    if family_of(run.config) is TRANSFORMER and TRANSFORMER.fast.applies(model, run.config):
        return ("the 1-layer transformer's one hidden layer is the one the circuit analyser clusters (summary.json); "
                "layers.csv is for MLPs and deeper models")
    return None


register_analyser(Analyser("layers", {}, _layers_row, applies=_layers_applies, start=_layers_start,
                           tables={LAYER_TABLE: LAYER_COLUMNS}))


# ---- float32 stability ----------------------------------------------------------------------------
def _stability_applies(run: Run) -> str | None:
    if run.config.task_spec.regression:
        return "the stability measures are of a softmax over classes; this is a regression task"
    return None if run.config.d_vocab_out > 1 else "the stability measures need a softmax over at least two classes"


register_analyser(Analyser("stability", {
    "softmax_collapse_frac": "fraction of the train split whose float32 sum of exps (largest logit subtracted) is exactly 1, "
                             "whatever the label (Prieto et al. 2025's count; analyses.stability)",
    "zero_loss_frac": "fraction of the train split whose float32 cross-entropy is exactly 0 (its gradient is not: the "
                      "wrong-class entries stay ~exp(-margin))",
    "min_train_margin": "minimum over the train split of the correct logit minus the largest other",
    "loss_f32_minus_f64": "mean train cross-entropy in float32 minus the same in float64 (same float32 logits)",
}, lambda ck, st: stability.stability_measures(*_answer_tokens(ck.logits32[ck.data.train_idx], ck.data.train_labels)),
    applies=_stability_applies))


# ---- clock or pizza -------------------------------------------------------------------------------
def _transformer_tokens(run: Run) -> str | None:
    """Why the clock/pizza and attention analysers, which read a transformer's shared embedding and its
    attention, cannot read this run (``None``: they can)."""
    cfg = run.config
    if family_of(cfg) is not TRANSFORMER or not cfg.task_spec.token_pair:
        return (f"they read a transformer's shared embedding W_E and its attention on [a, b, =]; this run trains the "
                f"{cfg.family} family on {cfg.task}")
    return None


def _mechanism_applies(run: Run) -> str | None:
    why = _transformer_tokens(run)
    if why is not None:
        return f"the clock/pizza measures do not apply: {why}"
    return mechanism.mechanism_applies(run.config.task, run.config.p)


def _mechanism_start(run: Run, summary: dict):
    return mechanism.sample_triples(run.config.p)


def _mechanism_row(ck: Checkpoint, triples) -> dict:
    p, model = ck.cfg.p, ck.model
    correct = ck.logits.gather(-1, ck.data.labels[:, None]).reshape(p, p)
    return {"grad_symmetricity": mechanism.grad_symmetricity(mechanism.transformer_logit_fn(model, ck.cfg.eq_token), model.W_E[:p], triples),
            "distance_irrelevance": mechanism.distance_irrelevance(correct),
            "circularity": mechanism.circularity(model.W_E[:p])}


register_analyser(Analyser("mechanism", {
    "grad_symmetricity": "mean cosine between the gradients of logit c with respect to the embedding vectors of a and of b, "
                         "over 256 triples (a, b, c) drawn with seed 0 (Zhong et al. 2023; analyses.mechanism): ~1 pizza, "
                         "lower clock (their medians: 0.99 / 0.56)",
    "distance_irrelevance": "mean over d = a - b of the std of the correct logit at that difference over its overall std: "
                            "~1 clock, small pizza (their medians: 0.80 / 0.28)",
    "circularity": "mean over the top 4 principal components of W_E[:p] of the largest fraction of the component in one "
                   "frequency (1: circles). The three mechanism columns are mod_add only (odd p); for the other tasks "
                   "they are empty and summary.json's mechanism_note says why",
}, _mechanism_row, applies=_mechanism_applies, start=_mechanism_start))


# ---- attention of the final model -----------------------------------------------------------------
@torch.no_grad()
def _attention_row(ck: Checkpoint, state) -> tuple[dict, dict[str, list[dict]]]:
    """On the final checkpoint only: the attention weight from the '=' query to the key ``a``
    (``blocks.0.attn.hook_pattern[:, head, 2, 0]``) of every input ``(a, b)``, one row per (head, a, b)."""
    if ck.step != ck.run.steps[-1]:
        return {}, {}
    name = "blocks.0.attn.hook_pattern"
    x = ck.data.inputs
    _, cache = ck.model.run_with_cache(x, names_filter=name)
    w = cache[name][:, :, -1, 0].float()  # [N, heads]
    a, b = x[:, 0].tolist(), x[:, 1].tolist()
    return {}, {ATTENTION_TABLE: [{"step": ck.step, "head": h, "a": a[i], "b": b[i], "weight": w[i, h].item()}
                                  for h in range(w.shape[1]) for i in range(len(a))]}


register_analyser(Analyser("attention", {}, _attention_row, applies=_transformer_tokens,
                           tables={ATTENTION_TABLE: ATTENTION_COLUMNS}))


# ---- sequence tasks: the loss at each answer position, and what the attention heads do ---------------
POSITION_TABLE = "positions.csv"
POSITION_COLUMNS = ["step", "answer", "position", "train_loss", "test_loss", "train_acc", "test_acc", "test_loss_carry",
                    "test_loss_no_carry"]
HEAD_TABLE = "heads.csv"
HEAD_COLUMNS = ["step", "layer", "head", "prev_token", "induction"]
HEAD_EXAMPLES = 256  # the head scores are taken over the first this many test examples
INDUCTION_HEAD = 0.4  # a head whose induction score on the final checkpoint is at least this is an induction head


def _sequence_task(run: Run) -> str | None:
    cfg = run.config
    if not cfg.task_spec.sequence:
        return f"they are for the sequence tasks (answer positions of token sequences); {cfg.task} is not one"
    return None


def _per_token_loss(ck: Checkpoint) -> tuple[Tensor, Tensor]:
    """``([N, answers] cross-entropy of each answer token, [N, answers] labels)``, one answer as a column."""
    lg, y = ck.logits, ck.data.labels
    if y.dim() == 1:
        lg, y = lg[:, None], y[:, None]
    return -torch.log_softmax(lg, -1).gather(-1, y[..., None])[..., 0], y


def _positions_summary(run: Run, cached: dict | None) -> dict:
    """The step at which each answer position's loss falls most steeply (``analyses.phase.fall_step``): on the
    test loss of every evaluation in ``metrics.jsonl`` (with infinite data the training set is fresh at every
    step, so its test loss is its training loss)."""
    from analyses import phase

    rows = run.metrics
    if not rows:
        return {"position_falls": None}
    losses = [r.get("test_loss_pos", [r["test_loss"]]) for r in rows]  # one answer: its loss is the test loss
    return {"position_falls": phase.positions_falls([r["step"] for r in rows], losses)}


def _positions_row(ck: Checkpoint, state) -> tuple[dict, dict[str, list[dict]]]:
    """One row per answer: its cross-entropy and accuracy on each split, and (``add5``) its test loss on the
    examples with and without a carry into that digit (``analyses.phase.carries``)."""
    from analyses import phase
    from interp.sequences import add5_operands

    per, y = _per_token_loss(ck)
    right = (ck.logits.argmax(-1) == ck.data.labels).reshape(len(y), -1).double()
    tr, te = ck.data.train_idx, ck.data.test_idx
    with_c = without_c = None
    if ck.cfg.task == "add5":
        with_c, without_c = phase.loss_by_carry(per[te], phase.carries(*add5_operands(ck.data.inputs[te])))
    return {}, {POSITION_TABLE: [
        {"step": ck.step, "answer": i, "position": pos % ck.cfg.n_ctx, "train_loss": per[tr, i].mean().item(),
         "test_loss": per[te, i].mean().item(), "train_acc": right[tr, i].mean().item(), "test_acc": right[te, i].mean().item(),
         "test_loss_carry": math.nan if with_c is None else with_c[i].item(),
         "test_loss_no_carry": math.nan if without_c is None else without_c[i].item()}
        for i, pos in enumerate(ck.cfg.task_spec.answer_positions)]}


register_analyser(Analyser("positions", {}, _positions_row, applies=_sequence_task, summarise=_positions_summary,
                           tables={POSITION_TABLE: POSITION_COLUMNS}))


def _heads_applies(run: Run) -> str | None:
    why = _sequence_task(run)
    if why is None and family_of(run.config) is not TRANSFORMER:
        why = f"they read a transformer's attention patterns; this run trains the {run.config.family} family"
    return why


@torch.no_grad()
def head_scores(model: nn.Module, tokens: Tensor) -> list[dict]:
    """Each head's previous-token and induction score (``analyses.phase``) on ``tokens``: one dict per
    (layer, head) with ``layer, head, prev_token, induction``."""
    from analyses import phase

    names = [f"blocks.{i}.attn.hook_pattern" for i in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    out = []
    for layer, name in enumerate(names):
        pattern = cache[name].double()
        for h, (prev, ind) in enumerate(zip(phase.prev_token_score(pattern), phase.induction_score(pattern, tokens))):
            out.append({"layer": layer, "head": h, "prev_token": float(prev), "induction": float(ind)})
    return out


def _heads_summary(run: Run, cached: dict | None) -> dict:
    """The induction heads: the heads whose induction score on the final checkpoint is at least ``INDUCTION_HEAD``."""
    if not run.steps:
        return {"induction_heads": []}
    scores = head_scores(run.load_model(), run.dataset.inputs[run.dataset.test_idx[:HEAD_EXAMPLES]])
    return {"induction_heads": [[s["layer"], s["head"]] for s in scores if s["induction"] >= INDUCTION_HEAD]}


def ablated_logits(model: nn.Module, cfg, inputs: Tensor, heads: list[list[int]]) -> Tensor:
    """The answer logits of ``inputs`` with each head in ``heads`` (``[layer, head]``) mean-ablated: its
    output ``hook_z`` replaced at every position by its mean over these inputs."""
    from interp.model import answer_logits

    def ablate(z, hook, hs):
        for h in hs:
            z[:, :, h] = z[:, :, h].mean(0, keepdim=True)
        return z

    by_layer: dict[int, list[int]] = {}
    for layer, h in heads:
        by_layer.setdefault(layer, []).append(h)
    hooks = [(f"blocks.{layer}.attn.hook_z", lambda z, hook, hs=hs: ablate(z, hook, hs)) for layer, hs in by_layer.items()]
    return answer_logits(model.run_with_hooks(inputs, fwd_hooks=hooks), cfg)


def _heads_row(ck: Checkpoint, summary: dict) -> tuple[dict, dict[str, list[dict]]]:
    data = ck.data
    scores = head_scores(ck.model, data.inputs[data.test_idx[:HEAD_EXAMPLES]])
    row = {"prev_token_max": max(s["prev_token"] for s in scores), "induction_max": max(s["induction"] for s in scores)}
    heads = summary.get("induction_heads") or []
    if heads:
        with torch.no_grad():
            lg = ablated_logits(ck.model, ck.cfg, data.inputs, heads).double()
        loss = criterion(ck.cfg.loss)
        row["ablated_train_loss"] = loss(lg[data.train_idx], data.train_labels).item()
        row["ablated_test_loss"] = loss(lg[data.test_idx], data.labels[data.test_idx]).item()
    return row, {HEAD_TABLE: [{"step": ck.step, **s} for s in scores]}


register_analyser(Analyser("heads", {
    "prev_token_max": "the largest previous-token score over all heads: a head's mean attention from each position to the one "
                      "before it, over the first 256 test examples (analyses.phase; heads.csv has every head's)",
    "induction_max": "the largest induction score over all heads: a head's mean attention from each token to the token after an "
                     "earlier occurrence of it (Olsson et al.'s prefix matching), over the queries that have one",
    "ablated_train_loss": "train loss with the induction heads (induction score >= 0.4 on the final checkpoint; summary.json's "
                          "induction_heads) mean-ablated: each one's output replaced by its mean over the inputs. It rises above "
                          "train_loss once training leans on those heads: the sequence tasks' counterpart of the excluded loss",
    "ablated_test_loss": "the same on the test split",
}, _heads_row, applies=_heads_applies, summarise=_heads_summary, depends_on=("induction_heads",),
    start=lambda run, summary: summary, tables={HEAD_TABLE: HEAD_COLUMNS}))


# ---- local complexity (Humayun et al.): the ReLU MLPs ----------------------------------------------------
LC_TABLE = "local_complexity.csv"
LC_SPLITS = ("train", "test", "random")
LC_COLUMNS = ["step", "layer", *LC_SPLITS]  # per hidden layer, the mean local complexity of each split's points
LC_RADIUS = 0.05  # the neighbourhood's radius, as a fraction of the training points' RMS norm in the input space
LC_DIRECTIONS = 8  # P: the cross-polytope has 2 P vertices
LC_POINTS = 32  # points per split (train, test, random): with 8 directions, about 3 ms per checkpoint of the digits MLP


@dataclass(frozen=True)
class LocalComplexityOptions:
    """What ``python -m interp.analyze`` asks of the ``local_complexity`` analyser: ``--no-local-complexity``
    turns it off, ``--lc-radius`` sets ``radius`` (a fraction of the training points' RMS norm, > 0)."""

    enabled: bool = True
    radius: float = LC_RADIUS


LC_OPTIONS: contextvars.ContextVar[LocalComplexityOptions] = contextvars.ContextVar("lc_options", default=LocalComplexityOptions())


def _lc_applies(run: Run) -> str | None:
    cfg = run.config
    if not LC_OPTIONS.get().enabled:
        return "turned off (--no-local-complexity)"
    if cfg.family != "mlp":
        return f"it counts the linear regions of a ReLU MLP; this run trains the {cfg.family} family"
    if cfg.act_fn != "relu":
        return f"it counts the linear regions of a ReLU MLP; this MLP's activation is {cfg.act_fn} (not piecewise linear)"
    return None


def _lc_summary(run: Run, cached: dict | None) -> dict:
    o = LC_OPTIONS.get()
    return {"lc_settings": {"radius": o.radius, "directions": LC_DIRECTIONS, "points": LC_POINTS}}


def _lc_start(run: Run, summary: dict) -> dict:
    """What stays the same at every checkpoint: each split's points (example indices; the random points as
    fractions of the box the training points span) and every point's unit cross-polytope, all drawn from a
    generator seeded by the run's seed."""
    from analyses.local_complexity import unit_offsets
    from interp.tasks import generator

    data, model = run.dataset, build_model(run.config)
    dim = model.input_space(data.inputs[data.train_idx[:1]]).shape[1]
    gen, p = generator("local_complexity", run.config.seed), min(LC_DIRECTIONS, dim)
    idx = {"train": data.train_idx[:LC_POINTS], "test": data.test_idx[:LC_POINTS]}
    return {"idx": idx, "box": torch.rand(LC_POINTS, dim, generator=gen, dtype=torch.float64),
            "offsets": {s: unit_offsets(len(idx.get(s, range(LC_POINTS))), dim, p, gen) for s in LC_SPLITS}}


@torch.no_grad()
def _lc_row(ck: Checkpoint, st: dict) -> tuple[dict, dict[str, list[dict]]]:
    from analyses.local_complexity import local_complexity

    model, data, o = ck.model, ck.data, LC_OPTIONS.get()
    space = model.input_space(data.inputs[data.train_idx]).double()
    radius = o.radius * space.pow(2).sum(1).mean().sqrt().item()
    lo, hi = space.amin(0), space.amax(0)
    points = {"train": model.input_space(data.inputs[st["idx"]["train"]]), "test": model.input_space(data.inputs[st["idx"]["test"]]),
              "random": (lo + (hi - lo) * st["box"]).float()}
    splits = [s for s in LC_SPLITS if len(points[s])]
    counts = local_complexity(model.preactivations, torch.cat([points[s] for s in splits]), radius,
                              torch.cat([st["offsets"][s] for s in splits])).double()  # one forward for every split
    row, layers = {}, {}
    for split, part in zip(splits, counts.split([len(points[s]) for s in splits])):
        per_layer = part.mean(0)
        row[f"lc_{split}"] = per_layer.sum().item()
        for i, v in enumerate(per_layer.tolist()):
            layers.setdefault(i, {"step": ck.step, "layer": i, **{s: math.nan for s in LC_SPLITS}})[split] = v
    return row, {LC_TABLE: list(layers.values())}


register_analyser(Analyser("local_complexity", {
    "lc_train": "local complexity around training points (Humayun et al.): the number of hidden neurons, summed over layers, "
                "whose region boundary cuts a small neighbourhood of the point (the cross-polytope of 8 random orthonormal "
                "directions, radius 0.05 x the training points' RMS norm by default, --lc-radius), mean over up to 64 "
                "training points (analyses.local_complexity; local_complexity.csv has each layer's); ReLU MLPs only",
    "lc_test": "the same around test points",
    "lc_random": "the same around points drawn uniformly from the box the training points span (the same points at "
                 "every checkpoint)",
}, _lc_row, applies=_lc_applies, summarise=_lc_summary, depends_on=("lc_settings",), start=_lc_start,
    tables={LC_TABLE: LC_COLUMNS}))


# ---- lazy or rich (Kumar et al.): the tangent kernel's alignment and how far the features moved --------------
KERNEL_POINTS = 256  # test points the kernel is computed on
KERNEL_MAX_ENTRIES = 3e7  # parameters x points: above this the per-example gradients cost too much memory and time


def _kernel_applies(run: Run) -> str | None:
    cfg = run.config
    if not cfg.task_spec.regression or cfg.d_vocab_out != 1:
        return "the kernel alignment is Kumar et al.'s measure for scalar regression targets; this task has classes or several outputs"
    n_params = sum(p.numel() for p in build_model(cfg).parameters() if p.requires_grad)
    if n_params * min(KERNEL_POINTS, len(run.dataset.test_idx)) > KERNEL_MAX_ENTRIES:
        return f"the model's {n_params} parameters x {KERNEL_POINTS} points exceed the budget of {KERNEL_MAX_ENTRIES:.0e} gradient entries"
    return None


def _kernel_start(run: Run, summary: dict) -> dict:
    """The test points, and the hidden features of the first checkpoint on them (what ``feature_distance`` compares with)."""
    x = run.dataset.inputs[run.dataset.test_idx[:KERNEL_POINTS]]
    first = run.load_model(run.steps[0])
    with torch.no_grad():
        h0 = torch.cat([h.double().reshape(len(x), -1) for h in hidden_activations(first, run.config, x).values()], dim=1)
    return {"x": x, "y": run.dataset.labels[run.dataset.test_idx[:KERNEL_POINTS]].reshape(-1), "h0": h0}


def _kernel_row(ck: Checkpoint, st: dict) -> dict:
    from analyses.kernels import centred_alignment, empirical_ntk

    with torch.no_grad():
        h = torch.cat([a.double().reshape(len(st["x"]), -1) for a in hidden_activations(ck.model, ck.cfg, st["x"]).values()], dim=1)
    return {"ntk_alignment": centred_alignment(empirical_ntk(ck.model, st["x"]), st["y"]),
            "feature_distance": ((h - st["h0"]).norm() / st["h0"].norm()).item()}


register_analyser(Analyser("kernel", {
    "ntk_alignment": "centred alignment of the empirical neural tangent kernel with the targets on up to 256 test points "
                     "(analyses.kernels; Kumar et al.'s progress measure: it rises when the features are learned); scalar "
                     "regression targets only",
    "feature_distance": "||H - H_0|| / ||H_0||: how far the hidden features H on those points have moved from the first "
                        "checkpoint's",
}, _kernel_row, applies=_kernel_applies, start=_kernel_start))
