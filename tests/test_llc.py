"""The LLC (devinterp) of checkpoints: columns, determinism, the cache, calibration and clean refusals."""

import math
import shutil

import pytest

pytest.importorskip("devinterp")

from interp import llc, runs  # noqa: E402
from interp.analyze import main  # noqa: E402

FAST = llc.LLCConfig(chains=2, draws=12, batch_size=32)


def test_llc_rows_are_finite_deterministic_and_cached(tiny_copy):
    rows = llc.run_llc(tiny_copy, FAST, every=2)
    assert [r["step"] for r in rows] == [0, 20, 40]  # every 2nd of 0..40 and the last
    for r in rows:
        assert all(math.isfinite(r[c]) for c in ("llc_mean", "llc_std", "init_loss", "llc_late", "seconds"))
        assert len(r["llc_per_chain"]) == 2
        assert r["llc_mean"] == pytest.approx(sum(r["llc_per_chain"]) / 2, rel=1e-5)
        assert 0 <= r["burn_in_draws"] <= FAST.draws
    # the files round-trip, and the traces are the chains' losses per draw
    back, meta = llc.load_llc(tiny_copy)
    assert [(r["step"], r["llc_mean"]) for r in back] == [(r["step"], r["llc_mean"]) for r in rows]
    assert meta["settings"]["draws"] == FAST.draws and len(meta["traces"]["40"]) == 2 and len(meta["traces"]["40"][0]) == FAST.draws
    # the init loss is the checkpoint's training loss (devinterp averages batches of the training set)
    run = runs.load_run(tiny_copy)
    train_loss = {m["step"]: m["train_loss"] for m in run.metrics}
    assert rows[-1]["init_loss"] == pytest.approx(train_loss[40], rel=0.05)
    # the same seed gives the same estimates on a fresh directory; a re-run estimates nothing new
    again = llc.run_llc(tiny_copy, FAST, every=2, write=False)
    assert [r["seconds"] for r in again] == [r["seconds"] for r in rows]
    fresh = tiny_copy.parent / "fresh"
    shutil.copytree(tiny_copy, fresh)
    shutil.rmtree(fresh / runs.ANALYSIS_DIR)
    assert [r["llc_per_chain"] for r in llc.run_llc(fresh, FAST, every=2)] == [r["llc_per_chain"] for r in rows]
    other = llc.run_llc(fresh, llc.LLCConfig(chains=2, draws=12, batch_size=32, seed=5), every=4)
    assert [r["step"] for r in other] == [0, 40] and other[-1]["llc_per_chain"] != rows[-1]["llc_per_chain"]


def test_burn_in_by_hand():
    assert llc.burn_in([1.0, 2.0, 3.0, 3.0, 3.0, 3.0], init_loss=1.0) == 2  # 90% of the rise to 3 is 2.8
    assert llc.burn_in([1.0, 1.5, 1.9, 3.0, 3.0, 3.0], init_loss=1.0) == 3
    assert llc.burn_in([0.5, 0.4, 0.4, 0.4], init_loss=1.0) == 0  # no rise: nothing to burn in


def test_calibration_grid_writes_table_and_figure(tiny_copy):
    rows, fig = llc.calibrate(tiny_copy, FAST, step=20, epsilons=(1e-4, 1e-3), n_betas=(10.0,))
    assert [(r["epsilon"], r["n_beta"]) for r in rows] == [(1e-4, 10.0), (1e-3, 10.0)]
    assert all(r["finite"] and math.isfinite(r["distance"]) and r["distance"] > 0 for r in rows)
    assert rows[1]["distance"] > rows[0]["distance"]  # a larger step size wanders further from the checkpoint
    assert len(fig.data) == 2 * FAST.chains
    d = tiny_copy / runs.ANALYSIS_DIR
    assert (d / llc.CALIBRATION_TABLE).read_text().count("\n") == 3 and (d / llc.CALIBRATION_FIGURE).stat().st_size > 1e5


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("argv, words", [
    (["--llc", "--llc-every", "0"], "--llc-every 0"),
    (["--llc-every", "3"], "needs --llc"),
    (["--llc-step", "10"], "needs --llc-calibrate"),
    (["--llc", "--llc-chains", "0"], "--llc-chains 0"),
    (["--llc", "--llc-epsilon", "nan"], "--llc-epsilon nan"),
    (["--llc", "--llc-nbeta", "-1"], "--llc-nbeta -1"),
])
def test_bad_llc_flags_exit_2_with_one_line_and_write_nothing(tiny_copy, capsys, argv, words):
    with pytest.raises(SystemExit) as e:
        main([str(tiny_copy), "--quiet", *argv])
    assert e.value.code == 2 and words in _one_line(capsys)
    assert not (tiny_copy / runs.ANALYSIS_DIR).exists()


def test_bad_calibration_step_and_missing_devinterp(tiny_copy, capsys, monkeypatch):
    assert main([str(tiny_copy), "--quiet", "--llc-calibrate", "--llc-step", "7"]) == 2
    assert "--llc-step 7: not a checkpoint" in _one_line(capsys)

    def missing():
        raise llc.LLCError("the LLC needs the optional extra 'llc' (pip install '.[llc]'; devinterp is missing)")

    monkeypatch.setattr(llc, "require_devinterp", missing)
    with pytest.raises(SystemExit) as e:
        main([str(tiny_copy), "--quiet", "--llc"])
    assert e.value.code == 2 and "optional extra 'llc'" in _one_line(capsys)


def test_cli_and_report_show_the_llc(tiny_copy, capsys):
    from interp import report

    argv = [str(tiny_copy), "--quiet", "--llc", "--llc-every", "4", "--llc-chains", "2", "--llc-draws", "12", "--llc-batch-size", "32"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    rows, meta = llc.load_llc(tiny_copy)
    assert f"LLC of {len(rows)} checkpoints" in out and [r["step"] for r in rows] == [0, 40]
    view = report.collect(tiny_copy)
    fig = {f.key: f for f in report.stability_mechanism_figures([view])}["llc"]
    assert llc.llc_sentence(rows, view.rows, meta) in fig.caption and "too few checkpoints for a rank correlation" in fig.caption
    trace = next(t for t in fig.fig.data if t.name.startswith("LLC"))
    assert [y for y in trace.y if y is not None] == pytest.approx([r["llc_mean"] for r in rows], rel=1e-6)
