"""One self-contained HTML report of one or more runs.

    python -m interp.report checkpoints/mod_add_p113                 # -> checkpoints/mod_add_p113/report.html
    python -m interp.report RUN_A RUN_B --out compare.html           # curves of both runs overlaid

The page opens offline: plotly.js is inlined once and nothing is fetched from the network. The
analysis tables of each run (``interp.analyze``) are brought up to date first, so a new checkpoint
or a missing cache is analysed before the page is drawn.

Figures: loss/accuracy with the phase boundaries; restricted, excluded, train and test loss; Gini
coefficients and the sum of squared weights; C_gen/C_mem logits, each circuit's own parameter norm
and their ratio; float32 softmax collapse (analyses.stability); clock vs pizza measures
(analyses.mechanism, mod_add only); the LLC beside the loss when ``interp.analyze --llc`` has
written one (curves of every run overlaid, one colour per run). Then, for each run, its final
checkpoint: Fourier norms of W_E and W_L per frequency, W_E's Fourier norms across training, neurons
clustered by frequency and the attention of the four heads over (a, b). The Fourier figures are
left out (with a note) for tasks the Fourier analysers do not apply to.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import html
import importlib.metadata as md
import json
import logging
import math
import re
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from analyses import fourier
from interp import plots, runs, tables
from interp.plots import Figure
from interp.cli import Parser
from interp.analysers import ATTENTION_TABLE, HEAD_TABLE, INDUCTION_HEAD, LAYER_TABLE, POSITION_TABLE
from interp.analysis_files import load_table
from interp.analyze import analyze_run, load_frequency_table, load_irrep_table
from interp.text import fmt_num, fmt_set, fmt_step, key_frequency_stability, loss_crossings, mechanism_sentence, stability_sentence
from interp.group_report import group_figures
from interp.config import ConfigError
from interp.runs import Run, RunError
from interp.sweep import SweepError, load_sweep, read_results

log = logging.getLogger(__name__)

GENERATOR = "interp.report"  # in the page's <meta name="generator">: only such files are overwritten
COMPARE_FILE = "report_compare.html"  # default name of a report of several runs (in the first run's directory)
PLOTLY_CONFIG = {"responsive": True, "displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}


CAPTIONS = {  # what a figure's panels are; the numbers of the run drawn are appended (the caption_* functions)
    "efficiency": "Top: the correct-class logit (train split) of the key-frequency part of the logits (C_gen) and of the rest "
                  "(C_mem). Middle: each circuit's own parameter norm; 'shared' (attention, W_pos, the '=' embedding, constant "
                  "components, layers before the last hidden one) counts in neither. Bottom: logit per unit of own norm (analyses.efficiency). Dotted lines: "
                  "phase boundaries, and the step from which C_gen stays the more efficient circuit.",
}


@dataclass
class RunView:
    """Everything the report shows of one run: its tables and the final model's Fourier picture."""

    name: str
    run: Run
    meta: dict
    rows: list[dict]
    summary: dict
    freq_rows: list[dict] = field(repr=False)
    step: int = 0
    attention: Tensor | None = field(default=None, repr=False)
    W_E_norms: Tensor | None = field(default=None, repr=False)
    W_L_norms: Tensor | None = field(default=None, repr=False)
    irrep_rows: list[dict] = field(default_factory=list, repr=False)  # irreps.csv of a group/log-basis run
    layer_rows: list[dict] = field(default_factory=list, repr=False)  # layers.csv of an MLP or deeper model
    position_rows: list[dict] = field(default_factory=list, repr=False)  # positions.csv of a sequence task
    head_rows: list[dict] = field(default_factory=list, repr=False)  # heads.csv of a transformer on a sequence task

    @property
    def fourier(self) -> bool:
        return bool(self.summary.get("fourier_applies"))

    @property
    def keys(self) -> list[int]:
        """The key frequencies (empty when none were found or the Fourier analysers do not apply)."""
        return list(self.summary.get("key_frequencies", []))


# ---- data -----------------------------------------------------------------------------------------
def attention_grid(rows: list[dict], step: int, p: int) -> Float[Tensor, "n_heads p p"] | None:
    """The ``attention.csv`` rows of checkpoint ``step`` (``interp.analysers``) as ``[n_heads, p, p]`` indexed
    ``[head, a, b]`` (NaN at pairs that are not inputs, such as b = 0 of ``mod_div``); ``None`` without rows."""
    rows = [r for r in rows if r["step"] == step]
    if not rows:
        return None
    grid = torch.full((max(r["head"] for r in rows) + 1, p, p), math.nan)
    for r in rows:
        grid[r["head"], r["a"], r["b"]] = r["weight"]
    return grid


def _unique_names(paths: list[Path]) -> list[str]:
    names = [p.resolve().name for p in paths]
    if len(set(names)) == len(names):
        return names
    return [f"{p.resolve().parent.name}/{p.resolve().name}" for p in paths]


def collect(run_dir: Path, name: str | None = None, force: bool = False, progress: bool = False) -> RunView:
    """Bring the run's analysis up to date and gather what the report draws: only what the analysers
    stored (``analysis/``), nothing recomputed from the model.

    Raises:
        RunError: the run directory, its config, split, a checkpoint or its analysis is missing or corrupt.
    """
    run_dir = Path(run_dir)
    run = runs.load_run(run_dir)
    if not run.steps:
        raise RunError(f"{run_dir / runs.CKPT_DIR}: run has no checkpoints")
    rows, summary = analyze_run(run_dir, force=force, progress=progress)
    meta = json.loads((run_dir / runs.CONFIG_FILE).read_text())
    view = RunView(name or run_dir.resolve().name, run, meta, rows, summary, load_frequency_table(run_dir), step=run.steps[-1])
    view.attention = attention_grid(load_table(run_dir, ATTENTION_TABLE), view.step, run.config.p)
    view.irrep_rows = load_irrep_table(run_dir)
    view.layer_rows = load_table(run_dir, LAYER_TABLE)
    view.position_rows = load_table(run_dir, POSITION_TABLE)
    view.head_rows = load_table(run_dir, HEAD_TABLE)
    if view.fourier:
        final = sorted((r for r in view.freq_rows if r["step"] == view.step), key=lambda r: r["freq"])
        view.W_E_norms = torch.tensor([r["W_E_norm"] for r in final])
        view.W_L_norms = torch.tensor([r["W_L_norm"] for r in final])
    return view


# ---- captions: every number comes from the run drawn ----------------------------------------------
def _row(v: RunView, step: int | None) -> dict | None:
    return next((r for r in v.rows if r["step"] == step), None) if step is not None else None


def _join(views: list[RunView], fn) -> str:
    """One sentence per run (prefixed by its name when there are several)."""
    if len(views) == 1:
        text = fn(views[0])
        return text[:1].upper() + text[1:]
    return " ".join(f"{v.name}: {fn(v)}" for v in views)


def caption_training(views: list[RunView]) -> str:
    def one(v: RunView) -> str:
        ph, last = v.summary.get("phases", {}), v.rows[-1]
        m = _row(v, ph.get("memorised"))
        if m is None:
            out = f"train accuracy never reaches 99% in {fmt_step(last['step'])} steps (final {last['train_acc']:.3f}); "
        else:
            out = f"train accuracy first reaches 99% at step {fmt_step(m['step'])}, when test accuracy is {m['test_acc']:.3f}; "
        g = ph.get("grokked")
        if g is None:
            out += f"test accuracy never reaches 99% (final {last['test_acc']:.3f})."
        else:
            out += f"test accuracy first reaches 99% at step {fmt_step(g)}" + (
                f", {fmt_step(g - m['step'])} steps later." if m is not None else ".")
        return out + f" Final test loss {fmt_num(last['test_loss'])}."
    return _join(views, one) + " Dotted lines: the phase boundaries (definitions at the top of the page)."


def caption_progress(views: list[RunView]) -> str:
    def one(v: RunView) -> str:
        if not (v.keys or v.summary.get("key_irreps")):  # a group/log-basis run: key irreps
            return "no key frequency was found, so restricted and excluded loss are not defined (not drawn)."
        ph = v.summary.get("phases", {})
        x = loss_crossings(v.rows, ph)
        r1, t1 = (None if x[k] is None else x[k]["step"] for k in ("restricted_1", "test_1"))
        out = (f"restricted loss (only the key-frequency part of the logits, test split) is first below 1 at step "
               f"{fmt_step(r1)}, test loss at step {fmt_step(t1)}. ")
        start, peak = _row(v, ph.get("circuit_formation_start")), _row(v, ph.get("cleanup_start"))
        if start is not None and peak is not None:
            out += (f"Excluded loss (key frequencies removed, train split) rises from {fmt_num(start['excluded_loss'])} where "
                    f"circuit formation starts (step {fmt_step(start['step'])}) to {fmt_num(peak['excluded_loss'])} at its "
                    f"smoothed peak (step {fmt_step(peak['step'])}), then ends at {fmt_num(v.rows[-1]['excluded_loss'])}. "
                    f"That peak is this report's cleanup boundary: there the test loss is {fmt_num(peak['test_loss'])} and "
                    f"test accuracy {peak['test_acc']:.3f}. Nanda et al. start cleanup at 9.4k steps of their p = 113 run, "
                    "read off the same curves by eye, where their test loss starts its sharp fall; a rule applied to another "
                    "seed need not land on the same point of the curve.")
        else:
            out += "The excluded loss (key frequencies removed, train split) shows no complete rise and fall, so no cleanup boundary."
        return out
    return _join(views, one)


def caption_weights(views: list[RunView]) -> str:
    def one(v: RunView) -> str:
        c = _row(v, v.summary.get("phases", {}).get("cleanup_start"))
        first, last = (c, "the cleanup start") if c is not None else (v.rows[0], "the first checkpoint")
        final = v.rows[-1]
        top = max(v.rows, key=lambda r: r["sum_sq_weights"])
        out = (f"from {last} (step {fmt_step(first['step'])}) to step {fmt_step(final['step'])} the sum of squared weights "
               f"goes from {fmt_num(first['sum_sq_weights'])} to {fmt_num(final['sum_sq_weights'])} "
               f"(peak {fmt_num(top['sum_sq_weights'])} at step {fmt_step(top['step'])})")
        if v.fourier and math.isfinite(final["gini_W_E"]):
            out += (f"; the Gini coefficient of the Fourier norms of W_E goes from {first['gini_W_E']:.2f} to "
                    f"{final['gini_W_E']:.2f}, of W_L from {first['gini_W_L']:.2f} to {final['gini_W_L']:.2f} "
                    "(higher: norm on fewer frequencies)")
        return out + "."
    return _join(views, one)


def _share(norms: Tensor, keys: list[int]) -> float:
    sq = norms.to(torch.float64).pow(2)
    return (sq[[k - 1 for k in keys]].sum() / sq.sum()).item() if keys else 0.0


def caption_fourier_norms(v: RunView) -> str:
    if not v.keys:
        return "No key frequency was found at this checkpoint; the bars show each frequency's norm."
    return (f"Red: the key frequencies {fmt_set(v.keys)} (neuron clustering). They hold "
            f"{_share(v.W_E_norms, v.keys):.1%} of the squared Fourier norm of W_E over the {len(v.W_E_norms)} frequencies "
            f"and {_share(v.W_L_norms, v.keys):.1%} of that of W_L.")


def caption_fourier_training(v: RunView) -> str:
    out = "Rows are frequencies (* = key)."
    if not v.keys:
        return out + " No key frequency was found."
    by_step: dict[int, dict[int, float]] = {}
    for r in v.freq_rows:
        by_step.setdefault(int(r["step"]), {})[int(r["freq"])] = r["W_E_norm"]
    ph = v.summary.get("phases", {})
    marks = {"the first checkpoint": min(by_step), "memorised": ph.get("memorised"), "cleanup start": ph.get("cleanup_start"),
             "final": max(by_step)}
    parts = []
    for label, step in marks.items():
        if step in by_step:
            norms = torch.tensor([by_step[step][k] for k in sorted(by_step[step])])
            parts.append(f"{_share(norms, v.keys):.0%} at {label} (step {fmt_step(step)})")
    return out + " Share of the key frequencies in W_E's squared Fourier norm: " + ", ".join(parts) + "."


def caption_neurons(v: RunView) -> str:
    sm = v.summary
    freq = sm["neuron_frequency"]
    key = sum(1 for f in freq if f > 0)
    out = (f"Each dot is an MLP neuron. {key} of {len(freq)} are assigned to a key frequency (≥ {sm['cluster_threshold']:.0%} of "
           f"their variance in its 3×3 block; a key frequency needs ≥ {sm['min_cluster_neurons']} such neurons), "
           f"{len(sm['unclustered_neurons'])} are below the threshold, {len(sm['dead_neurons'])} are dead (no variance over the inputs)")
    if sm.get("small_clusters"):
        out += f", {sum(sm['small_clusters'].values())} pass it for a frequency with too few neurons (" + ", ".join(
            f"k = {k}: {n}" for k, n in sm["small_clusters"].items()) + ")"
    return out + "."


def caption_layers(v: RunView) -> str:
    """The layers figure's panels, then each hidden layer's numbers at the final checkpoint."""
    final = sorted((r for r in v.layer_rows if r["step"] == v.step), key=lambda r: r["layer"])
    keys = v.summary.get("key_frequencies", v.summary.get("key_irrep_names", []))
    parts = []
    for r in final:
        share = "" if math.isnan(r["key_frac"]) else f", {r['key_frac']:.0%} of its variance in the key blocks"
        parts.append(f"layer {r['layer']}: rank {r['feature_rank']} of {r['width']}{share}")
    return ("Feature rank (Fan et al.'s numerical rank of the covariance of a layer's features, here its activations over up "
            "to 2048 test examples) and the share of each layer's centred activation variance in the blocks of the key "
            f"{'frequencies' if 'key_frequencies' in v.summary else 'irreps'} ({', '.join(map(str, keys)) or 'none found'}; "
            f"analyses.representations). At step {v.step}: " + "; ".join(parts) + ".")


def caption_attention(v: RunView) -> str:
    mean_a = v.attention.nanmean(dim=(1, 2)).tolist()
    out = ("Attention weight from '=' to a for each head over (a, b); the rest goes to b and '='. Mean weight on a per head: "
           + ", ".join(f"{x:.2f}" for x in mean_a) + ".")
    if v.keys:
        share = fourier.block_fraction(v.attention.nan_to_num(float(v.attention.nanmean())), v.keys).tolist()
        out += (" Share of each head's variation over (a, b) in the 2-D Fourier components of the key frequencies: "
                + ", ".join(f"{x:.0%}" for x in share) + " (near 100%: the head's weight is a sum of waves at those "
                "frequencies, seen as periodic stripes).")
    return out


# ---- figures ----------------------------------------------------------------------------------
def efficiency_caption(views: list[RunView]) -> str:
    """The efficiency figure's caption: what its panels are, then the numbers of each run drawn."""
    parts = [CAPTIONS["efficiency"]]
    for v in views:
        rows = [r for r in v.rows
                if math.isfinite(r.get("cgen_efficiency", math.nan)) and math.isfinite(r.get("cmem_efficiency", math.nan))]
        if not v.fourier or not rows:
            continue
        peak, last = max(rows, key=lambda r: r["cmem_efficiency"]), rows[-1]
        start = v.summary.get("cgen_more_efficient_from")
        who = (f"C_gen is the more efficient circuit from step {start} on" if start is not None
               else "C_gen is not the more efficient circuit at the last checkpoint")
        parts.append(f"{v.name + ': ' if len(views) > 1 else ''}C_mem's efficiency peaks at {peak['cmem_efficiency']:.3g} "
                     f"(step {peak['step']}, C_gen {peak['cgen_efficiency']:.3g}); at step {last['step']} C_mem's is "
                     f"{last['cmem_efficiency']:.3g} and C_gen's {last['cgen_efficiency']:.3g}; {who}.")
    return " ".join(parts)


def stability_mechanism_figures(views: list[RunView]) -> list[Figure]:
    """The float32-collapse figure and (for runs where the measures apply) the clock/pizza figure,
    their captions generated by ``interp.text.stability_sentence`` and ``mechanism_sentence``."""
    from analyses import mechanism

    def joined(vs, fn):
        return " ".join((f"{v.name}: " if len(views) > 1 else "") + fn(v.rows, v.summary) for v in vs)

    phases = {v.name: v.summary.get("phases", {}) for v in views}
    out = [Figure("stability", plots.stability_curves({v.name: v.rows for v in views}, phases),
                  "Fraction of the training set whose float32 softmax has collapsed (float32 sum of exponentials, largest logit "
                  "subtracted, exactly 1) or whose float32 loss is exactly 0; the smallest margin (correct logit minus the largest other); the "
                  "train loss in float32 minus float64 (analyses.stability). " + joined(views, stability_sentence))]
    mech = [v for v in views if not v.summary.get("mechanism_note")]
    if mech:
        refs = {"pizza": mechanism.PIZZA_REFERENCE, "clock": mechanism.CLOCK_REFERENCE}
        out.append(Figure("mechanism", plots.mechanism_curves({v.name: v.rows for v in mech}, refs, phases),
                          "Gradient symmetricity, distance irrelevance and circularity (analyses.mechanism; dotted: the "
                          "pizza-like runs' medians, dashed: the clock-like runs'). " + joined(mech, mechanism_sentence)))
    from interp import llc  # the LLC figure, for runs where python -m interp.analyze RUN --llc wrote analysis/llc.csv

    estimated = {v.name: (v, *llc.load_llc(v.run.path)) for v in views}
    estimated = {k: x for k, x in estimated.items() if x[1]}
    if estimated:
        merged = {k: [{**r, **by_step} for r in v.rows for by_step in [next((x for x in lr if x["step"] == r["step"]), {})]]
                  for k, (v, lr, _) in estimated.items()}
        out.append(Figure("llc", plots.llc_curves(merged, phases), " ".join(
            (f"{k}: " if len(views) > 1 else "") + llc.llc_sentence(lr, v.rows, meta) for k, (v, lr, meta) in estimated.items())))
    return out


def overlay_figures(views: list[RunView]) -> list[Figure]:
    """The curves of every run in one figure each."""
    phases = {v.name: v.summary.get("phases", {}) for v in views}
    metrics = {v.name: (v.run.metrics or v.rows) for v in views}
    tables = {v.name: v.rows for v in views}
    out = [Figure("training", plots.training_curves(metrics, phases), caption_training(views))]
    keyed = [v for v in views if v.keys or v.summary.get("key_irreps")]  # restricted and excluded loss need key frequencies (or irreps)
    if keyed:
        out.append(Figure("progress", plots.progress_losses({v.name: v.rows for v in keyed}, phases),
                          caption_progress([v for v in views if v.fourier or "key_irreps" in v.summary])))
    # the efficiency figure also marks where C_gen becomes the more efficient circuit for good
    eff_phases = {v.name: {**phases[v.name], "cgen_more_efficient_from": v.summary.get("cgen_more_efficient_from")} for v in views}
    for key, fn, ph, caption in (("weights", plots.weight_measures, phases, caption_weights(views)),
                                 ("efficiency", plots.circuit_efficiency, eff_phases, efficiency_caption(views))):
        fig = fn(tables, ph)
        if fig.data:
            out.append(Figure(key, fig, caption))
    out += stability_mechanism_figures(views)
    return out


def _steps(xs) -> str:
    return ", ".join("none" if x is None else str(x) for x in xs)


def sequence_figures(view: RunView) -> list[Figure]:
    """A sequence task's figures: the loss at each answer position, (5-digit addition) with and without a carry,
    and the attention heads' scores with the induction heads ablated."""
    cfg, sm, out = view.run.config, view.summary, []
    if not cfg.task_spec.sequence:
        return out
    falls = sm.get("position_falls") or []
    from analyses import phase

    fall = phase.fall_step([r["step"] for r in view.run.metrics], [r["test_loss"] for r in view.run.metrics])
    marks = {"steepest fall of test loss": fall}
    positions = [p % cfg.n_ctx for p in cfg.task_spec.answer_positions]
    last = view.run.metrics[-1]
    if "test_loss_pos" in last:
        out.append(Figure("positions", plots.position_curves(view.run.metrics, view.name, positions, marks),
                          f"Loss at each of the {len(positions)} answer positions ({'infinite' if cfg.infinite_data else 'finite'} data). "
                          f"The test loss of each fell most steeply (steepest slope of log loss against the step in the upper half of its fall; 'none': it never fell "
                          f"by a factor {phase.MIN_DROP:g}) at steps {_steps(falls)}; the whole test loss at step {fall}. At step {last['step']} the "
                          f"test losses are {', '.join(f'{v:.3g}' for v in last['test_loss_pos'])} and the train losses "
                          f"{', '.join(f'{v:.3g}' for v in last['train_loss_pos'])}."))
    carry = [r for r in view.position_rows if r["step"] == view.step and r["test_loss_carry"] == r["test_loss_carry"]]
    if carry:
        pairs = "; ".join(f"answer {int(r['answer'])}: {r['test_loss_carry']:.3g} with, {r['test_loss_no_carry']:.3g} without"
                          for r in sorted(carry, key=lambda r: r["answer"]) if r["test_loss_no_carry"] == r["test_loss_no_carry"])
        out.append(Figure("carries", plots.carry_curves(view.position_rows, view.name),
                          f"Test loss of each answer digit on the examples with a carry into it (solid) and without (dotted); the "
                          f"first answer digit is the final carry itself and the last never receives one. At step {view.step}: {pairs}."))
    if view.head_rows:
        final = [r for r in view.head_rows if r["step"] == view.step]
        top = max(final, key=lambda r: r["induction"])
        first = next((r["step"] for r in view.rows if (r.get("induction_max") or 0) >= INDUCTION_HEAD), None)
        heads = sm.get("induction_heads") or []
        fin = _row(view, view.step) or {}
        ablated = (f" With the induction heads {', '.join(f'L{l}H{h}' for l, h in heads)} mean-ablated, the train loss at step "
                   f"{view.step} is {fin.get('ablated_train_loss', float('nan')):.3g} (intact {fin.get('train_loss', float('nan')):.3g}) "
                   f"and the test loss {fin.get('ablated_test_loss', float('nan')):.3g} (intact {fin.get('test_loss', float('nan')):.3g})."
                   if heads else f" No head reached an induction score of {INDUCTION_HEAD} on the final checkpoint, so none was ablated.")
        out.append(Figure("heads", plots.head_curves(view.head_rows, view.rows, view.name, marks),
                          f"Each head's induction score (attention from a token to the token after its earlier occurrence) and "
                          f"previous-token score across training, over the first 256 test examples. The largest induction score at "
                          f"step {view.step} is {top['induction']:.2f} (L{int(top['layer'])}H{int(top['head'])}); a head first reached "
                          f"{INDUCTION_HEAD} at step {first}, and the test loss fell most steeply at step {fall}." + ablated))
    return out


def local_complexity_figure(view: RunView) -> list[Figure]:
    """A ReLU MLP's local complexity around training, test and random points across training, with its test accuracy."""
    rows = [r for r in view.rows if r.get("lc_train") == r.get("lc_train") and r.get("lc_train") is not None]
    if not rows:
        return []
    lc = {s: [r[f"lc_{s}"] for r in rows] for s in ("train", "test", "random")}
    steps = [r["step"] for r in rows]
    peak = max(range(len(rows)), key=lambda i: lc["train"][i])
    settings = view.summary.get("lc_settings", {})
    acc = [(r["step"], r["test_acc"]) for r in view.run.metrics]
    half = None
    if acc:
        lo, hi = acc[0][1], max(a for _, a in acc)
        half = next((s for s, a in acc if a >= lo + 0.5 * (hi - lo)), None) if hi > lo else None
    series = {f"{s} points": (steps, lc[s]) for s in lc}
    cap = (f"Local complexity (Humayun et al.): the number of hidden neurons whose region boundary cuts the cross-polytope of "
           f"{settings.get('directions')} random directions and radius {settings.get('radius')} x the training points' RMS norm around a "
           f"point, mean over {settings.get('points')} points per set. Around training points it is {lc['train'][0]:.3g} at step {steps[0]}, "
           f"highest ({lc['train'][peak]:.3g}) at step {steps[peak]} and {lc['train'][-1]:.3g} at step {steps[-1]}; around test points "
           f"{lc['test'][0]:.3g}, then {lc['test'][-1]:.3g}; around random points {lc['random'][0]:.3g}, then {lc['random'][-1]:.3g}. "
           + (f"Test accuracy covered half of its rise (from {acc[0][1]:.3f} to {max(a for _, a in acc):.3f}) at step {half}." if half is not None
              else "Test accuracy did not rise above its first value."))
    return [Figure("local_complexity", plots.xy_lines(series, "step", "neurons cut near a point",
                                                      f"Local complexity across training ({view.name})"), cap)]


def run_figures(view: RunView) -> list[Figure]:
    """The figures of one run's final checkpoint."""
    suffix = f" ({view.name}, step {view.step})"
    out = []
    if view.fourier:
        keys = view.summary.get("key_frequencies", [])
        out.append(Figure("fourier_norms", plots.fourier_norms(view.W_E_norms, view.W_L_norms, keys,
                                                               "Fourier norms of W_E and W_L per frequency" + suffix), caption_fourier_norms(view)))
        if view.freq_rows:
            out.append(Figure("fourier_training", plots.frequency_over_training(
                view.freq_rows, "W_E_norm", keys, f"Fourier norm of W_E per frequency across training ({view.name})"),
                caption_fourier_training(view)))
        sm = view.summary
        out.append(Figure("neurons", plots.neuron_clusters(torch.tensor(sm["neuron_frequency"]), torch.tensor(sm["neuron_frac_explained"]),
                                                           sm["cluster_threshold"], "MLP neurons clustered by frequency" + suffix,
                                                           dead=sm["dead_neurons"]), caption_neurons(view)))
    out += [Figure(*f) for f in group_figures(view.name, view.summary, view.irrep_rows, view.step)]
    if view.layer_rows:
        out.append(Figure("layers", plots.layer_curves(view.layer_rows, view.name, {view.name: view.summary.get("phases", {})}),
                          caption_layers(view)))
    out += sequence_figures(view)
    out += local_complexity_figure(view)
    if view.attention is not None:
        out.append(Figure("attention", plots.attention_grid(view.attention, "Attention from '=' to a, per head, over (a, b)" + suffix),
                          caption_attention(view)))
    return out


# ---- HTML ---------------------------------------------------------------------------------------
CSS = """
*{box-sizing:border-box}
body{font-family:"DejaVu Sans","Liberation Sans",Arial,sans-serif;margin:0;color:#222;background:#fafafa;line-height:1.45}
main{max-width:1100px;margin:0 auto;padding:16px 20px 40px;background:#fff}
h1{font-size:1.5em;margin:.4em 0}
h2{font-size:1.2em;margin:1.6em 0 .4em;border-bottom:1px solid #ddd;padding-bottom:.2em}
.meta,.note{color:#555;font-size:.92em}
.note{background:#fff7e0;border-left:3px solid #e0b000;padding:.4em .8em}
.scroll{overflow-x:auto;max-width:100%}
.cols{display:flex;flex-wrap:wrap;gap:0 32px;align-items:flex-start}
.cols>section{flex:1 1 300px;min-width:0}
.cols>section:last-child{flex:0 1 auto}
table{border-collapse:collapse;font-size:.88em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:2px 8px;text-align:left;vertical-align:top}
th{background:#f2f2f2}
td.diff{font-weight:bold;background:#fff2cc}
figure{margin:1.2em 0;width:100%}
figure .plot{width:100%}
figcaption{font-size:.92em;color:#444;margin:.2em 0 0 .3em}
code{font-size:.95em}
details{margin:.4em 0}
"""


def _e(x) -> str:
    return html.escape(str(x))


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _config_table(views: list[RunView]) -> str:
    cfgs = [v.run.config.to_dict() for v in views]
    head = "".join(f"<th>{_e(v.name)}</th>" for v in views)
    body = []
    for k in cfgs[0]:
        vals = [c[k] for c in cfgs]
        cls = ' class="diff"' if len(views) > 1 and any(x != vals[0] for x in vals) else ""
        body.append(f"<tr><th>{_e(k)}</th>" + "".join(f"<td{cls}>{_e(x)}</td>" for x in vals) + "</tr>")
    return f'<div class="scroll"><table><tr><th>config</th>{head}</tr>{"".join(body)}</table></div>'


def _run_table(views: list[RunView]) -> str:
    head = "".join(f"<th>{_e(v.name)}</th>" for v in views)

    def row(label, fn):
        return f"<tr><th>{_e(label)}</th>" + "".join(f"<td>{fn(v)}</td>" for v in views) + "</tr>"

    def final(v, k):
        return _fmt(v.rows[-1].get(k)) if v.rows else "–"

    def keys(v):
        if not v.fourier:
            return "n/a"
        per = v.summary.get("neurons_per_frequency", {})
        return _e(", ".join(f"{k} ({n} neurons)" for k, n in per.items()) or "none")

    def phases(v):
        return "<br>".join(f"{_e(k)}: {_e(_fmt(s))}" for k, s in v.summary.get("phases", {}).items())

    def versions(v):
        return "<br>".join(f"{_e(k)} {_e(x)}" for k, x in (v.meta.get("versions") or {}).items())

    rows = [
        row("directory", lambda v: f"<code>{_e(v.run.path)}</code>"),
        row("checkpoints", lambda v: f"{len(v.run.steps)} (steps {v.run.steps[0]}–{v.run.steps[-1]})"),
        row("final train / test acc", lambda v: f"{final(v, 'train_acc')} / {final(v, 'test_acc')}"),
        row("final train / test loss", lambda v: f"{final(v, 'train_loss')} / {final(v, 'test_loss')}"),
        row("key frequencies", keys),
        row("unclustered / dead neurons", lambda v: _e(f"{len(v.summary.get('unclustered_neurons', []))} / "
                                                       f"{len(v.summary.get('dead_neurons', []))}") if v.fourier else "n/a"),
        row("key frequencies stable", lambda v: _e(_stability(v)) if v.fourier else "n/a"),
        row("phases (step)", phases),
        row("trained with", versions),
        row("git commit", lambda v: f"<code>{_e(v.meta.get('git_commit') or 'unknown')}</code>"),
    ]
    return f'<div class="scroll"><table><tr><th>run</th>{head}</tr>{"".join(rows)}</table></div>'


def _stability(v: RunView) -> str:
    """Whether the key frequencies are the same at nearby clustering thresholds and on the last checkpoints."""
    stable, text = key_frequency_stability(v.summary)
    return f"{'yes' if stable else 'no'}: {text}"


def _generator_versions() -> str:
    out = [f"python {platform.python_version()}"]
    for pkg in ("interp", "torch", "transformer-lens", "plotly"):
        try:
            out.append(f"{pkg} {md.version(pkg)}")
        except md.PackageNotFoundError:
            pass
    return ", ".join(out)


def _figure_html(n: int, f: Figure) -> str:
    div = f.fig.to_html(full_html=False, include_plotlyjs=False, config=PLOTLY_CONFIG, div_id=f"fig-{n}-{f.key}", default_width="100%")
    return f'<figure id="figure-{n}"><div class="plot">{div}</div><figcaption><b>Figure {n}.</b> {_e(f.caption)}</figcaption></figure>'


def _page(title: str, meta: str, body: str) -> str:
    """A whole self-contained page: plotly.js inlined, the generator tag, ``meta`` under the title."""
    from plotly.offline import get_plotlyjs

    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="generator" content="{GENERATOR}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>interp report: {_e(title)}</title>
<style>{CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body><main>
<h1>interp report: {_e(title)}</h1>
<p class="meta">Generated {now} by <code>python -m interp.report</code> with {_e(_generator_versions())}.
{meta}</p>
{body}
</main></body></html>
"""


def render(views: list[RunView]) -> tuple[str, int]:
    """The HTML page of ``views`` and its number of figures."""
    sections: list[tuple[str, list[Figure], list[str]]] = []
    notes = [f"{v.name}: {v.summary.get('note')}" for v in views if not v.fourier and v.summary.get("note")]
    notes += [f"{v.name}: {v.summary['basis_note']}" for v in views if v.summary.get("basis_note")]  # log / irreps basis
    notes += [f"{v.name}: {v.summary['phases_note']}" for v in views if v.summary.get("phases_note")]
    sections.append(("Training and progress measures" + (" (runs overlaid)" if len(views) > 1 else ""), overlay_figures(views), notes))
    for v in views:
        note = [] if v.fourier else [f"Fourier figures left out: {v.summary.get('note')}"]
        sections.append((f"The final model of {v.name} (step {v.step})", run_figures(v), note))

    parts, n = [], 0
    for title, figs, sec_notes in sections:
        parts.append(f"<h2>{_e(title)}</h2>")
        parts += [f'<p class="note">{_e(x)}</p>' for x in sec_notes]
        for f in figs:
            n += 1
            parts.append(_figure_html(n, f))

    names = ", ".join(v.name for v in views)
    defs = views[0].summary.get("phase_definitions", {})
    defs_html = "".join(f"<li><b>{_e(k)}</b>: {_e(d)}</li>" for k, d in defs.items())
    body = f"""<div class="cols">
<section><h2>Runs</h2>
{_run_table(views)}
<details><summary>Phase boundaries: definitions</summary><ul>{defs_html}</ul></details></section>
<section><h2>Configuration</h2>
{_config_table(views)}</section>
</div>
{"".join(parts)}"""
    return _page(names, f"{len(views)} run(s), {n} figures. Per-model figures use each run's final checkpoint.", body), n


def build_report(run_dirs: list[str | Path], force: bool = False, progress: bool = False) -> tuple[str, int]:
    """Analyse (if needed) and render the runs: ``(html, number of figures)``.

    Every run directory is loaded (and so checked) before any of them is analysed.

    Raises:
        RunError: a run directory or one of its files is missing or corrupt.
    """
    paths = [Path(d) for d in run_dirs]
    for p in paths:
        runs.load_run(p)
    names = _unique_names(paths)
    views = [collect(p, name, force=force, progress=progress) for p, name in zip(paths, names)]
    return render(views)


def default_output(run_dirs: list[str | Path]) -> Path:
    """``RUN_DIR/report.html`` for one run, ``FIRST_RUN_DIR/report_compare.html`` for several."""
    return Path(run_dirs[0]) / (runs.REPORT_FILE if len(run_dirs) == 1 else COMPARE_FILE)


def is_report(path: Path) -> bool:
    """Whether ``path`` is a page written by ``interp.report`` (its generator tag, or the title of older versions)."""
    with open(path, "rb") as f:
        head = f.read(4096).decode("utf-8", errors="replace")
    return f'<meta name="generator" content="{GENERATOR}">' in head or "<title>interp report: " in head


def write_report(run_dirs: list[str | Path], out: str | Path | None = None, force: bool = False, progress: bool = False) -> Path:
    """Write the report of ``run_dirs`` atomically to ``out`` (default: ``default_output``); returns the path.

    Raises:
        RunError: ``out`` is a directory, or an existing file that is not a report (it is never
        overwritten), or a run is missing or corrupt.
    """
    out = Path(out) if out is not None else default_output(run_dirs)
    if out.is_dir():
        raise RunError(f"--out {out}: is a directory; give a file name")
    if out.exists() and not is_report(out):
        raise RunError(f"--out {out}: exists and is not a report written by python -m interp.report; "
                       "refusing to overwrite it (remove it or pick another name)")
    if len(run_dirs) == 1 and is_sweep(run_dirs[0]):
        page, n = render_sweep(Path(run_dirs[0]))
    else:
        page, n = build_report(run_dirs, force=force, progress=progress)
    runs.write_text(out, page)
    log.info("%s: %d figures, %.1f MB", out, n, len(page.encode()) / 1e6)
    return out


# ---- sweep and experiment directories ----------------------------------------------------------
SEED_FIELDS = ("seed", "data_seed")


def _csv_table(rows: list[dict]) -> str:
    if not rows:
        return "<p>(no rows yet)</p>"
    head = "".join(f"<th>{_e(k)}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in r.values()) + "</tr>" for r in rows)
    return f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div>'


def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def sweep_figures(sweep_dir: Path) -> tuple[list[Figure], list[dict], list[dict]]:
    """The figures of a sweep directory, its results rows and (for an experiment) its summary rows.

    Outcome (steps to 99% test accuracy) against the first varied field that is not a seed, each
    member a point and the median over the rest; and every member's test accuracy, one colour per
    value of that field.
    """


    spec, members = load_sweep(sweep_dir)
    results = read_results(sweep_dir)
    summary = _read_csv(sweep_dir / "summary.csv")
    varied = [k for k in spec.grid if k not in SEED_FIELDS] or list(spec.grid)
    x = varied[0]
    ok = [r for r in results if r["status"] == "ok"]
    budget = max((m.config.steps for m in members if m.config), default=None)  # stop_after_grok may end runs earlier
    points = [(float(r[x]), None if r["test_99_step"] == "" else int(r["test_99_step"])) for r in ok]
    figs = []
    if points:
        n_miss = sum(y is None for _, y in points)
        by_x: dict[float, list] = {}
        for px, y in points:
            by_x.setdefault(px, []).append(y)
        reached = {px: sorted(y for y in ys if y is not None) for px, ys in by_x.items()}
        first = min((px for px, ys in reached.items() if len(ys) == len(by_x[px])), default=None)
        never = [px for px, ys in reached.items() if not ys]
        cap = (f"{len(points)} members over {x} = {', '.join(f'{v:g}' for v in sorted(by_x))} "
               f"({len(points) // max(len(by_x), 1)} per value); {n_miss} did not reach 99% test accuracy within "
               f"{budget} steps (open markers). ")
        if first is not None:
            cap += f"From {x} = {first:g} every member reached it; there the median is {statistics.median(reached[first]):g} steps. "
        if never:
            cap += f"No member reached it at {x} = {', '.join(f'{v:g}' for v in sorted(never))}. "
        meds = {px: statistics.median(ys) for px, ys in reached.items() if ys and len(ys) == len(by_x[px])}
        if len(meds) >= 2:
            lo, hi = min(meds), max(meds)
            cap += f"Median steps go from {meds[lo]:g} at {x} = {lo:g} to {meds[hi]:g} at {x} = {hi:g}."
        figs.append(Figure("sweep-outcome", plots.sweep_outcome(points, x, "steps to 99% test accuracy", budget,
                                                                f"Steps to 99% test accuracy against {x}"), cap))
    curves = {r["run"]: runs.read_metrics(sweep_dir / r["run"]) for r in results if (sweep_dir / r["run"]).is_dir()}
    if curves:
        groups = {r["run"]: f"{x} {r[x]}" for r in results if r["run"] in curves}
        figs.append(Figure("sweep-curves", plots.member_curves(curves, groups, "test_acc", "test accuracy", "Test accuracy of every member"),
                           f"Test accuracy against step for the {len(curves)} members, one colour per value of {x}."))
    return figs, results, summary


LONG_CELL = 60  # characters: a longer table cell (a list of flags, say) becomes a numbered note under its table


def experiment_tables_html(mod, summary_path: Path) -> str:
    """The experiment's own tables (its module's ``TABLES``, what ``--markdown`` prints) from its
    ``summary.csv``, with every cell longer than ``LONG_CELL`` characters moved to a numbered note."""
    parts = []
    for ti, (title, headers, cells) in enumerate(tables.experiment_tables(tables.read_csv(summary_path), mod.TABLES), 1):
        notes: list[str] = []

        def td(c: str) -> str:
            if len(c) <= LONG_CELL:
                return f"<td>{_e(c)}</td>"
            notes.append(c)
            return f'<td class="note-ref"><a href="#table{ti}-note{len(notes)}">note {len(notes)}</a></td>'

        body = "".join("<tr>" + "".join(td(c) for c in row) + "</tr>" for row in cells)
        head = "".join(f"<th>{_e(h)}</th>" for h in headers)
        title = re.sub(r"`([^`]+)`", r"<code>\1</code>", _e(title))  # the Markdown titles' code spans
        parts.append((f"<p>{title}</p>" if title else "") + f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div>')
        if notes:
            parts.append('<ol class="notes">' + "".join(f'<li id="table{ti}-note{i}">{_e(n)}</li>' for i, n in enumerate(notes, 1)) + "</ol>")
    return "".join(parts)


def _experiment_module(path: Path):
    """The ``interp.experiments`` module that wrote ``path`` (its ``experiment.json``), or None."""
    f = Path(path) / "experiment.json"
    if not f.is_file():
        return None
    from interp.experiments import EXPERIMENTS, load

    name = json.loads(f.read_text()).get("experiment")
    return load(name) if name in EXPERIMENTS else None


def render_sweep(sweep_dir: Path) -> tuple[str, int]:
    """The HTML page of a sweep (or experiment) directory and its number of figures.

    An experiment's own figures (its module's ``figures``) come first; a directory that is itself
    a sweep also gets the generic sweep figures.
    """
    mod = _experiment_module(sweep_dir)
    figs = list(mod.figures(sweep_dir)) if mod is not None and hasattr(mod, "figures") else []
    if (sweep_dir / "sweep.json").is_file():
        more, results, summary = sweep_figures(sweep_dir)
        figs += more
    else:
        results, summary = [], _read_csv(sweep_dir / "summary.csv")
    name = sweep_dir.resolve().name
    if (sweep_dir / "sweep.json").is_file():
        meta = (f"{len(results)} members finished, {len(figs)} figures. Each member is a run directory under <code>runs/</code>; "
                f"<code>python -m interp.report {_e(name)}/runs/NAME</code> draws one of them in full.")
        tail = "<h2>Results</h2>" + _csv_table(results)
    else:
        stages = sorted(d.name for d in sweep_dir.iterdir() if (d / "sweep.json").is_file())
        meta = (f"{len(figs)} figures. The experiment's sweeps are {', '.join(f'<code>{_e(s)}/</code>' for s in stages) or 'none yet'}; "
                f"<code>python -m interp.report {_e(name)}/STAGE</code> draws one of them.")
        tail = ""
    if summary and mod is not None and hasattr(mod, "TABLES"):
        table = (experiment_tables_html(mod, sweep_dir / tables.SUMMARY_FILE)
                 + f"<details><summary>Every column of <code>{tables.SUMMARY_FILE}</code></summary>{_csv_table(summary)}</details>")
    else:
        table = _csv_table(summary)
    body = ("<h2>Summary</h2>" + table if summary else "") + "".join(_figure_html(n, f) for n, f in enumerate(figs, 1))
    title = f"{mod.__name__.rsplit('.', 1)[-1]}: {mod.DESCRIPTION}" if mod is not None else f"sweep {name}"
    return _page(title, f"Directory <code>{_e(name)}</code>. " + meta, body + tail), len(figs)


def is_sweep(path: Path) -> bool:
    """A sweep directory, or an experiment directory (possibly made of several sweeps)."""
    return (Path(path) / "sweep.json").is_file() or (Path(path) / "experiment.json").is_file()


# ---- command line ----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m interp.report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR",
                   help="run directories written by python -m interp.train, or one sweep/experiment directory (python -m interp.sweep / interp.experiment)")
    p.add_argument("--out", type=Path, default=None, metavar="FILE",
                   help=f"output HTML file (default: RUN_DIR/{runs.REPORT_FILE}; with several runs FIRST_RUN_DIR/{COMPARE_FILE})")
    p.add_argument("--force", action="store_true", help="recompute the analysis tables even if they are up to date")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    t = time.perf_counter()
    try:
        out = write_report(args.run_dirs, args.out, force=args.force, progress=not args.quiet)
    except (RunError, ConfigError, SweepError) as e:
        print(f"python -m interp.report: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"python -m interp.report: error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2
    size = out.stat().st_size / 1e6
    print(f"{out} ({size:.1f} MB, {time.perf_counter() - t:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
