"""interp.group_analysis through python -m interp.analyze: mod_mul/mod_div in the log basis, group tasks in
the irreps basis; group tasks in python -m interp.train (their data, presets and refusals)."""

import math
import sys

import pytest
import torch

from analyses import groups, progress_measures
from interp import analysers, analyze, group_analysis, load_run
from interp.analysers import ATTENTION_TABLE
from interp.analyze import ANALYSIS_TABLE, FREQUENCY_TABLE, SUMMARY_FILE, analyze_run, load_irrep_table, main
from interp.config import ConfigError, TrainConfig
from interp.tasks import TASKS
from interp.runs import ANALYSIS_DIR
from interp.tasks import make_dataset, task_group
from interp.train import main as train_main
from interp.train import train
from tests.conftest import tiny_config

FILLED = ["restricted_loss", "excluded_loss", "gini_W_E", "gini_W_L", "logit_cos_sim", "cgen_logit", "cmem_logit",
          "cgen_frac", "cmem_param_norm", "shared_param_norm", "cmem_efficiency"]


def fixed_key_irreps(monkeypatch, keys, cmem=()):
    """Make the key irreps ``keys`` (a tiny run of a few steps has not formed any)."""
    real = group_analysis.key_irrep_summary

    def fake(run, step, view):
        out = real(run, step, view)
        out.update(key_irreps=list(keys), key_irrep_names=[view.irreps[k].name for k in keys], cmem_neurons=list(cmem))
        return out

    monkeypatch.setattr(group_analysis, "key_irrep_summary", fake)


@pytest.mark.parametrize("task,sign", [("mod_mul", +1), ("mod_div", -1)])
def test_mod_mul_and_mod_div_are_analysed_in_log_coordinates(task, sign, tmp_path, capsys, monkeypatch):
    fixed_key_irreps(monkeypatch, [1, 6], cmem=[0, 1, 2])
    run_dir = train(tiny_config(task=task, steps=20), tmp_path / task, progress=False)
    assert main([str(run_dir), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "log basis" in out and "primitive root" not in out.split("log basis")[0]
    rows, summary = analyze.load_analysis(run_dir)
    assert summary["basis"] == "log" and summary["primitive_root"] == 2 and summary["group"] == "Z12"
    assert "zero has no logarithm" in summary["basis_note"] and summary["key_irreps"] == [1, 6]
    assert {f.name for f in (run_dir / ANALYSIS_DIR).iterdir()} == {ANALYSIS_TABLE, group_analysis.IRREP_TABLE, ATTENTION_TABLE, SUMMARY_FILE}
    for r in rows:
        assert all(math.isfinite(r[c]) for c in FILLED), r
        parts = r["cgen_param_norm"] ** 2 + r["cmem_param_norm"] ** 2 + r["shared_param_norm"] ** 2
        assert parts == pytest.approx(r["sum_sq_weights"], rel=1e-9)
        assert r["cgen_logit"] + r["cmem_logit"] == pytest.approx(r["correct_logit"], abs=1e-9)
    irr = load_irrep_table(run_dir)
    assert len(irr) == len(rows) * 7  # Z12: trivial, frequencies 1..5, the sign (frequency 6)
    for step in {r["step"] for r in irr}:
        at = [r for r in irr if r["step"] == step]
        assert sum(r["W_E_frac"] for r in at) == pytest.approx(1.0) and sum(r["W_U_frac"] for r in at) == pytest.approx(1.0)
        assert [r["irrep"] for r in at if math.isfinite(r["excluded_loss"])] == [1, 6]
    # the same numbers from the pure analysers, by hand, on the final checkpoint
    run = load_run(run_dir)
    model = run.load_model(run.steps[-1])
    view = groups.log_view(13, sign)
    B, owner = groups.isotypic_basis(view.irreps)
    we = groups.fractions_1d(model.W_E.detach()[view.tokens], B, owner, 7)
    assert [r["W_E_frac"] for r in irr if r["step"] == run.steps[-1]] == pytest.approx(we.tolist(), rel=1e-9)


def test_group_task_data_and_analysis(tmp_path, monkeypatch):
    cfg = tiny_config(task="s4", p=24, steps=10)
    assert cfg.p == 24 and cfg.d_vocab == 25 and cfg.d_vocab_out == 24 and cfg.n_examples == 576
    assert TrainConfig(task="s4").p == 24  # p not given: the group's order
    data = make_dataset(cfg)
    S4 = groups.symmetric(4)
    for (g, h, eq), y in zip(data.inputs[::37].tolist(), data.labels[::37].tolist()):
        assert eq == 24 and S4.elements[y] == groups.compose(S4.elements[g], S4.elements[h])
    fixed_key_irreps(monkeypatch, [1, 4])
    run_dir = train(cfg, tmp_path / "s4", progress=False)
    rows, summary = analyze_run(run_dir)
    assert summary["basis"] == "irreps" and summary["irreps"][1] == "standard [3,1]" and summary["key_irreps"] == [1, 4]
    assert not (run_dir / ANALYSIS_DIR / FREQUENCY_TABLE).exists()
    assert all(math.isfinite(r["restricted_loss"]) for r in rows)
    assert len(load_irrep_table(run_dir)) == len(rows) * 5


def _one_line(capsys, prog):
    err = capsys.readouterr().err
    assert err.startswith(f"python -m {prog}: error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


@pytest.mark.parametrize("argv", [["s4", "--p", "7"], ["s4", "--p", "24"], ["s5", "--preset", "small"]])
def test_group_task_with_p_exits_2_one_line(argv, tmp_path, capsys):
    assert train_main([*argv, "--out", str(tmp_path / "x"), "--quiet"]) == 2
    err = _one_line(capsys, "interp.train")
    assert "--p" in err and "is a group task" in err
    assert not (tmp_path / "x").exists()
    with pytest.raises(ConfigError, match="--p 7: s4 is a group task"):
        TrainConfig(task="s4", p=7)


def test_task_groups_match_their_order():
    groups = {name: t.group_order for name, t in TASKS.items() if t.group_order is not None}
    assert groups == {"s4": 24, "s5": 120, "a5": 60}
    for task, n in groups.items():
        G = task_group(task)
        assert G.order == n
        G.check()


def _end_to_end(tmp_path, capsys, extra: list[str]) -> tuple:
    from interp.report import main as report_main

    out = tmp_path / "s4"
    assert train_main(["s4", "--preset", "s4", *extra, "--out", str(out), "--quiet"]) == 0
    assert main([str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert report_main([str(out), "--quiet"]) == 0
    page = (out / "report.html").read_text()
    assert "Share of each irrep" in page and "Irreps basis: S4" in page
    from interp import runs

    assert runs.read_config(out).engine == "fast"  # inputs [g, h, =], vocabulary |G| + 1: the fast path applies
    rows, summary = analyze.load_analysis(out)
    return rows, summary, printed, page


def test_s4_preset_train_analyze_report_shortened(tmp_path, capsys):
    rows, summary, printed, _ = _end_to_end(tmp_path, capsys, ["--steps", "60", "--eval-every", "30", "--save-every", "30"])
    assert [r["step"] for r in rows] == [0, 30, 60] and summary["basis"] == "irreps"
    assert "irreps basis: composition in S4" in printed


@pytest.mark.slow
def test_s4_preset_groks_and_the_analysis_finds_key_irreps(tmp_path, capsys):
    """The documented preset end to end with its own seed, 5 (a few minutes of training; its seeds 0-9 all reach 99 %
    test accuracy, and seed 5 stays there: docs/presets.md)."""
    rows, summary, printed, page = _end_to_end(tmp_path, capsys, [])
    assert summary["phases"]["grokked"] is not None
    assert summary["key_irreps"], summary
    final = rows[-1]
    assert final["restricted_loss"] < final["excluded_loss"]


def test_generic_analyser_on_z_p_equals_the_fourier_columns_of_mod_add(tiny_run, monkeypatch):
    """interp.group_analysis with the cyclic view Z_p gives every Fourier column interp.analyze computes for mod_add."""
    keys, cmem = [1, 4], [0, 3, 5, 7]

    def fake_summary(run, step):
        return {"key_frequencies": keys, "key_frequencies_step": step, "key_frequencies_embedding": [], "neurons_per_frequency": {},
                "unclustered_neurons": [], "mean_frac_explained_clustered": None, "cmem_neurons": cmem}

    monkeypatch.setattr(analysers, "key_frequency_summary", fake_summary)
    rows, _ = analyze_run(tiny_run, force=True, write=False)
    run = load_run(tiny_run)
    ga = group_analysis.GroupAnalyser(run, groups.cyclic_view(run.config.p), keys, cmem)
    from interp.model import fast_logits

    for r in rows:
        model = run.load_model(r["step"])
        x = run.dataset.inputs
        with torch.no_grad():
            logits = fast_logits(model, x[:, 0], x[:, 1], run.config.eq_token).double()
        mine = {"step": r["step"]}
        irr = ga(model, mine, logits)
        for c in FILLED + ["cgen_param_norm", "cgen_efficiency", "correct_logit"]:
            assert mine[c] == pytest.approx(r[c], rel=1e-6, abs=1e-9), c
        per_key = progress_measures.excluded_loss_per_frequency(logits, run.dataset.labels, run.dataset.train_idx, keys, +1)
        assert [i["excluded_loss"] for i in irr if i["irrep"] in keys] == pytest.approx(per_key.tolist(), rel=1e-9)
        assert all(math.isnan(i["excluded_loss"]) for i in irr if i["irrep"] not in keys)


def test_irrep_flag(tmp_path, capsys):
    run_dir = train(tiny_config(task="s4", p=24, steps=10), tmp_path / "s4", progress=False)
    assert main([str(run_dir), "--quiet", "--irrep", "[2,2]"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("irrep 2: [2,2] (dim 2, not key)\n") and len([ln for ln in out.splitlines() if ln.strip().startswith("10 ")]) == 1
    fresh = train(tiny_config(task="s4", p=24, steps=10), tmp_path / "fresh", progress=False)
    assert main([str(fresh), "--quiet", "--irrep", "standard7"]) == 2
    err = _one_line(capsys, "interp.analyze")
    assert "--irrep 'standard7': S4 has no irrep 'standard7'; its irreps are: trivial [4], standard [3,1]" in err
    assert not (fresh / ANALYSIS_DIR).exists()  # refused before anything was computed or written
    mod_add = train(tiny_config(steps=10), tmp_path / "add", progress=False)
    assert main([str(mod_add), "--quiet", "--irrep", "1"]) == 2
    assert "mod_add is not analysed as a group" in _one_line(capsys, "interp.analyze")


def test_mod_mul_report_shows_the_log_frequency_figures(tmp_path):
    from interp.report import main as report_main

    run_dir = train(tiny_config(task="mod_mul", steps=20), tmp_path / "mul", progress=False)
    assert report_main([str(run_dir), "--quiet"]) == 0
    page = (run_dir / "report.html").read_text()
    assert "Share of each log-frequency" in page and "Log basis: residues are numbered by their discrete logarithm to the primitive root 2" in page
