"""Training options (init_scale, fixed_norm, grad_filter, loss, optimizer) against hand-written references."""

import json
import math
import sys
from collections import deque

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from interp import load_run, optim
from interp.config import ConfigError, TrainConfig
from interp.families import build_model
from interp.model import fast_logits, hooked_logits
from interp.losses import stablemax_loss
from interp.runs import RunError, ckpt_path, default_run_name, read_tensors, state_path, write_tensors
from interp.tasks import make_dataset
from interp.train import logits_fn, main, train
from tests.conftest import tiny_config

STEPS = 6


# ---- a plain-torch reference loop -------------------------------------------------------------
def _stablemax_by_hand(logits, y):
    x = logits.double()
    s = torch.where(x >= 0, x + 1, 1 / (1 - x))
    return -torch.log(s[torch.arange(len(y)), y] / s.sum(-1)).mean()


def _reference(cfg, steps=STEPS):
    """``cfg`` trained by a loop written from the formulas: hooked forward, per-tensor AdamW, each option by hand."""
    model = build_model(cfg.replace(init_scale=1.0))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p * cfg.init_scale)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.wd, betas=(cfg.beta1, cfg.beta2), foreach=False)
    data = make_dataset(cfg)
    x, y = data.inputs[data.train_idx], data.labels[data.train_idx]
    norm0 = math.sqrt(sum((p.double() ** 2).sum().item() for p in params))
    mu, window = None, deque(maxlen=cfg.filter_window)
    for _ in range(steps):
        logits = hooked_logits(model, x)
        loss = _stablemax_by_hand(logits, y) if cfg.loss == "stablemax" else F.cross_entropy(logits.double(), y)
        loss.backward()
        with torch.no_grad():
            g = [p.grad.clone() for p in params]
            if cfg.grad_filter == "ema":
                mu = [gi.clone() for gi in g] if mu is None else [cfg.filter_alpha * m + (1 - cfg.filter_alpha) * gi for m, gi in zip(mu, g)]
                g = [gi + cfg.filter_lambda * m for gi, m in zip(g, mu)]
            if cfg.grad_filter == "ma":
                window.append(g)
                if len(window) == cfg.filter_window:
                    g = [gi + cfg.filter_lambda * sum(w[i] for w in window) / len(window) for i, gi in enumerate(g)]
            if cfg.optimizer == "orthoadamw":
                g = [gi - (gi * p).sum() / (p * p).sum() * p for gi, p in zip(g, params)]
            g = [gi + cfg.l2 * p for gi, p in zip(g, params)]  # coupled L2: the penalty l2/2 |w|^2's gradient
            for p, gi in zip(params, g):
                p.grad = gi
            opt.step()
            opt.zero_grad()
            if cfg.fixed_norm:
                norm = math.sqrt(sum((p.double() ** 2).sum().item() for p in params))
                for p in params:
                    p.mul_(norm0 / norm)
    return {n: p.detach() for n, p in model.named_parameters()}


OPTIONS = {
    "ema": dict(grad_filter="ema", filter_alpha=0.8, filter_lambda=2.0),
    "ma": dict(grad_filter="ma", filter_window=3, filter_lambda=2.0),
    "orthoadamw": dict(optimizer="orthoadamw"),
    "stablemax": dict(loss="stablemax"),
    "fixed_norm": dict(fixed_norm=True, wd=0.0, init_scale=1.5),
    "init_scale": dict(init_scale=0.5),
    "l2": dict(l2=0.5, wd=0.0),
}


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_training_loop_matches_the_hand_written_reference(name, tmp_path):
    cfg = tiny_config(steps=STEPS, eval_every=STEPS, save_every=STEPS, **OPTIONS[name])
    got = load_file(ckpt_path(train(cfg, tmp_path / name, progress=False), STEPS))
    want = _reference(cfg)
    baseline = _reference(tiny_config(**{k: v for k, v in OPTIONS[name].items() if k == "wd"}))
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-5, msg=k)
    # the option changed the trained weights by far more than the tolerance above
    assert max((want[k] - baseline[k]).abs().max().item() for k in want) > 1e-3


def test_coupled_l2_is_torch_adams_weight_decay(tmp_path):
    # --l2 c with --wd 0 is torch.optim.Adam(weight_decay=c): the penalty's gradient c * w enters Adam's moments
    cfg = tiny_config(steps=STEPS, eval_every=STEPS, save_every=STEPS, l2=0.5, wd=0.0)
    got = load_file(ckpt_path(train(cfg, tmp_path / "l2", progress=False), STEPS))
    model = build_model(cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.l2, betas=(cfg.beta1, cfg.beta2), foreach=False)
    data = make_dataset(cfg)
    x, y = data.inputs[data.train_idx], data.labels[data.train_idx]
    for _ in range(STEPS):
        F.cross_entropy(hooked_logits(model, x).double(), y).backward()
        opt.step()
        opt.zero_grad()
    for n, p in model.named_parameters():
        torch.testing.assert_close(got[n], p.detach(), rtol=1e-4, atol=1e-5, msg=n)
    # and it is not AdamW's decoupled decay with the same coefficient
    decoupled = load_file(ckpt_path(train(cfg.replace(l2=0.0, wd=0.5), tmp_path / "wd", progress=False), STEPS))
    assert max((got[n] - decoupled[n]).abs().max().item() for n, _ in model.named_parameters()) > 1e-3


# ---- each piece against its definition ------------------------------------------------------
def test_init_scale_multiplies_every_initial_weight_exactly():
    base, scaled = build_model(tiny_config()), build_model(tiny_config(init_scale=0.37))
    for (name, p), q in zip(base.named_parameters(), scaled.parameters()):
        assert torch.equal(q, p * 0.37), name
    assert not torch.equal(base.W_E, scaled.W_E)


def test_stablemax_loss_matches_the_formula():
    logits = torch.tensor([[-2.0, 0.0, 3.0], [0.5, -0.5, 1.0], [-4.0, -1.0, -0.25]])
    y = torch.tensor([2, 0, 1])

    def s(v):
        return v + 1 if v >= 0 else 1 / (1 - v)

    want = -sum(math.log(s(row[c]) / sum(s(v) for v in row)) for row, c in zip(logits.tolist(), y.tolist())) / 3
    got = stablemax_loss(logits, y)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(want, rel=1e-12)


def test_stablemax_gradient_is_finite_where_the_pieces_meet_and_at_one():
    logits = torch.tensor([[0.0, 1.0, -1.0, 2.0]], requires_grad=True)
    stablemax_loss(logits, torch.tensor([3])).backward()
    s = torch.tensor([1.0, 2.0, 0.5, 3.0])  # s(x); ds/dx = 1 for x >= 0, 1 / (1 - x)^2 = 0.25 at x = -1
    ds = torch.tensor([1.0, 1.0, 0.25, 1.0])
    want = ds / s.sum() - torch.tensor([0, 0, 0, 1.0]) * ds / s
    torch.testing.assert_close(logits.grad[0], want)


def test_stablemax_through_the_fast_forward_has_the_hooked_gradient():
    cfg = tiny_config()
    data = make_dataset(cfg)
    x, y = data.inputs[data.train_idx], data.labels[data.train_idx]
    hooked, fast = build_model(cfg), build_model(cfg)
    stablemax_loss(hooked_logits(hooked, x), y).backward()
    stablemax_loss(fast_logits(fast, x[:, 0], x[:, 1], cfg.eq_token), y).backward()
    for (name, a), b in zip(hooked.named_parameters(), fast.parameters()):
        if a.requires_grad:
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_evaluation_reports_the_loss_the_run_trains_on(tmp_path):
    cfg = tiny_config(loss="stablemax", steps=10)
    run = load_run(train(cfg, tmp_path / "r", progress=False))
    model = run.load_model(10)
    logits = logits_fn(model, cfg)(run.inputs)
    row = run.metrics[-1]
    for split, idx in (("train", run.train_idx), ("test", run.test_idx)):
        assert row[f"{split}_loss"] == pytest.approx(stablemax_loss(logits[idx], run.labels[idx]).item(), rel=1e-12)
        assert row[f"{split}_loss"] != pytest.approx(F.cross_entropy(logits[idx].double(), run.labels[idx]).item(), rel=1e-3)


def test_orthogonalize_removes_the_component_along_each_weight():
    cfg = tiny_config(freeze_biases=False)  # biases start at zero: the all-zero tensors to skip
    model = build_model(cfg)
    data = make_dataset(cfg)
    x, y = data.inputs[data.train_idx], data.labels[data.train_idx]
    F.cross_entropy(hooked_logits(model, x).double(), y).backward()
    params = optim.trainable(model)
    before = [p.grad.clone() for p in params]
    optim.orthogonalize(params)
    parallel = 0
    for p, g0 in zip(params, before):
        w, g = p.detach().double().flatten(), p.grad.double().flatten()
        if not w.any():
            assert torch.equal(p.grad, g0)  # all-zero tensor: gradient left alone
            continue
        assert abs(torch.dot(g, w)) <= 1e-6 * g0.double().norm() * w.norm()
        torch.testing.assert_close(p.grad, g0 - torch.dot(g0.flatten(), p.detach().flatten()) / p.detach().pow(2).sum() * p.detach())
        parallel += abs(torch.dot(g0.double().flatten(), w)) > 1e-3 * g0.double().norm() * w.norm()
    assert parallel >= 1 and any(not p.any() for p in params)


def test_fixed_norm_holds_the_step_0_norm(tmp_path):
    cfg = tiny_config(fixed_norm=True, wd=0.0, init_scale=2.0, lr=1e-2, steps=40)
    norms = [r["param_norm"] for r in load_run(train(cfg, tmp_path / "fixed", progress=False)).metrics]
    free = [r["param_norm"] for r in load_run(train(cfg.replace(fixed_norm=False), tmp_path / "free", progress=False)).metrics]
    base = math.sqrt(sum((p.double() ** 2).sum().item() for p in build_model(tiny_config()).parameters()))
    assert norms[0] == pytest.approx(2.0 * base, rel=1e-6)
    assert all(n == pytest.approx(norms[0], rel=1e-6) for n in norms)
    assert abs(free[-1] / free[0] - 1) > 1e-2  # without the rescale the same run's norm moves


def test_ma_filter_waits_for_a_full_window():
    p = torch.nn.Parameter(torch.zeros(2))
    f = optim.MaFilter([p], window=3, lamb=10.0)
    seen = []
    for g in ([1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [6.0, 0.0]):
        p.grad = torch.tensor(g)
        f.apply()
        seen.append(p.grad.tolist())
    # steps 1-2 unchanged; step 3: g + 10 * mean(g1, g2, g3); step 4: g + 10 * mean(g2, g3, g4)
    want = [[1.0, 0.0], [0.0, 2.0], [3.0 + 10 * 4 / 3, 3.0 + 10 * 5 / 3], [6.0 + 10 * 3.0, 10 * 5 / 3]]
    torch.testing.assert_close(torch.tensor(seen), torch.tensor(want))


# ---- resume, config, command line -----------------------------------------------------------
@pytest.mark.parametrize("name", ["ema", "ma", "orthoadamw", "stablemax", "fixed_norm"])
def test_resume_with_each_option_is_bit_exact(name, tmp_path):
    opts = {**OPTIONS[name], "filter_window": 8} if name == "ma" else OPTIONS[name]
    cfg = tiny_config(steps=40, **opts)
    ref = train(cfg, tmp_path / "ref", progress=False)
    out = train(cfg.replace(steps=20), tmp_path / "resumed", progress=False)
    train(cfg, out, resume=True, progress=False)
    a, b = load_file(ckpt_path(ref, 40)), load_file(ckpt_path(out, 40))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    def timeless(run):
        return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in load_run(run).metrics]

    assert timeless(out) == timeless(ref)


def test_a_state_file_from_before_the_options_still_resumes(tmp_path):
    cfg = tiny_config(steps=40)
    ref = train(cfg, tmp_path / "ref", progress=False)
    out = train(cfg.replace(steps=20), tmp_path / "old", progress=False)
    tensors, meta = read_tensors(state_path(out))
    assert {"fixed_norm.norm0"} <= set(tensors)
    write_tensors(state_path(out), {k: v for k, v in tensors.items() if k.startswith(("model.", "opt."))}, metadata=meta)
    train(cfg, out, resume=True, progress=False)
    a, b = load_file(ckpt_path(ref, 40)), load_file(ckpt_path(out, 40))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_filter_state_that_does_not_fit_is_refused(tmp_path):
    cfg = tiny_config(steps=40, grad_filter="ema")
    out = train(cfg.replace(steps=20), tmp_path / "r", progress=False)
    tensors, meta = read_tensors(state_path(out))
    tensors["filter.mu.0"] = tensors["filter.mu.0"][:-1]
    write_tensors(state_path(out), tensors, metadata=meta)
    with pytest.raises(RunError, match="filter state mu.0"):
        train(cfg, out, resume=True, progress=False)


def test_options_are_flags_recorded_in_config_json_and_the_run_name(tmp_path):
    flags = ["mod_add", "--p", "13", "--frac", "0.5", "--d-model", "32", "--d-mlp", "64", "--steps", "4", "--quiet",
             "--grad-filter", "ma", "--filter-window", "3", "--loss", "stablemax", "--optimizer", "orthoadamw",
             "--init-scale", "0.8", "--fixed-norm", "--wd", "0"]
    assert main([*flags, "--out", str(tmp_path / "r")]) == 0
    saved = json.loads((tmp_path / "r" / "config.json").read_text())["config"]
    want = dict(grad_filter="ma", filter_window=3, loss="stablemax", optimizer="orthoadamw", init_scale=0.8, fixed_norm=True, wd=0.0)
    assert {k: saved[k] for k in want} == want
    assert default_run_name(TrainConfig(**want)) == \
        "mod_add_p113_wd0.0_init_scale0.8_fixed_normTrue_grad_filterma_filter_window3_lossstablemax_optimizerorthoadamw"
    assert default_run_name(TrainConfig()) == "mod_add_p113"


BAD = [
    (["--grad-filter", "lowpass"], "--grad-filter 'lowpass'"),
    (["--loss", "hinge"], "--loss 'hinge'"),
    (["--optimizer", "lion"], "--optimizer 'lion'"),
    (["--fixed-norm"], "--wd"),
    (["--fixed-norm", "--wd", "0.1"], "--fixed-norm True"),
    (["--init-scale", "0"], "--init-scale 0.0"),
    (["--init-scale", "-2"], "--init-scale -2.0"),
    (["--filter-alpha", "1"], "--filter-alpha 1.0"),
    (["--filter-alpha", "-0.5"], "--filter-alpha -0.5"),
    (["--filter-lambda", "-1"], "--filter-lambda -1.0"),
    (["--filter-window", "0"], "--filter-window 0"),
]


@pytest.mark.parametrize("argv, expect", BAD)
def test_bad_option_values_exit_2_with_one_line(argv, expect, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        sys.exit(main(["mod_add", "--p", "13", *argv, "--out", str(out)]))
    err = capsys.readouterr().err
    assert e.value.code == 2 and expect in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_fixed_norm_error_names_both_fields():
    with pytest.raises(ConfigError, match=r"--fixed-norm True: needs --wd 0 \(got --wd 1.0\)"):
        TrainConfig(fixed_norm=True)
