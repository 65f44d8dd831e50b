"""The papers' own models: the mlp family's variants, their presets, and the analysers on MLPs and deeper
LayerNorm transformers (interp.mlp, interp.families views, analyses.representations)."""

from __future__ import annotations

import math

import pytest
import torch

from analyses import efficiency, fourier, representations
from interp import runs
from interp.analyze import analyze_run
from interp.analyze import main as analyze_main
from interp.config import PRESET_SOURCES, PRESET_TASKS, PRESETS, ConfigError, TrainConfig
from interp.experiments.datafrac import POWER
from interp.families import FAMILIES, build_model, hidden_activations, operand_embedding
from interp.report import write_report
from interp.train import main as train_main
from interp.train import train

P = 11


def mlp_cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"task": "mod_add", "p": P, "family": "mlp", "d_model": 6, "d_mlp": 8, **kw})


# ---- the variants compute what the papers' code computes ---------------------------------------------
def test_each_variant_is_the_hand_computed_function():
    x = torch.tensor([[1, 2, P], [7, 10, P], [0, 0, P]])
    a, b = x[:, 0], x[:, 1]
    relu = torch.relu
    # Chughtai et al.: untied embeddings, concatenated, one matrix, no biases
    m = build_model(mlp_cfg(mlp_init="chughtai"))
    h = relu(torch.cat([m.embed[0][a], m.embed[1][b]], 1) @ torch.cat([m.first[0].weight, m.first[1].weight], 1).T)
    assert torch.allclose(m(x), h @ m.layers[0].weight.T, atol=1e-6)
    # devinterp: one table, a Linear per operand with its own bias, GELU, no output bias
    cfg = mlp_cfg(mlp_embed="tied", mlp_combine="sum", act_fn="gelu", freeze_biases=False, mlp_out_bias=False)
    m = build_model(cfg)
    h = torch.nn.functional.gelu(m.first[0](m.embed[0][a]) + m.first[1](m.embed[0][b]))
    assert m.layers[0].bias is None and torch.allclose(m(x), h @ m.layers[0].weight.T, atol=1e-6)
    # Minegishi et al.: one table, one shared map, summed, projected back to d_model, then the classes
    m = build_model(mlp_cfg(mlp_embed="tied", mlp_combine="shared", mlp_unembed="project", mlp_init="minegishi"))
    h = relu(m.first[0].weight @ m.embed[0][a].T + m.first[0].weight @ m.embed[0][b].T).T
    assert len(m.first) == 1 and torch.allclose(m(x), h @ m.layers[0].weight.T @ m.layers[1].weight.T, atol=1e-6)
    # Prieto et al.: one-hot a and b concatenated, two hidden layers
    m = build_model(mlp_cfg(mlp_embed="onehot", mlp_depth=2))
    onehot = torch.cat([torch.nn.functional.one_hot(a, P), torch.nn.functional.one_hot(b, P)], 1).float()
    W1 = torch.cat([m.first[0].weight, m.first[1].weight], 1)
    assert len(m.embed) == 0 and W1.shape == (8, 2 * P)
    assert torch.allclose(m(x), relu(relu(onehot @ W1.T) @ m.layers[0].weight.T) @ m.layers[1].weight.T, atol=1e-6)


def test_initialisations_follow_each_papers_scale():
    big = dict(d_model=400, d_mlp=300)
    m = build_model(mlp_cfg(mlp_init="chughtai", **big))  # N(0, 1/fan-in); embeddings N(0, 1/d_model)
    assert m.embed[0].std().item() == pytest.approx(1 / math.sqrt(400), rel=0.05)
    assert torch.cat([m.first[0].weight, m.first[1].weight], 1).std().item() == pytest.approx(1 / math.sqrt(800), rel=0.05)
    m = build_model(mlp_cfg(mlp_init="minegishi", mlp_embed="tied", **big))  # embeddings N(0, 1/p)
    assert m.embed[0].std().item() == pytest.approx(1 / math.sqrt(P), rel=0.1)
    m = build_model(mlp_cfg(mlp_embed="onehot", freeze_biases=False, **big))  # torch: uniform +-1/sqrt(fan-in of both operands)
    bound = 1 / math.sqrt(2 * P)
    w = torch.cat([m.first[0].weight, m.first[1].weight], 1)
    assert w.abs().max().item() <= bound and w.abs().max().item() > 0.95 * bound and m.first[1].bias is None
    m = build_model(mlp_cfg(mlp_embed="tied", mlp_combine="sum", freeze_biases=False, **big))  # a Linear per operand
    assert m.first[1].weight.abs().max().item() <= 1 / math.sqrt(400) and m.embed[0].std().item() == pytest.approx(1.0, rel=0.05)
    m3 = build_model(mlp_cfg(mlp_init="chughtai", init_scale=3.0, **big))
    assert m3.embed[0].std().item() == pytest.approx(3 * m.embed[0].std().item() / math.sqrt(400), rel=0.05)


def test_digits_mlp_is_unchanged_and_deep_mlp_counts_linear_layers():
    digits = TrainConfig(task="digits", d_mlp=16)
    m = build_model(digits)
    assert digits.mlp_depth == 2 and [n for n, _ in m.named_parameters()] == [
        "layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias", "layers.2.weight", "layers.2.bias"]
    deep = TrainConfig(task="digits", **{**PRESETS["deep-mlp"], "d_mlp": 8})
    m = build_model(deep)
    assert len(m.layers) == 12 and len(hidden_activations(m, deep, torch.rand(3, 64))) == 11  # Fan et al.'s depth 12


# ---- a hand-built MLP whose answer is known: every neuron in one frequency ---------------------------
def test_hand_built_mlp_circuit_is_found_through_the_views():
    """Embeddings cos/sin(w_k t), neurons cos(w_k a) + cos(w_k b) + 3 (never below zero, so the ReLU is the
    identity and each neuron's variance lies in frequency k's block): clustering, the embedding check, the
    layer's key share and the parameter split must all name k, read through the mlp family's views."""
    k = 3
    cfg = mlp_cfg(d_model=2, d_mlp=4, freeze_biases=False, mlp_embed="tied", mlp_combine="sum")
    m = build_model(cfg)
    t = torch.arange(P, dtype=torch.float32) * 2 * math.pi * k / P
    with torch.no_grad():
        m.embed[0].copy_(torch.stack([torch.cos(t), torch.sin(t)], 1))
        for lin in m.first:
            lin.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, -1.0]]))
            lin.bias.fill_(1.5)
        m.layers[0].weight.copy_(torch.stack([torch.cos(t), torch.sin(t), torch.cos(t), torch.sin(t)], 1))
        m.layers[0].bias.zero_()
    grid = torch.stack([torch.arange(P).repeat_interleave(P), torch.arange(P).repeat(P), torch.full((P * P,), P)], 1)
    acts = hidden_activations(m, cfg, grid)["layers.0.post"]
    assert acts.min() >= 0  # the ReLU never cuts
    clusters = fourier.cluster_neurons(acts.reshape(P, P, -1))
    assert clusters.key_frequencies == [k] and clusters.freq.tolist() == [k] * 4
    assert fourier.embedding_key_frequencies(operand_embedding(m, cfg), P) == [k]
    basis = fourier.fourier_basis(P)
    block = [[0, fourier.cos_row(k), fourier.sin_row(k)]]
    assert representations.key_fraction(acts.reshape(P, P, -1), basis, block) == pytest.approx(1.0, abs=1e-6)
    other = [[0, fourier.cos_row(1), fourier.sin_row(1)]]
    assert representations.key_fraction(acts.reshape(P, P, -1), basis, other) == pytest.approx(0.0, abs=1e-6)
    roles = FAMILIES["mlp"].views(m).roles
    split = efficiency.split_parameters(m, [k], torch.ones(4, dtype=torch.bool), roles)
    total = sum(p.detach().double().pow(2).sum().item() for p in m.parameters())
    norms = split.norms()
    assert sum(v ** 2 for v in norms.values()) == pytest.approx(total, rel=1e-9)
    assert split.mem["embed.0"].abs().max() < 1e-5 and split.mem["layers.0.weight"].abs().max() < 1e-5  # all in frequency k (float32)
    assert norms["cmem_param_norm"] < 1e-4 and norms["cgen_param_norm"] > 1


def test_feature_rank_is_the_rank_of_the_covariance():
    g = torch.Generator().manual_seed(0)
    low = torch.randn(500, 3, generator=g, dtype=torch.float64) @ torch.randn(3, 20, generator=g, dtype=torch.float64)
    assert representations.feature_rank(low) == 3
    assert representations.feature_rank(low + 5.0) == 3  # a constant offset adds nothing
    assert representations.feature_rank(torch.cat([low, torch.ones(500, 1, dtype=torch.float64)], 1)) == 3
    assert representations.feature_rank(torch.randn(500, 20, generator=g)) == 20
    assert representations.feature_rank(low[:1]) == 0


# ---- end to end: presets, analysis, report -----------------------------------------------------------
TINY = dict(steps=40, eval_every=20, save_every=20)


@pytest.mark.parametrize("name", ["s5-mlp", "devinterp-mlp", "tickets-mlp", "stablemax-mlp", "deep-mlp"])
def test_each_paper_preset_trains_analyses_and_reports(tmp_path, name, capsys):
    task = PRESET_TASKS[name]
    shrink = {"s5-mlp": ["--d-model", "16", "--d-mlp", "16"], "devinterp-mlp": ["--p", "13"],
              "tickets-mlp": ["--p", "13", "--d-model", "16"], "stablemax-mlp": ["--p", "13", "--d-mlp", "16"],
              "deep-mlp": ["--d-mlp", "16", "--train-size", "200", "--batch-size", "50"]}[name]
    out = tmp_path / name
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    assert train_main([task, "--preset", name, *shrink, *flags, "--out", str(out), "--quiet"]) == 0
    cfg = runs.read_config(out)
    assert cfg.family == "mlp" and name in PRESET_SOURCES
    assert analyze_main([str(out), "--quiet"]) == 0
    summary = runs.load_run(out)  # noqa: F841 (the run loads)
    rows, summary = analyze_run(out)
    layers = (out / "analysis" / "layers.csv").read_text().splitlines()
    assert layers[0] == "step,layer,width,feature_rank,key_frac" and len(layers) == 1 + 3 * cfg.mlp_depth
    if task != "digits":
        assert "circuit" not in summary["skipped"] and not math.isnan(rows[-1]["cgen_param_norm"])
        assert "attention" in summary["skipped"]
    html = write_report([out]).read_text()
    assert "Attention from" not in html and "Feature rank" in html


def test_power_setting_two_layer_layernorm_transformer_is_analysed(tmp_path):
    """datafrac --setting power's model (2 layers, LayerNorm) at a tiny size: analysed, not refused."""
    cfg = TrainConfig(**{**POWER, "p": 13, "d_model": 32, "d_mlp": 64, "batch_size": 64, "steps": 60, "eval_every": 20,
                         "save_every": 20})
    assert (cfg.n_layers, cfg.normalization) == (2, "LN")
    out = train(cfg, tmp_path / "power", progress=False)
    rows, summary = analyze_run(out)
    assert "circuit" not in summary["skipped"] and "layers" not in summary["skipped"] and summary["fourier_applies"]
    assert set(summary["key_frequencies_by_layer"]) == {"blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"}
    r = rows[-1]
    total = r["sum_sq_weights"]
    assert r["cgen_param_norm"] ** 2 + r["cmem_param_norm"] ** 2 + r["shared_param_norm"] ** 2 == pytest.approx(total, rel=1e-6)
    layers = (out / "analysis" / "layers.csv").read_text().splitlines()
    assert len(layers) == 1 + 2 * 4  # 4 checkpoints x 2 blocks
    assert "Feature rank" in write_report([out]).read_text()


# ---- bad input -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["mod_add", "--preset", "s5-mlp"], "--preset s5-mlp: it is written for the s5 task, not mod_add"),
    (["s5", "--preset", "devinterp-mlp"], "--preset devinterp-mlp: it is written for the mod_add task, not s5"),
    (["mod_add", "--family", "mlp", "--mlp-depth", "0"], "--mlp-depth 0: must be >= 1"),
    (["mod_add", "--family", "mlp", "--d-mlp", "0"], "--d-mlp 0: must be >= 1"),
    (["mod_add", "--family", "mlp", "--mlp-embed", "learned"], "--mlp-embed 'learned': must be one of tied, untied, onehot"),
    (["mod_add", "--mlp-combine", "sum"], "--mlp-combine 'sum': is an option of the mlp family"),
    (["mod_add", "--family", "mlp", "--n-layers", "2"], "--n-layers 2: is a transformer option"),
])
def test_bad_model_options_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    assert train_main([*argv, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not out.exists()


def test_mlp_runs_refuse_a_fast_engine():
    with pytest.raises(ConfigError, match="--engine 'fast': the mlp family has no fast path"):
        mlp_cfg(engine="fast")


def test_grokfast_setting_two_layer_layernorm_gelu_transformer_is_analysed_in_the_log_basis(tmp_path):
    """accelerate's Grokfast group (x*y mod 97 with b != 0, 2 layers, LayerNorm, GELU, biases) at a tiny size:
    the discrete-log analysis reads the last block through the family's views; nothing is refused."""
    from interp.experiments.accelerate import GROKFAST_BASE

    cfg = TrainConfig(**{**GROKFAST_BASE, "p": 13, "d_model": 32, "d_mlp": 64, "batch_size": 64, "steps": 40, "eval_every": 20,
                         "save_every": 20})
    assert (cfg.n_layers, cfg.normalization, cfg.act_fn, cfg.task) == (2, "LN", "gelu", "mod_mul_nz")
    out = train(cfg, tmp_path / "gf", progress=False)
    rows, summary = analyze_run(out)
    assert summary["basis"] == "log" and "circuit" not in summary["skipped"] and "layers" not in summary["skipped"]
    assert set(summary["key_irreps_by_layer"]) == {"blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"}
    r = rows[-1]
    assert r["cgen_param_norm"] ** 2 + r["cmem_param_norm"] ** 2 + r["shared_param_norm"] ** 2 == pytest.approx(r["sum_sq_weights"], rel=1e-6)
    irreps = (out / "analysis" / "irreps.csv").read_text().splitlines()
    assert irreps[0].split(",")[4] == "x_embed_frac" and irreps[1].split(",")[4] == ""  # no total embedding: attention mixes first
