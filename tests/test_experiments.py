"""python -m interp.experiment: the datafrac summary (a known answer), its CLI, and the sweep report."""

import json
from argparse import Namespace

import pytest

from interp import tables
from interp.experiment import main as experiment_main
from interp.experiments import datafrac
from interp.report import main as report_main
from interp.sweep import Spec, expand, write_results
from tests.text import numbers, sentence


def fake_sweep(out, outcomes):
    """A sweep directory over frac x seed whose results.csv holds ``outcomes[(frac, seed)] = test_99_step``."""
    spec = Spec({"task": "mod_add", "p": 13, "steps": 500}, {"frac": [0.3, 0.6], "seed": [1, 2, 3]})
    members = expand(spec)
    out.mkdir()
    (out / "sweep.json").write_text(json.dumps({"spec": spec.to_dict(), "members": [{"name": m.name} for m in members]}))
    rows = {}
    for m in members:
        step = outcomes[(m.values["frac"], m.values["seed"])]
        rows[m.name] = {"status": "ok", "train_99_step": 100, "test_99_step": step, "final_step": 500, "final_train_acc": 1.0,
                        "final_test_acc": 1.0 if step is not None else 0.2, "final_test_loss": 0.1, "final_param_norm": 9.0,
                        "wall_s": 1.0, "reason": ""}
    write_results(out, spec, members, rows)
    return spec


def test_datafrac_summary_known_answer(tmp_path):
    out = tmp_path / "s"
    fake_sweep(out, {(0.3, 1): None, (0.3, 2): 400, (0.3, 3): None, (0.6, 1): 200, (0.6, 2): 100, (0.6, 3): 300})
    low, high = datafrac.summarise(out)
    assert (low["frac"], low["n_train"], low["seeds"], low["generalised"], low["never"]) == (0.3, 50, 3, 1, 2)
    assert low["median_test_99_step"] is None  # two of three never generalised: the median is 'never'
    assert (low["min_test_99_step"], low["max_test_99_step"]) == (400, 400)
    assert (high["n_train"], high["generalised"], high["never"], high["median_test_99_step"]) == (101, 3, 0, 200)
    assert (high["min_test_99_step"], high["max_test_99_step"], high["budget"]) == (100, 300, 500)


def test_datafrac_counts_a_diverged_seed_as_never(tmp_path):
    # frac 0.6: seeds at 100 and 200, and seed 3 diverged (training loss NaN) before reaching 99%. The old ok_rows
    # dropped it (2 seeds, median 150); it counts as a seed that never got there: median 200, 1 of 3 diverged.
    out = tmp_path / "s"
    fake_sweep(out, {(0.3, 1): None, (0.3, 2): 400, (0.3, 3): None, (0.6, 1): 100, (0.6, 2): 200, (0.6, 3): None})
    rows = tables.read_csv(out / "results.csv")
    nan = next(r for r in rows if (r["frac"], r["seed"]) == (0.6, 3))
    nan.update(status="failed", reason="training loss is not finite at step 150", final_step=150, final_test_acc=0.4)
    tables.write_csv(out / "results.csv", rows)
    low, high = datafrac.summarise(out)
    assert (high["seeds"], high["generalised"], high["never"], high["median_test_99_step"]) == (3, 2, 1, 200)
    assert high["diverged"] == 1 and low["diverged"] == 0
    assert high["median_final_test_acc"] == 1.0  # the diverged seed has no final state, so no final accuracy
    headers, cells = tables.experiment_tables([low, high], datafrac.TABLES)[0][1:]
    assert [c[headers.index("diverged")] for c in cells] == ["0 of 3", "1 of 3"]


def test_report_of_a_sweep_directory_states_its_numbers(tmp_path):
    out = tmp_path / "s"
    fake_sweep(out, {(0.3, 1): None, (0.3, 2): None, (0.3, 3): None, (0.6, 1): 200, (0.6, 2): 100, (0.6, 3): 300})
    assert report_main([str(out), "--quiet"]) == 0
    page = (out / "report.html").read_text()
    assert "Steps to 99% test accuracy against frac" in page
    assert numbers(sentence(page, "did not reach 99% test accuracy within"))[-3:] == [3, 99, 500]  # 3 members, within 500 steps
    assert numbers(sentence(page, "every member reached it; there the median is")) == [0.6, 200]
    assert numbers(sentence(page, "No member reached it at frac")) == [0.3]


def test_datafrac_quick_spec_is_the_documented_grid():
    spec = datafrac.spec(Namespace(quick=True, p=None))
    assert spec.base["p"] == 59 and spec.base["steps"] == 4000 and spec.grid["seed"] == [1, 2, 3]
    assert spec.grid["frac"] == sorted(spec.grid["frac"]) and len(spec.grid["frac"]) >= 6
    assert datafrac.spec(Namespace(quick=False, p=None)).base["p"] == 97  # the full version is Power et al.'s setting (tests/test_full_versions.py)


@pytest.mark.parametrize("args, message", [
    (["nonsense", "--out", "x"], "invalid choice"),
    (["datafrac", "--quick", "--out", "OUT", "--pack", "0"], "--pack 0"),
    (["datafrac", "--quick", "--out", "OUT", "--address", "1.2.3.4:5"], "only used with --backend ray"),
    (["datafrac", "--quick", "--out", "OUT", "--p", "1"], "--p 1"),
])
def test_experiment_bad_input(tmp_path, capsys, args, message):
    args = [a.replace("OUT", str(tmp_path / "e")) for a in args]
    with pytest.raises(SystemExit) if args[0] == "nonsense" else _nothing():
        code = experiment_main(args)
        assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "e").exists()


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
