"""Pruning scores and masks (interp.prune), and training under masks (interp.train, interp.stack)."""

import json

import pytest
import torch

from interp import load_run, prune, runs
from interp.config import ConfigError
from interp.families import build_model
from interp.stack import Member, train_pack
from interp.train import main as train_main
from interp.train import train
from tests.conftest import tiny_config


# ---- scores -> masks ---------------------------------------------------------------------------
def test_keep_top_global_keeps_the_highest_scores_over_all_tensors():
    scores = {"a": torch.tensor([[5.0, 1.0], [3.0, 0.0]]), "b": torch.tensor([2.0, 4.0, 6.0, 0.5, 7.0, 8.0])}
    masks = prune.keep_top(scores, 0.4)  # 10 weights, remove 4: keep 8, 7, 6, 5, 4, 3
    assert masks["a"].tolist() == [[1, 0], [1, 0]]
    assert masks["b"].tolist() == [0, 1, 1, 0, 1, 1]


def test_keep_top_layer_keeps_the_fraction_in_every_tensor():
    scores = {"a": torch.tensor([[5.0, 1.0], [3.0, 0.0]]), "b": torch.tensor([2.0, 4.0, 6.0, 0.5, 7.0, 8.0])}
    masks = prune.keep_top(scores, 0.5, scope="layer")  # a: keep 2 of 4; b: keep 3 of 6
    assert masks["a"].tolist() == [[1, 0], [1, 0]]
    assert masks["b"].tolist() == [0, 0, 1, 0, 1, 1]


@pytest.mark.parametrize("k", [0.1, 0.6, 0.81])
def test_global_magnitude_pruning_keeps_exactly_the_top_fraction(k):
    g = torch.Generator().manual_seed(0)
    params = {"x.W_in": torch.randn(30, 20, generator=g), "x.W_out": 3 * torch.randn(20, 30, generator=g), "W_E": torch.randn(7, generator=g)}
    masks = prune.keep_top(prune.magnitude(params), k)
    n = sum(p.numel() for p in params.values())
    kept = torch.cat([params[name].abs().flatten()[masks[name].flatten() > 0] for name in params])
    dropped = torch.cat([params[name].abs().flatten()[masks[name].flatten() == 0] for name in params])
    assert kept.numel() == n - round(k * n)
    assert kept.min() > dropped.max()
    # the larger-scale tensor keeps a larger share: the threshold is shared, not per tensor
    assert masks["x.W_out"].mean() > masks["x.W_in"].mean()
    per_layer = prune.keep_top(prune.magnitude(params), k, scope="layer")
    for name, p in params.items():
        assert per_layer[name].sum().item() == p.numel() - round(k * p.numel())


def test_rate_outside_0_1_is_refused():
    for k in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match="--k"):
            prune.check_rate(k)
    prune.check_rate(0.6)


def test_prunable_are_the_weight_matrices():
    names = [n for n, _ in build_model(tiny_config()).named_parameters()]
    assert {n for n in names if prune.is_prunable(n)} == {
        "embed.W_E", "blocks.0.attn.W_Q", "blocks.0.attn.W_K", "blocks.0.attn.W_V", "blocks.0.attn.W_O",
        "blocks.0.mlp.W_in", "blocks.0.mlp.W_out", "unembed.W_U"}
    assert not prune.is_prunable("pos_embed.W_pos") and not prune.is_prunable("blocks.0.mlp.b_in")


def test_snip_is_abs_gradient_times_weight():
    theta = {"w": torch.tensor([1.0, -2.0, 3.0]), "v": torch.tensor([[0.5, -1.0]])}
    c = {"w": torch.tensor([2.0, 1.0, -1.0]), "v": torch.tensor([[4.0, 3.0]])}
    loss = lambda p: sum((c[n] * p[n] ** 2).sum() / 2 for n in p)  # noqa: E731  g = c * theta
    s = prune.snip(theta, loss)
    assert s["w"].tolist() == [2.0, 4.0, 9.0]  # |c| theta^2
    assert s["v"].tolist() == [[1.0, 3.0]]


def test_grasp_is_weight_times_hessian_gradient_product():
    A = torch.tensor([[2.0, 1.0, 0.0], [1.0, 3.0, -1.0], [0.0, -1.0, 1.0]], dtype=torch.float64)
    b = torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)
    theta = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    loss = lambda p: 0.5 * p["t"] @ A @ p["t"] + b @ p["t"]  # noqa: E731  g = A t + b, H = A
    s = prune.grasp({"t": theta}, loss)
    torch.testing.assert_close(s["t"], theta * (A @ (A @ theta + b)))


def test_synflow_one_round_is_the_path_norm_score():
    W1 = torch.tensor([[1.0, -2.0], [0.5, 3.0], [-1.0, 1.0]])  # 2 -> 3
    W2 = torch.tensor([[2.0, -1.0, 0.5]])  # 3 -> 1
    objective = lambda p: (p["W2"] @ p["W1"] @ torch.ones(2)).sum()  # noqa: E731
    # scores |W1[i, j]| |W2[0, i]| = [[2, 4], [0.5, 3], [0.5, 0.5]] and |W2[0, i]| sum_j |W1[i, j]| = [6, 3.5, 1];
    # k = 0.5 of 9 removes round(4.5) = 4 and keeps 6, 4, 3.5, 3, 2
    one = prune.synflow({"W1": W1, "W2": W2}, objective, 0.5, iterations=1)
    assert one["W1"].tolist() == [[1, 1], [0, 1], [0, 0]] and one["W2"].tolist() == [[1, 1, 0]]
    many = prune.synflow({"W1": W1, "W2": W2}, objective, 0.5, iterations=10)
    assert sum(m.sum().item() for m in many.values()) == 9 - round(0.5 * 9)
    assert many["W2"].sum() >= 1  # iterating never cuts the only path layer completely here


def test_norms_of_masked_weights():
    p = {"a": torch.tensor([3.0, -4.0]), "b": torch.tensor([[1.0, 2.0]])}
    assert prune.norms(p) == pytest.approx((10.0, 30**0.5))
    assert prune.norms(p, {"a": torch.tensor([1.0, 0.0])}) == pytest.approx((6.0, 14**0.5))


# ---- masks files ---------------------------------------------------------------------------------
def tiny_masks(cfg, k=0.5, seed=0):
    params = {n: p for n, p in build_model(cfg).named_parameters() if prune.is_prunable(n)}
    return prune.keep_top(prune.random_scores(params, seed), k)


@pytest.mark.parametrize("bad, why", [
    ({"blocks.0.mlp.W_nope": torch.ones(2)}, "not a trainable parameter"),
    ({"blocks.0.mlp.W_in": torch.ones(3, 3)}, "shape"),
    ({"blocks.0.mlp.W_in": torch.full((32, 64), 0.5)}, "other than 0 and 1"),
])
def test_read_masks_refuses_masks_that_do_not_fit(tmp_path, bad, why):
    path = tmp_path / "m.safetensors"
    prune.runs.write_tensors(path, bad)
    with pytest.raises(ConfigError, match=why):
        prune.read_masks(path, build_model(tiny_config()))


def test_cli_bad_masks_exit_2_and_write_nothing(tmp_path, capsys):
    path = tmp_path / "m.safetensors"
    prune.write_masks(path, {"blocks.0.mlp.W_in": torch.ones(5, 5)})
    out = tmp_path / "run"
    code = train_main(["mod_add", "--p", "13", "--d-model", "32", "--d-mlp", "64", "--steps", "5", "--mask-from", str(path), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--mask-from" in err and "shape" in err
    assert not out.exists()
    assert train_main(["mod_add", "--p", "13", "--steps", "5", "--mask-from", str(tmp_path / "missing.safetensors"),
                       "--out", str(out), "--quiet"]) == 2
    assert not out.exists()


# ---- training under masks ----------------------------------------------------------------------
def masked_zero(run_dir, masks):
    model = load_run(run_dir).load_model()
    ps = dict(model.named_parameters())
    return all(bool((ps[n][m == 0] == 0).all()) for n, m in masks.items())


def test_masked_weights_stay_exactly_zero_alone(tmp_path):
    cfg = tiny_config(steps=60, wd=1.0, lr=1e-2)
    masks = tiny_masks(cfg, 0.7)
    prune.write_masks(tmp_path / "m.safetensors", masks)
    out = train(cfg.replace(mask_from=str(tmp_path / "m.safetensors")), tmp_path / "run", progress=False)
    assert masked_zero(out, masks)
    kept = dict(load_run(out).load_model().named_parameters())
    assert all(bool((kept[n][m == 1] != 0).all()) for n, m in masks.items())  # the kept ones did train
    assert prune.read_masks(out / prune.MASKS_FILE, build_model(cfg)).keys() == masks.keys()  # the run's copy
    assert json.loads((out / "config.json").read_text())["config"]["mask_from"] == str(tmp_path / "m.safetensors")
    # the step-0 norm is the masked initial weights' norm
    init = dict(build_model(cfg).named_parameters())
    prune.apply_masks(init, masks)
    norm0 = sum((p.double() ** 2).sum() for p in init.values()).sqrt().item()
    assert load_run(out).metrics[0]["param_norm"] == pytest.approx(norm0, rel=1e-6)


def test_fixed_norm_keeps_the_masked_initial_norm(tmp_path):
    cfg = tiny_config(steps=30, wd=0.0, fixed_norm=True)
    masks = tiny_masks(cfg, 0.5)
    prune.write_masks(tmp_path / "m.safetensors", masks)
    run = load_run(train(cfg.replace(mask_from=str(tmp_path / "m.safetensors")), tmp_path / "run", progress=False))
    assert run.metrics[-1]["param_norm"] == pytest.approx(run.metrics[0]["param_norm"], rel=1e-5)
    assert masked_zero(run.path, masks)


def test_default_run_name_of_a_masked_run_is_one_directory():
    assert runs.default_run_name(tiny_config(mask_from="/x/y/ticket_seed{seed}.safetensors")).endswith("_mask_fromticket_seed{seed}.safetensors")


def test_seed_placeholder_picks_each_seeds_masks(tmp_path):
    for s in (1, 2):
        prune.write_masks(tmp_path / f"m_seed{s}.safetensors", tiny_masks(tiny_config(seed=s), 0.5, seed=s))
    cfg = tiny_config(seed=2, mask_from=str(tmp_path / "m_seed{seed}.safetensors"))
    assert cfg.mask_path == str(tmp_path / "m_seed2.safetensors")
    got = prune.run_masks(cfg, None, build_model(cfg), resume=False)
    assert all(torch.equal(got[n], m) for n, m in tiny_masks(tiny_config(seed=2), 0.5, seed=2).items())


def test_stacked_members_with_their_own_masks_match_lone_runs(tmp_path):
    cfgs = [tiny_config(seed=1, steps=50, wd=1.0), tiny_config(seed=2, steps=50, wd=0.0), tiny_config(seed=3, steps=50, lr=5e-3)]
    masks = [tiny_masks(cfgs[0], 0.6, seed=1), None, tiny_masks(cfgs[2], 0.3, seed=3)]
    for i, m in enumerate(masks):
        if m is not None:
            prune.write_masks(tmp_path / f"m{i}.safetensors", m)
            cfgs[i] = cfgs[i].replace(mask_from=str(tmp_path / f"m{i}.safetensors"))
    members = train_pack([Member(c, tmp_path / f"s{i}") for i, c in enumerate(cfgs)])
    assert all(m.failed is None for m in members)
    for i, cfg in enumerate(cfgs):
        lone, stacked = load_run(train(cfg, tmp_path / f"l{i}", progress=False)), load_run(tmp_path / f"s{i}")
        a, b = lone.load_model(), stacked.load_model()
        for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
            if pa.norm() > 0:
                assert ((pa - pb).norm() / pa.norm()).item() < 1e-4, (i, name)
        for ra, rb in zip(lone.metrics, stacked.metrics):
            assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-4, abs=1e-6)
        if masks[i] is not None:
            assert masked_zero(stacked.path, masks[i]) and masked_zero(lone.path, masks[i])
            assert (stacked.path / prune.MASKS_FILE).is_file()
        else:
            assert not (stacked.path / prune.MASKS_FILE).exists()
