"""The digits MLP task, the MSE loss, the jump and survival estimates, and the omnigrok / accelerate experiments."""

import html
import json
import math
import shutil
import statistics
from argparse import Namespace

import pytest
import torch
from scipy import stats

from analyses.timing import first_step, kaplan_meier, km_median, late_jump, survival_at
from interp import load_run
from interp.analyze import load_analysis
from interp.analyze import main as analyze_main
from interp.config import PRESETS, ConfigError, TrainConfig
from interp.experiment import main as experiment_main
from interp.experiments import accelerate, omnigrok
from interp.mlp import MLP
from interp.families import build_model
from interp.losses import mse_loss
from interp.report import main as report_main
from interp.runs import default_run_name, read_metrics
from interp.stack import stackable
from interp.sweep import Spec, expand, read_results, write_results
from interp.tasks import make_dataset
from interp.train import main as train_main
from interp.train import train
from tests.conftest import tiny_config
from tests.text import numbers, sentence


def digits_config(**overrides) -> TrainConfig:
    base = dict(task="digits", train_size=300, d_mlp=16, steps=30, eval_every=10, save_every=10, lr=3e-3, loss="mse")
    return TrainConfig(**{**base, **overrides})


# ---- the digits task ------------------------------------------------------------------------------
def test_digits_dataset_is_the_bundled_images_split_by_the_seed():
    cfg = digits_config(train_size=1000)
    d = make_dataset(cfg)
    assert d.inputs.shape == (1797, 64) and d.inputs.dtype == torch.float32
    assert d.inputs.min() == 0 and d.inputs.max() == 1 and sorted(d.labels.unique().tolist()) == list(range(10))
    assert len(d.train_idx) == 1000 and len(d.test_idx) == 797
    assert sorted(torch.cat([d.train_idx, d.test_idx]).tolist()) == list(range(1797))
    assert cfg.n_examples == 1797 and cfg.d_vocab_out == 10 and cfg.family == "mlp"
    assert not torch.equal(make_dataset(cfg.replace(data_seed=1)).train_idx, d.train_idx)


def test_digits_mlp_shape_init_scale_and_frozen_biases():
    m1, m8 = build_model(digits_config(init_scale=1.0, freeze_biases=False)), build_model(digits_config(init_scale=8.0, freeze_biases=False))
    assert isinstance(m1, MLP) and m1(torch.zeros(5, 64)).shape == (5, 10)
    assert [tuple(layer.weight.shape) for layer in m1.layers] == [(16, 64), (16, 16), (10, 16)]
    for (n, p1), (_, p8) in zip(m1.named_parameters(), m8.named_parameters()):
        assert torch.equal(p8, p1 * 8), n  # every initial parameter x alpha, same seed
    frozen = build_model(digits_config())  # freeze_biases defaults to True: biases zero and not trained
    assert all(not p.requires_grad and not p.any() for n, p in frozen.named_parameters() if n.endswith("bias"))


def test_mse_loss_known_answer():
    logits = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.5]])
    labels = torch.tensor([0, 1])
    # errors against one-hot: row 0 all zero; row 1: (0, 1, 0.5) -> (0 + 1 + 0.25) / 6 elements
    assert mse_loss(logits, labels).item() == pytest.approx(1.25 / 6, abs=1e-15)
    assert mse_loss(logits, labels).dtype == torch.float64
    ref = torch.nn.MSELoss()(logits.double(), torch.nn.functional.one_hot(labels, 3).double())
    assert mse_loss(logits, labels).item() == pytest.approx(ref.item(), abs=1e-15)


def test_a_digits_run_trains_loads_and_resumes_exactly(tmp_path):
    cfg = digits_config(freeze_biases=False, init_scale=2.0)
    out = train(cfg, tmp_path / "d", progress=False)
    run = load_run(out)
    assert run.config == cfg.replace(engine="hooked") and run.steps == [0, 10, 20, 30]
    assert json.loads((out / "config.json").read_text())["config"]["task"] == "digits"
    model = run.load_model()
    with torch.no_grad():
        logits = model(run.inputs)
    last = run.metrics[-1]
    test_acc = (logits[run.test_idx].argmax(-1) == run.labels[run.test_idx]).double().mean().item()
    assert test_acc == pytest.approx(last["test_acc"]) and mse_loss(logits[run.train_idx], run.labels[run.train_idx]).item() == pytest.approx(last["train_loss"])
    half = train(cfg.replace(steps=20), tmp_path / "r", progress=False)
    train(cfg, half, resume=True, progress=False)
    a, b = load_run(half).load_model(), model
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_digits_is_named_without_p_and_never_stacks():
    assert default_run_name(digits_config(steps=15000, eval_every=100, save_every=100, train_size=1000)).startswith("digits_")
    assert "_p113" not in default_run_name(digits_config())
    assert not stackable(digits_config()) and stackable(tiny_config())


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    return train(digits_config(), tmp_path_factory.mktemp("dg") / "d", progress=False)


def test_a_digits_run_is_analysed_and_reported_without_the_transformer_analysers(digits_run, tmp_path, capsys):
    run = shutil.copytree(digits_run, tmp_path / "d")
    assert analyze_main([str(run), "--quiet"]) == 0
    rows, summary = load_analysis(run)
    metrics = read_metrics(run)
    for r, m in zip(rows, metrics):  # the MLP's own forward, recomputed from each checkpoint
        for k in ("train_loss", "test_loss", "train_acc", "test_acc", "param_norm"):
            assert r[k] == pytest.approx(m[k], rel=1e-9), k
    assert summary["family"] == "mlp" and "digits has no such tokens" in summary["skipped"]["circuit"]
    assert "layers" not in summary["skipped"] and (run / "analysis" / "layers.csv").is_file()  # feature rank per hidden layer
    assert all(math.isnan(r["excluded_loss"]) for r in rows)
    assert report_main([str(run), "--quiet"]) == 0
    html = (run / "report.html").read_text()
    assert "Fraction of the training set whose float32 softmax" in html and "Attention from" not in html


def test_digits_fast_engine_is_bad_input(tmp_path, capsys):
    assert train_main(["digits", "--engine", "fast", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--engine 'fast'" in err[0] and not (tmp_path / "x").exists()
    with pytest.raises(ConfigError, match="--fixed-norm True: needs --wd 0"):
        digits_config(fixed_norm=True, wd=0.1)


# ---- late jump and survival ------------------------------------------------------------------------
def _rows(test_acc, train_acc, every=100):
    return [{"step": i * every, "train_acc": tr, "test_acc": te, "param_norm": 100.0 - i} for i, (tr, te) in enumerate(zip(train_acc, test_acc))]


def test_late_jump_known_answer():
    train = [0.1, 0.5, 0.995, 1, 1, 1, 1, 1, 1, 1]
    test = [0.1, 0.2, 0.3, 0.3, 0.31, 0.35, 0.5, 0.8, 0.9, 0.88]
    j = late_jump(_rows(test, train))
    # memorised at step 200 (index 2); plateau 0.3, top 0.9, half-way 0.6 -> first at index 7 (0.8)
    assert (j["mem_step"], j["plateau_test_acc"], j["top_test_acc"]) == (200, 0.3, 0.9)
    assert (j["jump_step"], j["jump_test_acc"], j["jump_norm"], j["delay"]) == (700, 0.8, 93.0, 3.5)
    assert (j["norm0"], j["mem_norm"], j["final_norm"]) == (100.0, 98.0, 91.0)


def test_late_jump_without_a_rise_or_without_memorisation():
    flat = late_jump(_rows([0.5, 0.55, 0.56, 0.58], [0.2, 1, 1, 1]))
    assert flat["mem_step"] == 100 and flat["jump_step"] is None and flat["top_test_acc"] == 0.58
    never = late_jump(_rows([0.5, 0.9], [0.2, 0.9]))
    assert never["mem_step"] is None and never["jump_step"] is None and never["final_norm"] == 99.0
    assert first_step(_rows([0.5, 0.9], [0.2, 0.9]), "test_acc", 0.9) == 100


def test_kaplan_meier_known_answers_and_scipy():
    # 4 seeds: events at 100, 200, 300 and one censored at 150; by hand S = 3/4, then 3/4 * 1/2, then 0
    t, s = kaplan_meier([100, 300, 200, 150], [True, True, True, False])
    assert t == [100, 200, 300] and s == pytest.approx([0.75, 0.375, 0.0])
    assert km_median(t, s) == 200 and survival_at(t, s, 199) == 0.75 and survival_at(t, s, 200) == 0.375
    # one budget, two never generalised: S is simply 1 - events / n and the median is past the budget
    t, s = kaplan_meier([400, 1000, 1000, 600, 1000], [True, False, False, True, False])
    assert s == pytest.approx([0.8, 0.6]) and km_median(t, s) is None
    assert kaplan_meier([5, 5], [False, False]) == ([], [])
    ref = stats.ecdf(stats.CensoredData(uncensored=[3, 7, 7, 9], right=[5, 8]))
    t, s = kaplan_meier([3, 7, 7, 9, 5, 8], [True, True, True, True, False, False])
    assert s == pytest.approx([float(ref.sf.evaluate(x)) for x in t])
    with pytest.raises(ValueError):
        kaplan_meier([1, 2], [True])


# ---- accelerate: summary from fake sweep directories ------------------------------------------------
def fake_arm(out, arm, fields, steps_to_99, budget=1000):
    spec = Spec({"task": "mod_add", "p": 13, "steps": budget, **fields}, {"seed": list(range(1, len(steps_to_99) + 1))})
    members = expand(spec)
    d = out / arm
    d.mkdir(parents=True)
    (d / "sweep.json").write_text(json.dumps({"spec": spec.to_dict(), "members": [{"name": m.name} for m in members]}))
    rows = {m.name: {"status": "ok", "train_99_step": 50, "test_99_step": t, "final_step": budget, "final_train_acc": 1.0,
                     "final_test_acc": 1.0 if t else 0.3, "final_test_loss": 0.1, "final_param_norm": 9.0, "wall_s": 1.0, "reason": ""}
            for m, t in zip(members, steps_to_99)}
    write_results(d, spec, members, rows)


def test_accelerate_summary_known_answer(tmp_path):
    fake_arm(tmp_path, "adamw", {"lr": 1e-3}, [400, 600, None])
    fake_arm(tmp_path, "adamw_lr3x", {"lr": 3e-3}, [200, 300, 500])
    fake_arm(tmp_path, "grokfast_ema", {"lr": 1e-3, "grad_filter": "ema"}, [100, 150, None])
    fake_arm(tmp_path, "stablemax", {"lr": 1e-3, "loss": "stablemax", "wd": 0.0}, [None, None, 900])
    rows = {r["arm"]: r for r in accelerate.summarise(tmp_path)}
    assert list(rows) == ["adamw", "adamw_lr3x", "grokfast_ema", "stablemax"]
    assert (rows["adamw"]["median_target_step"], rows["adamw"]["censored"], rows["adamw"]["target_steps"]) == (600, 1, "400;600;>1000")
    assert rows["adamw_lr3x"]["median_target_step"] == 300 and rows["adamw_lr3x"]["speedup_vs_best_baseline"] == 1.0
    assert rows["grokfast_ema"]["speedup_vs_best_baseline"] == 2.0 and rows["adamw"]["speedup_vs_best_baseline"] == 0.5
    sm = rows["stablemax"]
    assert (sm["generalised"], sm["censored"], sm["median_target_step"], sm["speedup_vs_best_baseline"]) == (1, 2, None, None)
    assert (sm["min_target_step"], sm["max_target_step"], sm["wd"]) == (900, 900, 0.0)
    assert "wd=0.0" in sm["changes"] and "loss=stablemax" in sm["changes"] and rows["adamw"]["changes"] == "-"
    cap = accelerate.summary_caption(list(rows.values()))
    assert "adamw_lr3x" in sentence(cap, "The better baseline") and numbers(sentence(cap, "The better baseline")) == [300]
    assert "grokfast_ema" in sentence(cap, "the largest speed-up") and numbers(sentence(cap, "the largest speed-up")) == [2.0]
    assert "stablemax 1/3 (median beyond the budget)" in cap and "No ticket arm was run" in cap


def test_accelerate_arms_change_one_thing_each_and_use_the_papers_weight_decay():
    base, seeds = accelerate.settings(Namespace(quick=True, p=None))
    a = accelerate.arms(base)
    assert a["adamw"] == {} and a["adamw_lr3x"] == {"lr": pytest.approx(3 * base["lr"])}
    assert a["orthoadamw"]["wd"] == 0.0 and a["stablemax"]["wd"] == 0.0 and "ticket" not in a
    assert accelerate.ticket_arm(base, None) is None  # no --tickets: no ticket arm
    full = accelerate.specs(Namespace(quick=False, p=None))
    assert full["adamw"].base["p"] == 113 and full["adamw_lr3x"].base["lr"] == pytest.approx(3e-3) and len(seeds) >= 3


# ---- omnigrok: summary and captions from fake data ---------------------------------------------------
def test_lu_caption_reports_the_minimum_and_whether_it_is_inside():
    rows = [{"init_scale": a, "seed": 1, "steps": 500, "final_train_loss": tr, "final_test_loss": te}
            for a, tr, te in [(0.5, 2.0, 3.0), (1.0, 0.1, 0.5), (2.0, 0.01, 2.0)]]
    cap = omnigrok.lu_caption(rows)
    # the minimum (0.5 at alpha 1), then the test loss at both ends of the grid; it is inside, so a U
    assert numbers(sentence(cap, "Test loss is lowest")) == [0.5, 1, 3, 0.5, 2, 2] and "higher on both sides" in cap
    # from the smallest to the largest alpha, and the lowest train loss with its alpha
    assert numbers(sentence(cap, "Train loss goes from")) == [2, 0.5, 0.01, 2, 0.01, 2]
    rows[2]["final_test_loss"] = 0.1
    assert "so this grid shows no U" in omnigrok.lu_caption(rows)


# ---- real end-to-end runs of both experiments, tiny ----------------------------------------------------
def test_omnigrok_end_to_end_tiny(tmp_path, monkeypatch, capsys):
    lu = {**tiny_config().to_dict(), "wd": 0.0, "fixed_norm": True, "steps": 40, "save_every": 40}
    lu.pop("init_scale"), lu.pop("seed")
    digits = {**digits_config(steps=60, save_every=60).to_dict(), "init_scale": 4.0, "freeze_biases": False}
    digits.pop("wd"), digits.pop("seed")
    monkeypatch.setattr(omnigrok, "settings", lambda args: {
        "lu": Spec(lu, {"init_scale": [0.5, 1.0, 2.0], "seed": [1]}),
        "digits": Spec(digits, {"wd": [0.5, 0.0], "seed": [1]})})
    out = tmp_path / "e"
    assert experiment_main(["omnigrok", "--quick", "--out", str(out), "--quiet"]) == 0
    rows = omnigrok.summarise(out)
    assert [(r["stage"], r["init_scale"], r["wd"]) for r in rows] == [
        ("lu", 0.5, 0.0), ("lu", 1.0, 0.0), ("lu", 2.0, 0.0), ("digits", 4.0, 0.5), ("digits", 4.0, 0.0)]
    members = omnigrok.member_rows(out, "lu") + omnigrok.member_rows(out, "digits")
    assert rows == [{k: m[k] for k in omnigrok.SUMMARY_COLUMNS} for m in members]
    for m in members:
        metrics = read_metrics(out / m["stage"] / m["run"])
        assert m["final_test_loss"] == metrics[-1]["test_loss"] and m["norm0"] == metrics[0]["param_norm"]
        assert m == {**m, **late_jump(metrics)}
        if m["stage"] == "lu":  # the norm is held at its step-0 value
            assert m["final_norm"] == pytest.approx(m["norm0"], rel=1e-5)
    lu_rows = [r for r in rows if r["stage"] == "lu"]
    assert lu_rows[2]["norm0"] == pytest.approx(4 * lu_rows[0]["norm0"], rel=1e-6)  # alpha 2 vs 0.5
    # alpha both ways: in the grid's terms (--quick: this project's init) and against the original code's init norm
    facts = json.loads((out / omnigrok.ALPHA_FILE).read_text())
    assert facts["relative_to"] == "this" and facts["init_norm_original"] == omnigrok.original_init_norm(TrainConfig(**{**lu, "seed": 1}))
    for r in lu_rows:
        assert r["alpha"] == r["init_scale"] and r["alpha_relative_to"] == "this" and r["p"] == lu["p"]
        assert r["norm0"] == pytest.approx(r["alpha_original"] * r["init_norm_original"], rel=1e-5)
        assert r["norm0"] == pytest.approx(r["alpha"] * r["init_norm_here"], rel=1e-5)
    assert all(r["alpha_original"] is None for r in rows if r["stage"] == "digits")
    # issue 24 item 4: a member forced to NaN stays in the summary, marked, and the tables say so
    from interp import tables

    assert [r["diverged"] for r in rows] == [False] * 5
    rs = tables.read_csv(out / "lu" / "results.csv")
    victim = next(r for r in rs if r["init_scale"] == 2.0)
    victim.update(status="failed", reason="training loss is not finite at step 30")
    tables.write_csv(out / "lu" / "results.csv", rs)
    after = omnigrok.summarise(out)
    assert len(after) == 5 and [r["diverged"] for r in after] == [False, False, True, False, False]
    lu_table = tables.experiment_tables(after, omnigrok.TABLES)[0]
    assert [c[lu_table[1].index("diverged")] for c in lu_table[2]] == ["no", "no", "yes"]
    dg = {r["wd"]: r for r in rows if r["stage"] == "digits"}
    assert dg[0.5]["final_norm"] < dg[0.0]["final_norm"]  # weight decay pulls the norm down
    assert (out / "summary.csv").read_text().splitlines()[0] == ",".join(omnigrok.SUMMARY_COLUMNS)
    assert report_main([str(out), "--quiet"]) == 0
    page = html.unescape((out / "report.html").read_text())
    assert "Final loss against the fixed weight norm (LU)" in page
    assert f"Test loss is lowest ({min(r['final_test_loss'] for r in lu_rows):.3g})" in page
    assert "Digits MLP (300 training images, initial weights x 4, mse loss)" in page
    assert "wd 0.5, seed 1: " in page and "wd 0, seed 1: " in page


def test_accelerate_end_to_end_tiny_and_bad_p(tmp_path, monkeypatch, capsys):
    base = {**tiny_config().to_dict(), "steps": 60, "save_every": 60}
    base.pop("seed")
    monkeypatch.setattr(accelerate, "settings", lambda args: (base, [1, 2]))
    out = tmp_path / "a"
    assert experiment_main(["accelerate", "--quick", "--out", str(out), "--quiet"]) == 0
    rows = {r["arm"]: r for r in accelerate.summarise(out)}
    assert list(rows) == list(accelerate.arms(base))
    for arm, r in rows.items():
        res = read_results(out / arm)
        reached = sorted(int(x["test_99_step"]) for x in res if x["test_99_step"] != "")
        assert (r["seeds"], r["generalised"], r["budget"]) == (2, len(reached), 60)
        assert r["min_target_step"] == (reached[0] if reached else None) and r["target_test_acc"] == 0.99
    assert rows["orthoadamw"]["wd"] == 0.0 and rows["adamw_lr3x"]["lr"] == pytest.approx(3 * base["lr"])
    assert report_main([str(out), "--quiet"]) == 0
    page = html.unescape((out / "report.html").read_text())
    assert "Fraction of seeds with test accuracy at their group's target against step" in page and "No ticket arm was run" in page
    monkeypatch.undo()
    capsys.readouterr()
    bad = tmp_path / "b"
    assert experiment_main(["accelerate", "--quick", "--p", "1", "--out", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--p 1" in err[0] and not bad.exists()


def test_accelerate_ticket_arm_from_a_tickets_directory(tmp_path, capsys):
    """--tickets adds the tickets' final masks as an arm, only for a tickets run of the same model."""
    import json as _json
    from argparse import Namespace

    from interp.experiment import main as experiment_main
    from interp.sweep import SweepError

    base = {**PRESETS["small"], "task": "mod_add", "steps": 4000, "eval_every": 50, "save_every": 4000}
    tickets = tmp_path / "t"
    (tickets / "dense").mkdir(parents=True)
    (tickets / "masks").mkdir()
    (tickets / "dense" / "sweep.json").write_text(_json.dumps({"spec": {"base": {**base, "save_every": 100, "steps": 3000}}}))
    for s in (1, 2):
        (tickets / "masks" / f"ticket_seed{s}.safetensors").write_bytes(b"")
    args = Namespace(quick=True, p=None, tickets=tickets)
    with pytest.raises(SweepError, match=r"no ticket masks for seed\(s\) \[3\]"):
        accelerate.specs(args)
    (tickets / "masks" / "ticket_seed3.safetensors").write_bytes(b"")
    spec = accelerate.specs(args)["ticket"]
    assert spec.base["mask_from"] == str(tickets.resolve() / "masks" / "ticket_seed{seed}.safetensors")
    assert TrainConfig(**{**spec.base, "seed": 2}).mask_path == str(tickets.resolve() / "masks" / "ticket_seed2.safetensors")
    assert "ticket" not in accelerate.specs(Namespace(quick=True, p=None, tickets=None))
    # a tickets run of another model or optimiser is refused before anything is written
    (tickets / "dense" / "sweep.json").write_text(_json.dumps({"spec": {"base": {**base, "lr": 1e-3}}}))
    out = tmp_path / "a"
    assert experiment_main(["accelerate", "--quick", "--tickets", str(tickets), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lr 0.001 there, 0.003 here" in err[0]
    assert not out.exists()


# ---- omnigrok: alpha against the original grokking code's init norm ---------------------------------------
def original_code_init(cfg, seed):
    """The original grokking code's initial weights for ``cfg``'s shape (Nanda et al.'s, as Omnigrok's notebook
    copies it): every weight matrix N(0, 1/d_model) except W_U, N(0, 1/d_vocab); d_vocab = p + 1; biases zero."""
    g = torch.Generator().manual_seed(seed)
    d, v, h, dh, m = cfg.d_model, cfg.p + 1, cfg.n_heads, cfg.d_head, cfg.d_mlp
    shapes = [((d, v), d), ((cfg.n_ctx, d), d), ((h, dh, d), d), ((h, dh, d), d), ((h, dh, d), d), ((d, dh * h), d), ((m, d), d), ((d, m), d),
              ((d, v), v)]
    return [torch.randn(*s, generator=g, dtype=torch.float64) / fan ** 0.5 for s, fan in shapes]


def test_alpha_is_converted_with_the_computed_init_norms():
    cfg = TrainConfig(seed=1)
    orig, here = omnigrok.original_init_norm(cfg), omnigrok.this_init_norm(cfg)
    # the original code's expected norm, against sampled initialisations of that code's shapes and scales
    sampled = [torch.linalg.vector_norm(torch.cat([w.flatten() for w in original_code_init(cfg, s)])).item() for s in range(5)]
    assert statistics.mean(sampled) == pytest.approx(orig, rel=0.005)
    # this project's: the norm --fixed-norm holds at alpha 1, of the built model
    from interp import optim
    assert here == pytest.approx(optim.total_norm(optim.trainable(build_model(cfg))).item(), rel=1e-12)
    assert (round(orig, 1), round(here, 1)) == (42.2, 33.7)  # the numbers the docs quote (33.6 at the default seed 999)
    # the full version's grid is the paper's alpha x original / this: Omnigrok's 0.8 is this project's ~1.0
    full = omnigrok.settings(Namespace(quick=False, alpha_relative_to=None))
    assert full["lu"].grid["init_scale"] == [round(a * orig / here, 6) for a in omnigrok.ALPHAS]
    assert full["lu"].grid["init_scale"][omnigrok.ALPHAS.index(0.8)] == pytest.approx(1.0, abs=0.01)
    assert omnigrok.settings(Namespace(quick=False, alpha_relative_to="this"))["lu"].grid["init_scale"] == list(omnigrok.ALPHAS)
    # a model of another shape gets its own ratio (computed, not a constant)
    small = TrainConfig(**{**PRESETS["small"], "seed": 1})
    assert omnigrok.alpha_ratio(small, "original") != pytest.approx(orig / here, rel=1e-3)
    assert omnigrok.alpha_ratio(small, "this") == 1.0


def test_full_version_runs_the_lu_sweep_at_p113_and_quick_is_as_measured():
    full = omnigrok.settings(Namespace(quick=False, alpha_relative_to=None))["lu"]
    cfg = TrainConfig(**{**full.base, "seed": 1})
    assert (cfg.p, cfg.d_model, cfg.d_mlp, cfg.lr, cfg.frac, cfg.wd, cfg.fixed_norm, cfg.steps) == (113, 128, 512, 1e-3, 0.3, 0.0, True, 15000)
    assert full.grid["seed"] == [1, 2, 3]
    quick = omnigrok.settings(Namespace(quick=True, alpha_relative_to=None))["lu"]
    assert quick.base["p"] == 59 and quick.grid == {"init_scale": list(omnigrok.ALPHAS), "seed": [1]}
    assert omnigrok.alpha_reference(Namespace(quick=True, alpha_relative_to=None)) == "this"
    assert omnigrok.alpha_reference(Namespace(quick=False, alpha_relative_to=None)) == "original"


@pytest.mark.parametrize("argv, message", [
    (["--alpha-relative-to", "tl"], "invalid choice: 'tl'"),
    (["--alpha-relative-to", "original"], "holds a grid relative to this"),
])
def test_omnigrok_bad_input_exits_2_in_one_line_and_writes_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "o"
    out.mkdir()
    (out / omnigrok.ALPHA_FILE).write_text(json.dumps({"relative_to": "this"}))
    try:
        code = experiment_main(["omnigrok", "--quick", "--out", str(out), *argv])
    except SystemExit as e:  # argparse refuses it
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0]
    assert [p.name for p in out.iterdir()] == [omnigrok.ALPHA_FILE]


def test_alpha_columns_and_the_run_nearest_omnigroks_alpha():
    cfg = TrainConfig(seed=1)
    facts = omnigrok.alpha_facts(cfg, "original")
    assert facts["init_scale_per_alpha"] == facts["ratio_original_to_here"] == pytest.approx(facts["init_norm_original"] / facts["init_norm_here"])
    member = cfg.replace(init_scale=round(0.8 * facts["init_scale_per_alpha"], 6))
    cols = omnigrok.alpha_columns(member, facts)
    assert cols["alpha"] == 0.8 and cols["alpha_relative_to"] == "original" and cols["alpha_original"] == pytest.approx(0.8, rel=1e-6)
    assert omnigrok.alpha_columns(member, {"relative_to": "this", "init_scale_per_alpha": 1.0})["alpha"] == member.init_scale
    # the caption's highlighted run is the grid value nearest Omnigrok's 0.8 in the original code's terms
    rows = [{"init_scale": a, "alpha": a, "alpha_original": a * 0.8, "seed": 1, "steps": 100, "train_99_step": 10, "test_99_step": None,
             "final_train_acc": 1.0, "final_test_acc": 0.5} for a in (0.8, 1.0, 1.5)]
    assert [r["alpha"] for r in omnigrok.paper_alpha_rows(rows)] == [1.0]
    assert "Nearest Omnigrok's alpha = 0.8: alpha 1 (0.8 x the original init norm) seed 1" in omnigrok.gap_caption(rows)
    # rows without alpha_original (summaries written before it was recorded): the run at init_scale 0.8
    old = [{k: v for k, v in r.items() if k not in ("alpha", "alpha_original")} for r in rows]
    assert [r["init_scale"] for r in omnigrok.paper_alpha_rows(old)] == [0.8]


# ---- omnigrok: the data-size threshold (known answers, then a tiny real stage) -------------------------
def test_critical_size_finds_the_threshold_of_a_curve_shaped_like_omnigroks():
    """The slides' MNIST picture: below ~200 training images no generalisation, from 200 on it generalises. A size
    that reaches the level once but not at every larger size is not the threshold; a curve that never reaches it
    has none; one that always does has the smallest size."""
    sizes = [10, 20, 50, 100, 200, 400, 800, 1600]
    omni = dict(zip(sizes, [0.2, 0.3, 0.45, 0.7, 0.93, 0.96, 0.98, 0.99]))
    assert omnigrok.critical_size(omni) == 200
    assert omnigrok.critical_size({**omni, 50: 0.91}) == 200  # a lucky small size does not count
    assert omnigrok.critical_size({**omni, 800: 0.85}) == 1600  # a dip above resets it
    assert omnigrok.critical_size({**omni, 1600: None}) is None
    assert omnigrok.critical_size({n: 0.5 for n in sizes}) is None
    assert omnigrok.critical_size({n: 0.95 for n in sizes}) == 10
    assert omnigrok.critical_size(omni, level=0.97) == 800


def _threshold_rows(acc):  # {(n, alpha, seed): best test accuracy}
    return [{"stage": "threshold", "n_train": n, "init_scale": a, "seed": s, "steps": 3000, "best_test_acc": v, "best_train_acc": 1.0}
            for (n, a, s), v in acc.items()]


def test_threshold_table_and_caption_take_the_median_over_seeds_and_the_best_alpha():
    acc = {}
    for n, (lo, hi) in {50: (0.5, 0.6), 100: (0.8, 0.88), 200: (0.9, 0.95), 400: (0.93, 0.97)}.items():
        for s, jitter in ((1, 0.0), (2, 0.02), (3, -0.02)):
            acc[(n, 0.5, s)], acc[(n, 2.0, s)] = lo + jitter, hi + jitter
    table = omnigrok.threshold_table(_threshold_rows(acc))
    assert [t["n_train"] for t in table] == [50, 100, 200, 400] and all(t["best_alpha"] == 2.0 and t["seeds"] == 3 for t in table)
    assert [t["best_test_acc"] for t in table] == pytest.approx([0.6, 0.88, 0.95, 0.97])
    assert table[0]["by_alpha"] == pytest.approx({0.5: 0.5, 2.0: 0.6})
    cap = omnigrok.threshold_caption(_threshold_rows(acc))
    assert "median over 3 seeds" in cap and "between 100 and 200 images" in cap and "200 images: 0.950 (alpha 2" in cap
    assert "no threshold" in omnigrok.threshold_caption(_threshold_rows({k: 0.5 for k in acc}))
    assert "lies below the grid" in omnigrok.threshold_caption(_threshold_rows({k: 0.99 for k in acc}))


def test_the_threshold_stage_runs_end_to_end_tiny(tmp_path, monkeypatch):
    """``--stages threshold``: a real (tiny) grid of training-set sizes x alpha with the norm held fixed; the summary,
    the table and the report's figure come from its runs."""
    base = {**digits_config(steps=40, save_every=40, eval_every=10).to_dict(), "wd": 0.0, "fixed_norm": True, "batch_size": 20,
            "freeze_biases": False}
    for k in ("train_size", "init_scale", "seed"):
        base.pop(k)
    real = omnigrok.settings
    monkeypatch.setattr(omnigrok, "settings", lambda args: {
        k: v for k, v in {**real(args), "threshold": Spec(base, {"train_size": [40, 200], "init_scale": [0.5, 2.0], "seed": [1]})}.items()
        if k in omnigrok.stages(args)})
    out = tmp_path / "e"
    assert experiment_main(["omnigrok", "--quick", "--stages", "threshold", "--out", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["threshold"]
    rows = omnigrok.summarise(out)
    assert sorted((r["n_train"], r["init_scale"]) for r in rows) == [(40, 0.5), (40, 2.0), (200, 0.5), (200, 2.0)]
    for r in rows:
        m = read_metrics(out / "threshold" / next(x["run"] for x in omnigrok.member_rows(out, "threshold")
                                                  if (x["n_train"], x["init_scale"]) == (r["n_train"], r["init_scale"])))
        assert r["best_test_acc"] == max(x["test_acc"] for x in m) and r["final_norm"] == pytest.approx(r["norm0"], rel=1e-5)
    from interp import tables

    title, headers, cells = tables.experiment_tables(rows, omnigrok.TABLES)[0]
    assert title.startswith("Data-size threshold") and headers[:4] == ["training images", "seeds", "α 0.5", "α 2"]
    assert [c[0] for c in cells] == ["40", "200"]
    assert report_main([str(out), "--quiet"]) == 0
    page = html.unescape((out / "report.html").read_text())
    assert "best test accuracy against the training-set size" in page and omnigrok.threshold_caption(rows) in page


def test_a_bad_stage_is_refused_in_one_line(tmp_path, capsys):
    out = tmp_path / "o"
    assert experiment_main(["omnigrok", "--quick", "--stages", "lu,mnist", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--stages lu,mnist" in err[0] and not out.exists()
