"""The full versions of accelerate, datafrac and semigrok follow their papers (issue 17): their specs, the
float32 softmax control, semigrok's D_crit reading, and one-line errors for bad values."""

from __future__ import annotations

import json
import math
from argparse import Namespace

import pytest
import torch

from interp import runs, tables
from interp.config import ConfigError, TrainConfig
from interp.experiment import experiment_plan
from interp.experiment import main as experiment_main
from interp.experiments import accelerate, datafrac, semigrok
from interp.losses import criterion, loss_fn
from interp.stack import stackable
from interp.sweep import Spec, SweepError, expand, write_results
from interp.train import train
from tests.conftest import tiny_config
from tests.text import numbers, sentence


def one_line_error(capsys, argv: list[str], out, *needles: str) -> None:
    """``argv`` exits 2 with one line on stderr naming every needle, and writes nothing to ``out``."""
    capsys.readouterr()
    assert experiment_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(n in err[0] for n in needles), err
    assert not out.exists()


# ---- the float32 softmax control ---------------------------------------------------------------------
def test_softmax32_is_the_float32_cross_entropy_and_collapses_where_float64_does_not():
    logits = torch.tensor([[30.0, 0.0, -5.0], [0.5, 0.2, 0.1]], requires_grad=True)
    y = torch.tensor([0, 1])
    loss32 = criterion("softmax32")(logits, y)
    assert loss32.dtype == torch.float32 and criterion("softmax")(logits, y).dtype == torch.float64
    assert loss32.item() == pytest.approx(loss_fn(logits, y).item(), rel=1e-5)
    # a margin of 30: the float32 softmax has collapsed, so the example has loss exactly 0 and its correct-class logit no
    # gradient (float64 still pushes it up); its wrong-class logits still have one, e^-30 / 1, not 0
    per32 = torch.nn.functional.cross_entropy(logits.float(), y, reduction="none")
    assert per32[0].item() == 0.0 and loss_fn(logits[:1], y[:1]).item() > 0
    g32, = torch.autograd.grad(criterion("softmax32")(logits[:1], y[:1]), logits)
    g64, = torch.autograd.grad(criterion("softmax")(logits[:1], y[:1]), logits)
    assert g32[0, 0].item() == 0.0 and g64[0, 0].item() < 0
    assert g32[0, 1].item() == pytest.approx(math.exp(-30.0), rel=1e-5) and g32[0, 2].item() > 0


def test_softmax32_trains_alone_and_records_its_float32_loss(tmp_path):
    cfg = tiny_config(loss="softmax32", wd=0.0, adam_eps=1e-25, steps=20)
    assert not stackable(cfg)  # the stack's loss is the float64 softmax: this control trains through interp.train
    out = train(cfg, tmp_path / "r", progress=False)
    assert runs.read_config(out).loss == "softmax32"
    m = runs.read_metrics(out)
    assert m[-1]["step"] == 20 and math.isfinite(m[-1]["train_loss"]) and "softmax_collapse_frac" in m[-1]
    with pytest.raises(ConfigError, match="--loss 'softmax16'"):
        tiny_config(loss="softmax16")


# ---- accelerate ----------------------------------------------------------------------------------------
def test_accelerate_full_version_has_the_papers_arms_and_settings():
    full = accelerate.specs(Namespace(quick=False, p=None))
    canon = ["adamw", "adamw_lr3x", "grokfast_ema", "grokfast_ma", "softmax_wd0", "softmax32_wd0", "stablemax", "orthoadamw", "init_x0.5"]
    assert list(full) == canon + ["gf_adam", "gf_adam_lr3x", "gf_adam_l2_0.01", "gf_grokfast_ema", "gf_grokfast_ma",
                                  "pm_softmax", "pm_softmax32", "pm_stablemax", "pm_orthoadamw"]
    # Prieto et al.'s own MLP (their Fig. 1): one-hot a, b, two ReLU layers of 200, no biases, 40 %, AdamW lr 0.01, wd 0,
    # eps 1e-25, 80k full-batch steps; StableMax and the softmax controls at beta2 0.999, ⊥Grad at their 0.99
    pm = {a: TrainConfig(**{**full[a].base, "seed": 1}) for a in ("pm_softmax", "pm_softmax32", "pm_stablemax", "pm_orthoadamw")}
    c = pm["pm_stablemax"]
    assert (c.family, c.mlp_embed, c.mlp_depth, c.d_mlp, c.freeze_biases, c.p, c.frac, c.lr, c.wd, c.adam_eps, c.beta2, c.steps, c.loss) == \
        ("mlp", "onehot", 2, 200, True, 113, 0.4, 0.01, 0.0, 1e-25, 0.999, 80_000, "stablemax")
    assert (pm["pm_softmax"].loss, pm["pm_softmax32"].loss, pm["pm_orthoadamw"].optimizer, pm["pm_orthoadamw"].beta2) == \
        ("softmax", "softmax32", "orthoadamw", 0.99)
    assert accelerate.group_of("pm_stablemax") == "prieto_mlp" and accelerate.target("pm_stablemax") == 0.99
    for arm in canon:
        assert full[arm].base["p"] == 113 and full[arm].base["steps"] == 80_000 and full[arm].grid["seed"] == [1, 2, 3]
    control, sm, plain = full["softmax32_wd0"].base, full["stablemax"].base, full["softmax_wd0"].base
    assert (control["loss"], control["wd"], control["adam_eps"], control["beta2"]) == ("softmax32", 0.0, 1e-25, 0.999)
    assert {k: v for k, v in sm.items() if k != "loss"} == {k: v for k, v in control.items() if k != "loss"} and sm["loss"] == "stablemax"
    assert plain.get("loss", "softmax") == "softmax" and {k: v for k, v in plain.items() if k != "loss"} == {k: v for k, v in control.items() if k != "loss"}
    ortho = full["orthoadamw"].base
    assert (ortho["optimizer"], ortho["wd"], ortho["adam_eps"]) == ("orthoadamw", 0.0, 1e-25)
    # Grokfast's setting (ironjr/grokfast main.py, README): x*y mod 97 with y != 0, half for training, torch.optim.Adam
    # whose weight_decay is a coupled L2 term (0.005 EMA, 0.01 MA), target 95 % validation accuracy
    gf = full["gf_adam"].base
    assert (gf["task"], gf["p"], gf["frac"], gf["n_layers"], gf["normalization"], gf["batch_size"], gf["warmup"], gf["wd"]) == \
        ("mod_mul_nz", 97, 0.5, 2, "LN", 512, 10, 0.0)
    assert TrainConfig(**gf).n_train == 97 * 96 // 2 and TrainConfig(**gf).l2 == 0.0
    ema, ma = full["gf_grokfast_ema"].base, full["gf_grokfast_ma"].base
    assert (ema["l2"], ema["wd"], ema["grad_filter"], ema["filter_alpha"], ema["filter_lambda"]) == (0.005, 0.0, "ema", 0.98, 2.0)
    assert (ma["l2"], ma["wd"], ma["grad_filter"], ma["filter_window"], ma["filter_lambda"]) == (0.01, 0.0, "ma", 100, 5.0)
    assert full["gf_adam_l2_0.01"].base["l2"] == 0.01 and accelerate.target("gf_adam") == 0.95 and accelerate.target("adamw") == 0.99
    for spec in full.values():  # every member is a valid config
        assert all(m.config is not None for m in expand(spec))
    # --p sets the canonical group only; the quick version is what it was (no controls, no Grokfast group, eps 1e-8)
    assert accelerate.specs(Namespace(quick=False, p=59))["gf_adam"].base["p"] == 97
    quick = accelerate.specs(Namespace(quick=True, p=None))
    assert list(quick) == ["adamw", "adamw_lr3x", "grokfast_ema", "grokfast_ma", "stablemax", "orthoadamw", "init_x0.5"]
    assert "adam_eps" not in quick["stablemax"].base and quick["stablemax"].base["steps"] == 4000


def test_accelerate_plan_counts_every_arm(monkeypatch):
    seen = []
    monkeypatch.setattr("interp.experiment.plan", lambda specs, args, note="": seen.append(specs) or {})
    experiment_plan(accelerate, Namespace(name="accelerate", quick=False, p=None, tickets=None))
    assert len(seen[0]) == len(accelerate.specs(Namespace(quick=False, p=None)))


def _fake_arm(out, arm, base, fields, steps_to_99, collapse=None, curves=None):
    """A finished arm whose results.csv has ``steps_to_99``; its members' metrics hold ``collapse`` ([(step,
    collapse, zero_loss)] per member) or ``curves`` ([(step, test_acc)] per member), by default a test accuracy
    that jumps from 0 to 1 at the member's step to 99% (the Grokfast group reads its 95% step from them)."""
    spec = Spec({**base, **fields}, {"seed": list(range(1, len(steps_to_99) + 1))})
    members = expand(spec)
    d = out / arm
    d.mkdir(parents=True)
    (d / "sweep.json").write_text(json.dumps({"spec": spec.to_dict(), "members": [{"name": m.name} for m in members]}))
    rows = {m.name: {"status": "ok", "train_99_step": 50, "test_99_step": t, "final_step": base["steps"], "final_train_acc": 1.0,
                     "final_test_acc": 1.0, "final_test_loss": 0.1, "final_param_norm": 9.0, "wall_s": 1.0, "reason": ""}
            for m, t in zip(members, steps_to_99)}
    write_results(d, spec, members, rows)
    for m, c in zip(members, collapse or []):  # metrics with the float32 collapse: [(step, collapse, zero_loss)]
        (d / "runs" / m.name).mkdir(parents=True)
        runs.write_metrics(d / "runs" / m.name, [{"step": s, "softmax_collapse_frac": a, "zero_loss_frac": z} for s, a, z in c])
    if collapse is None:
        curves = curves or [[(0, 0.0), (t, 1.0)] if t is not None else [(0, 0.0), (base["steps"], 0.5)] for t in steps_to_99]
        for m, c in zip(members, curves):
            (d / "runs" / m.name).mkdir(parents=True)
            runs.write_metrics(d / "runs" / m.name, [{"step": s, "test_acc": a} for s, a in c])


def test_accelerate_summary_groups_and_collapse(tmp_path):
    canon = {"task": "mod_add", "p": 13, "steps": 1000}
    gf = {"task": "mod_mul_nz", "p": 13, "steps": 2000, "n_layers": 2, "normalization": "LN", "batch_size": 32, "wd": 0.0}
    _fake_arm(tmp_path, "adamw", canon, {}, [400, 600, 800])
    _fake_arm(tmp_path, "softmax32_wd0", canon, {"loss": "softmax32", "wd": 0.0},
              [None, None], collapse=[[(0, 0.0, 0.0), (500, 0.9, 0.8), (1000, 0.7, 0.6)], [(0, 0.0, 0.0), (1000, 0.5, 0.4)]])
    _fake_arm(tmp_path, "stablemax", canon, {"loss": "stablemax", "wd": 0.0}, [300, 300], collapse=[[(0, 0.0, 0.0)], [(0, 0.0, 0.0)]])
    _fake_arm(tmp_path, "gf_adam", gf, {}, [1000, 1200, 1400])
    _fake_arm(tmp_path, "gf_grokfast_ema", gf, {"grad_filter": "ema", "l2": 0.005}, [100, 120, 300])
    pm = {"task": "mod_add", "p": 13, "steps": 3000, "family": "mlp", "mlp_embed": "onehot", "mlp_depth": 2, "d_mlp": 16, "wd": 0.0}
    _fake_arm(tmp_path, "pm_softmax", pm, {}, [None, 2400, None])
    _fake_arm(tmp_path, "pm_stablemax", pm, {"loss": "stablemax"}, [600, 800, 1000])
    rows = {r["arm"]: r for r in accelerate.summarise(tmp_path)}
    assert list(rows) == ["adamw", "softmax32_wd0", "stablemax", "gf_adam", "gf_grokfast_ema", "pm_softmax", "pm_stablemax"]
    assert [rows[a]["group"] for a in rows] == ["canonical"] * 3 + ["grokfast"] * 2 + ["prieto_mlp"] * 2
    # the Prieto-MLP group against its own baseline: pm_softmax's Kaplan-Meier median is beyond its budget (2 of 3 censored),
    # so no speed-up is computed for pm_stablemax (not one against adamw)
    assert rows["pm_softmax"]["median_target_step"] is None and rows["pm_stablemax"]["speedup_vs_best_baseline"] is None
    assert rows["pm_stablemax"]["changes"] == "loss=stablemax"
    c = rows["softmax32_wd0"]
    assert (c["max_collapse_frac"], c["max_zero_loss_frac"], c["final_collapse_frac"]) == (0.9, 0.8, 0.6)
    assert rows["adamw"]["max_collapse_frac"] is None  # no collapse in its metrics: not recorded
    assert rows["stablemax"]["speedup_vs_best_baseline"] == 2.0  # against adamw (600)
    assert rows["gf_grokfast_ema"]["speedup_vs_best_baseline"] == 10.0  # against gf_adam (1200), not adamw
    assert rows["gf_grokfast_ema"]["changes"] == "l2=0.005 grad_filter=ema"  # relative to its group's baseline
    cap = accelerate.summary_caption(list(rows.values()))
    assert "Grokfast-setting group (2000 steps, target 95% test accuracy)" in cap and "softmax32_wd0 0.900, 0.600" in cap
    assert "Prieto-MLP group (3000 steps, target 99% test accuracy): pm_softmax 1/3 (median beyond the budget)" in cap
    assert numbers(sentence(cap, "Against it the largest speed-up of the medians is gf_grokfast_ema")) == [10.0]


# ---- datafrac ------------------------------------------------------------------------------------------
def test_datafrac_full_version_is_powers_setting_and_canonical_stays_an_option():
    s = datafrac.spec(Namespace(quick=False, p=None))
    b = s.base
    assert (b["task"], b["p"], b["n_layers"], b["d_model"], b["n_heads"], b["normalization"], b["batch_size"], b["warmup"]) == \
        ("mod_add", 97, 2, 128, 4, "LN", 512, 10)
    assert (b["lr"], b["wd"], b["steps"], b["stop_after_grok"], b["freeze_biases"]) == (1e-3, 1.0, 100_000, 1000, True)
    cfg = expand(s)[0].config
    assert cfg is not None and not stackable(cfg) and not cfg.full_batch
    c = datafrac.spec(Namespace(quick=False, p=None, setting="canonical")).base
    assert (c["p"], c["steps"], c.get("n_layers", 1), c.get("batch_size")) == (113, 20000, 1, None)
    assert datafrac.spec(Namespace(quick=False, p=89, setting="power")).base["p"] == 89
    assert datafrac.spec(Namespace(quick=True, p=None)).base["p"] == 59  # the quick version is unchanged


def test_datafrac_bad_setting_exits_2_with_one_line(tmp_path, capsys):
    one_line_error(capsys, ["datafrac", "--setting", "nanda", "--out", str(tmp_path / "a")], tmp_path / "a", "--setting nanda", "power")
    one_line_error(capsys, ["datafrac", "--quick", "--setting", "power", "--out", str(tmp_path / "b")], tmp_path / "b",
                   "--setting power", "full version")


# ---- semigrok: D_crit from a dcrit directory --------------------------------------------------------------
def dcrit_dir(tmp_path, dcrit="967", lo="797", hi="1174", status="crossed", primary="True", p=None, name="d"):
    d = tmp_path / name
    d.mkdir()
    (d / tables.SUMMARY_FILE).write_text("row,D,measure,primary,status,dcrit,dcrit_lo,dcrit_hi\nC_mem,255,,,,,,\n"
                                         f"D_crit,,norm_at_loss,{primary},{status},{dcrit},{lo},{hi}\n"
                                         "D_crit,,efficiency,False,crossed,2000,1500,2500\n")
    if p is not None:
        for stage in ("mem", "gen"):
            (d / stage).mkdir()
            (d / stage / "sweep.json").write_text(json.dumps({"spec": {"base": {"p": p}, "grid": {}}, "members": []}))
    return d


def test_read_dcrit_takes_the_primary_row(tmp_path):
    got = semigrok.read_dcrit(dcrit_dir(tmp_path, p=113), p=113)
    assert (got["dcrit"], got["lo"], got["hi"], got["measure"], got["p"]) == (967.0, 797.0, 1174.0, "norm_at_loss", 113)
    assert semigrok.read_dcrit(dcrit_dir(tmp_path, lo="", hi="nan", name="e"))["lo"] is None


@pytest.mark.parametrize("kw, message", [
    ({"dcrit": "nan"}, "no finite value"),
    ({"dcrit": "", "status": "below grid"}, "no finite value"),
    ({"dcrit": "inf"}, "no finite value"),
    ({"primary": "False"}, "no primary D_crit row"),
    ({"p": 31}, "measured at p = 31"),
])
def test_read_dcrit_refuses_what_it_cannot_centre_on(tmp_path, kw, message):
    with pytest.raises(SweepError, match=message):
        semigrok.read_dcrit(dcrit_dir(tmp_path, **kw), p=113)
    with pytest.raises(SweepError, match="no summary.csv"):
        semigrok.read_dcrit(tmp_path / "nothing")


def test_read_dcrit_knows_the_modulus_of_a_stored_summary_from_its_command(tmp_path):
    """A summary stored without its sweeps (as in docs/data): the modulus comes from experiment.json's command."""
    for name, argv, p in (("q", ["dcrit", "--quick", "--out", "x"], 31), ("f", ["dcrit", "--out", "x"], 113),
                          ("p", ["dcrit", "--p", "59", "--out", "x"], 59)):
        d = dcrit_dir(tmp_path, name=name)
        (d / tables.EXPERIMENT_FILE).write_text(json.dumps({"experiment": "dcrit", "argv": argv}))
        assert semigrok.read_dcrit(d)["p"] == p
    with pytest.raises(SweepError, match="measured at p = 31, but this experiment trains at p = 113"):
        semigrok.read_dcrit(tmp_path / "q", p=113)
    assert semigrok.read_dcrit(dcrit_dir(tmp_path, name="none"))["p"] is None  # nothing recorded: no check


def test_read_dcrit_takes_the_row_at_weight_decay_1_when_there_is_one_per_weight_decay(tmp_path):
    d = tmp_path / "wds"
    d.mkdir()
    (d / tables.SUMMARY_FILE).write_text("row,measure,primary,status,dcrit,dcrit_lo,dcrit_hi,wd\n"
                                         + "".join(f"D_crit,norm_at_loss,True,crossed,{x},{x - 100},{x + 100},{w}\n"
                                                   for w, x in ((0.5, 700), (1.0, 900), (2.0, 1100))))
    assert semigrok.read_dcrit(d)["dcrit"] == 900.0
    with pytest.raises(SweepError, match="no primary D_crit row .*wd 3"):
        semigrok.read_dcrit(d, wd=3.0)


def test_semigrok_full_grid_is_centred_on_dcrit_and_the_proxy_is_labelled(tmp_path):
    d = dcrit_dir(tmp_path, p=113)
    full = semigrok.spec(Namespace(quick=False, dcrit=d, proxy=False, steps=None))
    sizes = full.grid["train_size"]
    assert sizes == sorted(sizes) and len(sizes) == 5 and sizes[2] == 967 and (sizes[0], sizes[-1]) == (797, 1174)
    assert (full.base["p"], full.base["steps"], full.base.get("wd", 1.0), len(full.grid["seed"])) == (113, 15_000_000, 1.0, 10)
    proxy = semigrok.spec(Namespace(quick=False, dcrit=d, proxy=True, steps=None))
    assert proxy.grid["train_size"] == sizes[1:4] and proxy.base["wd"] > 1 and proxy.base["steps"] < full.base["steps"]
    assert semigrok.dcrit_grid(1000, None, None, 12769) == [800, 894, 1000, 1118, 1250]  # no interval: 0.8x to 1.25x
    quick = semigrok.spec(Namespace(quick=True, dcrit=None, proxy=False, steps=None))
    assert quick.grid["train_size"] == [1040, 1120, 1200] and quick.base["steps"] == 3000  # unchanged


def test_semigrok_bad_dcrit_and_proxy_exit_2_with_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    one_line_error(capsys, ["semigrok", "--out", str(out)], out, "--dcrit DIR", "required")
    one_line_error(capsys, ["semigrok", "--dcrit", str(tmp_path / "missing"), "--out", str(out)], out, "no summary.csv")
    one_line_error(capsys, ["semigrok", "--dcrit", str(dcrit_dir(tmp_path, dcrit="nan")), "--out", str(out)], out, "no finite value")
    one_line_error(capsys, ["semigrok", "--quick", "--proxy", "--out", str(out)], out, "--proxy", "full version")
    one_line_error(capsys, ["semigrok", "--quick", "--dcrit", str(tmp_path / "d"), "--out", str(out)], out, "--dcrit", "full version")
    one_line_error(capsys, ["semigrok", "--dcrit", str(tmp_path / "d"), "--steps", "0", "--out", str(out)], out, "--steps 0")


def test_accelerate_full_version_end_to_end_tiny(tmp_path, monkeypatch):
    """Every group trains (the float32 control, the Grokfast group's 2-layer LayerNorm mini-batch model and the
    Prieto-MLP group's MLP through interp.train), and the summary reads every arm's float32 collapse from its metrics."""
    base = {**tiny_config().to_dict(), "steps": 20, "eval_every": 10, "save_every": 20, "stop_after_grok": None}
    base.pop("seed")
    monkeypatch.setattr(accelerate, "settings", lambda args: (base, [1]))
    monkeypatch.setattr(accelerate, "GROKFAST_BASE", {**accelerate.GROKFAST_BASE, "p": 13, "d_model": 32, "d_mlp": 64, "batch_size": 32,
                                                      "steps": 20, "eval_every": 10, "save_every": 20})
    monkeypatch.setattr(accelerate, "PRIETO_MLP_BASE", {**accelerate.PRIETO_MLP_BASE, "p": 13, "d_mlp": 16, "steps": 20, "eval_every": 10,
                                                        "save_every": 20})
    out = tmp_path / "full"
    assert experiment_main(["accelerate", "--out", str(out), "--quiet", "--workers", "1"]) == 0
    rows = {r["arm"]: r for r in tables.read_csv(out / tables.SUMMARY_FILE)}
    assert list(rows) == list(accelerate.specs(Namespace(quick=False, p=None)))
    assert all(r["max_collapse_frac"] is not None and r["budget"] == 20 for r in rows.values())
    assert runs.read_config(out / "softmax32_wd0" / "runs" / "seed1").loss == "softmax32"
    gf = runs.read_config(out / "gf_grokfast_ema" / "runs" / "seed1")
    assert (gf.n_layers, gf.normalization, gf.batch_size, gf.engine, gf.task, gf.l2) == (2, "LN", 32, "hooked", "mod_mul_nz", 0.005)
    pm = runs.read_config(out / "pm_stablemax" / "runs" / "seed1")
    assert (pm.family, pm.mlp_embed, pm.mlp_depth, pm.loss) == ("mlp", "onehot", 2, "stablemax")
    figs = {f.key: f for f in accelerate.figures(out)}
    assert {"accelerate-survival", "accelerate-curves", "accelerate-collapse"} <= set(figs)
    assert "Grokfast-setting group (20 steps, target 95% test accuracy)" in figs["accelerate-survival"].caption


def test_accelerate_grokfast_group_counts_steps_to_95_percent(tmp_path):
    # Grokfast's target is 95 % validation accuracy. Each gf member passes 0.95 at step 500 and 0.99 only at 2 000;
    # the canonical arm's member the same: the Grokfast group's median is 500 (the old code read 2 000 from
    # test_99_step), the canonical group's stays 2 000.
    curve = [(0, 0.01), (400, 0.9), (500, 0.96), (1900, 0.98), (2000, 0.995)]
    canon = {"task": "mod_add", "p": 13, "steps": 4000}
    gf = {**accelerate.GROKFAST_BASE, "p": 13, "steps": 4000}
    _fake_arm(tmp_path, "adamw", canon, {}, [2000] * 3, curves=[curve] * 3)
    _fake_arm(tmp_path, "gf_adam", gf, {}, [2000] * 3, curves=[curve] * 3)
    rows = {r["arm"]: r for r in accelerate.summarise(tmp_path)}
    assert rows["gf_adam"]["median_target_step"] == 500 and rows["gf_adam"]["target_test_acc"] == 0.95
    assert rows["adamw"]["median_target_step"] == 2000 and rows["adamw"]["target_test_acc"] == 0.99


# ---- a diverged member counts (issue 24, item 4) -------------------------------------------------------
def test_ok_rows_keeps_a_member_forced_to_nan_as_a_diverged_outcome(tmp_path):
    # lr 1e30 drives the training loss to NaN at once; the lr 0.003 members finish. ok_rows used to keep only the two
    # that finished; now the two diverged members are outcomes too, with no final state and no step to 99%.
    from interp.experiments import common
    from interp.sweep import main as sweep_main

    out = tmp_path / "s"
    assert sweep_main(["mod_add", "--p", "13", "--d-mlp", "64", "--d-model", "24", "--eval-every", "10", "--save-every", "10", "--quiet",
                       "--steps", "30", "--grid", "lr=0.003,1e30", "--grid", "seed=1,2", "--out", str(out)]) == 1
    rows = common.ok_rows(out)
    assert len(rows) == 4 and sorted(r["lr"] for r in rows if r["diverged"]) == [1e30, 1e30]
    for r in rows:
        assert r["diverged"] == (r["lr"] == 1e30)
        if r["diverged"]:
            assert r["test_99_step"] is None and r["final_test_acc"] is None and r["final_step"] is None
    assert common.diverged_text(rows) == "2 of 4 diverged"


def test_accelerate_censors_a_diverged_member_at_the_budget(tmp_path):
    # adamw: seeds reach 99% at 1000 and 3000; the third diverged (NaN) at step 200. Censoring it at step 200, as the
    # old code did, drops it from the Kaplan-Meier risk set and gives median 1000; it never generalised within the
    # 4000-step budget, so the median is 3000, and the row says 1 of 3 diverged.
    canon = {"task": "mod_add", "p": 13, "steps": 4000}
    _fake_arm(tmp_path, "adamw", canon, {}, [1000, 3000, None])
    d = tmp_path / "adamw"
    rs = tables.read_csv(d / "results.csv")
    rs[2].update(status="failed", reason="training loss is not finite at step 200", final_step=200, final_test_acc=0.1)
    tables.write_csv(d / "results.csv", rs)
    _fake_arm(tmp_path, "adamw_lr3x", canon, {"lr": 3e-3}, [500, 700, 900])
    rows = {r["arm"]: r for r in accelerate.summarise(tmp_path)}
    a = rows["adamw"]
    assert a["median_target_step"] == 3000 and a["target_steps"] == "1000;3000;>4000"
    assert (a["seeds"], a["generalised"], a["censored"], a["diverged"]) == (3, 2, 1, 1)
    assert rows["adamw_lr3x"]["diverged"] == 0
    table = tables.experiment_tables(list(rows.values()), accelerate.TABLES)[0]
    headers, cells = table[1], {c[1]: c for c in table[2]}
    assert cells["adamw"][headers.index("diverged")] == "1 of 3" and cells["adamw_lr3x"][headers.index("diverged")] == "0 of 3"
    assert "adamw 1 of 3" in sentence(accelerate.summary_caption(list(rows.values())), "Diverged")
