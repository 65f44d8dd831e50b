"""python -m interp.analyze: the tables of real runs, the cache, other tasks and clean refusals."""

import csv
import math
import shutil

import pytest
import torch

from analyses import fourier, progress
from interp import analyze, load_run
from interp.analyze import (
    ANALYSIS_TABLE, COLUMNS, FREQUENCY_TABLE, SUMMARY_FILE, analysis_throughput, analyze_run, load_analysis,
    load_frequency_table, main,
)
from interp.model import fast_logits
from interp.runs import ANALYSIS_DIR, ckpt_path
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

    monkeypatch.setattr(analyze, "key_frequency_summary", fake_summary)


@pytest.fixture
def tiny_copy(tiny_run, tmp_path):
    dst = tmp_path / "tiny"
    shutil.copytree(tiny_run, dst)
    return dst


def test_tables_of_a_tiny_run(tiny_copy):
    rows, summary = analyze_run(tiny_copy)
    assert summary["key_frequencies"] == []  # 40 steps form no circuit; the columns are computed all the same
    run = load_run(tiny_copy)
    d = tiny_copy / ANALYSIS_DIR
    assert {f.name for f in d.iterdir()} == {ANALYSIS_TABLE, FREQUENCY_TABLE, SUMMARY_FILE}
    with open(d / ANALYSIS_TABLE, newline="") as f:
        assert next(csv.reader(f)) == COLUMNS
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
        assert all(math.isfinite(r[c]) for c in COLUMNS if c != "cgen_efficiency")
    assert summary["cgen_more_efficient_from"] is None
    assert summary["fourier_applies"] and summary["key_frequencies_step"] == 40
    assert set(summary["phases"]) == set(analyze.PHASE_DEFINITIONS)
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
    assert rows[-1]["restricted_loss"] == pytest.approx(progress.restricted_loss(logits, data.labels, dirs, data.test_idx), rel=1e-5)
    assert rows[-1]["excluded_loss"] == pytest.approx(progress.excluded_loss(logits, data.labels, dirs, data.train_idx), rel=1e-5)
    assert rows[-1]["logit_cos_sim"] == pytest.approx(progress.ideal_logit_cosine(logits, [2, 5], +1), rel=1e-5)
    assert not (tiny_copy / ANALYSIS_DIR).exists()  # write=False
    rows, _ = analyze_run(tiny_copy)
    freq = [r for r in load_frequency_table(tiny_copy) if r["step"] == 40]
    per = progress.excluded_loss_per_frequency(logits, data.labels, data.train_idx, [2, 5], +1)
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


@pytest.mark.parametrize("task", ["mod_mul", "mod_div"])
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
        excluded = progress.excluded_loss(logits, data.labels, dirs, data.train_idx)
        cos_sim = progress.ideal_logit_cosine(logits, [1, 4], sign)
        assert (rows[-1]["excluded_loss"] == pytest.approx(excluded, rel=1e-9)) is same
        assert (rows[-1]["logit_cos_sim"] == pytest.approx(cos_sim, rel=1e-9)) is same
    assert all(math.isfinite(r[c]) for r in rows for c in FOURIER_COLUMNS)


def test_throughput(tiny_copy):
    out = analysis_throughput(tiny_copy)
    assert out["n_checkpoints"] == 5 and out["checkpoints_per_s"] > 0
    assert not (tiny_copy / ANALYSIS_DIR).exists()


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
    assert last["cgen_efficiency"] > 10 * last["cmem_efficiency"] and last["cgen_frac"] > 0.9
    assert all(r["cgen_param_norm"] ** 2 + r["cmem_param_norm"] ** 2 + r["shared_param_norm"] ** 2
               == pytest.approx(r["sum_sq_weights"], rel=1e-9) for r in rows)
    assert rows[0]["cgen_frac"] < 0.01


def test_phase_boundaries_of_synthetic_curves():
    def row(step, train_acc, test_acc, excluded, cgen, cmem):
        return {"step": step, "train_acc": train_acc, "test_acc": test_acc, "excluded_loss": excluded,
                "cgen_logit": cgen, "cmem_logit": cmem}

    rows = [row(0, 0.0, 0.0, 4.0, 0, 0), row(1, 0.995, 0.0, 1.0, 1, 9), row(2, 1, 0.1, 0.5, 2, 8), row(3, 1, 0.2, 3.0, 6, 5),
            row(4, 1, 0.5, 9.0, 8, 3), row(5, 1, 0.95, 8.5, 9, 1), row(6, 1, 1.0, 6.0, 9, 0)]
    assert analyze.detect_phases(rows) == {"memorised": 1, "circuit_formation_start": 2, "cgen_overtakes_cmem": 3,
                                          "cleanup_start": 4, "test_acc_0.9": 5, "grokked": 6}
    # still rising at the end: no cleanup yet
    ph = analyze.detect_phases(rows[:5])
    assert ph["cleanup_start"] is None and ph["circuit_formation_start"] == 2 and ph["grokked"] is None
    # no Fourier columns (NaN): only the accuracy markers
    nan_rows = [{**r, "excluded_loss": math.nan, "cgen_logit": math.nan, "cmem_logit": math.nan} for r in rows]
    ph = analyze.detect_phases(nan_rows)
    assert ph["memorised"] == 1 and ph["cleanup_start"] is None and ph["cgen_overtakes_cmem"] is None
