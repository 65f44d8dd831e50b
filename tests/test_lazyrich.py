"""Lazy to rich (Kumar et al.): the tangent kernel and its alignment on known answers, the two-layer network, the
fall rule, the refusals, and the experiment end to end at tiny sizes."""

from __future__ import annotations

import html
import math

import pytest
import torch
from torch import nn

from analyses.kernels import centred_alignment, empirical_ntk
from interp.config import ConfigError, TrainConfig
from interp.experiment import main as experiment_main
from interp.experiments import lazyrich
from interp.families import build_model
from interp.report import main as report_main
from interp.sweep import Spec
from interp.tasks import make_dataset
from interp.train import main as train_main


class _Linear(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x):
        return (x @ self.w)[:, None]


def test_the_tangent_kernel_of_a_linear_model_is_the_gram_matrix():
    x = torch.randn(30, 4, generator=torch.Generator().manual_seed(0))
    K = empirical_ntk(_Linear(torch.randn(4)), x, chunk=7)  # several chunks, the last one short
    assert torch.allclose(K, (x @ x.T).double(), atol=1e-5)


def test_centred_alignment_known_answers():
    g = torch.Generator().manual_seed(1)
    y = torch.randn(50, generator=g)
    assert centred_alignment(torch.outer(y, y), y) == pytest.approx(1.0)
    assert centred_alignment(3 * torch.outer(y, y) + 2.0, y) == pytest.approx(1.0)  # scale and a constant do not matter
    other = torch.randn(50, generator=g)
    other = other - other.mean()
    yc = y - y.mean()
    other = other - other.dot(yc) / yc.dot(yc) * yc  # orthogonal to y after centring
    assert centred_alignment(torch.outer(other, other), y) == pytest.approx(0.0, abs=1e-9)
    # identity kernel: y_c^T H y_c / (||H||_F ||y_c||^2) = 1 / sqrt(n - 1)
    assert centred_alignment(torch.eye(50), y) == pytest.approx(1 / math.sqrt(49))


def test_the_two_layer_network_starts_at_zero_and_its_kernel_has_kumar_et_als_closed_form():
    cfg = TrainConfig(task="poly", d_mlp=40, output_scale=2.0)
    model, data = build_model(cfg), make_dataset(cfg)
    x = data.inputs[:25]
    assert torch.equal(model(x), torch.zeros(25, 1)) and model.feature_distance() == 0.0
    with torch.no_grad():
        model.W.add_(0.3 * torch.randn_like(model.W))
    # df/dw_i = (alpha / N) phi'(w_i . x) x, phi'(z) = 1 + eps z: K = (alpha / N)^2 (X X^T) * (Phi' Phi'^T)
    dphi = 1 + cfg.quad_eps * (x @ model.W.T)
    want = (cfg.output_scale / cfg.d_mlp) ** 2 * (x @ x.T) * (dphi @ dphi.T)
    assert torch.allclose(empirical_ntk(model, x).float(), want, rtol=1e-4, atol=1e-7)


def test_fell_by_is_the_first_step_at_a_tenth_after_any_rise():
    steps = [0, 100, 200, 300, 400, 500]
    assert lazyrich.fell_by(steps, [1.0, 1.3, 0.5, 0.12, 0.1, 0.02]) == 400  # the early rise does not count as a fall
    assert lazyrich.fell_by(steps, [1.0, 0.9, 0.5, 0.3, 0.2, 0.11]) is None
    assert lazyrich.fell_by(steps, [1.0, 0.9, 0.5, 0.3, 0.2, 0.11], fraction=0.5) == 200
    assert lazyrich.fell_by([], []) is None


def _row(alpha, seed, fit, gen):
    return {"alpha": alpha, "seed": seed, "fit_step": fit, "gen_step": gen, "delay": None if fit is None or gen is None else gen / fit,
            "align_start": 0.1, "align_final": 0.5, "steps": 1000}


def test_the_caption_reports_the_steps_and_whether_the_delay_grows_with_alpha():
    rows = [_row(0.5, 1, 100, 150), _row(1.0, 1, 200, 500), _row(2.0, 1, 400, None)]
    cap = lazyrich.caption(rows)
    assert "alpha 1 (1 seed): the train loss fell 10x at step 200, the test loss at step 500 (test/train 2.5)" in cap
    assert "alpha 2 (1 seed): the train loss fell 10x at step 400, the test loss at step beyond the budget" in cap
    assert "the median delay grows with alpha" in cap
    rows[1]["gen_step"], rows[1]["delay"] = 220, 1.1
    assert "does not grow steadily" in lazyrich.caption(rows)


@pytest.mark.parametrize("argv, expect", [(["--output-scale", "0"], "--output-scale 0.0"), (["--output-scale", "-2"], "--output-scale -2.0")])
def test_a_bad_output_scale_is_one_line_exit_2_and_writes_nothing(argv, expect, tmp_path, capsys):
    out = tmp_path / "r"
    assert train_main(["poly", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expect in err[0] and not out.exists()


@pytest.mark.parametrize("kw, flag", [(dict(task="digits", output_scale=2.0), "--output-scale"),
                                      (dict(task="mod_add", p=13, family="twolayer"), "--family"),
                                      (dict(task="digits", family="twolayer"), "--family"),
                                      (dict(task="poly", loss="stablemax"), "--loss"), (dict(task="poly", act_fn="tanh"), "--act-fn"),
                                      (dict(task="poly", n_layers=2), "--n-layers")])
def test_the_family_and_its_options_are_refused_where_they_do_not_apply(kw, flag):
    with pytest.raises(ConfigError, match=flag):
        TrainConfig(**kw)


def test_the_experiment_runs_summarises_and_reports_tiny(tmp_path, monkeypatch):
    def tiny(args):
        return {f"alpha{a:g}": Spec({**lazyrich.base_config(a, 60, width=20), "eval_every": 10, "save_every": 20}, {"seed": [1]})
                for a in (0.5, 2.0)}

    monkeypatch.setattr(lazyrich, "specs", tiny)
    out = tmp_path / "lr"
    assert experiment_main(["lazyrich", "--quick", "--out", str(out), "--quiet"]) == 0
    rows = lazyrich.summarise(out)
    assert [(r["alpha"], r["lr"]) for r in rows] == [(0.5, 80.0), (2.0, 5.0)]
    for r in rows:
        assert -1 <= r["align_start"] <= 1 and -1 <= r["align_final"] <= 1 and r["features_final"] > 0
    assert report_main([str(out), "--quiet"]) == 0
    page = html.unescape((out / "report.html").read_text())
    assert "Tangent-kernel alignment with the test targets" in page and lazyrich.caption(rows) in page
    member = out / "alpha2" / "runs" / "seed1"
    assert report_main([str(member), "--quiet"]) == 0 and (member / "report.html").is_file()  # one member's own report


def test_bad_alphas_are_refused_in_one_line(tmp_path, capsys):
    out = tmp_path / "lr"
    assert experiment_main(["lazyrich", "--quick", "--alphas", "1,-2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--alphas 1,-2" in err[0] and not out.exists()


def test_fractional_seeds_are_refused_in_one_line(tmp_path, capsys):
    out = tmp_path / "lr"
    assert experiment_main(["lazyrich", "--quick", "--seeds", "1.5", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--seeds 1.5" in err[0] and not out.exists()
