"""python -m interp.analyze: the tables of real runs, the cache, other tasks and clean refusals."""

import csv
import math
import shutil

import pytest
import torch

from analyses import fourier, progress_measures
from interp import analysers, analysis_files, analyze, load_run, phases
from interp.text import cluster_counts, fmt_set, fmt_step, results_block
from interp.analysers import analysis_columns
from interp.analyze import (
    ANALYSIS_TABLE, FREQUENCY_TABLE, SUMMARY_FILE, analysis_throughput, analyze_run, load_analysis,
    load_frequency_table, main,
)
from interp import runs
from interp.model import fast_logits
from interp.runs import ANALYSIS_DIR, RunError, ckpt_path
from interp.train import train
from tests.conftest import tiny_config

FOURIER_COLUMNS = ["restricted_loss", "excluded_loss", "gini_W_E", "gini_W_L", "logit_cos_sim", "cgen_logit",
                   "cmem_logit", "cgen_frac", "cgen_param_norm", "cmem_param_norm", "shared_param_norm",
                   "cgen_efficiency", "cmem_efficiency"]


def fixed_key_frequencies(monkeypatch, keys):
    """Make the key frequencies ``keys["value"]`` (a tiny run of 40 steps has not formed any), and
    C_mem's neurons ``keys.get("cmem", [])``."""

    def fake_summary(run, step):
        return {"key_frequencies": list(keys["value"]), "key_frequencies_step": step, "key_frequencies_embedding": [],
                "neurons_per_frequency": {}, "unclustered_neurons": [], "mean_frac_explained_clustered": None,
                "cmem_neurons": list(keys.get("cmem", []))}

    monkeypatch.setattr(analysers, "key_frequency_summary", fake_summary)


def test_tables_of_a_tiny_run(tiny_copy):
    rows, summary = analyze_run(tiny_copy)
    assert summary["key_frequencies"] == []  # 40 steps form no circuit; the columns are computed all the same
    run = load_run(tiny_copy)
    d = tiny_copy / ANALYSIS_DIR
    assert {f.name for f in d.iterdir()} == {ANALYSIS_TABLE, FREQUENCY_TABLE, analysers.ATTENTION_TABLE, SUMMARY_FILE}
    with open(d / ANALYSIS_TABLE, newline="") as f:
        assert next(csv.reader(f)) == analysis_columns()
    assert [r["step"] for r in rows] == run.steps == [0, 10, 20, 30, 40]
    for r, m in zip(rows, run.metrics):  # the run's own metrics, recomputed from the checkpoints
        for k in ("train_loss", "test_loss", "train_acc", "test_acc", "param_norm"):
            assert r[k] == pytest.approx(m[k], rel=1e-9), k
        assert r["sum_sq_weights"] == pytest.approx(r["param_norm"] ** 2, rel=1e-12)
        assert r["cgen_logit"] + r["cmem_logit"] == pytest.approx(r["correct_logit"], rel=1e-9, abs=1e-12)
        norms = [r["cgen_param_norm"], r["cmem_param_norm"], r["shared_param_norm"]]
        assert sum(n ** 2 for n in norms) == pytest.approx(r["sum_sq_weights"], rel=1e-9)
        assert r["cmem_efficiency"] == pytest.approx(r["cmem_logit"] / r["cmem_param_norm"], rel=1e-12)
        # no key frequency and no clustered neuron yet: C_gen has no parameters, so no efficiency
        assert r["cgen_param_norm"] == 0 and r["cgen_logit"] == 0 and math.isnan(r["cgen_efficiency"])
        skipped = {c for a in analysers.ANALYSERS if a.name in summary["skipped"] for c in a.columns}  # the sequence tasks' heads
        assert skipped == {"prev_token_max", "induction_max", "ablated_train_loss", "ablated_test_loss",  # sequence tasks
                           "lc_train", "lc_test", "lc_random",  # ReLU MLPs
                           "ntk_alignment", "feature_distance"}  # scalar regressions
        assert all(math.isfinite(r[c]) for c in analysis_columns() if c != "cgen_efficiency" and c not in skipped)
    assert summary["cgen_more_efficient_from"] is None
    assert summary["fourier_applies"] and summary["key_frequencies_step"] == 40
    assert set(summary["phases"]) == set(phases.PHASE_DEFINITIONS)
    assert summary["steps_computed"] == run.steps
    # round trip through the files
    cached_rows, cached_summary = load_analysis(tiny_copy)
    assert cached_rows == rows and cached_summary["key_frequencies"] == summary["key_frequencies"]
    freq = load_frequency_table(tiny_copy)
    assert len(freq) == 5 * 6 and {r["freq"] for r in freq} == set(range(1, 7))
    assert all(math.isnan(r["excluded_loss"]) for r in freq)  # only key frequencies have one
    assert not list(tiny_copy.rglob("*.tmp"))


def test_restricted_loss_of_the_final_checkpoint_by_hand(tiny_copy, monkeypatch):
    fixed_key_frequencies(monkeypatch, {"value": [2, 5], "cmem": [0, 5, 7]})
    rows, summary = analyze_run(tiny_copy, write=False)
    run = load_run(tiny_copy)
    model, data = run.load_model(40), run.dataset
    # C_mem's norm by hand: frequencies other than 2 and 5 (and not the constant) of W_E[:p] over the
    # tokens and of W_U over the classes, plus neurons 0, 5 and 7 (the biases are frozen at zero)
    p = run.config.p
    B = fourier.fourier_basis(p)
    other = B[[i for i in range(1, p) if i not in (3, 4, 9, 10)]]  # rows cos 2, sin 2, cos 5, sin 5 left out
    W_E, W_U = model.W_E.detach().double()[:p], model.W_U.detach().double()
    W_in, W_out = model.blocks[0].mlp.W_in.detach().double(), model.blocks[0].mlp.W_out.detach().double()
    cmem_sq = (other @ W_E).pow(2).sum() + (W_U @ other.T).pow(2).sum() + W_in[:, [0, 5, 7]].pow(2).sum() + W_out[[0, 5, 7]].pow(2).sum()
    assert rows[-1]["cmem_param_norm"] == pytest.approx(math.sqrt(cmem_sq.item()), rel=1e-9)
    assert rows[-1]["cgen_efficiency"] == pytest.approx(rows[-1]["cgen_logit"] / rows[-1]["cgen_param_norm"], rel=1e-12)
    with torch.no_grad():
        logits = model(data.inputs)[:, -1]
    dirs = fourier.directions(run.config.p, summary["key_frequencies"], +1)
    assert rows[-1]["restricted_loss"] == pytest.approx(progress_measures.restricted_loss(logits, data.labels, dirs, data.test_idx), rel=1e-5)
    assert rows[-1]["excluded_loss"] == pytest.approx(progress_measures.excluded_loss(logits, data.labels, dirs, data.train_idx), rel=1e-5)
    assert rows[-1]["logit_cos_sim"] == pytest.approx(progress_measures.ideal_logit_cosine(logits, [2, 5], +1), rel=1e-5)
    assert not (tiny_copy / ANALYSIS_DIR).exists()  # write=False
    rows, _ = analyze_run(tiny_copy)
    freq = [r for r in load_frequency_table(tiny_copy) if r["step"] == 40]
    per = progress_measures.excluded_loss_per_frequency(logits, data.labels, data.train_idx, [2, 5], +1)
    assert [r["freq"] for r in freq if not math.isnan(r["excluded_loss"])] == [2, 5]
    assert [r["excluded_loss"] for r in freq if r["freq"] in (2, 5)] == pytest.approx(per.tolist(), rel=1e-5)


def test_rerun_computes_only_the_new_checkpoints(tiny_copy, tmp_path):
    hidden = tmp_path / "hidden.safetensors"
    shutil.move(ckpt_path(tiny_copy, 20), hidden)
    rows, summary = analyze_run(tiny_copy)
    assert [r["step"] for r in rows] == [0, 10, 30, 40] and summary["steps_computed"] == [0, 10, 30, 40]
    shutil.move(hidden, ckpt_path(tiny_copy, 20))  # a checkpoint appears; the final one is unchanged
    rows, summary = analyze_run(tiny_copy)
    assert summary["steps_computed"] == [20] and [r["step"] for r in rows] == [0, 10, 20, 30, 40]
    rows_again, summary = analyze_run(tiny_copy)
    assert summary["steps_computed"] == [] and rows_again == rows
    forced, summary = analyze_run(tiny_copy, force=True)
    assert summary["steps_computed"] == [0, 10, 20, 30, 40] and forced == rows


def test_a_new_final_checkpoint_recomputes_all_rows_only_if_the_key_frequencies_change(tiny_copy, tmp_path, monkeypatch):
    keys = {"value": [2]}
    fixed_key_frequencies(monkeypatch, keys)
    hidden = tmp_path / "hidden.safetensors"
    shutil.move(ckpt_path(tiny_copy, 40), hidden)
    analyze_run(tiny_copy)
    shutil.move(hidden, ckpt_path(tiny_copy, 40))
    _, summary = analyze_run(tiny_copy)  # same key frequencies on the new final checkpoint
    assert summary["steps_computed"] == [40]
    keys["value"] = [3]
    shutil.move(ckpt_path(tiny_copy, 40), hidden)
    rows, summary = analyze_run(tiny_copy)  # final checkpoint 30 now, with other key frequencies
    assert summary["steps_computed"] == [0, 10, 20, 30] and summary["key_frequencies"] == [3]


def test_a_new_neuron_split_recomputes_all_rows(tiny_copy, tmp_path, monkeypatch):
    keys = {"value": [2], "cmem": [1, 2]}
    fixed_key_frequencies(monkeypatch, keys)
    hidden = tmp_path / "hidden.safetensors"
    shutil.move(ckpt_path(tiny_copy, 40), hidden)
    before, _ = analyze_run(tiny_copy)
    shutil.move(hidden, ckpt_path(tiny_copy, 40))
    keys["cmem"] = [1, 2, 3]  # same key frequencies, one neuron moved from C_gen to C_mem
    rows, summary = analyze_run(tiny_copy)
    assert summary["steps_computed"] == [0, 10, 20, 30, 40]
    assert rows[0]["cmem_param_norm"] > before[0]["cmem_param_norm"] and rows[0]["cgen_param_norm"] < before[0]["cgen_param_norm"]


def test_cli_prints_the_key_frequencies_and_phases(tiny_copy, capsys):
    assert main([str(tiny_copy), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "key frequencies" in out and "phases:" in out and "analysed 5 new of 5" in out
    assert main([str(tiny_copy), "--quiet"]) == 0
    assert "analysed 0 new of 5" in capsys.readouterr().out


def _one_line_error(capsys):
    err = capsys.readouterr().err
    assert err.startswith("python -m interp.analyze: error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_missing_or_bad_run_directory_exit_2_and_nothing_written(tiny_copy, tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert "no such run directory" in _one_line_error(capsys)
    assert not (tmp_path / "nope").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty)]) == 2
    _one_line_error(capsys)
    assert list(empty.iterdir()) == []
    ckpt_path(tiny_copy, 20).write_bytes(b"not a safetensors file")
    assert main([str(tiny_copy), "--quiet"]) == 2
    assert "step_000020.safetensors" in _one_line_error(capsys)
    assert not (tiny_copy / ANALYSIS_DIR).exists()
    with pytest.raises(SystemExit) as e:
        main([])
    assert e.value.code == 2


@pytest.mark.parametrize("task", ["x2_y2", "x3_xy"])  # mod_mul/mod_div: the log basis (tests/test_group_analysis.py)
def test_tasks_without_the_fourier_story_say_so(task, tmp_path, capsys):
    run_dir = train(tiny_config(task=task, steps=20), tmp_path / task, progress=False)
    assert main([str(run_dir), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"do not apply to {task}" in out and "key frequencies" not in out
    rows, summary = load_analysis(run_dir)
    assert not summary["fourier_applies"] and "key_frequencies" not in summary
    for r in rows:
        assert all(math.isfinite(r[c]) for c in ("train_loss", "test_loss", "train_acc", "test_acc", "sum_sq_weights", "param_norm", "correct_logit"))
        assert all(math.isnan(r[c]) for c in FOURIER_COLUMNS)
    assert not (run_dir / ANALYSIS_DIR / FREQUENCY_TABLE).exists()
    assert summary["phases"]["cleanup_start"] is None


def test_mod_sub_uses_the_difference_directions(tmp_path, monkeypatch):
    fixed_key_frequencies(monkeypatch, {"value": [1, 4]})
    run_dir = train(tiny_config(task="mod_sub", steps=20), tmp_path / "sub", progress=False)
    rows, summary = analyze_run(run_dir, write=False)
    run = load_run(run_dir)
    model, data = run.load_model(20), run.dataset
    with torch.no_grad():
        logits = fast_logits(model, data.a, data.b, run.config.eq_token)
    for sign, same in ((-1, True), (+1, False)):
        dirs = fourier.directions(run.config.p, [1, 4], sign)
        excluded = progress_measures.excluded_loss(logits, data.labels, dirs, data.train_idx)
        cos_sim = progress_measures.ideal_logit_cosine(logits, [1, 4], sign)
        assert (rows[-1]["excluded_loss"] == pytest.approx(excluded, rel=1e-9)) is same
        assert (rows[-1]["logit_cos_sim"] == pytest.approx(cos_sim, rel=1e-9)) is same
    assert all(math.isfinite(r[c]) for r in rows for c in FOURIER_COLUMNS)


def test_throughput_times_a_full_analysis_and_writes_nothing(tiny_copy, monkeypatch):
    analyze_run(tiny_copy)  # an up-to-date cache: the throughput must not use it
    before = {p: p.read_bytes() for p in (tiny_copy / ANALYSIS_DIR).iterdir()}
    calls = []
    real = analyze._Loader.__call__
    monkeypatch.setattr(analyze._Loader, "__call__", lambda self, step: (calls.append(step), real(self, step))[1])
    out = analysis_throughput(tiny_copy)
    assert calls == [0, 10, 20, 30, 40] and out["n_checkpoints"] == 5
    assert {p: p.read_bytes() for p in (tiny_copy / ANALYSIS_DIR).iterdir()} == before


def test_an_interrupted_analysis_leaves_no_mixed_tables(tiny_copy, monkeypatch):
    keys = {"value": [2]}
    fixed_key_frequencies(monkeypatch, keys)
    rows_2, _ = analyze_run(tiny_copy)
    # a later analysis (other key frequencies) wrote checkpoints.csv and was killed before summary.json
    keys["value"] = [3]
    rows_3, _ = analyze_run(tiny_copy, force=True, write=False)
    assert rows_3[-1]["excluded_loss"] != rows_2[-1]["excluded_loss"]
    runs.write_text(tiny_copy / ANALYSIS_DIR / ANALYSIS_TABLE, analysis_files.to_csv(rows_3, analysis_columns()))
    with pytest.raises(RunError, match=f"{ANALYSIS_TABLE}: does not match {SUMMARY_FILE}"):
        load_analysis(tiny_copy)
    keys["value"] = [2]
    rows, summary = analyze_run(tiny_copy)  # the cache is not trusted: every row is recomputed
    assert summary["steps_computed"] == [0, 10, 20, 30, 40] and rows == rows_2
    assert load_analysis(tiny_copy)[0] == rows_2
    # the same for the frequency table
    (tiny_copy / ANALYSIS_DIR / FREQUENCY_TABLE).write_text("step,freq,W_E_norm,W_L_norm,excluded_loss\n")
    with pytest.raises(RunError, match=f"{FREQUENCY_TABLE}: does not match"):
        load_frequency_table(tiny_copy)


def test_key_frequency_summary_of_the_small_run(small_run):
    run = load_run(small_run)
    s = analysers.key_frequency_summary(run, run.steps[-1])
    counts = cluster_counts(s)
    assert counts["total"] == run.config.d_mlp  # key + unclustered + dead + small clusters: every neuron once
    assert counts["key"] == sum(s["neurons_per_frequency"].values()) and s["min_cluster_neurons"] == 3
    assert all(n >= 3 for n in s["neurons_per_frequency"].values()) and all(n < 3 for n in s["small_clusters"].values())
    assert list(s["key_frequencies_by_threshold"]) == ["0.8", "0.85", "0.9"]
    assert s["key_frequencies_by_threshold"]["0.85"] == s["key_frequencies"]
    assert list(s["key_frequencies_by_step"]) == [str(x) for x in run.steps[-3:]]
    assert s["key_frequencies_by_step"][str(run.steps[-1])] == s["key_frequencies"]
    sets = [*s["key_frequencies_by_threshold"].values(), *s["key_frequencies_by_step"].values()]
    assert s["key_frequencies_stable"] == all(x == s["key_frequencies"] for x in sets)
    clusters = fourier.cluster_neurons(fourier.mlp_activations(run.load_model(run.steps[-2]), run.config.p, run.config.eq_token))
    assert s["key_frequencies_by_step"][str(run.steps[-2])] == clusters.key_frequencies


def test_the_readme_block_is_made_of_the_runs_numbers(small_run, tmp_path, capsys):
    rows, summary = analyze_run(small_run, write=False)
    block = results_block(rows, summary)
    ph = summary["phases"]
    assert fmt_set(summary["key_frequencies"]) in block
    phases_line = block[block.index("**Phases**"):].replace("\n  ", " ")
    for key, words in (("memorised", "memorised"), ("circuit_formation_start", "circuit formation starts"),
                       ("cleanup_start", "cleanup starts"), ("grokked", "grokked (test accuracy ≥ 99%)")):
        assert f"{words} {fmt_step(ph[key])}" in phases_line, key
    late = [r for r in rows if r["step"] >= ph["memorised"]]
    first = next(r for r in late if r["restricted_loss"] < 1)
    assert f"first below 1 at step {fmt_step(first['step'])}" in block.replace("\n  ", " ")
    # the verbs follow the numbers: a run whose restricted loss is never lower than its test loss says so
    worse = [{**r, "restricted_loss": r["test_loss"] + 1} for r in rows]
    text = results_block(worse, summary).replace("\n  ", " ")
    assert "Restricted loss falls before" not in text
    # the CLI prints exactly this block
    copy = tmp_path / "small"
    shutil.copytree(small_run, copy)
    assert main([str(copy), "--quiet", "--readme"]) == 0
    assert capsys.readouterr().out == results_block(*load_analysis(copy))


def test_small_run_restricted_loss_falls_before_test_loss(small_run):
    rows, summary = analyze_run(small_run, write=False)
    assert len(summary["key_frequencies"]) >= 2
    assert set(summary["key_frequencies"]) <= set(summary["key_frequencies_embedding"])
    # the plateau: train set fitted, test accuracy not yet up
    plateau = [r for r in rows if r["train_acc"] >= 0.99 and r["test_acc"] < 0.95]
    assert len(plateau) >= 10
    assert all(r["restricted_loss"] < r["test_loss"] for r in plateau)
    # restricted loss is low long before the test loss is
    assert any(r["restricted_loss"] < 0.1 and r["test_loss"] > 5 for r in plateau)
    ph = summary["phases"]
    assert ph["memorised"] <= ph["circuit_formation_start"] < ph["cgen_overtakes_cmem"] < ph["cleanup_start"] <= ph["grokked"]
    at = {r["step"]: r for r in rows}
    start, peak, last = at[ph["circuit_formation_start"]], at[ph["cleanup_start"]], rows[-1]
    assert peak["excluded_loss"] > 5 * start["excluded_loss"]  # excluded loss rises during circuit formation
    assert last["gini_W_E"] > peak["gini_W_E"] + 0.1 and last["gini_W_L"] > peak["gini_W_L"] + 0.1  # cleanup
    assert last["sum_sq_weights"] < 0.8 * peak["sum_sq_weights"]
    # efficiency (each circuit's logit per unit of its own norm): C_mem is the more efficient circuit when the
    # training set is memorised, C_gen becomes it before the model groks, and ends far ahead
    mem = at[ph["memorised"]]
    assert mem["cmem_efficiency"] > 2 * mem["cgen_efficiency"] > 0
    assert ph["memorised"] < summary["cgen_more_efficient_from"] < ph["grokked"]
    # (one run: 4.9x and cgen_frac 0.875 on interp.kernel's float bits; >10x and > 0.9 on the lone kernel's
    # before it, same seed and machine: the bound is the phenomenon, C_gen far ahead, not one run's digits)
    assert last["cgen_efficiency"] > 3 * last["cmem_efficiency"] and last["cgen_frac"] > 0.8
    assert all(r["cgen_param_norm"] ** 2 + r["cmem_param_norm"] ** 2 + r["shared_param_norm"] ** 2
               == pytest.approx(r["sum_sq_weights"], rel=1e-9) for r in rows)
    assert rows[0]["cgen_frac"] < 0.01


def _phase_rows(excluded_log10, memorised_at=1):
    """Rows every 100 steps with the given log10 excluded loss; train accuracy 1 from checkpoint ``memorised_at``,
    test accuracy rising to 1 over the last checkpoints, C_gen overtaking C_mem at step 1 500."""
    n = len(excluded_log10)
    test_acc = [0.01 * i for i in range(n - 2)] + [0.95, 1.0]
    return [{"step": 100 * i, "train_acc": 1.0 if i >= memorised_at else 0.5, "test_acc": test_acc[i],
             "excluded_loss": 10.0 ** v, "cgen_logit": i, "cmem_logit": 15 - i} for i, v in enumerate(excluded_log10)]


# log10 excluded loss: falls in memorisation, sits at 1e-3 +-2x (a raw minimum of 1e-5 at step 500), rises by
# half a decade per checkpoint from step 2 100 to a peak of 20 at step 3 000, then falls
NOISY = [0.5, -1.0, -2.0, -3.3, -2.7, -5.0, -2.7, -3.3, -2.7, -3.3, -2.7, -3.3, -2.7, -3.3, -2.7, -3.3, -2.7, -3.3, -2.7, -3.3,
         -3.0, -2.5, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.2, 1.3, 1.2, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]


def test_phase_boundaries_of_a_noisy_curve():
    ph = phases.detect_phases(_phase_rows(NOISY))
    # the start of the sustained rise (the smoothing window sees it one checkpoint early), not the raw minimum at
    # step 500 (noise); and the peak
    assert ph == {"memorised": 100, "circuit_formation_start": 1900, "cgen_overtakes_cmem": 800,
                  "cleanup_start": 3000, "test_acc_0.9": 3800, "grokked": 3900}
    # other noise of the same size (the alternation flipped, the low outlier elsewhere) moves it by at most the
    # smoothing half-window (two checkpoints)
    flipped = [-5.0 if i == 12 else -3.3 if i == 5 else -6.0 - v if 3 <= i < 20 else v for i, v in enumerate(NOISY)]
    assert 1800 <= phases.detect_phases(_phase_rows(flipped))["circuit_formation_start"] <= 2000
    # a curve that is still rising has no cleanup yet, but a start (a lower peak so far: the 10% level is lower)
    ph = phases.detect_phases(_phase_rows(NOISY[:29]))
    assert ph["cleanup_start"] is None and 1700 <= ph["circuit_formation_start"] <= 2000
    # a rise of less than 2x is not a rise
    flat = [0.5] + [-3.3 if i % 2 else -2.7 for i in range(1, 40)]
    assert phases.detect_phases(_phase_rows(flat))["circuit_formation_start"] is None


def test_no_fourier_phases_without_key_frequencies():
    rows = _phase_rows(NOISY)
    ph = phases.detect_phases(rows, fourier_phases=False)
    assert ph["memorised"] == 100 and ph["grokked"] == 3900
    assert all(ph[k] is None for k in phases.FOURIER_PHASES)
    nan_rows = [{**r, "excluded_loss": math.nan, "cgen_logit": math.nan, "cmem_logit": math.nan} for r in rows]
    ph = phases.detect_phases(nan_rows)  # no Fourier columns (NaN): only the accuracy markers
    assert ph["memorised"] == 100 and all(ph[k] is None for k in phases.FOURIER_PHASES)


def test_a_run_without_key_frequencies_reports_no_fourier_phases(tiny_copy):
    rows, summary = analyze_run(tiny_copy)  # 40 steps: no frequency has a cluster
    assert summary["key_frequencies"] == []
    assert all(summary["phases"][k] is None for k in phases.FOURIER_PHASES)
    assert "no key frequency" in summary["phases_note"]
