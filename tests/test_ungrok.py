"""The ungrok and semigrok experiments: summaries and captions with known answers, plateau detection
on synthetic curves, bad input, and one tiny real ungrok run end to end."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from interp import runs, stopping
from interp.config import TrainConfig
from interp.experiment import main as experiment_main
from interp.experiments import semigrok, ungrok
from interp.report import main as report_main
from interp.sweep import Spec, SweepError, expand, write_results
from tests.text import numbers, sentence


def fake_sweep(out, spec, outcomes, curves):
    """A sweep directory for ``spec``: ``outcomes[name]`` updates each member's results row, ``curves[name]``
    is its metrics (list of (step, train_acc, test_acc))."""
    members = expand(spec)
    out.mkdir(parents=True)
    (out / "sweep.json").write_text(json.dumps({"spec": spec.to_dict(), "members": [{"name": m.name} for m in members]}))
    rows = {}
    for m in members:
        curve = curves[m.name]
        rows[m.name] = {"status": "ok", "train_99_step": None, "test_99_step": None, "final_step": curve[-1][0], "final_train_acc": curve[-1][1],
                        "final_test_acc": curve[-1][2], "final_test_loss": 0.1, "final_param_norm": 9.0, "wall_s": 1.0, "reason": "",
                        **outcomes.get(m.name, {})}
        runs.write_metrics(out / "runs" / m.name, [{"step": s, "train_acc": a, "test_acc": b} for s, a, b in curve])
    write_results(out, spec, members, rows)


# ---- ungrok ------------------------------------------------------------------------------------------
FINAL = {  # (wd, D') -> final test accuracy of seeds 1, 2, 3
    (1.0, 20): [0.1, 0.2, 0.3], (1.0, 40): [0.5, 0.6, 0.7], (1.0, 80): [0.95, 1.0, 1.0],
    (2.0, 20): [0.05, 0.1, 0.15], (2.0, 40): [0.8, 0.85, 0.9], (2.0, 80): [1.0, 1.0, 1.0],
}
BUDGET = {1.0: 500, 2.0: 250}  # steps proportional to 1 / wd


def fake_ungrok(out):
    """Two continued sweeps (wd 1 and 2) as the experiment lays them out; the wd 2, D' 40 members settled
    and stopped at step 200."""
    for wd, steps in BUDGET.items():
        spec = Spec({"task": "mod_add", "p": 13, "steps": steps, "wd": wd, "init_from": "/nowhere/src@100"},
                    {"train_size": [20, 40, 80], "data_seed": [1, 2, 3]})
        curves, outcomes = {}, {}
        for m in expand(spec):
            key = (wd, m.values["train_size"])
            final = FINAL[key][m.values["data_seed"] - 1]
            train_final = 0.98 if key == (2.0, 80) and m.values["data_seed"] == 2 else 1.0
            at_80 = final + 0.1 if key == (1.0, 20) else final  # still falling over the last fifth at (1, 20)
            end = 200 if key == (2.0, 40) else steps
            curves[m.name] = [(0, 1.0, 1.0), (int(0.8 * end), 1.0, at_80), (end, train_final, final)]
            if key == (2.0, 40):
                outcomes[m.name] = {"reason": "settle_tol 0.01: test accuracy moved 0 over steps 160-200"}
        fake_sweep(out / ungrok.STAGE / f"wd{wd:g}", spec, outcomes, curves)


def test_ungrok_summary_known_answer(tmp_path):
    fake_ungrok(tmp_path)
    rows = ungrok.summarise(tmp_path)
    assert [(r["wd"], r["train_size"]) for r in rows] == sorted(FINAL)
    by = {(r["wd"], r["train_size"]): r for r in rows}
    r = by[(1.0, 40)]
    assert (r["seeds"], r["median_final_test_acc"], r["min_final_test_acc"], r["max_final_test_acc"]) == (3, 0.6, 0.5, 0.7)
    assert r["frac_of_pairs"] == pytest.approx(40 / 169) and r["budget"] == 500 and r["settled"] == 0
    assert (by[(2.0, 40)]["settled"], by[(2.0, 40)]["median_final_step"], by[(2.0, 40)]["budget"]) == (3, 200, 250)
    assert by[(1.0, 20)]["median_change_last_fifth"] == pytest.approx(-0.1) and by[(1.0, 40)]["median_change_last_fifth"] == 0
    assert (by[(2.0, 80)]["median_final_train_acc"], by[(2.0, 80)]["min_final_train_acc"]) == (1.0, 0.98)


def test_ungrok_counts_a_diverged_member_and_says_so(tmp_path):
    """Issue 24 item 4: a member forced to NaN (wd 1, D' 40, seed 3, final accuracy 0.7) stays among the seeds,
    has no final accuracy, and the row says 1 of 3 diverged (the old summary dropped it: seeds 2)."""
    from interp import tables

    fake_ungrok(tmp_path)
    d = tmp_path / ungrok.STAGE / "wd1"
    rs = tables.read_csv(d / "results.csv")
    victim = next(r for r in rs if r["train_size"] == 40 and r["data_seed"] == 3)
    victim.update(status="failed", reason="training loss is not finite at step 300")
    tables.write_csv(d / "results.csv", rs)
    by = {(r["wd"], r["train_size"]): r for r in ungrok.summarise(tmp_path)}
    r = by[(1.0, 40)]
    assert (r["seeds"], r["diverged"], r["median_final_test_acc"], r["max_final_test_acc"]) == (3, 1, 0.55, 0.6)
    assert all(x["diverged"] == 0 for k, x in by.items() if k != (1.0, 40))
    table = tables.experiment_tables(list(by.values()), ungrok.TABLES)[0]
    headers, cells = table[1], table[2]
    col = next(i for i, h in enumerate(headers) if h.startswith("diverged"))
    assert [c[col] for c in cells] == ["0 of 3 / 0 of 3", "1 of 3 / 0 of 3", "0 of 3 / 0 of 3"]


def test_ungrok_caption_states_what_the_numbers_show(tmp_path):
    fake_ungrok(tmp_path)
    text = ungrok.caption(ungrok.summarise(tmp_path))
    assert numbers(sentence(text, "Final test accuracy of")) == [20, 40, 80, 3]  # the D' grid, the seeds
    assert numbers(sentence(text, "Budget")) == [500, 1, 250, 2, 3, 18]  # budgets per weight decay; 3 of 18 settled
    # wd 1: medians 0.2, 0.6, 1.0 -> crosses 0.5 at 20 * 2**0.75 = 33.6; wd 2: 0.1, 0.85, 1 -> 20 * 2**(0.4 / 0.75) = 29.0
    # (weight decay, lowest and highest median, the 0.9 level, the D' below it, the 0.5 level, the crossing)
    assert numbers(sentence(text, "Weight decay 1:")) == [1, 0.2, 1.0, 0.9, 20, 40, 0.5, 34]
    assert numbers(sentence(text, "Weight decay 2:")) == [2, 0.1, 1.0, 0.9, 20, 40, 0.5, 29]
    assert numbers(sentence(text, "seed ranges")) == [40, 2, 3]  # [0.5, 0.7] vs [0.8, 0.9] at D' = 40: apart at 1 of 3
    assert numbers(sentence(text, "final train accuracy")) == [0.98]
    assert numbers(sentence(text, "last fifth")) == [0.1] and "still moving" in text


def test_ungrok_budget_is_the_same_number_of_decay_times_at_every_weight_decay():
    src = TrainConfig(task="mod_add", p=113)  # lr 1e-3
    specs = ungrok.continue_specs(src, Path("x"), 0, quick=False)
    assert list(specs) == ["continue/wd0.5", "continue/wd1", "continue/wd2"]
    got = {s.base["wd"]: (s.base["steps"], s.base["min_steps"], s.base["settle_tol"]) for s in specs.values()}
    assert got == {0.5: (200_000, 20_000, 0.01), 1.0: (100_000, 10_000, 0.01), 2.0: (50_000, 5_000, 0.01)}  # 100 and 10 decay times
    for s in specs.values():
        assert s.grid == {"train_size": [390, 488, 610, 763, 955, 1194, 1494], "data_seed": list(range(1, 11))}
        # the settle rule's window (the last fifth of min_steps) holds at least MIN_WINDOW_EVALS evaluations
        assert 0.2 * s.base["min_steps"] / s.base["eval_every"] + 1 >= stopping.MIN_WINDOW_EVALS
    short = ungrok.continue_specs(src, Path("x"), 0, quick=False, decay_times=5)
    assert {s.base["wd"]: (s.base["steps"], s.base["min_steps"]) for s in short.values()} == {
        0.5: (10_000, 10_000), 1.0: (5_000, 5_000), 2.0: (2_500, 2_500)}  # min_steps never past the budget
    quick = ungrok.continue_specs(TrainConfig(task="mod_add", p=59, lr=3e-3), Path("x"), 0, quick=True)
    assert {s.base["wd"]: s.base["steps"] for s in quick.values()} == {1.0: 1350, 2.0: 672}  # 4 decay times, on the eval grid


def test_ungrok_source_trains_on_every_pair():
    for quick, p in ((False, 113), (True, 59)):
        cfg = TrainConfig(**ungrok.source_spec(quick).base)
        assert (cfg.p, cfg.n_train, cfg.wd) == (p, p * p, 1.0)


def test_ungrok_crossing_and_grid():
    assert ungrok.crossing([(10, 0.0), (100, 1.0)], 0.5) == pytest.approx(10**1.5)
    assert ungrok.crossing([(10, 0.6), (100, 1.0)], 0.5) is None
    assert ungrok.d_prime_grid(113) == [390, 488, 610, 763, 955, 1194, 1494]
    assert ungrok.d_prime_grid(59)[0] == round(390 * 59**2 / 113**2) and len(ungrok.d_prime_grid(59)) == 7


def test_ungrok_report_draws_its_figures(tmp_path):
    fake_ungrok(tmp_path)
    from interp.experiment import write_summary

    write_summary(tmp_path, ungrok.summarise(tmp_path))
    (tmp_path / "experiment.json").write_text(json.dumps({"experiment": "ungrok"}))
    assert report_main([str(tmp_path), "--quiet"]) == 0
    page = (tmp_path / "report.html").read_text()
    assert "Ungrokking: final test accuracy against D&#x27;" in page or "Ungrokking: final test accuracy against D'" in page
    assert "it crosses 0.5 near D&#x27; = 34" in page or "it crosses 0.5 near D' = 34" in page


@pytest.mark.parametrize("which, message", [
    ("tiny", "not a grokked run (test accuracy {acc} at its last step 40)"),
    ("empty", "not a run directory"),
    ("zero", "--decay-times 0: must be a positive number"),
])
def test_ungrok_bad_from(tiny_run, tmp_path, capsys, which, message):
    src = {"tiny": tiny_run, "empty": tmp_path, "zero": tiny_run}.get(which)
    out = tmp_path / "e"
    args = ["ungrok", "--out", str(out)] + (["--from", str(src)] if src else []) + (["--decay-times", "0"] if which == "zero" else [])
    assert experiment_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    acc = f"{runs.read_metrics(tiny_run)[-1]['test_acc']:.4g}"
    assert len(err) == 1 and message.format(acc=acc) in err[0], err
    assert not out.exists()


def test_ungrok_end_to_end_on_the_small_run(small_run, tmp_path, monkeypatch):
    """The small preset's run (p = 59, grokked) continued for 0.6 decay times at two D' x three weight decays."""
    monkeypatch.setattr(ungrok, "SEEDS", [1])
    monkeypatch.setattr(ungrok, "d_prime_grid", lambda p: [100, 200])
    out = tmp_path / "u"
    # 0.6 / (lr 3e-3 * wd) = 400, 200, 100 steps
    assert experiment_main(["ungrok", "--from", str(small_run), "--decay-times", "0.6", "--out", str(out), "--quiet"]) == 0
    rows = list(csv_rows(out / "summary.csv"))
    assert [(float(r["wd"]), int(r["train_size"])) for r in rows] == [(wd, s) for wd in ungrok.WDS for s in (100, 200)]
    assert [int(r["budget"]) for r in rows] == [400, 400, 200, 200, 100, 100]
    assert all(r["seeds"] == "1" and r["settled"] == "0" and float(r["min_final_train_acc"]) >= 0 for r in rows)
    last = runs.checkpoint_steps(small_run)[-1]
    member = out / ungrok.STAGE / "wd2" / "runs" / "train_size100_data_seed1"
    cfg = runs.read_config(member)
    assert cfg.init_from == f"{small_run.resolve()}@{last}" and (cfg.train_size, cfg.wd, cfg.p, cfg.d_model) == (100, 2.0, 59, 64)
    start, src = load_file(runs.ckpt_path(member, 0)), load_file(runs.ckpt_path(small_run, last))
    assert all(torch.equal(start[k], src[k]) for k in src)  # it starts from the grokked weights
    assert runs.read_metrics(member)[0]["test_acc"] > 0.95  # which generalise on the new split too


def test_ungrok_source_on_every_pair_is_accepted_by_train_accuracy(tmp_path, monkeypatch):
    """A run on all p^2 pairs has no test split (NaN test metrics); check_source reads its train accuracy."""
    from interp.train import train

    cfg = TrainConfig(task="mod_add", p=13, d_model=32, d_mlp=64, n_heads=4, train_size=169, lr=1e-2, steps=30, eval_every=10, save_every=10)
    run = train(cfg, tmp_path / "all", progress=False)
    last = runs.read_metrics(run)[-1]
    assert last["test_acc"] != last["test_acc"] and 0 < last["train_acc"] < 1  # NaN: no test split
    monkeypatch.setattr(ungrok, "GROKKED", last["train_acc"])
    assert ungrok.check_source(run) == (runs.read_config(run), 30)
    monkeypatch.setattr(ungrok, "GROKKED", last["train_acc"] + 1e-9)
    with pytest.raises(SweepError, match=f"accuracy on all pairs {last['train_acc']:.4g} at its last step 30"):
        ungrok.check_source(run)


def csv_rows(path):
    import csv

    with open(path, newline="") as f:
        yield from csv.DictReader(f)


# ---- semigrok ----------------------------------------------------------------------------------------
def _curve(test):
    """Evaluations every 10 steps for 1000 steps: train accuracy 1 from step 50, test accuracy ``test(step)``."""
    steps = list(range(0, 1001, 10))
    return steps, [0.5 if s < 50 else 1.0 for s in steps], [test(s) for s in steps]


def test_plateau_found_on_a_curve_that_has_one():
    wobble = lambda s: 0.02 * ((s // 10) % 3 - 1)  # noqa: E731  +-0.02
    pl = semigrok.find_plateau(*_curve(lambda s: 0.02 if s < 200 else 0.55 + wobble(s) if s < 800 else 1.0))
    assert pl["seen"] and (pl["start"], pl["end"], pl["length"], pl["train_step"]) == (200, 790, 590, 50)
    assert pl["mean"] == pytest.approx(0.55, abs=0.01) and abs(pl["drift"]) < 0.02 and pl["to_end"] is False


def test_a_slow_rise_through_the_band_is_not_a_plateau():
    ramp = semigrok.find_plateau(*_curve(lambda s: 0.02 if s < 300 else min(0.2 + (s - 300) / 4000, 1.0)))  # 0.2 -> 0.375
    assert ramp["length"] == 700 and ramp["drift"] == pytest.approx(0.13, abs=0.01) and not ramp["seen"]
    assert semigrok.find_plateau(*_curve(lambda s: 0.02 if s < 300 else min(0.2 + (s - 300) / 4000, 1.0)), max_drift=0.2)["seen"]


def test_no_plateau_when_test_accuracy_jumps_straight_to_one():
    pl = semigrok.find_plateau(*_curve(lambda s: 0.02 if s < 300 else 0.5 if s == 300 else 1.0))
    assert not pl["seen"] and pl["length"] == 0


def test_plateau_too_short_is_reported_but_not_seen():
    pl = semigrok.find_plateau(*_curve(lambda s: 0.6 if 500 <= s < 700 else 0.02 if s < 500 else 1.0))
    assert not pl["seen"] and (pl["start"], pl["length"]) == (500, 190)  # 190 < 25 % of 1000
    assert semigrok.find_plateau(*_curve(lambda s: 0.6 if 500 <= s < 700 else 0.02 if s < 500 else 1.0), min_frac=0.15)["seen"]


def test_plateau_needs_train_accuracy_and_a_narrow_band():
    steps, _, test = _curve(lambda s: 0.5)
    assert semigrok.find_plateau(steps, [0.9] * len(steps), test)["train_step"] is None  # never memorised: no plateau
    zigzag = semigrok.find_plateau(*_curve(lambda s: 0.25 if (s // 10) % 2 else 0.85))  # in [0.2, 0.9] but not flat
    assert not zigzag["seen"] and zigzag["length"] == 0
    before = semigrok.find_plateau(*_curve(lambda s: 0.5 if s < 50 else 1.0))  # partial accuracy only before memorising
    assert before["start"] is None and not before["seen"]
    to_end = semigrok.find_plateau(*_curve(lambda s: 0.02 if s < 300 else 0.7))
    assert to_end["seen"] and to_end["to_end"] and to_end["length"] == 700


def _fig6(grok_at=18_000_000, rise_at=8_000_000, level=0.55, budget=None, stop_after_grok=1000):
    """Evaluations of a run shaped like Varma et al.'s Fig. 6 (D = 1 532, p = 113): train accuracy 1 from the
    first evaluation (it memorises by step ~200), test accuracy at chance (1/113, +-0.002) until ``rise_at``,
    then ``level`` +-0.02 until ``grok_at``, then 1; sampled as the full version evaluates (every 1 000 steps)
    up to its budget, or ``stop_after_grok`` steps after the test accuracy reaches 1, whichever comes first."""
    budget = semigrok.FULL["steps"] if budget is None else budget
    every = semigrok.FULL["eval_every"]
    wobble = lambda s, a: a * ((s // every) % 3 - 1)  # noqa: E731
    last = min(budget, grok_at + stop_after_grok) if grok_at is not None else budget
    steps = list(range(0, last + 1, every))
    test = [1 / 113 + wobble(s, 0.002) if s < rise_at else level + wobble(s, 0.02) if grok_at is None or s < grok_at else 1.0
            for s in steps]
    return steps, [0.0] + [1.0] * (len(steps) - 1), test


def test_fig6_run_is_an_open_plateau_at_the_full_budget():
    """Known answer (issue 24, item 2): the paper's semi-grokking run, cut at the full version's budget, is an
    open plateau. At the old budget (10^7) the same curve showed its plateau for 2x10^6 steps, 20 % of the run,
    and was reported as no plateau ("not elicited")."""
    steps, train, test = _fig6()
    pl = semigrok.find_plateau(steps, train, test)
    assert pl["seen"] and pl["to_end"] and pl["start"] == 8_000_000 and pl["end"] == semigrok.FULL["steps"]
    assert pl["mean"] == pytest.approx(0.55, abs=0.01) and pl["length"] >= semigrok.MIN_FRAC * steps[-1]
    assert semigrok.verdict(pl, None) == semigrok.OPEN
    # the budget is what makes it visible: the same curve cut at 10^7 steps is too short a stretch to count
    assert not semigrok.find_plateau(*_fig6(budget=10_000_000))["seen"]
    # and the criterion is the share of what the run saw: at --plateau-frac 0.5 the 7x10^6 steps of 1.5x10^7 are short
    assert not semigrok.find_plateau(steps, train, test, min_frac=0.5)["seen"]


def test_a_full_grokker_and_a_chance_curve_are_not_semigrokking():
    """Known answer: a run that jumps from chance to full test accuracy (it stops 1 000 steps later) is grokking,
    one that stays at chance for the whole budget is not elicited, and the whole Fig. 6 run (it groks at
    1.8x10^7, inside a 2x10^7 budget) has a partial stage that closed: neither is an open plateau."""
    steps, train, test = _fig6(rise_at=8_000_000, grok_at=8_000_000)
    pl = semigrok.find_plateau(steps, train, test)
    assert not pl["seen"] and steps[-1] == 8_001_000
    assert semigrok.verdict(pl, 8_000_000) == semigrok.GROKKED
    steps, train, test = _fig6(rise_at=10**9, grok_at=None)
    pl = semigrok.find_plateau(steps, train, test)
    assert not pl["seen"] and pl["start"] is None and steps[-1] == semigrok.FULL["steps"]
    assert semigrok.verdict(pl, None) == semigrok.NONE
    steps, train, test = _fig6(budget=20_000_000)
    pl = semigrok.find_plateau(steps, train, test)
    assert pl["seen"] and not pl["to_end"] and semigrok.verdict(pl, 18_000_000) == semigrok.THEN_GROKKED


def test_a_plateau_that_falls_back_is_left_not_grokked():
    pl = semigrok.find_plateau(*_curve(lambda s: 0.02 if s < 200 else 0.55 if s < 800 else 0.05))
    assert pl["seen"] and not pl["to_end"] and semigrok.verdict(pl, None) == semigrok.THEN_LEFT


def fake_semigrok(out, plateau: bool):
    spec = Spec({"task": "mod_add", "p": 13, "steps": 1000}, {"train_size": [40, 50], "seed": [1]})
    flat = _curve(lambda s: 0.02 if s < 300 else 0.7)
    jump = _curve(lambda s: 0.02 if s < 300 else 1.0)
    curves = {"train_size40_seed1": list(zip(*(flat if plateau else jump))), "train_size50_seed1": list(zip(*jump))}
    fake_sweep(out, spec, {"train_size50_seed1": {"test_99_step": 300}}, curves)


def test_semigrok_summary_and_caption_known_answer(tmp_path):
    fake_semigrok(tmp_path / "a", plateau=True)
    rows = semigrok.summarise(tmp_path / "a")
    assert [(r["train_size"], r["plateau"], r["plateau_start"], r["plateau_length"], r["plateau_to_end"]) for r in rows] == [
        (40, True, 300, 700, True), (50, False, None, None, None)]
    assert rows[0]["plateau_mean_test_acc"] == pytest.approx(0.7) and rows[1]["test_99_step"] == 300 and rows[0]["train_99_step"] == 50
    assert [(r["verdict"], r["plateau_frac"], r["final_step"]) for r in rows] == [(semigrok.OPEN, 0.25, 1000), (semigrok.GROKKED, 0.25, 1000)]
    text = semigrok.caption(rows)
    assert numbers(sentence(text, "members at training sizes")) == [2, 40, 50, 1000]
    assert "Verdicts: 1 open plateau, 1 grokked." in text
    # size, seed, the plateau's mean test accuracy, start and length; it lasts to the end
    assert numbers(sentence(text, "D = 40, seed 1: plateau"))[:5] == [40, 1, 0.7, 300, 700] and "lasts to the end of the run" in text
    assert numbers(sentence(text, "plateaus last to the end")) == [1, 1]
    fake_semigrok(tmp_path / "b", plateau=False)
    assert "No member showed such a plateau within this budget: semi-grokking was not elicited here." in semigrok.caption(semigrok.summarise(tmp_path / "b"))


def test_semigrok_keeps_a_diverged_member_and_says_so(tmp_path):
    """Issue 24 item 4: a member forced to NaN stays a row (diverged, no final accuracy) instead of breaking the summary."""
    from interp import tables

    out = tmp_path / "s"
    fake_semigrok(out, plateau=True)
    rs = tables.read_csv(out / "results.csv")
    rs[1].update(status="failed", reason="training loss is not finite at step 400")
    tables.write_csv(out / "results.csv", rs)
    rows = semigrok.summarise(out)
    assert [(r["train_size"], r["diverged"], r["final_test_acc"]) for r in rows] == [(40, False, pytest.approx(0.7)), (50, True, None)]
    table = tables.experiment_tables(rows, semigrok.TABLES)[0]
    headers, cells = table[1], table[2]
    assert [c[headers.index("diverged")] for c in cells] == ["no", "yes"] and cells[1][headers.index("final test acc")] == "–"


def test_semigrok_steps_sets_every_members_budget(tmp_path):
    """--steps reaches training: a 100-step quick semigrok trains each member to step 100, no further."""
    out = tmp_path / "s"
    assert experiment_main(["semigrok", "--quick", "--steps", "100", "--out", str(out), "--quiet"]) == 0
    rows = semigrok.summarise(out)
    assert len(rows) == 6 and {r["budget"] for r in rows} == {100}
    assert json.loads((out / "runs" / "train_size1040_seed1" / "config.json").read_text())["config"]["steps"] == 100


def test_semigrok_plateau_frac_changes_only_the_summary(tmp_path):
    """--plateau-frac is recorded next to the sweep and read by summarise: the same finished members re-read."""
    fake_semigrok(tmp_path / "a", plateau=True)
    (tmp_path / "a" / semigrok.PLATEAU_FILE).write_text(json.dumps({"plateau_frac": 0.8}))
    rows = semigrok.summarise(tmp_path / "a")  # the plateau lasts 700 of 1 000 steps: < 80 %
    assert [(r["plateau"], r["verdict"], r["plateau_frac"]) for r in rows] == [(False, semigrok.NONE, 0.8), (False, semigrok.GROKKED, 0.8)]
    assert "at least 80% of the steps the run trained" in semigrok.caption(rows)


@pytest.mark.parametrize("frac", ["0", "1", "-0.1", "1.5", "nan"])
def test_semigrok_bad_plateau_frac(tmp_path, capsys, frac):
    out = tmp_path / "s"
    assert experiment_main(["semigrok", "--quick", "--plateau-frac", frac, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--plateau-frac {frac}" in err[0] and "between 0 and 1" in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("steps", ["0", "-5"])
def test_semigrok_bad_steps(tmp_path, capsys, steps):
    out = tmp_path / "s"
    assert experiment_main(["semigrok", "--quick", "--steps", steps, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--steps {steps}: must be a positive number of steps" in err[0], err
    assert not out.exists()
