"""The papers' model and batch options (n_layers, normalization, act_fn, batch_size, adam_eps)."""

from __future__ import annotations

import math

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from interp import runs
from interp.analyze import analyze_run
from interp.runs import RunError
from interp.stack import stackable
from interp.tasks import batch_positions
from interp.train import make_optimizer, train
from interp.families import build_model
from interp.model import hooked_logits
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]


def test_mini_batches_cover_each_epoch_once_and_depend_on_seed_and_step_only():
    cfg = tiny_config(batch_size=16)  # 84 training pairs: 6 batches an epoch, the last of 4
    epoch0 = [batch_positions(cfg, s) for s in range(6)]
    assert [len(b) for b in epoch0] == [16] * 5 + [4]
    assert sorted(torch.cat(epoch0).tolist()) == list(range(cfg.n_train))
    epoch1 = torch.cat([batch_positions(cfg, s) for s in range(6, 12)])
    assert sorted(epoch1.tolist()) == list(range(cfg.n_train)) and not torch.equal(epoch1, torch.cat(epoch0))
    assert torch.equal(batch_positions(cfg, 7), batch_positions(cfg.replace(steps=999), 7))  # a function of (seed, step)
    assert not torch.equal(batch_positions(cfg, 0), batch_positions(cfg.replace(seed=1), 0))
    assert batch_positions(tiny_config(), 3) is None and batch_positions(tiny_config(batch_size=10_000), 3) is None


def test_resume_with_mini_batches_is_bit_exact(tmp_path):
    cfg = tiny_config(batch_size=16, steps=40)
    whole = train(cfg, tmp_path / "whole", progress=False)
    part = train(cfg.replace(steps=20), tmp_path / "part", progress=False)
    train(cfg, part, resume=True, progress=False)  # continue 20 -> 40
    a, _ = runs.read_tensors(runs.ckpt_path(whole, 40))
    b, _ = runs.read_tensors(runs.ckpt_path(part, 40))
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = [r["train_loss"] for r in runs.read_metrics(whole)]
    assert losses == [r["train_loss"] for r in runs.read_metrics(part)]
    full = train(tiny_config(steps=40), tmp_path / "full", progress=False)  # and the batches do change training
    assert losses != [r["train_loss"] for r in runs.read_metrics(full)]


def test_two_layer_layernorm_gelu_model_trains_through_the_hooked_engine(tmp_path):
    cfg = tiny_config(n_layers=2, normalization="LN", act_fn="gelu", steps=30, adam_eps=1e-6)
    model = build_model(cfg)
    assert len(model.blocks) == 2 and model.cfg.normalization_type == "LN" and model.cfg.act_fn == "gelu"
    assert not stackable(cfg)
    out = train(cfg, tmp_path / "run", progress=False)
    run = runs.load_run(out)
    assert run.config.engine == "hooked"
    m = run.metrics
    assert m[-1]["train_loss"] < 0.8 * m[0]["train_loss"]
    # the checkpoint is an ordinary HookedTransformer whose forward gives the recorded loss
    logits = hooked_logits(run.load_model(), run.inputs).double()
    loss = torch.nn.functional.cross_entropy(logits[run.train_idx], run.dataset.train_labels).item()
    assert loss == pytest.approx(m[-1]["train_loss"], rel=1e-5)
    assert make_optimizer(build_model(cfg), cfg).param_groups[0]["eps"] == 1e-6
    # the analysis is not refused: every analyser reads the 2-layer LayerNorm model through the family
    rows, summary = analyze_run(out)
    assert [r["train_loss"] for r in rows] == pytest.approx([r["train_loss"] for r in m], rel=1e-5)
    assert all(r["param_norm"] == pytest.approx(x["param_norm"], rel=1e-9) for r, x in zip(rows, m))
    # sequence tasks, ReLU MLPs and scalar regressions only
    assert set(summary["skipped"]) == {"positions", "heads", "local_complexity", "kernel"} and summary["fourier_applies"]
    assert len(summary["key_frequencies_by_layer"]) == 2 and not math.isnan(rows[-1]["grad_symmetricity"])


@pytest.mark.parametrize("flag, value", [("--n-layers", "0"), ("--normalization", "BN"), ("--act-fn", "tanh"),
                                         ("--batch-size", "0"), ("--adam-eps", "0")])
def test_bad_model_options_are_one_line_exit_2(flag, value, tmp_path):
    r = subprocess.run([sys.executable, "-m", "interp.train", "mod_add", flag, value, "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 2 and f"{flag} " in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "o").exists()
