"""Presets that grok wherever they run: each stored measurement of a preset over seeds
(``docs/data/presets/NAME/seeds.json``, written by ``python -m interp.snapshot SWEEP DIR``) must show every
seed reaching 99 % test accuracy, within a budget of at least 1.5 times the slowest seed."""

import json

import pytest

from interp import docs
from interp.config import PRESETS
from interp.snapshot import BUDGET_MARGIN, budget_problem, main as snapshot_main, markdown

STORED = sorted((docs.DOCS / "data" / "presets").glob("*/seeds.json"))


def test_the_grokking_presets_are_measured_over_seeds():
    assert {p.parent.name for p in STORED} >= {"small", "s4", "s5"}


@pytest.mark.parametrize("path", STORED, ids=lambda p: p.parent.name)
def test_each_measured_preset_budget_covers_its_slowest_seed(path):
    s = json.loads(path.read_text())
    assert len(s["members"]) >= 3 and s["command"] and s["commit"] and s["cpu"]
    assert budget_problem(s, PRESETS[path.parent.name]["steps"]) is None, markdown(path.parent)


def _fake_sweep(tmp_path, grok_steps, budget=9000):
    """A sweep directory as interp.sweep leaves it: sweep.json, results.csv, a config.json per member."""
    d = tmp_path / "sweep"
    (d / "runs").mkdir(parents=True)
    (d / "sweep.json").write_text(json.dumps({"spec": {"base": {"task": "mod_add", "steps": budget}, "grid": {"seed": [1, 2, 3]}}}))
    rows = ["run,seed,status,train_99_step,test_99_step,final_step,final_train_acc,final_test_acc,final_test_loss,final_param_norm,wall_s,reason"]
    for seed, g in enumerate(grok_steps, 1):
        (d / "runs" / f"seed{seed}").mkdir()
        (d / "runs" / f"seed{seed}" / "config.json").write_text(json.dumps({"git_commit": "abc", "machine": {"cpu": "X", "torch_threads": 1}}))
        last, acc = (g + 100, 0.995) if g else (budget, 0.05)
        rows.append(f"runs/seed{seed},{seed},ok,100,{g or ''},{last},1.0,{acc},0.01,30.0,10.0,")
    (d / "results.csv").write_text("\n".join(rows) + "\n")
    return d


@pytest.mark.parametrize("grok_steps, budget, words", [
    ((650, 2850, 1950), 4500, None),  # the small preset's measurement: 4 500 >= 1.5 x 2 850
    ((650, 2850, 1950), 4000, "4 000 steps is less than 1.5 times the slowest seed's 2 850"),
    ((4700, None, None), 6000, "2 of 3 seeds did not reach 99 % test accuracy within 9 000 steps"),  # the old s4 preset
])
def test_the_budget_rule_on_known_answers(tmp_path, capsys, grok_steps, budget, words):
    d = _fake_sweep(tmp_path, grok_steps)
    assert snapshot_main([str(d), str(tmp_path / "out"), "--command", "python -m interp.sweep ..."]) == 0
    s = json.loads((tmp_path / "out" / "seeds.json").read_text())
    assert [m["test_99_step"] for m in s["members"]] == list(grok_steps)
    assert budget_problem(s, budget) == words
    assert BUDGET_MARGIN == 1.5
