"""Denormal handling (interp.speed): late training must not slow down, on any thread count.

No timing here: the tests check the property that makes late steps fast, that no compute thread
produces float32 denormals (values below 1.2e-38) under the project's setting.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from interp.kernel import FLOAT32_TINY
from interp.families import build_model
from interp.model import fast_loss
from interp.speed import set_flush_denormal_everywhere
from interp.tasks import make_dataset
from tests.conftest import tiny_config

_CHILD = textwrap.dedent("""
    import sys, torch
    from interp.speed import set_flush_denormal_everywhere
    torch.set_num_threads(2)
    x = torch.randn(1000, 1000); (x @ x).sum()          # start torch's worker threads first, as a run does
    torch.full((1_000_000,), 1.0, dtype=torch.float64).float()
    reached = set_flush_denormal_everywhere(True) if sys.argv[1] == "project" else (torch.set_flush_denormal(True) and 1)
    # A float64 -> float32 cast of values below float32's smallest normal number, split over both
    # threads (OpenMP's static schedule: the first half in this thread, the second in the worker).
    y = torch.full((1_000_000,), 1e-39, dtype=torch.float64).float()
    n = y.numel() // 2
    print(reached, int((y[:n] != 0).sum()), int((y[n:] != 0).sum()))
""")


def _child(mode: str) -> tuple[int, int, int]:
    out = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True, text=True, check=True,
                         env={"OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"}).stdout.split()
    return tuple(int(v) for v in out)  # type: ignore[return-value]


@pytest.mark.skipif(not torch.set_flush_denormal(False), reason="this CPU has no flush-to-zero setting")
def test_flush_reaches_every_worker_thread():
    """torch.set_flush_denormal alone leaves the already running worker thread making denormals;
    set_flush_denormal_everywhere flushes them in both threads."""
    reached, main_half, worker_half = _child("project")
    assert reached == 2
    assert (main_half, worker_half) == (0, 0)
    _, main_half, worker_half = _child("torch-only")
    assert main_half == 0
    if worker_half == 0:
        pytest.skip("on this CPU the worker inherits the calling thread's setting; the control shows nothing")
    assert worker_half > 0


def test_fast_loss_gradient_holds_no_denormals():
    """One class's logit 90 above all others for every example (the others' probabilities ~1e-39,
    as late in a memorised run): with flushing off in every thread, no parameter's gradient holds a
    denormal number, because the loss gradient is flushed before its float32 cast."""
    cfg = tiny_config(freeze_biases=False, train_size=5)  # most classes are no example's label
    model = build_model(cfg)
    data = make_dataset(cfg)
    x, y = data.inputs[data.train_idx], data.train_labels
    with torch.no_grad():
        model.b_U.fill_(-90.0)
        model.b_U[0] = 0.0
    assert torch.exp(torch.tensor(-90.0, dtype=torch.float64)) / len(y) < FLOAT32_TINY  # the denormal range is reached
    set_flush_denormal_everywhere(False)
    fast_loss(model, x[:, 0], x[:, 1], y, cfg.eq_token).backward()
    for name, p in model.named_parameters():
        g = p.grad.abs()
        assert not ((g > 0) & (g < FLOAT32_TINY)).any(), f"{name}: denormal gradient entries"
        assert (g > 0).any(), f"{name}: no gradient at all"
