"""The stopping rules (interp.stopping): settle and equilibrium on synthetic curves, then in real runs."""

from __future__ import annotations

import math

import pytest

from interp import runs, stopping
from interp.config import ConfigError, TrainConfig
from interp.stack import Member, train_pack
from interp.train import train
from tests.conftest import tiny_config


def curve(f, steps=10_000, every=100):
    """Evaluation rows of a synthetic run: test accuracy f(step) and parameter norm 40 * f(step) + 10."""
    return [{"step": s, "test_acc": f(s), "param_norm": 40 * f(s) + 10} for s in range(0, steps + 1, every)]


def first_stop(cfg, rows):
    """The first evaluation step at which the rule stops the run, or None."""
    return next((r["step"] for r in rows if stopping.stop_reason(cfg, [q for q in rows if q["step"] <= r["step"]], r["step"])), None)


def cfg(**kw):
    return TrainConfig(steps=10_000, **kw)


def test_settle_waits_for_a_falling_accuracy_to_flatten():
    """Ungrokking's shape: accuracy holds at 1 until step 3 000, falls until 6 000, then stays at 0.7."""
    f = lambda s: 1.0 if s < 3000 else 0.7 if s > 6000 else 1.0 - 0.3 * (s - 3000) / 3000  # noqa: E731
    rows = curve(f)
    # without min_steps the plateau before the fall looks settled as soon as the last fifth holds
    # MIN_WINDOW_EVALS = 5 evaluations (0.2 s >= 400, every 100 steps): at step 2 000
    assert first_stop(cfg(settle_tol=0.01), rows) == 2000
    # with min_steps past the start of the fall it waits for the first step whose last fifth lies after the fall:
    # 0.8 s > 5 900 (the evaluation at 6 000 is already 0.7), i.e. s = 7 400
    assert first_stop(cfg(settle_tol=0.01, min_steps=3500), rows) == 7400
    assert first_stop(cfg(settle_tol=0.5, min_steps=3500), rows) == 3500  # a loose tolerance stops at min_steps
    assert first_stop(cfg(), rows) is None  # no rule, no stop


def test_settle_never_stops_a_curve_that_keeps_moving():
    rows = curve(lambda s: 0.5 + 0.4 * math.sin(s / 700))
    assert first_stop(cfg(settle_tol=0.01, min_steps=1000), rows) is None


def test_equilibrium_is_relative_to_the_norm_and_respects_min_steps():
    """Norm decaying like exp(-t / 1000) towards 10: moves < 1 % of itself over the last fifth late on."""
    rows = curve(lambda s: math.exp(-s / 1000))
    stop = first_stop(cfg(equilibrium_tol=0.01), rows)
    assert stop is not None
    # check the rule's own arithmetic at the step it chose and one evaluation before
    for s, expect in ((stop, True), (stop - 100, False)):
        w = [r["param_norm"] for r in rows if 0.8 * s <= r["step"] <= s]
        assert ((max(w) - min(w)) / w[-1] < 0.01) is expect
    assert first_stop(cfg(equilibrium_tol=0.01, min_steps=9000), rows) == 9000
    assert first_stop(cfg(equilibrium_tol=0.001), curve(lambda s: 1 - s / 10_000)) is None  # a steady drift never settles


def test_no_rule_stops_at_or_after_the_budget():
    rows = curve(lambda s: 1.0)
    assert stopping.stop_reason(cfg(settle_tol=0.5), rows, 10_000) is None


@pytest.mark.parametrize("field,value", [("settle_tol", 0.0), ("settle_tol", float("nan")), ("equilibrium_tol", -0.1),
                                         ("min_steps", -1), ("min_steps", 20_000)])
def test_bad_values_name_the_flag(field, value):
    with pytest.raises(ConfigError, match="--" + field.replace("_", "-")):
        cfg(**{field: value})


FAST = dict(frac=0.8, lr=1e-2, steps=300, eval_every=10, save_every=100)


def test_a_settled_run_ends_records_why_and_matches_the_stack(tmp_path):
    """A tiny run with a loose settle tolerance ends early; the stack ends the same member at the same step
    while its pack-mate (no rule) trains on to the budget."""
    c = tiny_config(**FAST, settle_tol=0.05, min_steps=100)
    lone = train(c, tmp_path / "lone", progress=False)
    end = runs.ended(lone)
    assert end is not None and 100 <= end["step"] < FAST["steps"] and end["reason"].startswith("settle_tol 0.05")
    assert runs.checkpoint_steps(lone)[-1] == end["step"]
    members = train_pack([Member(c, tmp_path / "m0"), Member(tiny_config(**FAST, seed=5), tmp_path / "m1")])
    assert members[0].ended and runs.ended(tmp_path / "m0")["step"] == end["step"]
    assert runs.ended(tmp_path / "m1") is None and runs.checkpoint_steps(tmp_path / "m1")[-1] == FAST["steps"]
    before = runs.checkpoint_steps(lone)
    train(c, lone, resume=True, progress=False)  # an ended run is finished
    assert runs.checkpoint_steps(lone) == before
