"""The regression kind of task (Omnigrok's teacher-student): its data, loss and accuracy, the refusals, a run trained,
resumed, analysed and reported, and the omnigrok experiment's teacher stages at tiny sizes."""

from __future__ import annotations

import html
import math

import pytest
import torch
from safetensors.torch import load_file

from interp import runs
from interp.analyze import analyze_run
from interp.config import PRESETS, ConfigError, TrainConfig
from interp.experiment import main as experiment_main
from interp.experiments import omnigrok
from interp.families import build_model
from interp.losses import mse_loss
from interp.report import main as report_main
from interp.sweep import Spec
from interp.tasks import REGRESSION_TOL, Dataset, make_dataset, teacher_examples
from interp.train import main as train_main
from interp.train import split_metrics, train

TINY = dict(task="teacher", d_mlp=16, act_fn="tanh", freeze_biases=False, steps=30, eval_every=10, save_every=10, lr=3e-3)


def test_the_teacher_labels_its_inputs_with_a_tanh_mlp():
    """The targets are a 5-100-100-5 tanh network's outputs: refitting its last layer by least squares on the
    teacher's own hidden features is exact, and a different data seed is a different teacher."""
    cfg = TrainConfig(task="teacher")
    x, y = teacher_examples(cfg)
    assert x.shape == (200, 5) and y.shape == (200, 5) and y.dtype == torch.float32
    assert abs(x.mean().item()) < 0.2 and abs(x.std().item() - 1) < 0.1  # N(0, 1) inputs
    x2, y2 = teacher_examples(cfg.replace(data_seed=cfg.data_seed + 1))
    assert not torch.equal(x, x2)
    assert torch.equal(teacher_examples(cfg.replace(seed=7))[1], y)  # the model seed does not change the data
    data = make_dataset(cfg)
    assert len(data.train_idx) == 100 and len(data.test_idx) == 100 and cfg.loss == "mse"


def test_regression_loss_and_accuracy_are_omnigroks():
    """MSE over every output; an example is right when its own mean squared error is below 1e-3."""
    labels = torch.zeros(4, 5)
    out = torch.zeros(4, 5)
    out[1] += 0.03  # per-example MSE 9e-4: right
    out[2] += 0.04  # 1.6e-3: wrong
    out[3, 0] = 1.0  # 0.2: wrong
    assert mse_loss(out, labels).item() == pytest.approx(((out - labels) ** 2).mean().item())
    data = Dataset(torch.zeros(4, 5), labels, torch.tensor([0, 1]), torch.tensor([2, 3]))
    m = split_metrics(out, data, mse_loss)
    assert m["train_acc"] == 1.0 and m["test_acc"] == 0.0 and "softmax_collapse_frac" not in m
    assert REGRESSION_TOL == 1e-3


@pytest.mark.parametrize("kw, flag", [(dict(loss="stablemax"), "--loss"), (dict(loss="softmax32"), "--loss"),
                                      (dict(label_noise=0.1), "--label-noise"), (dict(frac=0.5), "--frac"),
                                      (dict(family="transformer"), "--family")])
def test_classification_options_are_refused_naming_the_flag(kw, flag):
    with pytest.raises(ConfigError, match=flag):
        TrainConfig(**{**TINY, **kw})


def test_tanh_is_for_the_regression_mlp_only():
    with pytest.raises(ConfigError, match="--act-fn"):
        TrainConfig(task="digits", act_fn="tanh")
    with pytest.raises(ConfigError, match="--act-fn"):
        TrainConfig(task="mod_add", p=13, act_fn="tanh")


@pytest.mark.parametrize("argv, expect", [(["--loss", "stablemax"], "--loss 'stablemax'"), (["--loss", "softmax"], "--loss 'softmax'"),
                                          (["--label-noise", "0.2"], "--label-noise 0.2")])
def test_the_command_line_refuses_classification_options_in_one_line_and_writes_nothing(argv, expect, tmp_path, capsys):
    out = tmp_path / "t"
    assert train_main(["teacher", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expect in err[0] and "regression" in err[0] and not out.exists()


def test_the_preset_is_omnigroks_setting():
    cfg = TrainConfig(task="teacher", **PRESETS["omnigrok-teacher"])
    model = build_model(cfg)
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert shapes == [(100, 5), (100,), (100, 100), (100,), (5, 100), (5,)]
    assert (cfg.act_fn, cfg.init_scale, cfg.lr, cfg.wd, cfg.beta2, cfg.steps, cfg.n_train) == ("tanh", 2.0, 3e-4, 0.05, 0.999, 100_000, 100)
    assert cfg.full_batch


def test_a_teacher_run_trains_resumes_exactly_and_is_analysed_and_reported(tmp_path):
    whole = train(TrainConfig(**TINY), tmp_path / "whole", progress=False)
    part = train(TrainConfig(**{**TINY, "steps": 20}), tmp_path / "part", progress=False)
    train(TrainConfig(**TINY), part, resume=True, progress=False)
    a, b = load_file(runs.ckpt_path(whole, 30)), load_file(runs.ckpt_path(part, 30))
    assert all(torch.equal(a[k], b[k]) for k in a)
    m = runs.read_metrics(whole)
    assert m[-1]["train_loss"] < m[0]["train_loss"] and all(0 <= r["test_acc"] <= 1 for r in m)
    rows, summary = analyze_run(whole)
    assert "regression" in summary["skipped"]["stability"] and "local_complexity" in summary["skipped"]
    assert rows[-1]["train_loss"] == pytest.approx(m[-1]["train_loss"], rel=1e-5) and math.isnan(rows[-1]["correct_logit"])
    assert report_main([str(whole), "--quiet"]) == 0


def test_the_teacher_stages_run_end_to_end_tiny(tmp_path, monkeypatch):
    base = {**TrainConfig(**TINY).to_dict(), "wd": 0.0}
    for k in ("init_scale", "seed"):
        base.pop(k)
    lu = {**base, "fixed_norm": True}
    real = omnigrok.settings
    monkeypatch.setattr(omnigrok, "settings", lambda args: {
        k: v for k, v in {**real(args), "teacher_lu": Spec(lu, {"init_scale": [0.3, 1.0, 3.0], "seed": [1]}),
                          "teacher": Spec({**base, "init_scale": 2.0}, {"wd": [0.5, 0.0], "seed": [1]})}.items()
        if k in omnigrok.stages(args)})
    out = tmp_path / "e"
    assert experiment_main(["omnigrok", "--quick", "--stages", "teacher_lu,teacher", "--out", str(out), "--quiet"]) == 0
    rows = omnigrok.summarise(out)
    assert [(r["stage"], r["init_scale"], r["wd"]) for r in rows] == [
        ("teacher_lu", 0.3, 0.0), ("teacher_lu", 1.0, 0.0), ("teacher_lu", 3.0, 0.0), ("teacher", 2.0, 0.5), ("teacher", 2.0, 0.0)]
    lu_rows = [r for r in rows if r["stage"] == "teacher_lu"]
    assert all(r["final_norm"] == pytest.approx(r["norm0"], rel=1e-5) for r in lu_rows)
    assert lu_rows[2]["norm0"] == pytest.approx(10 * lu_rows[0]["norm0"], rel=1e-5)
    te = {r["wd"]: r for r in rows if r["stage"] == "teacher"}
    assert te[0.5]["final_norm"] < te[0.0]["final_norm"]
    assert report_main([str(out), "--quiet"]) == 0
    page = html.unescape((out / "report.html").read_text())
    assert "Teacher-student: final loss against the fixed weight norm (LU)" in page and omnigrok.lu_caption(lu_rows) in page
    assert "Teacher MLP (100 training examples, accuracy: mean squared error below 1e-3" in page
