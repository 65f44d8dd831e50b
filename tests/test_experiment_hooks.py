"""The experiment interface's multi-stage hook (``run(args, sweep)``) and its report hook (``figures``)."""

import json
import types

import plotly.graph_objects as go
import pytest

from interp import experiment, report
from interp.plots import Figure
from interp.sweep import Spec, SweepError


def fake_module(tmp_calls: list):
    """An experiment of two stages on a tiny model, whose ``run`` checks its input first."""
    mod = types.ModuleType("fake")
    mod.DESCRIPTION = "a two-stage test experiment"
    mod.add_arguments = lambda p: p.add_argument("--fail", action="store_true")

    def run(args, sweep):
        if args.fail:
            raise SweepError("--fail: refused before anything is written")
        base = {"task": "mod_add", "p": 7, "d_model": 8, "n_heads": 1, "d_mlp": 8, "steps": 4, "eval_every": 2, "save_every": 4}
        first = sweep(Spec(base, {"seed": [1, 2]}), "first")
        tmp_calls.append(sorted(first))
        second = sweep(Spec({**base, "lr": 3e-3}, {"seed": [3]}), "second")
        return {**{f"first/{k}": v for k, v in first.items()}, **{f"second/{k}": v for k, v in second.items()}}

    mod.run = run
    mod.summarise = lambda out: [{"stages": len([d for d in out.iterdir() if (d / "sweep.json").is_file()])}]
    mod.figures = lambda out: [Figure("fake", go.Figure(), f"caption with {len(list(out.glob('*/runs/*')))} runs")]
    return mod


@pytest.fixture
def fake(monkeypatch):
    calls: list = []
    mod = fake_module(calls)
    monkeypatch.setattr(experiment, "EXPERIMENTS", ("fake",))
    monkeypatch.setattr(experiment, "load", lambda name: mod)
    monkeypatch.setattr("interp.experiments.EXPERIMENTS", ("fake",))
    monkeypatch.setattr("interp.experiments.load", lambda name: mod)
    return calls


def test_multi_stage_experiment_runs_each_stage_writes_summary_and_report(tmp_path, fake, capsys):
    out = tmp_path / "e"
    assert experiment.main(["fake", "--out", str(out), "--quiet"]) == 0
    assert fake == [["seed1", "seed2"]]
    assert (out / "first" / "results.csv").is_file() and (out / "second" / "results.csv").is_file()
    assert (out / "summary.csv").read_text().splitlines() == ["stages", "2"]
    assert json.loads((out / "experiment.json").read_text())["experiment"] == "fake"
    assert report.main([str(out), "--quiet"]) == 0
    page = (out / "report.html").read_text()
    assert "caption with 3 runs" in page and "<code>first/</code>" in page and "<code>second/</code>" in page
    # re-running resumes: every member is finished, nothing trains again
    before = (out / "first" / "results.csv").read_text()
    assert experiment.main(["fake", "--out", str(out), "--quiet"]) == 0
    assert (out / "first" / "results.csv").read_text() == before


def test_multi_stage_experiment_bad_input_writes_nothing(tmp_path, fake, capsys):
    out = tmp_path / "e"
    assert experiment.main(["fake", "--out", str(out), "--fail"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--fail: refused" in err[0]
    assert not out.exists()
