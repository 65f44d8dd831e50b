"""Shared fixtures: one factory for tiny configs, and small real runs trained once per session."""

from __future__ import annotations

import os
import shutil

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs 2 workers on 2 cores: one torch thread each (also
    os.environ["OMP_NUM_THREADS"] = "1"    # for the subprocesses tests start), else OpenMP threads oversubscribe the cores

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

from interp.config import PRESETS, TrainConfig
from interp.train import train


def tiny_config(**overrides) -> TrainConfig:
    """A model small enough to train a few hundred steps in about a second."""
    base = dict(p=13, frac=0.5, d_model=32, n_heads=4, d_mlp=64, steps=40, eval_every=10, save_every=10, lr=3e-3)
    return TrainConfig(**{**base, **overrides})


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A finished tiny run directory (p = 13, 40 steps)."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    return train(tiny_config(), out, progress=False)


@pytest.fixture
def tiny_copy(tiny_run, tmp_path):
    """A writable copy of ``tiny_run`` (for tests that analyse it or change it)."""
    dst = tmp_path / "tiny"
    shutil.copytree(tiny_run, dst)
    return dst


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """The documented 'small' preset (p = 59, 4 500 steps): memorises by step ~100, groks by ~2200."""
    out = tmp_path_factory.mktemp("runs") / "small"
    return train(TrainConfig(**PRESETS["small"]), out, progress=False)


# A dcrit experiment small enough for the tests (interp.experiments.dcrit with this plan as its --quick).
TINY_DCRIT = {"p": 13, "base": dict(d_model=32, n_heads=4, d_mlp=64, lr=1e-2, eval_every=20), "wds": [1.0], "decay_times": 6.0, "min_decay_times": 0,
              "mem_fracs": [0.06, 0.15, 0.35], "gen_fracs": [0.9], "seeds": [1, 2]}


@pytest.fixture(scope="session")
def tiny_dcrit(tmp_path_factory):
    """``(directory, exit code)`` of ``python -m interp.experiment dcrit --quick`` run on ``TINY_DCRIT``."""
    from interp.experiment import main as experiment_main
    from interp.experiments import dcrit

    out = tmp_path_factory.mktemp("dcrit") / "tiny"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dcrit, "QUICK", TINY_DCRIT)
        code = experiment_main(["dcrit", "--quick", "--out", str(out), "--quiet"])
    return out, code
