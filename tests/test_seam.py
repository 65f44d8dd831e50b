"""The seam: a new task, model family or analyser is one registration, made here in the test file alone,
and the canonical run makes the same bits as before the registries existed."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from interp import analysers, runs
from interp.analysers import Analyser, register_analyser
from interp.analyze import analyze_run
from interp.config import ConfigError, TrainConfig
from interp.families import FAMILIES, ModelFamily, WeightViews, build_model, register_family
from interp.report import write_report
from interp.tasks import TASKS, Task, pair_examples, register_task
from interp.train import main as train_main
from interp.train import train


# ---- the same bits ------------------------------------------------------------------------------------
# `python -m interp.train mod_add --p 113 --steps 30 --eval-every 10 --save-every 30` (one torch thread),
# recorded at commit 7f184d2, before the task / family / analyser registries, on a 2-core "Intel(R) Xeon(R)
# Processor" (torch 2.13.0 CPU). Float kernels differ between CPUs, so the bits are compared on that CPU
# model and the values within 1e-5 elsewhere.
REFERENCE_CPU = "Intel(R) Xeon(R) Processor"
REFERENCE = {
    0: (4.735885755937183, 0.0060052219321148825, 4.732980868762311, 0.009956370958720215, 33.611455693576985),
    10: (4.702313840325346, 0.016449086161879897, 4.752133967022453, 0.005817205503971362, 33.48114023678487),
    20: (4.662000038752403, 0.02637075718015666, 4.776271439594651, 0.004139165454748853, 33.85057415869057),
    30: (4.56132905421906, 0.038642297650130546, 4.9111992906335535, 0.004810381474437857, 34.82871875387582),
}
REFERENCE_CKPT_SHA256 = "f14a21b387520b1f143020af1af1ae258231c98f404c49c95fc3732a6306af82"


def _cpu_model() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def checkpoint_sha256(run_dir: Path, step: int) -> str:
    state, _ = runs.read_tensors(runs.ckpt_path(run_dir, step))
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].contiguous().numpy().tobytes())
    return h.hexdigest()


def test_the_canonical_run_makes_the_bits_recorded_before_the_registries(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = train(TrainConfig(steps=30, eval_every=10, save_every=30), tmp_path / "canonical", progress=False)
    finally:
        torch.set_num_threads(threads)
    got = {r["step"]: tuple(r[k] for k in ("train_loss", "train_acc", "test_loss", "test_acc", "param_norm"))
           for r in runs.read_metrics(out)}
    assert set(got) == set(REFERENCE)
    if _cpu_model() == REFERENCE_CPU:
        assert got == REFERENCE
        assert checkpoint_sha256(out, 30) == REFERENCE_CKPT_SHA256
    else:
        for step, values in REFERENCE.items():
            assert got[step] == pytest.approx(values, rel=1e-5)


# ---- a new task and a new analyser -----------------------------------------------------------------
def _max_task() -> Task:
    """max(a, b) on 0..p-1, inputs [a, b, =]: a task none of the built-in ones is."""
    return Task("toy_max", "max(a, b), inputs [a, b, =]", pair_examples(lambda a, b, p: torch.maximum(a, b)),
                lambda cfg: cfg.p * cfg.p, token_pair=True)


def _first_operand_share(ck, state) -> dict:
    """The fraction of examples whose label is their first operand: max(a, b) = a for p(p + 1)/2 of p^2 pairs."""
    return {"label_is_a": (ck.data.labels == ck.data.inputs[:, 0]).double().mean().item(),
            "answer_is_a": (ck.logits.argmax(-1) == ck.data.inputs[:, 0]).double().mean().item()}


@pytest.fixture
def registries(monkeypatch):
    """Registrations made by a test are undone after it (the registries are module-level dicts and lists)."""
    monkeypatch.setattr(analysers, "ANALYSERS", list(analysers.ANALYSERS))
    tasks_before, families_before = dict(TASKS), dict(FAMILIES)
    yield
    for d, before in ((TASKS, tasks_before), (FAMILIES, families_before)):
        for k in set(d) - set(before):
            del d[k]


def test_a_task_and_an_analyser_registered_here_train_analyse_and_report(tmp_path, registries, capsys):
    register_task(_max_task())
    register_analyser(Analyser("first_operand", {"label_is_a": "fraction of labels equal to a",
                                                 "answer_is_a": "fraction of answers equal to a"}, _first_operand_share))
    p = 7
    out = tmp_path / "toy"
    # the command line knows the new task at once (the same registry builds its TASK choices)
    assert train_main(["toy_max", "--p", str(p), "--d-model", "16", "--n-heads", "2", "--d-mlp", "32", "--steps", "20",
                       "--eval-every", "10", "--save-every", "10", "--out", str(out), "--quiet"]) == 0
    cfg = runs.read_config(out)
    assert (cfg.task, cfg.family, cfg.engine) == ("toy_max", "transformer", "fast")  # [a, b, =]: the fast path applies
    rows, summary = analyze_run(out)
    assert [r["step"] for r in rows] == [0, 10, 20]
    for r, m in zip(rows, runs.read_metrics(out)):
        assert r["label_is_a"] == pytest.approx((p * (p + 1) / 2) / p**2, rel=1e-12)  # known: 28 of 49 pairs
        assert 0 <= r["answer_is_a"] <= 1
        assert r["test_acc"] == pytest.approx(m["test_acc"], rel=1e-12)
    # the Fourier circuit and clock/pizza measures do not apply to max(a, b): skipped with a reason, cells empty
    assert "not a function of a + b" in summary["skipped"]["circuit"] and "modular addition" in summary["skipped"]["mechanism"]
    assert all(math.isnan(r["excluded_loss"]) and math.isnan(r["grad_symmetricity"]) for r in rows)
    html = write_report([out]).read_text()
    assert "toy" in html and "Attention from" in html and "Fourier norms of W_E" not in html


def test_a_task_name_already_taken_or_unknown_is_refused(registries):
    with pytest.raises(ValueError, match="already registered"):
        register_task(Task("mod_add", "again", pair_examples(lambda a, b, p: a), lambda cfg: cfg.p**2))
    with pytest.raises(ConfigError, match="--task 'nope': unknown task; known tasks: mod_add"):
        TrainConfig(task="nope")
    with pytest.raises(ValueError, match="already registered"):
        register_analyser(Analyser("again", {"param_norm": "taken"}, lambda ck, st: {}))


# ---- a new model family ---------------------------------------------------------------------------------
class EmbedMLP(nn.Module):
    """One embedding per input slot, concatenated, one ReLU hidden layer, the logits of the last slot's answer."""

    def __init__(self, d_vocab: int, n_ctx: int, d: int, d_hidden: int, d_out: int):
        super().__init__()
        self.embed = nn.ModuleList([nn.Embedding(d_vocab, d) for _ in range(n_ctx)])
        self.hidden = nn.Linear(n_ctx * d, d_hidden)
        self.out = nn.Linear(d_hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.cat([e(x[:, i]) for i, e in enumerate(self.embed)], dim=-1)
        return self.out(torch.relu(self.hidden(h)))


def _build(cfg: TrainConfig) -> EmbedMLP:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = EmbedMLP(cfg.d_vocab, cfg.n_ctx, cfg.d_model, cfg.d_mlp, cfg.d_vocab_out)
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(cfg.init_scale)
    return model


def _toy_family() -> ModelFamily:
    return ModelFamily(
        "embed_mlp", "per-slot embeddings, concatenated, one ReLU layer", ("p", "d_model", "d_mlp"), _build,
        forward=lambda m, cfg, x: m(x),
        activations=lambda m, cfg, x: {"hidden.post": torch.relu(m.hidden(torch.cat([e(x[:, i]) for i, e in enumerate(m.embed)], -1)))},
        views=lambda m: WeightViews([e.weight for e in m.embed], m.out.weight.T, m.out.weight.T,
                                    {"embed.0.weight": ("token", 0), "embed.1.weight": ("token", 0), "hidden.weight": ("neuron", 0),
                                     "hidden.bias": ("neuron", 0), "out.weight": ("class", 0), "out.bias": ("class", 0)},
                                    attention=False),
        check=lambda cfg: ("engine", "no fast path") if cfg.engine == "fast" else None)


def test_a_model_family_registered_here_trains_analyses_and_reports(tmp_path, registries):
    register_family(_toy_family())
    cfg = TrainConfig(p=7, family="embed_mlp", d_model=8, d_mlp=32, steps=20, eval_every=10, save_every=10, lr=1e-2)
    out = train(cfg, tmp_path / "mlp", progress=False)
    saved = runs.read_config(out)
    assert (saved.family, saved.engine) == ("embed_mlp", "hooked")
    model = runs.load_run(out).load_model()
    assert isinstance(model, EmbedMLP)
    acts = FAMILIES["embed_mlp"].activations(model, cfg, runs.load_run(out).inputs)
    assert acts["hidden.post"].shape == (49, 32)
    rows, summary = analyze_run(out)
    for r, m in zip(rows, runs.read_metrics(out)):  # the family's forward, recomputed from the checkpoints
        for k in ("train_loss", "test_loss", "train_acc", "test_acc", "param_norm"):
            assert r[k] == pytest.approx(m[k], rel=1e-9), k
    # the circuit analysers read the family's views: they apply to it, the transformer-only ones do not
    assert "circuit" not in summary["skipped"] and "embed_mlp family" in summary["skipped"]["attention"]
    assert summary["family"] == "embed_mlp" and summary["fourier_applies"]
    total = sum(p.detach().double().pow(2).sum().item() for p in model.parameters())
    r = rows[-1]
    assert r["cgen_param_norm"] ** 2 + r["cmem_param_norm"] ** 2 + r["shared_param_norm"] ** 2 == pytest.approx(total, rel=1e-9)
    assert r["shared_param_norm"] > 0 and not math.isnan(r["restricted_loss"]) and not math.isnan(r["gini_W_E"])
    html = write_report([out]).read_text()
    assert "Attention from" not in html and "Fraction of the training set whose float32 softmax" in html
    with pytest.raises(ConfigError, match="--engine 'fast': no fast path"):
        cfg.replace(engine="fast")
    with pytest.raises(ConfigError, match="--family 'nope': unknown model family; known: auto, transformer, mlp"):
        cfg.replace(family="nope")


def test_builtin_families_views_and_activations_are_the_models_own_tensors():
    cfg = TrainConfig(p=7, d_model=16, n_heads=2, d_mlp=32)
    model, fam = build_model(cfg), FAMILIES["transformer"]
    v = fam.views(model)
    assert all(e is model.W_E for e in v.embed) and len(v.embed) == 3 and v.unembed is model.W_U and v.attention
    assert torch.allclose(v.neuron_logits, model.blocks[0].mlp.W_out @ model.W_U)
    x = torch.tensor([[1, 2, 7], [3, 4, 7]])
    acts = fam.activations(model, cfg, x)
    _, cache = model.run_with_cache(x)
    assert torch.allclose(acts["blocks.0.mlp.hook_post"], cache["blocks.0.mlp.hook_post"][:, -1], atol=1e-6)  # the fast path's tables
    digits = TrainConfig(task="digits", d_mlp=16)
    assert digits.family == "mlp"
    mlp = build_model(digits)
    v = FAMILIES["mlp"].views(mlp)
    assert v.embed[0].shape == (64, 16) and v.unembed.shape == (16, 10) and not v.attention
    x = torch.rand(5, 64)
    post = FAMILIES["mlp"].activations(mlp, digits, x)
    assert torch.allclose(mlp.layers[-1](post["layers.1.post"]), mlp(x))
