"""Figures of runs and analyses: the one module that imports plotly.

Every function takes data that is already computed (metric rows, analysis tables, tensors from
``analyses/`` or from a TransformerLens cache) and returns a ``plotly.graph_objects.Figure`` with a
title and axis labels; nothing here computes an interpretability measure. ``interp.report`` puts
the figures into one HTML page; the notebooks show them inline.

Curves of several runs share one figure (one colour per run, legend = run name). Curves longer
than ``MAX_POINTS`` are thinned to evenly spaced points (the last one always kept), and values are
stored as float32, to keep the report of a long run small.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots


@dataclass
class Figure:
    """A figure of the report and its caption (written from the numbers it shows); ``key`` names it."""

    key: str
    fig: go.Figure
    caption: str

MAX_POINTS = 2000
COLORS = qualitative.Plotly
GEN_COLOR, MEM_COLOR = "#d62728", "#4a78a8"  # C_gen and C_mem in the figures of one run
FONT = dict(family="DejaVu Sans, Liberation Sans, Arial, sans-serif", size=13)
# Short labels of the phase boundaries of ``interp.phases.PHASE_DEFINITIONS``.
PHASE_LABELS = {
    "memorised": "memorised", "circuit_formation_start": "circuit formation", "cgen_overtakes_cmem": "C_gen > C_mem",
    "cleanup_start": "cleanup", "test_acc_0.9": "test acc 0.9", "grokked": "grokked",
    "cgen_more_efficient_from": "C_gen more efficient",  # summary["cgen_more_efficient_from"], not a phase
}

Rows = Sequence[Mapping[str, float]]


# ---- helpers -----------------------------------------------------------------------------------
def color(i: int) -> str:
    """The colour of the ``i``-th run."""
    return COLORS[i % len(COLORS)]


def thin(rows: Rows, max_points: int = MAX_POINTS) -> list:
    """At most ``max_points`` evenly spaced rows of ``rows``, the first and last always kept."""
    rows = list(rows)
    if len(rows) <= max_points:
        return rows
    idx = np.unique(np.linspace(0, len(rows) - 1, max_points).round().astype(int))
    return [rows[i] for i in idx]


def _column(rows: Rows, key: str) -> list[float | None]:
    """Values of ``key`` as float32-rounded floats; missing or NaN values become gaps (None)."""
    out = []
    for r in rows:
        v = r.get(key)
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            out.append(None)
        else:
            out.append(float(np.float32(v)))
    return out


def _has_values(rows: Rows, key: str) -> bool:
    return any(v is not None for v in _column(rows, key))


def _array(x, decimals: int | None = None) -> np.ndarray:
    """A float32 numpy array of a tensor or array (rounded to ``decimals`` if given)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if decimals is not None:
        a = np.round(a, decimals)
    return a.astype(np.float32)


def _legend_rows(fig: go.Figure, width_px: int = 900) -> int:
    """About how many rows a horizontal legend of ``fig``'s named traces takes at ``width_px``."""
    widths = [45 + 7 * len(t.name or "") for t in fig.data if t.showlegend is not False and t.name]
    rows, used = (1 if widths else 0), 0
    for w in widths:
        if used and used + w > width_px:
            rows, used = rows + 1, 0
        used += w
    return rows


def _layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    # the legend goes below the x-axis titles, at the bottom of the figure, where it cannot cover the
    # title or the subplot titles (which sit above the plot area)
    extra = 22 * _legend_rows(fig)
    fig.update_layout(
        title=dict(text=title, x=0.01, xanchor="left", y=1, yref="container", yanchor="top", pad=dict(t=12)),
        height=height + extra,
        autosize=True,
        font=FONT,
        margin=dict(l=70, r=20, t=70, b=60 + extra),
        legend=dict(orientation="h", yref="container", yanchor="bottom", y=0.0, xanchor="left", x=0.01),
        template="plotly_white",
    )
    return fig


def _mark_phases(fig: go.Figure, phases: Mapping[str, Mapping[str, int | None]] | None, names: Sequence[str]) -> None:
    """Vertical dotted lines at each run's phase boundaries, in the run's colour, on every subplot."""
    if not phases:
        return
    single = len(names) == 1
    for i, name in enumerate(names):
        for key, step in (phases.get(name) or {}).items():
            if step is None:
                continue
            label = PHASE_LABELS.get(key, key)
            fig.add_vline(
                x=step, line=dict(color="#555" if single else color(i), dash="dot", width=1),
                row="all", col="all",
            )
            # one label per boundary, inside the top panel, reading upwards along its line
            fig.add_annotation(
                x=step, xref="x", y=1.0, yref="paper", yanchor="top", xanchor="right", textangle=-90,
                text=label if single else f"{label} ({name})", showarrow=False, bgcolor="rgba(255,255,255,0.75)",
                font=dict(size=10, color="#444" if single else color(i)),
            )


def _curves(
    runs: Mapping[str, Rows],
    panels: Sequence[tuple[str, bool, Sequence[tuple[str, str, str]]]],
    title: str,
    phases: Mapping[str, Mapping[str, int | None]] | None,
    panel_height: int = 300,
) -> go.Figure:
    """Stacked panels sharing the step axis.

    ``panels``: ``(y axis title, log y, [(column, label, dash), ...])`` per panel; each run draws one
    trace per column in its colour (dash tells the columns apart).
    """
    names = list(runs)
    fig = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.08)
    for i, name in enumerate(names):
        rows = thin(sorted(runs[name], key=lambda r: r["step"]))
        x = [int(r["step"]) for r in rows]
        for p, (_, _, cols) in enumerate(panels, start=1):
            for col, label, dash in cols:
                if not _has_values(rows, col):
                    continue
                fig.add_trace(
                    go.Scatter(
                        x=x, y=_column(rows, col), mode="lines", name=label if len(names) == 1 else f"{name}: {label}",
                        legendgroup=f"{name}:{col}", line=dict(color=color(i) if len(names) > 1 else None, dash=dash, width=2),
                        meta=name, hovertemplate=f"{name}<br>{label}<br>step %{{x}}<br>%{{y:.4g}}<extra></extra>",
                    ),
                    row=p, col=1,
                )
    for p, (ytitle, log, _) in enumerate(panels, start=1):
        fig.update_yaxes(title_text=ytitle, type="log" if log else "linear", exponentformat="power", row=p, col=1)
    fig.update_xaxes(title_text="training step", row=len(panels), col=1)
    _layout(fig, title, height=110 + panel_height * len(panels))
    _mark_phases(fig, phases, names)
    return fig


# ---- curves across training ------------------------------------------------------------------
def training_curves(runs: Mapping[str, Rows], phases: Mapping[str, Mapping[str, int | None]] | None = None) -> go.Figure:
    """Train/test loss (log y) and accuracy against step, phase boundaries marked.

    Args:
        runs: ``{run name: rows}`` with ``step, train_loss, test_loss, train_acc, test_acc`` (the
            run's ``metrics.jsonl`` or its analysis table).
        phases: ``{run name: {phase: step or None}}`` (``summary["phases"]`` of ``interp.analyze``).
    """
    return _curves(
        runs,
        [
            ("loss (cross-entropy)", True, [("train_loss", "train loss", "dash"), ("test_loss", "test loss", "solid")]),
            ("accuracy", False, [("train_acc", "train accuracy", "dash"), ("test_acc", "test accuracy", "solid")]),
        ],
        "Loss and accuracy during training",
        phases,
    )


def metric_curves(
    runs: Mapping[str, Rows], columns: Sequence[tuple[str, str]], title: str, y_title: str, log_y: bool = False,
    phases: Mapping[str, Mapping[str, int | None]] | None = None,
) -> go.Figure:
    """Any columns of metric or analysis rows against step, in one panel.

    Args:
        runs: ``{run name: rows}`` with ``step`` and the columns.
        columns: ``[(column, label), ...]``.
        title, y_title: figure and y-axis titles.
        log_y: logarithmic y axis.
        phases: as in ``training_curves``.
    """
    dashes = ("solid", "dash", "dot", "dashdot", "longdash")
    cols = [(c, label, dashes[i % len(dashes)]) for i, (c, label) in enumerate(columns)]
    return _curves(runs, [(y_title, log_y, cols)], title, phases, panel_height=380)


def progress_losses(runs: Mapping[str, Rows], phases: Mapping[str, Mapping[str, int | None]] | None = None) -> go.Figure:
    """Restricted (test), excluded (train), train and test loss together, log y.

    Args:
        runs: ``{run name: rows of the analysis table}``.
        phases: as in ``training_curves``.
    """
    return _curves(
        runs,
        [("loss (cross-entropy)", True, [
            ("train_loss", "train loss", "dash"),
            ("test_loss", "test loss", "solid"),
            ("restricted_loss", "restricted loss (test)", "dot"),
            ("excluded_loss", "excluded loss (train)", "dashdot"),
        ])],
        "Progress measures: restricted and excluded loss",
        phases,
        panel_height=420,
    )


def weight_measures(runs: Mapping[str, Rows], phases: Mapping[str, Mapping[str, int | None]] | None = None) -> go.Figure:
    """Gini coefficients of the Fourier norms of W_E and W_L, and the sum of squared weights.

    Args:
        runs: ``{run name: rows of the analysis table}``.
        phases: as in ``training_curves``.
    """
    return _curves(
        runs,
        [
            ("Gini coefficient", False, [("gini_W_E", "Gini of W_E Fourier norms", "solid"), ("gini_W_L", "Gini of W_L Fourier norms", "dash")]),
            ("sum of squared weights", False, [("sum_sq_weights", "sum of squared weights", "solid")]),
        ],
        "Sparsity in the Fourier basis and total weight",
        phases,
    )


def circuit_efficiency(runs: Mapping[str, Rows], phases: Mapping[str, Mapping[str, int | None]] | None = None) -> go.Figure:
    """C_gen and C_mem: correct-class logits, each circuit's own parameter norm, and their ratio.

    Args:
        runs: ``{run name: rows of the analysis table}`` (``cgen_logit, cmem_logit``,
            ``cgen_param_norm, cmem_param_norm, shared_param_norm``, ``cgen_efficiency, cmem_efficiency``).
        phases: as in ``training_curves``.
    """
    fig = _curves(
        runs,
        [
            ("correct-class logit (train)", False, [("cgen_logit", "C_gen logit", "solid"), ("cmem_logit", "C_mem logit", "dash")]),
            ("parameter norm", False, [("cgen_param_norm", "C_gen norm", "solid"), ("cmem_param_norm", "C_mem norm", "dash"),
                                       ("shared_param_norm", "shared norm (neither)", "dot")]),
            ("logit per unit own norm", False, [("cgen_efficiency", "C_gen efficiency", "solid"),
                                                ("cmem_efficiency", "C_mem efficiency", "dash")]),
        ],
        "Circuit efficiency: each circuit's logit per unit of its own parameter norm",
        phases,
        panel_height=260,
    )
    if len(runs) == 1:  # one colour per circuit across the panels (several runs: one colour per run)
        for t in fig.data:
            t.line.color = GEN_COLOR if t.name.startswith("C_gen") else MEM_COLOR if t.name.startswith("C_mem") else "#888"
    return fig


# ---- one model ---------------------------------------------------------------------------------
def fourier_norms(
    W_E_norms, W_L_norms=None, key_frequencies: Iterable[int] = (), title: str = "Fourier norms of W_E and W_L per frequency"
) -> go.Figure:
    """Bars of the per-frequency Fourier norms of W_E and W_L, key frequencies highlighted.

    Args:
        W_E_norms, W_L_norms: ``[(p - 1) // 2]`` norms, index ``k - 1`` for frequency ``k``
            (``analyses.fourier.frequency_norms``); ``W_L_norms`` may be None (one panel).
        key_frequencies: frequencies to highlight.
        title: figure title.
    """
    keys = set(int(k) for k in key_frequencies)
    panels = [(W_E_norms, "W_E")] + ([(W_L_norms, "W_L = W_out W_U")] if W_L_norms is not None else [])
    fig = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.1)
    for row, (norms, label) in enumerate(panels, start=1):
        y = _array(norms, 5)
        k = np.arange(1, len(y) + 1)
        colors = ["#d62728" if int(f) in keys else "#9aa7b8" for f in k]
        fig.add_trace(go.Bar(x=k, y=y, marker_color=colors, name=label, showlegend=False,
                             hovertemplate=f"{label}<br>frequency %{{x}}<br>norm %{{y:.4g}}<extra></extra>"), row=row, col=1)
        fig.update_yaxes(title_text=f"{label} norm", row=row, col=1)
    fig.update_xaxes(title_text="frequency k (w = 2πk/p); red: key frequencies", row=len(panels), col=1)
    return _layout(fig, title, height=120 + 220 * len(panels))


def frequency_over_training(
    freq_rows: Rows, column: str = "W_E_norm", key_frequencies: Iterable[int] = (),
    title: str = "Fourier norm of W_E per frequency across training", value_label: str = "norm",
) -> go.Figure:
    """Heatmap (frequency x step) of one column of the frequency table of ``interp.analyze``.

    Args:
        freq_rows: rows with ``step``, ``freq`` and ``column`` (``load_frequency_table``).
        column: ``W_E_norm``, ``W_L_norm`` or ``excluded_loss``.
        key_frequencies: marked with ``*`` on the frequency axis.
        title: figure title.
        value_label: colour-bar title.
    """
    steps = sorted({int(r["step"]) for r in freq_rows})
    freqs = sorted({int(r["freq"]) for r in freq_rows})
    si, fi = {s: i for i, s in enumerate(steps)}, {f: i for i, f in enumerate(freqs)}
    z = np.full((len(freqs), len(steps)), np.nan)
    for r in freq_rows:
        z[fi[int(r["freq"])], si[int(r["step"])]] = r[column]
    keys = set(int(k) for k in key_frequencies)
    step_tick = max(1, round(len(freqs) / 12 / 5) * 5) if len(freqs) > 15 else 1
    regular = {k for k in freqs if (k % step_tick == 0 or k == 1) and not any(abs(k - j) <= 1 for j in keys)}
    ticks = sorted(keys | regular)  # every key frequency labelled; regular ticks kept clear of them
    fig = go.Figure(go.Heatmap(
        x=steps, y=freqs, z=_array(z, 4), colorscale="Viridis", colorbar=dict(title=value_label),
        hovertemplate="step %{x}<br>frequency %{y}<br>%{z:.3g}<extra></extra>",
    ))
    fig.update_xaxes(title_text="training step")
    fig.update_yaxes(title_text="frequency k (* key)", tickmode="array", tickvals=ticks,
                     ticktext=[f"<b>{k}*</b>" if k in keys else str(k) for k in ticks])
    return _layout(fig, title, height=max(380, min(900, 12 * len(freqs) + 160)))


def neuron_clusters(freq, frac_explained, threshold: float = 0.85, title: str = "MLP neurons clustered by frequency",
                    dead: Iterable[int] = ()) -> go.Figure:
    """Each neuron's fraction of variance explained by its best frequency, grouped by that frequency.

    Args:
        freq: ``[d_mlp]`` assigned key frequency per neuron, 0 for the others
            (``analyses.fourier.NeuronClusters.freq``).
        frac_explained: ``[d_mlp]`` fraction of variance explained by the best frequency.
        threshold: the clustering threshold (drawn as a line).
        title: figure title.
        dead: indices of dead neurons (no variance), shown as their own group.
    """
    f = _array(freq).astype(int)
    dead = list(dead)
    f[dead] = -1
    fr = _array(frac_explained, 4)
    big = np.iinfo(np.int32).max
    order = np.lexsort((-fr, np.where(f <= 0, big + f, f)))  # by frequency, then unassigned, then dead
    fig = go.Figure()
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    groups = sorted(set(f.tolist()) - {0, -1}) + [k for k in (0, -1) if (f == k).any()]
    for j, k in enumerate(groups):
        m = f == k
        name = {0: f"no key frequency ({int(m.sum())})", -1: f"dead ({int(m.sum())})"}.get(k, f"k = {k} ({int(m.sum())} neurons)")
        fig.add_trace(go.Scatter(
            x=rank[m], y=fr[m], mode="markers", name=name, customdata=np.nonzero(m)[0],
            marker=dict(size=5, color={0: "#b0b0b0", -1: "#555555"}.get(k, color(j))),
            hovertemplate="neuron %{customdata}<br>explained %{y:.3f}<extra>" + name + "</extra>",
        ))
    fig.add_hline(y=threshold, line=dict(color="#555", dash="dot", width=1),
                  annotation_text=f"threshold {threshold:g}", annotation_position="bottom right")
    fig.update_xaxes(title_text="neuron (sorted by assigned frequency, then fraction explained)", zeroline=False)
    fig.update_yaxes(title_text="fraction of variance explained", range=[0, 1.02])
    fig = _layout(fig, title, height=440)
    fig.update_layout(legend=dict(orientation="v", yanchor="top", y=1, xanchor="left", x=1.01))
    return fig


def circuit_split(W_E_norms, W_U_norms, neuron_norms, gen_neurons, key_frequencies: Iterable[int] = (),
                  title: str = "The weights of C_gen and C_mem") -> go.Figure:
    """Which weights each circuit gets (red C_gen, blue C_mem): W_E and W_U per frequency, and the MLP neurons.

    Args:
        W_E_norms, W_U_norms: ``[(p - 1) // 2]`` Fourier norms per frequency of ``W_E[:p]`` over the
            tokens and of ``W_U`` over the classes (index ``k - 1`` for frequency ``k``).
        neuron_norms: ``[d_mlp]`` norm of each neuron's parameters (``W_in`` column, ``b_in``, ``W_out`` row).
        gen_neurons: ``[d_mlp]`` True for C_gen's neurons.
        key_frequencies: the frequencies that go to C_gen.
        title: figure title.
    """
    keys = set(int(k) for k in key_frequencies)
    fig = make_subplots(rows=3, cols=1, vertical_spacing=0.12,
                        subplot_titles=["W_E[:p] over the tokens", "W_U over the classes", "MLP neurons, largest first"])
    for row, (norms, label) in enumerate(((W_E_norms, "W_E"), (W_U_norms, "W_U")), start=1):
        y = _array(norms, 5)
        k = np.arange(1, len(y) + 1)
        for gen in (True, False):
            m = np.array([(int(f) in keys) == gen for f in k])
            fig.add_trace(go.Bar(x=k[m], y=y[m], marker_color=GEN_COLOR if gen else MEM_COLOR, name="C_gen" if gen else "C_mem",
                                 legendgroup="gen" if gen else "mem", showlegend=False,
                                 hovertemplate=f"{label}<br>frequency %{{x}}<br>norm %{{y:.4g}}<extra></extra>"), row=row, col=1)
        fig.update_xaxes(title_text="frequency k", row=row, col=1)
        fig.update_yaxes(title_text="norm", row=row, col=1)
    n = _array(neuron_norms, 5)
    g = np.asarray(_array(gen_neurons) > 0)
    order = np.argsort(-n, kind="stable")
    for gen in (True, False):
        m = g[order] == gen
        fig.add_trace(go.Bar(x=np.arange(len(n))[m], y=n[order][m], marker_color=GEN_COLOR if gen else MEM_COLOR,
                             name=f"C_gen ({int(g.sum())} neurons)" if gen else f"C_mem ({int((~g).sum())} neurons)",
                             legendgroup="gen" if gen else "mem", customdata=order[m], marker_line_width=0,
                             hovertemplate="neuron %{customdata}<br>norm %{y:.4g}<extra></extra>"), row=3, col=1)
    fig.update_xaxes(title_text="neuron rank by norm", row=3, col=1)
    fig.update_yaxes(title_text="norm", row=3, col=1)
    fig.update_layout(bargap=0.1)
    return _layout(fig, title, height=820)


def attention_grid(pattern, title: str = "Attention from '=' to token a, per head, over (a, b)") -> go.Figure:
    """One heatmap per head of an attention weight as a function of the inputs ``(a, b)``.

    Args:
        pattern: ``[n_heads, p, p]`` (NaN where a pair is not an input), indexed ``[head, a, b]``;
            for example ``blocks.0.attn.hook_pattern[:, head, 2, 0]`` scattered onto the grid.
        title: figure title.
    """
    z = _array(pattern, 3)
    n = z.shape[0]
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[f"head {h}" for h in range(n)],
                        horizontal_spacing=0.03, vertical_spacing=0.12)
    for h in range(n):
        r, c = h // cols + 1, h % cols + 1
        fig.add_trace(go.Heatmap(
            z=z[h], zmin=0, zmax=1, colorscale="Blues", showscale=h == 0, colorbar=dict(title="weight", len=0.9),
            hovertemplate=f"head {h}<br>a %{{y}}<br>b %{{x}}<br>%{{z:.3f}}<extra></extra>",
        ), row=r, col=c)
        fig.update_xaxes(title_text="b", row=r, col=c, constrain="domain")
        fig.update_yaxes(title_text="a" if c == 1 else None, showticklabels=c == 1, autorange="reversed", constrain="domain", row=r, col=c)
        fig.layout[f"yaxis{h + 1 if h else ''}"].scaleanchor = f"x{h + 1 if h else ''}"  # square cells
    return _layout(fig, title, height=130 + 270 * rows)


def heatmap(z, title: str, x_title: str, y_title: str, x=None, y=None, colorscale: str = "RdBu",
            zmid: float | None = 0.0, height: int = 420) -> go.Figure:
    """A single labelled heatmap (an activation over ``(a, b)``, a 2-D Fourier spectrum, ...).

    Args:
        z: ``[rows, cols]`` values.
        title, x_title, y_title: figure and axis titles.
        x, y: column and row labels (default: indices).
        colorscale: plotly colour scale; ``zmid`` centres a diverging scale (None: no centring).
        height: figure height in pixels.
    """
    fig = go.Figure(go.Heatmap(z=_array(z, 5), x=x, y=y, colorscale=colorscale, zmid=zmid))
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text=y_title, autorange="reversed")
    return _layout(fig, title, height=height)


def bars(values: Mapping[str, float], title: str, x_title: str, y_title: str, log_y: bool = False) -> go.Figure:
    """A labelled bar chart of ``{label: value}``."""
    fig = go.Figure(go.Bar(x=list(values), y=[float(v) for v in values.values()]))
    fig.update_xaxes(title_text=x_title, type="category")
    fig.update_yaxes(title_text=y_title, type="log" if log_y else "linear", exponentformat="power")
    return _layout(fig, title, height=380)


# ---- sweeps ----------------------------------------------------------------------------------
def sweep_outcome(points: Sequence[tuple[float, float | None]], x_title: str, y_title: str, budget: float | None,
                  title: str, log_x: bool = False) -> go.Figure:
    """An outcome per sweep member against a varied field, with the median over seeds.

    Args:
        points: ``(x, y)`` per member; ``y`` is ``None`` where the member never reached the outcome
            (drawn as open markers at ``budget``, labelled as not reached).
        x_title, y_title, title: axis and figure titles.
        budget: the y where unreached members are drawn (e.g. the step budget).
        log_x: logarithmic x axis.
    """
    fig = go.Figure()
    reached = [(x, y) for x, y in points if y is not None]
    missed = [x for x, y in points if y is None]
    fig.add_trace(go.Scatter(x=[x for x, _ in reached], y=[y for _, y in reached], mode="markers", name="each seed",
                             marker=dict(size=8, color=color(0), opacity=0.7)))
    if missed and budget is not None:
        fig.add_trace(go.Scatter(x=missed, y=[budget] * len(missed), mode="markers", name=f"not reached within {budget:g}",
                                 marker=dict(size=9, symbol="circle-open", color=color(1), line=dict(width=2))))
    xs = sorted({x for x, _ in points})
    med = []
    for x in xs:  # the median counts unreached members as later than any reached one
        ys = sorted(y if y is not None else math.inf for px, y in points if px == x)
        m = ys[(len(ys) - 1) // 2] if len(ys) % 2 else (ys[len(ys) // 2 - 1] + ys[len(ys) // 2]) / 2
        med.append(m if math.isfinite(m) else None)
    fig.add_trace(go.Scatter(x=xs, y=med, mode="lines+markers", name="median over seeds", line=dict(color=color(2), width=2),
                             connectgaps=False))
    fig.update_xaxes(title_text=x_title, type="log" if log_x else "linear")
    fig.update_yaxes(title_text=y_title)
    return _layout(fig, title, height=420)


def member_curves(members: Mapping[str, Rows], groups: Mapping[str, str], column: str, y_title: str, title: str,
                  log_y: bool = False) -> go.Figure:
    """One curve per sweep member (``column`` against step), one colour per group (e.g. per fraction).

    Args:
        members: ``{member name: metric rows}``.
        groups: ``{member name: group label}``; members of a group share a colour and a legend entry.
    """
    fig = go.Figure()
    labels = list(dict.fromkeys(groups[n] for n in members))
    shown: set[str] = set()
    for name, rows in members.items():
        g = groups[name]
        rows = thin(sorted(rows, key=lambda r: r["step"]), 500)
        fig.add_trace(go.Scatter(x=[int(r["step"]) for r in rows], y=_column(rows, column), mode="lines", name=g, legendgroup=g,
                                 showlegend=g not in shown, line=dict(color=color(labels.index(g)), width=1.5), opacity=0.8,
                                 hovertemplate=f"{name}<br>step %{{x}}<br>%{{y:.4g}}<extra></extra>"))
        shown.add(g)
    fig.update_xaxes(title_text="training step")
    fig.update_yaxes(title_text=y_title, type="log" if log_y else "linear", exponentformat="power")
    return _layout(fig, title, height=420)


def median_curves(groups: Mapping[str, Sequence[Rows]], column: str, y_title: str, title: str) -> go.Figure:
    """One line per group: the median over its members of ``column`` at each step, with a band from
    the lowest to the highest member (e.g. one group per method, one member per seed).

    Args:
        groups: ``{label: [metric rows of each member]}``; a step counts the members that have it.
    """
    fig = go.Figure()
    for i, (label, members) in enumerate(groups.items()):
        by_step: dict[int, list[float]] = {}
        for rows in members:
            for r in rows:
                v = r.get(column)
                if v is not None and math.isfinite(v):
                    by_step.setdefault(int(r["step"]), []).append(float(v))
        steps = [s for s, _ in thin(sorted(by_step.items()), 1000)]
        med = [float(np.median(by_step[s])) for s in steps]
        lo, hi = [min(by_step[s]) for s in steps], [max(by_step[s]) for s in steps]
        c = color(i)
        fig.add_trace(go.Scatter(x=steps + steps[::-1], y=_array(hi + lo[::-1], 5), fill="toself", fillcolor=c, opacity=0.15,
                                 line=dict(width=0), legendgroup=label, showlegend=False, hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=steps, y=_array(med, 5), mode="lines", name=f"{label} ({len(members)})", legendgroup=label,
                                 line=dict(color=c, width=2), hovertemplate=f"{label}<br>step %{{x}}<br>median %{{y:.4g}}<extra></extra>"))
    fig.update_xaxes(title_text="training step")
    fig.update_yaxes(title_text=y_title)
    return _layout(fig, title, height=460)


# ---- weight norm and accelerators (interp.experiments.omnigrok, .accelerate) --------------------
def accuracy_and_norm(runs: Mapping[str, Rows], phases: Mapping[str, Mapping[str, int | None]] | None = None,
                      title: str = "Accuracy and weight norm during training") -> go.Figure:
    """Train/test accuracy and the parameter norm against step, marked steps (``phases``) drawn.

    Args:
        runs: ``{run name: metric rows}`` with ``step, train_acc, test_acc, param_norm``.
        phases: ``{run name: {label: step or None}}``.
    """
    return _curves(
        runs,
        [
            ("accuracy", False, [("train_acc", "train accuracy", "dash"), ("test_acc", "test accuracy", "solid")]),
            ("parameter norm", False, [("param_norm", "parameter L2 norm", "solid")]),
        ],
        title,
        phases,
    )


def xy_lines(series: Mapping[str, tuple[Sequence[float], Sequence[float | None]]], x_title: str, y_title: str, title: str,
             log_x: bool = False, log_y: bool = False) -> go.Figure:
    """One marked line per named series ``{name: (xs, ys)}`` (``None`` in ys: a gap)."""
    fig = go.Figure()
    for i, (name, (xs, ys)) in enumerate(series.items()):
        fig.add_trace(go.Scatter(x=list(xs), y=[None if y is None else float(np.float32(y)) for y in ys], mode="lines+markers",
                                 name=name, line=dict(color=color(i), width=2), marker=dict(size=8)))
    fig.update_xaxes(title_text=x_title, type="log" if log_x else "linear")
    fig.update_yaxes(title_text=y_title, type="log" if log_y else "linear", exponentformat="power")
    return _layout(fig, title, height=420)


def median_with_range(series: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float], Sequence[float]]],
                      x_title: str, y_title: str, title: str, log_x: bool = False, y_range: tuple[float, float] | None = None
                      ) -> go.Figure:
    """One marked line per named series ``{name: (xs, medians, lows, highs)}``: the median over seeds, with
    an error bar from the lowest to the highest seed. Series after the first are moved 2% to the right
    so that their bars do not hide each other."""
    fig = go.Figure()
    for i, (name, (xs, med, lo, hi)) in enumerate(series.items()):
        fig.add_trace(go.Scatter(
            x=[x * (1 + 0.02 * i) for x in xs], y=list(med), mode="lines+markers", name=name,
            line=dict(color=color(i), width=2), marker=dict(size=8),
            error_y=dict(type="data", symmetric=False, array=[h - m for h, m in zip(hi, med)],
                         arrayminus=[m - low for m, low in zip(med, lo)])))
    fig.update_xaxes(title_text=x_title, type="log" if log_x else "linear")
    fig.update_yaxes(title_text=y_title, range=list(y_range) if y_range else None)
    return _layout(fig, title, height=420)


def generalised_fraction(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], budget: float, title: str,
                         y_title: str = "fraction of seeds generalised") -> go.Figure:
    """Step functions ``1 - S(t)`` per arm from Kaplan-Meier ``(event_times, survival)``, from 0 to ``budget``.

    An arm whose curve stays below 1 at ``budget`` had seeds that never generalised (censored).
    """
    fig = go.Figure()
    for i, (name, (times, surv)) in enumerate(curves.items()):
        xs, ys = [0.0], [0.0]
        for t, s in zip(times, surv):
            xs.append(float(t))
            ys.append(1.0 - float(s))
        xs.append(float(budget))
        ys.append(ys[-1])
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line_shape="hv", name=name, line=dict(color=color(i), width=2),
                                 hovertemplate=f"{name}<br>step %{{x}}<br>%{{y:.3g}}<extra></extra>"))
    fig.update_xaxes(title_text="training step")
    fig.update_yaxes(title_text=y_title, range=[-0.02, 1.02])
    return _layout(fig, title, height=420)


# ---- critical dataset size ---------------------------------------------------------------------------
def crossing_panels(panels: Sequence[Mapping], title: str) -> go.Figure:
    """Side-by-side log-log panels of two families' measure against training-set size, with a fit, a level
    and a crossing (``interp.experiments.dcrit``).

    Args:
        panels: each ``{"title", "series": [(name, xs, ys, flagged)], "fit": (xs, ys) or None,
            "level": y or None, "crossing": (x, lo, hi) or None}``; series are markers (crosses when
            ``flagged``), the fit dotted, the level dashed, the crossing a line over a shaded interval.
        title: the figure's title.
    Lines are traces, not shapes: shape coordinates on log axes would have to be given in log10 units.
    """
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p["title"] for p in panels], horizontal_spacing=0.1)
    names = list(dict.fromkeys(s[0].removesuffix(" (flagged)") for p in panels for s in p["series"]))
    for col, p in enumerate(panels, start=1):
        first = col == 1
        xs_all = [x for s in p["series"] for x in s[1]]
        ys_all = [y for s in p["series"] for y in s[2]] + ([p["level"]] if p["level"] else [])
        for name, xs, ys, flagged in p["series"]:
            c = color(names.index(name.removesuffix(" (flagged)")))
            fig.add_trace(go.Scatter(x=list(xs), y=list(ys), mode="markers", name=name, legendgroup=name, showlegend=first,
                                     marker=dict(color=c, size=8, symbol="x" if flagged else "circle", opacity=0.5 if flagged else 0.8)),
                          row=1, col=col)
        if p.get("fit"):
            fig.add_trace(go.Scatter(x=list(p["fit"][0]), y=list(p["fit"][1]), mode="lines", name="fit", legendgroup="fit",
                                     showlegend=first, line=dict(color=color(0), dash="dot")), row=1, col=col)
        if p.get("level") and xs_all:
            fig.add_trace(go.Scatter(x=[min(xs_all), max(xs_all)], y=[p["level"]] * 2, mode="lines", name="level", legendgroup="level",
                                     showlegend=first, line=dict(color=color(1), dash="dash")), row=1, col=col)
        if p.get("crossing") and ys_all:
            x, lo, hi = p["crossing"]
            y0, y1 = min(ys_all), max(ys_all)
            fig.add_trace(go.Scatter(x=[lo, hi, hi, lo, lo], y=[y0, y0, y1, y1, y0], fill="toself", mode="none", hoverinfo="skip",
                                     fillcolor="rgba(44,160,44,0.15)", name="interval", legendgroup="interval", showlegend=first),
                          row=1, col=col)
            fig.add_trace(go.Scatter(x=[x, x], y=[y0, y1], mode="lines", name="crossing", legendgroup="crossing", showlegend=first,
                                     line=dict(color=color(2))), row=1, col=col)
        fig.update_xaxes(title_text="training-set size D", type="log", row=1, col=col)
        fig.update_yaxes(type="log", row=1, col=col)
    return _layout(fig, title, height=460)


# ---- groups: irreps (interp.group_analysis) ------------------------------------------------------------
def irrep_shares(irrep_rows: Rows, names: Sequence[str], step: int, key_irreps: Iterable[int] = (),
                 title: str = "Share of each irrep") -> go.Figure:
    """Grouped bars: per irrep, its share of W_E, W_U, W_L and of the MLP activations at checkpoint ``step``.

    Args:
        irrep_rows: rows of ``irreps.csv`` (``interp.analyze.load_irrep_table``).
        names: irrep names by index (``summary["irreps"]``).
        step: the checkpoint drawn.
        key_irreps: marked with ``*``.
        title: figure title.
    """
    rows = sorted((r for r in irrep_rows if int(r["step"]) == step), key=lambda r: int(r["irrep"]))
    keys = set(int(k) for k in key_irreps)
    x = [f"<b>{names[int(r['irrep'])]}*</b>" if int(r["irrep"]) in keys else names[int(r["irrep"])] for r in rows]
    fig = go.Figure()
    for i, (col, label) in enumerate((("W_E_frac", "W_E"), ("W_U_frac", "W_U"), ("W_L_frac", "W_L = W_out W_U"),
                                      ("mlp_frac", "MLP activations"))):
        fig.add_trace(go.Bar(x=x, y=_column(rows, col), name=label, marker_color=color(i),
                             hovertemplate="%{x}<br>" + label + " share %{y:.3f}<extra></extra>"))
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="irrep (* key)")
    fig.update_yaxes(title_text="share of |.|^2 (MLP: of the centred variance)", range=[0, 1])
    return _layout(fig, title, height=420)


def irrep_over_training(irrep_rows: Rows, names: Sequence[str], column: str = "W_E_frac", key_irreps: Iterable[int] = (),
                        title: str = "Share of W_E per irrep across training", value_label: str = "share") -> go.Figure:
    """Heatmap (irrep x step) of one column of ``irreps.csv``; key irreps marked with ``*``."""
    steps = sorted({int(r["step"]) for r in irrep_rows})
    irr = sorted({int(r["irrep"]) for r in irrep_rows})
    si, ii = {s: i for i, s in enumerate(steps)}, {k: i for i, k in enumerate(irr)}
    z = np.full((len(irr), len(steps)), np.nan)
    for r in irrep_rows:
        z[ii[int(r["irrep"])], si[int(r["step"])]] = r[column]
    keys = set(int(k) for k in key_irreps)
    labels = [f"<b>{names[k]}*</b>" if k in keys else names[k] for k in irr]
    fig = go.Figure(go.Heatmap(x=steps, y=list(range(len(irr))), z=_array(z, 4), colorscale="Viridis", colorbar=dict(title=value_label),
                               customdata=np.array([[names[k]] * len(steps) for k in irr]),
                               hovertemplate="step %{x}<br>%{customdata}<br>%{z:.3g}<extra></extra>"))
    fig.update_xaxes(title_text="training step")
    fig.update_yaxes(title_text="irrep (* key)", tickmode="array", tickvals=list(range(len(irr))), ticktext=labels)
    return _layout(fig, title, height=max(360, min(900, 16 * len(irr) + 200)))
# ---- numerical stability, clock vs pizza, local learning coefficient (interp.analyze) -----------
def stability_curves(runs: Mapping[str, Rows], phases: Mapping[str, Mapping[str, int | None]] | None = None) -> go.Figure:
    """Float32 softmax collapse across training (``analyses.stability``'s columns).

    Args:
        runs: ``{run name: rows of the analysis table}`` (``softmax_collapse_frac, zero_loss_frac``,
            ``min_train_margin, loss_f32_minus_f64``).
        phases: as in ``training_curves``.
    """
    return _curves(
        runs,
        [
            ("fraction of train split", False, [("softmax_collapse_frac", "float32 softmax collapsed", "solid"),
                                                ("zero_loss_frac", "float32 loss exactly 0", "dash")]),
            ("logit margin", False, [("min_train_margin", "minimum train margin", "solid")]),
            ("float32 - float64", False, [("loss_f32_minus_f64", "train loss float32 minus float64", "solid")]),
        ],
        "Numerical stability: float32 softmax collapse on the training set",
        phases,
        panel_height=240,
    )


def mechanism_curves(runs: Mapping[str, Rows], references: Mapping[str, Mapping[str, float]] | None = None,
                     phases: Mapping[str, Mapping[str, int | None]] | None = None) -> go.Figure:
    """Gradient symmetricity, distance irrelevance and circularity across training (``analyses.mechanism``).

    Args:
        runs: ``{run name: rows of the analysis table}``.
        references: ``{"pizza": {column: value}, "clock": {column: value}}`` drawn as dotted horizontal
            lines on the panels of those columns.
        phases: as in ``training_curves``.
    """
    panels = [("gradient symmetricity", "grad_symmetricity"), ("distance irrelevance", "distance_irrelevance"),
              ("circularity", "circularity")]
    fig = _curves(runs, [(t, False, [(c, t, "solid")]) for t, c in panels],
                  "Clock or pizza: Zhong et al.'s measures across training", phases, panel_height=220)
    for kind, dash in (("pizza", "dot"), ("clock", "dash")):
        for row, (_, col) in enumerate(panels, start=1):
            value = (references or {}).get(kind, {}).get(col)
            if value is not None:
                fig.add_hline(y=value, line=dict(color="#888", dash=dash, width=1), row=row, col=1,
                              annotation_text=f"{kind} median {value:g}", annotation_position="bottom right",
                              annotation_font=dict(size=10, color="#666"))
    return fig


def layer_curves(rows: Rows, name: str, phases: Mapping[str, Mapping[str, int | None]] | None = None) -> go.Figure:
    """Each hidden layer's feature rank and share of its variance in the key frequencies (or irreps) across
    training, one line per layer (``layers.csv``, ``analyses.representations``).

    Args:
        rows: ``layers.csv`` rows (``step, layer, width, feature_rank, key_frac``).
        name: the run's name.
        phases: as in ``training_curves``.
    """
    layers = sorted({int(r["layer"]) for r in rows})
    by_step: dict[int, dict] = {}
    for r in rows:
        d = by_step.setdefault(int(r["step"]), {"step": int(r["step"])})
        d[f"rank_{int(r['layer'])}"], d[f"key_{int(r['layer'])}"] = r["feature_rank"], r["key_frac"]
    dashes = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
    panels = [("feature rank", False, [(f"rank_{i}", f"layer {i}", dashes[i % len(dashes)]) for i in layers]),
              ("key share of variance", False, [(f"key_{i}", f"layer {i} key share", dashes[i % len(dashes)]) for i in layers])]
    panels = [p for p in panels if any(_has_values(list(by_step.values()), c) for c, _, _ in p[2])]
    return _curves({name: list(by_step.values())}, panels, f"Feature rank and key share per hidden layer ({name})", phases,
                   panel_height=240)


def llc_curves(runs: Mapping[str, Rows], phases: Mapping[str, Mapping[str, int | None]] | None = None) -> go.Figure:
    """The local learning coefficient (mean over chains, the chains' std as error bars) with the test and
    train loss beside it.

    Args:
        runs: ``{run name: rows}`` with ``step, llc_mean, llc_std, train_loss, test_loss`` (rows
            without an LLC are gaps).
        phases: as in ``training_curves``.
    """
    fig = _curves(
        runs,
        [
            ("LLC (training set)", False, [("llc_mean", "LLC (mean over chains)", "solid")]),
            ("loss (cross-entropy)", True, [("train_loss", "train loss", "dash"), ("test_loss", "test loss", "solid")]),
        ],
        "Local learning coefficient (devinterp SGLD) and the loss",
        phases,
        panel_height=300,
    )
    for name, trace in zip(list(runs), [t for t in fig.data if t.name.endswith("LLC (mean over chains)")]):
        rows = thin(sorted(runs[name], key=lambda r: r["step"]))
        trace.update(mode="lines+markers", connectgaps=True, error_y=dict(type="data", array=_column(rows, "llc_std"), visible=True))
    return fig


def llc_traces(traces: Mapping[str, Sequence[Sequence[float]]], title: str, burn_in: int | None = None) -> go.Figure:
    """SGLD loss traces (one line per chain) of several samplers, one panel each (``--llc-calibrate``).

    Args:
        traces: ``{panel label: [[loss per draw] per chain]}``.
        title: figure title.
        burn_in: draws drawn shaded as burn-in, if given.
    """
    labels = list(traces)
    ncols = min(3, len(labels)) or 1
    nrows = max(1, math.ceil(len(labels) / ncols))
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=labels, shared_xaxes=True, vertical_spacing=0.12)
    for i, label in enumerate(labels):
        r, c = i // ncols + 1, i % ncols + 1
        for j, chain in enumerate(traces[label]):
            y = _array(chain)
            fig.add_trace(go.Scatter(x=list(range(len(y))), y=y.tolist(), mode="lines", line=dict(color=color(j), width=1),
                                     name=f"chain {j}", legendgroup=f"chain {j}", showlegend=i == 0), row=r, col=c)
        if burn_in:
            fig.add_vrect(x0=0, x1=burn_in, fillcolor="#ddd", opacity=0.4, line_width=0, row=r, col=c)
    fig.update_xaxes(title_text="draw", row=nrows)
    fig.update_yaxes(title_text="train loss")
    return _layout(fig, title, height=120 + 260 * nrows)


# ---- sequence tasks: answer positions and attention heads ------------------------------------------
def position_curves(metrics: Rows, name: str, positions: Sequence[int], phases: Mapping[str, int | None] | None = None) -> go.Figure:
    """The loss at each answer position against step (``metrics.jsonl``'s ``train_loss_pos`` / ``test_loss_pos``), log y:
    test loss above, train loss below, one line per answer position.

    Args:
        metrics: the run's metric rows.
        name: the run's name.
        positions: the input position of each answer (the legend's labels).
        phases: ``{label: step}`` marked as dotted lines (e.g. the phase change).
    """
    rows = []
    for r in metrics:
        d = {"step": r["step"]}
        for split in ("train", "test"):
            for i, v in enumerate(r.get(f"{split}_loss_pos") or []):
                d[f"{split}_{i}"] = v
        rows.append(d)
    dashes = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
    panels = [(f"{split} loss per answer position", True,
               [(f"{split}_{i}", f"answer {i} (position {pos})", dashes[i % len(dashes)]) for i, pos in enumerate(positions)])
              for split in ("test", "train")]
    fig = _curves({name: rows}, panels, f"Loss at each answer position ({name})", {name: dict(phases or {})}, panel_height=280)
    for i, tr in enumerate(fig.data):  # one colour per answer position (a single run would otherwise share one)
        tr.line.color = color(i % len(positions))
    return fig


def carry_curves(rows: Rows, name: str) -> go.Figure:
    """5-digit addition: the test loss of each answer digit on the examples with and without a carry into it
    (``positions.csv``'s ``test_loss_carry`` / ``test_loss_no_carry``), log y, one colour per digit."""
    answers = sorted({int(r["answer"]) for r in rows})
    fig = go.Figure()
    for a in answers:
        rs = sorted((r for r in rows if int(r["answer"]) == a), key=lambda r: r["step"])
        x = [int(r["step"]) for r in rs]
        for col, dash, what in (("test_loss_carry", "solid", "carry in"), ("test_loss_no_carry", "dot", "no carry in")):
            if _has_values(rs, col):
                fig.add_trace(go.Scatter(x=x, y=_column(rs, col), mode="lines", name=f"answer {a}: {what}",
                                         line=dict(color=color(a), dash=dash, width=2)))
    fig.update_xaxes(title_text="training step")
    fig.update_yaxes(title_text="test loss (log)", type="log", exponentformat="power")
    return _layout(fig, f"Test loss of each answer digit with and without a carry into it ({name})", height=440)


def head_curves(head_rows: Rows, checkpoint_rows: Rows, name: str, phases: Mapping[str, int | None] | None = None) -> go.Figure:
    """Each attention head's induction and previous-token score across training (``heads.csv``), and the train
    and test loss with and without the induction heads (``checkpoints.csv``), phase change marked.

    Args:
        head_rows: ``heads.csv`` rows (``step, layer, head, prev_token, induction``).
        checkpoint_rows: ``checkpoints.csv`` rows (``train_loss, test_loss, ablated_train_loss, ablated_test_loss``).
        name: the run's name.
        phases: ``{label: step}`` marked as dotted lines.
    """
    heads = sorted({(int(r["layer"]), int(r["head"])) for r in head_rows})
    by_step: dict[int, dict] = {}
    for r in head_rows:
        d = by_step.setdefault(int(r["step"]), {"step": int(r["step"])})
        d[f"ind_{r['layer']}_{r['head']}"], d[f"prev_{r['layer']}_{r['head']}"] = r["induction"], r["prev_token"]
    for r in checkpoint_rows:
        if int(r["step"]) in by_step:
            by_step[int(r["step"])].update({k: r.get(k) for k in ("train_loss", "test_loss", "ablated_train_loss", "ablated_test_loss")})
    dashes = ("solid", "dash", "dot", "dashdot")
    panels = [("induction score", False, [(f"ind_{l}_{h}", f"L{l}H{h} induction", dashes[h % 4]) for l, h in heads]),
              ("previous-token score", False, [(f"prev_{l}_{h}", f"L{l}H{h} previous token", dashes[h % 4]) for l, h in heads]),
              ("loss (log)", True, [("train_loss", "train loss", "dash"), ("test_loss", "test loss", "solid"),
                                    ("ablated_train_loss", "train loss, induction heads ablated", "dashdot"),
                                    ("ablated_test_loss", "test loss, induction heads ablated", "dot")])]
    fig = _curves({name: list(by_step.values())}, panels, f"Attention heads across training ({name})", {name: dict(phases or {})},
                  panel_height=260)
    layers = sorted({l for l, _ in heads})
    for tr in fig.data:  # heads: one colour per layer; losses: their own
        if tr.name.startswith("L"):
            tr.line.color = color(layers.index(int(tr.name[1:tr.name.index("H")])))
    return fig
