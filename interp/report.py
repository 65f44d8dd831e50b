"""One self-contained HTML report of one or more runs.

    python -m interp.report checkpoints/mod_add_p113                 # -> checkpoints/mod_add_p113/report.html
    python -m interp.report RUN_A RUN_B --out compare.html           # curves of both runs overlaid

The page opens offline: plotly.js is inlined once and nothing is fetched from the network. The
analysis tables of each run (``interp.analyze``) are brought up to date first, so a new checkpoint
or a missing cache is analysed before the page is drawn.

Figures: loss/accuracy with the phase boundaries; restricted, excluded, train and test loss; Gini
coefficients and the sum of squared weights; C_gen/C_mem logits, each circuit's own parameter norm
and their ratio (curves of every run overlaid, one colour per run). Then, for each run, its final
checkpoint: Fourier norms of W_E and W_L per frequency, W_E's Fourier norms across training, neurons
clustered by frequency and the attention of the four heads over (a, b). The Fourier figures are
left out (with a note) for tasks the Fourier analysers do not apply to.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import html
import importlib.metadata as md
import json
import logging
import math
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from analyses import fourier
from interp import plots, runs
from interp.cli import Parser
from interp.analyze import analyze_run, load_frequency_table
from interp.config import ConfigError
from interp.runs import Run, RunError

log = logging.getLogger(__name__)

COMPARE_FILE = "report_compare.html"  # default name of a report of several runs (in the first run's directory)
PLOTLY_CONFIG = {"responsive": True, "displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}
CLUSTER_THRESHOLD = 0.85  # the default of analyses.fourier.cluster_neurons, drawn on the neuron figure

CAPTIONS = {
    "training": "Train loss falls to ~0 first (memorisation); test loss plateaus high, then drops sharply when the model groks. "
                "Dotted lines: detected phase boundaries.",
    "progress": "Restricted loss (only the key-frequency part of the logits) falls before test loss does; excluded loss "
                "(key frequencies removed) rises as the memorised solution is replaced by the Fourier circuit.",
    "weights": "During cleanup the Fourier norms of W_E and W_L become sparse (Gini rises) while weight decay drives the "
               "sum of squared weights down.",
    "efficiency": "Top: the correct-class logit (train split) of the key-frequency part of the logits (C_gen) and of the rest "
                  "(C_mem). Middle: each circuit's own parameter norm; 'shared' (attention, W_pos, the '=' embedding, constant "
                  "components) counts in neither. Bottom: logit per unit of own norm (analyses.efficiency). Dotted lines: "
                  "phase boundaries, and the step from which C_gen stays the more efficient circuit.",
    "fourier_norms": "A handful of frequencies (red: the key frequencies found by neuron clustering) carry almost all of "
                     "the embedding and neuron-to-logit norm; the others are near zero.",
    "fourier_training": "Rows are frequencies (* = key). Look for the key-frequency rows to brighten during circuit formation "
                        "and the others to fade in cleanup.",
    "neurons": "Each dot is an MLP neuron: most are explained (> 85% of variance) by a single frequency; groups show how "
               "many neurons each key frequency uses.",
    "attention": "Attention weight from the '=' position to token a for each head as a function of (a, b); the rest goes "
                 "to b and '='. Periodic stripes mean the head reads a and b in Fourier form.",
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
    clusters: fourier.NeuronClusters | None = field(default=None, repr=False)

    @property
    def fourier(self) -> bool:
        return bool(self.summary.get("fourier_applies"))


# ---- data -----------------------------------------------------------------------------------------
@torch.no_grad()
def attention_to_first_operand(model: HookedTransformer, run: Run) -> Float[Tensor, "n_heads p p"]:
    """Attention weight from the ``=`` query to the key ``a`` (``blocks.0.attn.hook_pattern[:, h, 2, 0]``) on the (a, b) grid.

    Args:
        model: the run's HookedTransformer.
        run: the run (its ``inputs`` are the pairs; pairs that are not inputs, such as b = 0 of
            ``mod_div``, stay NaN).
    Returns:
        ``[n_heads, p, p]`` indexed ``[head, a, b]``.
    """
    name = "blocks.0.attn.hook_pattern"
    _, cache = model.run_with_cache(run.inputs, names_filter=name)
    w = cache[name][:, :, -1, 0]  # [N, heads]
    p = run.config.p
    grid = torch.full((w.shape[1], p, p), math.nan)
    grid[:, run.inputs[:, 0], run.inputs[:, 1]] = w.T.float()
    return grid


def _unique_names(paths: list[Path]) -> list[str]:
    names = [p.resolve().name for p in paths]
    if len(set(names)) == len(names):
        return names
    return [f"{p.resolve().parent.name}/{p.resolve().name}" for p in paths]


def collect(run_dir: Path, name: str | None = None, force: bool = False, progress: bool = False) -> RunView:
    """Bring the run's analysis up to date and gather what the report draws.

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
    model = run.load_model(view.step)
    view.attention = attention_to_first_operand(model, run)
    if view.fourier:
        p = run.config.p
        with torch.no_grad():
            view.W_E_norms = fourier.frequency_norms(fourier.embedding_fourier_norms(model.W_E, p))
            view.W_L_norms = fourier.frequency_norms(fourier.unembed_fourier_norms(fourier.neuron_logit_map(model)))
            view.clusters = fourier.cluster_neurons(fourier.mlp_activations(model, p, run.config.eq_token), CLUSTER_THRESHOLD)
    return view


# ---- figures ----------------------------------------------------------------------------------
@dataclass
class Figure:
    key: str
    fig: object
    caption: str


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


def overlay_figures(views: list[RunView]) -> list[Figure]:
    """The curves of every run in one figure each."""
    phases = {v.name: v.summary.get("phases", {}) for v in views}
    metrics = {v.name: (v.run.metrics or v.rows) for v in views}
    tables = {v.name: v.rows for v in views}
    out = [Figure("training", plots.training_curves(metrics, phases), CAPTIONS["training"])]
    if any(v.fourier for v in views):  # without key frequencies the rest of these are empty
        out.append(Figure("progress", plots.progress_losses(tables, phases), CAPTIONS["progress"]))
    # the efficiency figure also marks where C_gen becomes the more efficient circuit for good
    eff_phases = {v.name: {**phases[v.name], "cgen_more_efficient_from": v.summary.get("cgen_more_efficient_from")} for v in views}
    for key, fn, ph, caption in (("weights", plots.weight_measures, phases, CAPTIONS["weights"]),
                                 ("efficiency", plots.circuit_efficiency, eff_phases, efficiency_caption(views))):
        fig = fn(tables, ph)
        if fig.data:
            out.append(Figure(key, fig, caption))
    return out


def run_figures(view: RunView) -> list[Figure]:
    """The figures of one run's final checkpoint."""
    suffix = f" ({view.name}, step {view.step})"
    out = []
    if view.fourier:
        keys = view.summary.get("key_frequencies", [])
        out.append(Figure("fourier_norms", plots.fourier_norms(view.W_E_norms, view.W_L_norms, keys,
                                                               "Fourier norms of W_E and W_L per frequency" + suffix), CAPTIONS["fourier_norms"]))
        if view.freq_rows:
            out.append(Figure("fourier_training", plots.frequency_over_training(
                view.freq_rows, "W_E_norm", keys, f"Fourier norm of W_E per frequency across training ({view.name})"),
                CAPTIONS["fourier_training"]))
        out.append(Figure("neurons", plots.neuron_clusters(view.clusters.freq, view.clusters.frac_explained, CLUSTER_THRESHOLD,
                                                           "MLP neurons clustered by frequency" + suffix), CAPTIONS["neurons"]))
    out.append(Figure("attention", plots.attention_grid(view.attention, "Attention from '=' to a, per head, over (a, b)" + suffix),
                      CAPTIONS["attention"]))
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
        row("unclustered neurons", lambda v: _e(len(v.summary.get("unclustered_neurons", []))) if v.fourier else "n/a"),
        row("phases (step)", phases),
        row("trained with", versions),
        row("git commit", lambda v: f"<code>{_e(v.meta.get('git_commit') or 'unknown')}</code>"),
    ]
    return f'<div class="scroll"><table><tr><th>run</th>{head}</tr>{"".join(rows)}</table></div>'


def _generator_versions() -> str:
    out = [f"python {platform.python_version()}"]
    for pkg in ("interp", "torch", "transformer-lens", "plotly"):
        try:
            out.append(f"{pkg} {md.version(pkg)}")
        except md.PackageNotFoundError:
            pass
    return ", ".join(out)


def render(views: list[RunView]) -> tuple[str, int]:
    """The HTML page of ``views`` and its number of figures."""
    from plotly.offline import get_plotlyjs

    sections: list[tuple[str, list[Figure], list[str]]] = []
    notes = [f"{v.name}: {v.summary.get('note')}" for v in views if not v.fourier and v.summary.get("note")]
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
            div = f.fig.to_html(full_html=False, include_plotlyjs=False, config=PLOTLY_CONFIG, div_id=f"fig-{n}-{f.key}",
                                default_width="100%")
            parts.append(f'<figure id="figure-{n}"><div class="plot">{div}</div><figcaption><b>Figure {n}.</b> {_e(f.caption)}</figcaption></figure>')

    names = ", ".join(v.name for v in views)
    defs = views[0].summary.get("phase_definitions", {})
    defs_html = "".join(f"<li><b>{_e(k)}</b>: {_e(d)}</li>" for k, d in defs.items())
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>interp report: {_e(names)}</title>
<style>{CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body><main>
<h1>interp report: {_e(names)}</h1>
<p class="meta">Generated {now} by <code>python -m interp.report</code> with {_e(_generator_versions())}.
{len(views)} run(s), {n} figures. Per-model figures use each run's final checkpoint.</p>
<div class="cols">
<section><h2>Runs</h2>
{_run_table(views)}
<details><summary>Phase boundaries: definitions</summary><ul>{defs_html}</ul></details></section>
<section><h2>Configuration</h2>
{_config_table(views)}</section>
</div>
{"".join(parts)}
</main></body></html>
"""
    return page, n


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


def write_report(run_dirs: list[str | Path], out: str | Path | None = None, force: bool = False, progress: bool = False) -> Path:
    """Write the report of ``run_dirs`` atomically to ``out`` (default: ``default_output``); returns the path."""
    page, n = build_report(run_dirs, force=force, progress=progress)
    out = Path(out) if out is not None else default_output(run_dirs)
    runs.write_text(out, page)
    log.info("%s: %d figures, %.1f MB", out, n, len(page.encode()) / 1e6)
    return out


# ---- command line ----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m interp.report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="run directories written by python -m interp.train")
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
        if args.out is not None and args.out.is_dir():
            raise RunError(f"--out {args.out}: is a directory; give a file name")
        out = write_report(args.run_dirs, args.out, force=args.force, progress=not args.quiet)
    except (RunError, ConfigError) as e:
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
