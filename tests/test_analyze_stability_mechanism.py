"""The stability and clock/pizza columns of python -m interp.analyze: recomputed by other routes."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from analyses import mechanism, stability
from interp import analyze, runs
from interp.analyze import analyze_run, load_analysis, main
from interp.text import mechanism_sentence, stability_sentence
from interp.model import fast_logits
from interp.train import train
from tests.conftest import tiny_config


def test_columns_of_the_final_checkpoint_by_other_routes(tiny_copy):
    rows, summary = analyze_run(tiny_copy)
    assert summary["mechanism_note"] is None
    run = runs.load_run(tiny_copy)
    cfg, data, final = run.config, run.dataset, rows[-1]
    model = runs.load_checkpoint(tiny_copy, final["step"], cfg)
    p = cfg.p
    # stability: from the fast path's float32 logits on the training split
    with torch.no_grad():
        logits = fast_logits(model, data.a, data.b, cfg.eq_token)
    lt, yt = logits[data.train_idx], data.train_labels
    assert final["min_train_margin"] == stability.margins(lt, yt).min().item()
    assert final["loss_f32_minus_f64"] == pytest.approx(F.cross_entropy(lt, yt, reduction="none").mean().item() - F.cross_entropy(lt.double(), yt).item(), abs=1e-12)
    assert final["softmax_collapse_frac"] == final["zero_loss_frac"] == 0.0  # 40 steps are far from collapse
    # gradient symmetricity: through HookedTransformer.forward with the embedding's hook point
    triples = mechanism.sample_triples(p)
    tokens = torch.stack([triples[:, 0], triples[:, 1], torch.full((len(triples),), cfg.eq_token)], 1)
    cache = {}

    def keep(act, hook):
        act.retain_grad()
        cache["embed"] = act
        return act

    out = model.run_with_hooks(tokens, fwd_hooks=[("hook_embed", keep)])[:, -1]
    out.gather(-1, triples[:, 2:]).sum().backward()
    g = cache["embed"].grad.double()
    assert final["grad_symmetricity"] == pytest.approx(F.cosine_similarity(g[:, 0], g[:, 1], dim=-1).mean().item(), abs=1e-6)
    # distance irrelevance: the authors' matrix, rows a + b, columns a - b, numpy's std
    correct = logits.double().gather(-1, data.labels[:, None]).squeeze(-1).numpy()
    oo = np.zeros((p, p))
    for (a, b, _), v in zip(data.inputs.tolist(), correct):
        oo[(a + b) % p][(a - b) % p] = v
    assert final["distance_irrelevance"] == pytest.approx(np.mean(np.std(oo, axis=0)) / np.std(oo.flatten()), rel=1e-9)
    # circularity: scikit-learn's PCA and the authors' search over token permutations t -> t * i
    from sklearn.decomposition import PCA

    we = model.W_E[:p].detach().double().numpy()
    comps = PCA(n_components=4).fit_transform(we)
    total = 0.0
    for ix in range(4):
        vs = comps[:, ix] / np.sqrt(np.sum(comps[:, ix] ** 2)) / math.sqrt(p)
        best = max(abs(sum(vs[t * i % p] * np.exp(2j * math.pi * t / p) for t in range(p))) ** 2 * 2 for i in range(1, p))
        total += min(best, 1.0)
    assert final["circularity"] == pytest.approx(total / 4, rel=1e-9)
    for r in rows:
        assert all(math.isfinite(r[c]) for c in (*stability.COLUMNS, *mechanism.COLUMNS))
        assert 0 <= r["circularity"] <= 1 and -1 <= r["grad_symmetricity"] <= 1
    assert "gradient symmetricity" in mechanism_sentence(rows, summary)
    assert f"{final['softmax_collapse_frac']:.1%}" in stability_sentence(rows, summary)


def test_other_tasks_leave_the_mechanism_empty_and_say_why(tmp_path, capsys):
    run_dir = train(tiny_config(task="mod_mul", steps=20), tmp_path / "mul", progress=False)
    assert main([str(run_dir), "--quiet"]) == 0
    out = capsys.readouterr().out
    rows, summary = load_analysis(run_dir)
    assert summary["mechanism_note"] and f"note: {summary['mechanism_note']}" in out and "mod_mul" in summary["mechanism_note"]
    for r in rows:
        assert all(math.isfinite(r[c]) for c in stability.COLUMNS)
        assert all(math.isnan(r[c]) for c in mechanism.COLUMNS)
    assert mechanism_sentence(rows, summary).startswith("The clock/pizza measures")


def _rows(gs, di, circ=1.0):
    return [{"step": 100, "grad_symmetricity": gs, "distance_irrelevance": di, "circularity": circ}]


def test_mechanism_sentence_says_which_side_and_how_firmly():
    s = {"mechanism_note": None}
    assert "firmly clock-like" in mechanism_sentence(_rows(0.5, 0.85), s)
    assert "firmly pizza-like" in mechanism_sentence(_rows(0.999, 0.1), s)
    assert "closer to the clock" in mechanism_sentence(_rows(0.7, 0.7), s)
    assert "gradient symmetricity says pizza, distance irrelevance says clock" in mechanism_sentence(_rows(0.98, 0.9), s)
    assert "below the 0.99" in mechanism_sentence(_rows(0.5, 0.85, 0.9), s)
    assert analyze.ANALYSIS_VERSION >= 4


def test_report_shows_the_stability_and_mechanism_figures_with_generated_captions(tiny_copy):
    from interp import plots, report

    view = report.collect(tiny_copy)
    figs = {f.key: f for f in report.stability_mechanism_figures([view])}
    assert set(figs) == {"stability", "mechanism"}
    assert stability_sentence(view.rows, view.summary) in figs["stability"].caption
    assert mechanism_sentence(view.rows, view.summary) in figs["mechanism"].caption
    names = [t.name for t in figs["mechanism"].fig.data]
    assert names == ["gradient symmetricity", "distance irrelevance", "circularity"]
    assert list(figs["mechanism"].fig.data[0].y) == pytest.approx([r["grad_symmetricity"] for r in view.rows], rel=1e-6)
    lines = [s for s in figs["mechanism"].fig.layout.shapes if s.y0 == s.y1]  # the reference medians
    assert {round(s.y0, 3) for s in lines} == {*mechanism.PIZZA_REFERENCE.values(), *mechanism.CLOCK_REFERENCE.values()}
    assert len(plots.stability_curves({"x": view.rows}).data) == 4
