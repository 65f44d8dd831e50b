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
    # the plateau before the fall is at the starting level, so it never counts as settled, with or without
    # min_steps: the run waits for the first step whose last fifth lies after the fall,
    # 0.8 s > 5 900 (the evaluation at 6 000 is already 0.7), i.e. s = 7 400
    assert first_stop(cfg(settle_tol=0.01), rows) == 7400
    assert first_stop(cfg(settle_tol=0.01, min_steps=3500), rows) == 7400
    # a loose tolerance does not stop at min_steps (3 200, accuracy 0.98) but at the first evaluation whose
    # accuracy is more than LEFT_START (0.05) below where it started (about 0.95, step 3 500 or 3 600)
    left = next(r["step"] for r in rows if r["step"] >= 3200 and 1.0 - r["test_acc"] > stopping.LEFT_START)
    assert 3500 <= left <= 3600 and first_stop(cfg(settle_tol=0.5, min_steps=3200), rows) == left
    assert first_stop(cfg(), rows) is None  # no rule, no stop


def test_settle_does_not_stop_a_member_still_at_its_source_level():
    """Known answer (issue 24): ungrokking is slowest near D_crit, where a continued member can hold its source's
    accuracy for tens of decay times before it falls. With ungrok's full-version settings at weight decay 1
    (a decay time 1 / (lr wd) = 1 000 steps, evaluations every 500, settle_tol 0.01, min_steps 10 decay
    times), a curve that stays at 0.99 (+-0.003) for 30 decay times and falls to 0.7 by 60 is not stopped
    before it falls: the rule stops it only once the last fifth lies on the new level."""
    from interp.experiments import ungrok

    src = TrainConfig(task="mod_add", p=113, train_size=113 * 113)
    base = ungrok.continue_specs(src, "source", 0, quick=False)["continue/wd1"].base
    c = TrainConfig(**base, train_size=800, data_seed=1)
    tau = 1 / (c.lr * c.wd)
    assert (tau, c.eval_every, c.settle_tol, c.min_steps) == (1000, 500, 0.01, 10_000)

    def acc(s):
        wobble = 0.003 * ((s // c.eval_every) % 3 - 1)
        return 0.99 + wobble if s <= 30 * tau else 0.7 if s >= 60 * tau else 0.99 - 0.29 * (s - 30 * tau) / (30 * tau)

    rows = [{"step": s, "test_acc": acc(s), "param_norm": 40.0} for s in range(0, c.steps + 1, c.eval_every)]
    stop = first_stop(c, rows)
    # the old rule stopped it at min_steps = 10 decay times, reporting 0.99 where the truth is 0.7
    assert stop is not None and stop >= 60 * tau and acc(stop) == pytest.approx(0.7)
    # the first evaluation whose last fifth (steps >= 0.8 s) holds less than 0.01 of the fall: at s = 73 500 it
    # starts at the evaluation at 59 000, 0.29 / 30 = 0.0097 above 0.7 (at 73 000 it starts at 58 500: 0.0145)
    assert stop == 73_500
    # a member that never leaves its source's level is never settled: it runs to the budget
    flat = [{**r, "test_acc": 0.99 + 0.003 * ((r["step"] // c.eval_every) % 3 - 1)} for r in rows]
    assert first_stop(c, flat) is None


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
