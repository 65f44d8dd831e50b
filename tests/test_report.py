"""The HTML report: figures, offline page, CLI errors, several runs, and a real headless Chromium."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from interp import plots
from interp.analyze import load_analysis
from interp.report import CAPTIONS, COMPARE_FILE, RunView, efficiency_caption, main, write_report
from interp.runs import REPORT_FILE, ckpt_path
from interp.train import train
from tests.browser import find_chromium, open_in_chromium
from tests.conftest import tiny_config
from tests.text import numbers, sentence

ROOT = Path(__file__).resolve().parents[1]
# one training + one progress + weights + efficiency + stability + mechanism figure, then per run: Fourier norms,
# W_E norms across training, neuron clusters, attention. The tiny runs (40 steps) have no key frequencies: no progress figure.
OVERLAY_FIGURES, PER_RUN_FIGURES = 6, 4
TINY_OVERLAY_FIGURES = OVERLAY_FIGURES - 1


def n_figures(page: str) -> int:
    return len(re.findall(r'<div id="fig-\d+-[a-z_]+" class="plotly-graph-div"', page))


@pytest.fixture(scope="module")
def tiny_copy(tiny_run, tmp_path_factory):
    """A private copy of the session's tiny run (the report writes into its run directory)."""
    dst = tmp_path_factory.mktemp("report") / "tiny"
    shutil.copytree(tiny_run, dst)
    return dst


@pytest.fixture(scope="module")
def small_copy(small_run, tmp_path_factory):
    dst = tmp_path_factory.mktemp("report") / "small"
    shutil.copytree(small_run, dst)
    return dst


# ---- the page -----------------------------------------------------------------------------------
def test_report_of_one_run(tiny_copy, capsys):
    assert main([str(tiny_copy), "--quiet"]) == 0
    out = tiny_copy / REPORT_FILE
    assert capsys.readouterr().out.startswith(str(out))
    page = out.read_text()
    assert n_figures(page) == TINY_OVERLAY_FIGURES + PER_RUN_FIGURES
    # offline: plotly.js inlined once, no external script, stylesheet or font
    assert not re.search(r"<script[^>]*\ssrc=", page) and "<link" not in page
    assert page.count("Plotly.newPlot") == n_figures(page)
    assert page.count("* plotly.js v") == 1 and len(page) > 3e6  # the library's own header, once
    # it says what produced it
    cfg = tiny_config()
    assert "tiny" in page and f"<td>{cfg.d_mlp}</td>" in page and "transformer-lens" in page and "git commit" in page
    # each figure has a caption; the analysis ran and was cached
    assert page.count("<figcaption>") == n_figures(page)
    rows, summary = load_analysis(tiny_copy)
    assert [r["step"] for r in rows] == [0, 10, 20, 30, 40]
    assert not list(tiny_copy.rglob("*.tmp"))


def test_out_and_several_runs_overlay(tiny_copy, tmp_path):
    other = train(tiny_config(lr=1e-2, seed=1), tmp_path / "tiny_lr", progress=False)
    out = tmp_path / "sub" / "compare.html"
    assert main([str(tiny_copy), str(other), "--out", str(out), "--quiet"]) == 0
    page = out.read_text()
    assert n_figures(page) == TINY_OVERLAY_FIGURES + 2 * PER_RUN_FIGURES
    assert not (other / REPORT_FILE).exists() and not (tiny_copy / COMPARE_FILE).exists()
    # without --out, several runs go to the first run's directory under their own name
    assert write_report([tiny_copy, other]) == tiny_copy / COMPARE_FILE
    # the overlaid figures hold one set of traces per run, named after it
    runs = {"a": load_analysis(tiny_copy)[0], "b": load_analysis(other)[0]}
    # circuit_efficiency: 7 curves, but a tiny run has no key frequency, so no C_gen parameters and no C_gen efficiency
    for fn, per_run in ((plots.training_curves, 4), (plots.progress_losses, 4), (plots.weight_measures, 3), (plots.circuit_efficiency, 6)):
        fig = fn(runs, {"a": {"memorised": 10}, "b": {"memorised": None}})
        metas = [t.meta for t in fig.data]
        assert metas.count("a") == per_run and metas.count("b") == per_run, fn.__name__
        assert all(t.name.startswith(f"{t.meta}: ") for t in fig.data)
        assert fig.layout.title.text
    assert {'"meta":"tiny"', '"meta":"tiny_lr"'} <= set(re.findall(r'"meta":"tiny(?:_lr)?"', page))


def test_captions_state_the_numbers_of_the_run_drawn(small_copy, tiny_copy):
    from analyses import fourier
    from interp import report
    from interp.text import fmt_set, fmt_step

    small = report.collect(small_copy)
    ph, s = small.summary["phases"], small.summary
    text = report.caption_training([small])
    assert f"first reaches 99% at step {fmt_step(ph['memorised'])}" in text and f"at step {fmt_step(ph['grokked'])}" in text
    text = report.caption_progress([small])
    assert f"smoothed peak (step {fmt_step(ph['cleanup_start'])})" in text and "9.4k" in text
    text = report.caption_neurons(small)
    n_key = sum(s["neurons_per_frequency"].values())
    assert (f"{n_key} of {small.run.config.d_mlp} are assigned" in text
            and f"{len(s['unclustered_neurons'])} are below" in text and f"{len(s['dead_neurons'])} are dead" in text)
    assert fmt_set(s["key_frequencies"]) in report.caption_fourier_norms(small)
    share = fourier.block_fraction(small.attention, small.keys)
    assert f"{share[0].item():.0%}" in report.caption_attention(small)
    # a run without key frequencies is not described as if it had them
    tiny = report.collect(tiny_copy)
    assert tiny.keys == [] and "No key frequency" in report.caption_progress([tiny])
    assert "No key frequency" in report.caption_fourier_norms(tiny)
    assert "0 of 64 are assigned" in report.caption_neurons(tiny)
    figs = report.overlay_figures([tiny])
    assert "progress" not in [f.key for f in figs]  # restricted/excluded loss are not drawn without key frequencies


def test_efficiency_caption_states_the_numbers_of_the_run_drawn():
    def row(step, gen, mem):
        return {"step": step, "cgen_efficiency": gen, "cmem_efficiency": mem}

    rows = [row(0, float("nan"), float("nan")), row(100, 0.25, 0.75), row(200, 0.5, 0.875), row(300, 1.5, 0.125)]
    view = RunView("r", None, {}, rows, {"fourier_applies": True, "cgen_more_efficient_from": 300}, [])
    caption = efficiency_caption([view])
    assert caption.startswith(CAPTIONS["efficiency"])
    # the peak of C_mem's efficiency (0.875 at step 200, C_gen's then), the last checkpoint's two values, the crossover
    assert numbers(sentence(caption, "C_mem's efficiency peaks")) == [0.875, 200, 0.5, 300, 0.125, 1.5, 300]
    view.summary["cgen_more_efficient_from"] = None
    other = RunView("s", None, {}, rows[:3], {"fourier_applies": True, "cgen_more_efficient_from": None}, [])
    caption = efficiency_caption([view, other])
    assert "r: C_mem's efficiency peaks" in caption and numbers(sentence(caption, "s: C_mem's"))[:3] == [0.875, 200, 0.5]
    assert caption.count("C_gen is not the more efficient circuit at the last checkpoint") == 2
    assert efficiency_caption([RunView("m", None, {}, rows, {"fourier_applies": False}, [])]) == CAPTIONS["efficiency"]


def test_curves_are_thinned_and_labelled():
    rows = [{"step": s, "train_loss": 1.0 / (s + 1), "test_loss": 1.0, "train_acc": 0.5, "test_acc": float("nan")} for s in range(10_000)]
    fig = plots.training_curves({"r": rows}, {"r": {"memorised": 100, "grokked": None}})
    assert all(len(t.x) <= plots.MAX_POINTS and t.x[-1] == 9999 for t in fig.data)
    assert len(fig.data) == 3  # the all-NaN test accuracy is left out
    assert fig.layout.title.text and fig.layout.yaxis.type == "log" and fig.layout.xaxis2.title.text == "training step"
    assert [a.text for a in fig.layout.annotations] == ["memorised"]  # the one boundary reached, labelled
    assert len(fig.layout.shapes) == 2 and fig.layout.shapes[0].x0 == 100  # its line on both panels


def test_non_fourier_task_leaves_out_the_fourier_figures(tmp_path):
    run = train(tiny_config(task="x2_y2", steps=20), tmp_path / "x2_y2", progress=False)  # mod_mul: log basis (test_group_analysis)
    assert main([str(run), "--quiet"]) == 0
    page = (run / REPORT_FILE).read_text()
    assert "Fourier figures left out" in page
    assert n_figures(page) == 4  # loss/accuracy, sum of squared weights, float32 stability, attention (no clock/pizza)


# ---- the command line ---------------------------------------------------------------------------
def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("python -m interp.report: error: ")
    return lines[0]


def test_missing_run_directory_exit_2_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "interp.report", str(tmp_path / "nope")], capture_output=True, text=True,
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert "nope" in _one_error_line(r.stderr)
    assert not list(tmp_path.iterdir())


def test_not_a_run_and_corrupt_checkpoint_exit_2(tiny_run, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert "config.json" in _one_error_line(capsys.readouterr().err)

    broken = tmp_path / "broken"
    shutil.copytree(tiny_run, broken)
    shutil.rmtree(broken / "analysis", ignore_errors=True)
    ckpt_path(broken, 20).write_bytes(b"not a safetensors file")
    out = tmp_path / "r.html"
    assert main([str(broken), "--out", str(out), "--quiet"]) == 2
    assert "step_000020" in _one_error_line(capsys.readouterr().err)
    assert not out.exists() and not (broken / REPORT_FILE).exists()

    assert main([str(tiny_run), "--out", str(tmp_path)]) == 2  # a directory is not an output file
    _one_error_line(capsys.readouterr().err)


def test_out_never_overwrites_a_file_that_is_not_a_report(tiny_copy, tmp_path, capsys):
    notes = tmp_path / "notes.html"
    notes.write_text("<html>my notes</html>")
    assert main([str(tiny_copy), "--out", str(notes), "--quiet"]) == 2
    assert "not a report" in _one_error_line(capsys.readouterr().err) and notes.read_text() == "<html>my notes</html>"
    out = tmp_path / "report.html"
    assert main([str(tiny_copy), "--out", str(out), "--quiet"]) == 0
    out.write_text(out.read_text().replace("Generated ", "Generated before: "))
    assert main([str(tiny_copy), "--out", str(out), "--quiet"]) == 0  # a report is replaced
    assert "Generated before: " not in out.read_text()


@pytest.mark.integration
@pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed (apt-get install chromium; .ci/run does)")
def test_report_renders_in_headless_chromium(small_copy, tmp_path):
    out = tmp_path / "report.html"
    assert main([str(small_copy), "--out", str(out), "--quiet"]) == 0
    n = n_figures(out.read_text())
    assert n == OVERLAY_FIGURES + PER_RUN_FIGURES
    shot_dir = os.environ.get("INTERP_SCREENSHOT_DIR")
    shot = Path(shot_dir) / "report_small.png" if shot_dir else tmp_path / "report.png"
    r = open_in_chromium(out, tmp_path / "profile", screenshot=shot)
    assert r["expected"] == n and r["rendered"] == n, r
    assert r["errors"] == [], r["errors"]
    assert r["requests"] == [], r["requests"]  # nothing fetched from the network
    assert r["scroll_width"] <= r["inner_width"], r  # no sideways scrolling at 1280 px
    assert r["seconds"] < 20, r
    assert shot.stat().st_size > 50_000  # a real page, not a blank one


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.skipif(not (ROOT / "checkpoints/mod_add_p113/config.json").is_file(), reason="no default p = 113 run (make run)")
@pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed")
def test_report_of_the_default_run_is_small_and_fast(tmp_path):
    out = tmp_path / "p113.html"
    t = time.time()
    assert main([str(ROOT / "checkpoints/mod_add_p113"), "--out", str(out), "--quiet"]) == 0
    build_s = time.time() - t
    assert out.stat().st_size < 15e6
    r = open_in_chromium(out, tmp_path / "profile")
    llc_figure = (ROOT / "checkpoints/mod_add_p113/analysis/llc.csv").is_file()  # drawn when interp.analyze --llc has run
    assert r["rendered"] == r["expected"] == OVERLAY_FIGURES + PER_RUN_FIGURES + llc_figure and not r["errors"] and not r["requests"], r
    assert r["seconds"] < 10, (r, build_s)


def test_experiment_page_titles_the_experiment_and_moves_long_cells_to_notes(tiny_dcrit, tmp_path):
    """An experiment directory's page: the experiment's name and question as its title, the module's
    own tables (not every summary.csv column, those sit behind a details element), long cells as notes."""
    from types import SimpleNamespace

    from interp import tables
    from interp.experiments import dcrit
    from interp.report import LONG_CELL, experiment_tables_html, render_sweep

    page, _ = render_sweep(tiny_dcrit[0])
    assert f"<title>interp report: dcrit: {html.escape(dcrit.DESCRIPTION)}</title>" in page
    assert "<details><summary>Every column of <code>summary.csv</code></summary>" in page
    long = "seed 1: logits 55% in key subspace; test acc < 0.99; seed 2: logits 78% in key subspace"
    assert len(long) > LONG_CELL
    (tmp_path / "summary.csv").write_text(f"name,flags\na,\nb,{long}\n")
    mod = SimpleNamespace(TABLES=[{"title": "Flags (`x`):", "columns": [("name", "name"), ("flags", lambda r: r["flags"] or "–")]}])
    got = experiment_tables_html(mod, tmp_path / "summary.csv")
    assert '<td class="note-ref"><a href="#table1-note1">note 1</a></td>' in got and "<td>–</td>" in got
    assert '<li id="table1-note1">seed 1: logits 55% in key subspace; test acc &lt; 0.99;' in got
    assert f"<td>{long}" not in got and "<p>Flags (<code>x</code>):</p>" in got
    assert tables.experiment_tables(tables.read_csv(tmp_path / "summary.csv"), mod.TABLES)[0][1] == ["name", "flags"]


def test_legends_sit_below_the_plots_not_over_their_titles():
    from interp import plots

    fig = plots.go.Figure([plots.go.Scatter(x=[0, 1], y=[0, 1], name=f"trace {i}") for i in range(3)])
    fig = plots._layout(fig, "t", 400)
    assert fig.layout.legend.yref == "container" and fig.layout.legend.y == 0 and fig.layout.legend.yanchor == "bottom"
    assert fig.layout.margin.b >= 60 + 22 and fig.layout.margin.t == 70  # room below for the legend, none taken above
