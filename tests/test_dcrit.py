"""The critical-dataset-size experiment: its estimator on synthetic data, the C_gen check on a hand-built
model, the summary of a fake sweep, bad input, and a tiny real run end to end."""

import csv
import json
import math

import numpy as np
import pytest
import torch

from analyses import critical_size as est
from interp.experiment import main as experiment_main
from interp.experiments import dcrit
from interp.sweep import Spec, expand, write_results
from tests.conftest import TINY_DCRIT as TINY
from tests.test_efficiency import KEYS, N_GEN, P, all_logits, hand_built_model

GRID = [10, 20, 40, 80, 160, 320, 640]


def power_law(a, b, noise=0.0, seeds=(1, 2, 3, 4, 5), grid=GRID, rng_seed=0):
    g = torch.Generator().manual_seed(rng_seed)
    return [(d, s, a * d ** b * math.exp(noise * torch.randn(1, generator=g).item())) for s in seeds for d in grid]


# ---- the estimator -------------------------------------------------------------------------------
def test_norm_at_reads_the_weight_decays_line_at_the_matched_value():
    # norm = 3 * logit^0.5 at three weight decays' equilibria (logits 4, 9, 16)
    pts = [(4.0, 6.0), (9.0, 9.0), (16.0, 12.0)]
    assert est.norm_at(pts, 9.0) == (pytest.approx(9.0), False)
    assert est.norm_at(pts, 6.25) == (pytest.approx(7.5), False)  # between two weight decays
    assert est.norm_at(pts, 25.0) == (pytest.approx(15.0), True)  # past the largest logit trained: extrapolated
    assert est.norm_at(pts[:1], 9.0) is None  # one weight decay: no line
    assert est.norm_at([(9.0, 9.0), (9.0, 10.0)], 9.0) is None  # no spread in the matched value
    assert est.norm_at(pts, 0.0) is None


@pytest.mark.parametrize("by_d, status", [
    ({100: [20.0, 21.0, 19.5], 200: [20.5, 19.8, 21.2]}, "independent"),  # medians differ less than the seeds do
    ({100: [20.0, 20.2, 19.9], 200: [22.0, 22.1, 21.9]}, "depends on D"),  # 10 % apart, seeds within 1.5 %
    ({100: [20.0], 200: [20.5, 19.8]}, "too few seeds"),
    ({100: [20.0, 21.0]}, "one size"),
])
def test_level_check_compares_the_sizes_medians_with_the_seed_spread(by_d, status):
    c = est.level_check(by_d)
    assert c["status"] == status
    if status in ("independent", "depends on D"):
        med = {d: float(np.median(v)) for d, v in by_d.items()}
        assert c["ratio"] == pytest.approx(med[200] / med[100])
        assert c["spread"] == pytest.approx(max(max(v) / min(v) for v in by_d.values()))
        assert (c["d_lo"], c["d_hi"]) == (100, 200)


def test_crossing_finds_a_known_crossing_with_an_interval_around_it():
    # C_mem's norm 2 sqrt(D) (with 10% seed noise) meets C_gen's level 20 at D = 100
    mem = power_law(2.0, 0.5, noise=0.1)
    gen = [(s, 20.0 * math.exp(0.05 * (-1) ** s)) for s in range(1, 7)]
    e = est.crossing(mem, gen, direction=+1)
    assert e["status"] == "crossed"
    assert e["slope"] == pytest.approx(0.5, abs=0.05)
    assert e["dcrit"] == pytest.approx(100, rel=0.25)
    assert e["lo"] < e["dcrit"] < e["hi"] and e["lo"] > GRID[0] and e["hi"] < GRID[-1]
    assert not e["lo_at_grid"] and not e["hi_at_grid"]
    assert e == est.crossing(mem, gen, direction=+1)  # reproducible
    # more seed noise, a wider interval
    wide = est.crossing(power_law(2.0, 0.5, noise=0.3), gen, direction=+1)
    assert wide["hi"] / wide["lo"] > e["hi"] / e["lo"]


def test_crossing_exact_power_law_has_a_point_interval():
    mem = power_law(5.0, -0.5)  # efficiency falling as 1/sqrt(D): meets 0.5 at D = 100
    e = est.crossing(mem, [(1, 0.5), (2, 0.5)], direction=-1)
    assert e["status"] == "crossed"
    assert (e["dcrit"], e["lo"], e["hi"]) == pytest.approx((100, 100, 100))
    assert e["gen_level"] == pytest.approx(0.5)


@pytest.mark.parametrize("level, status, bound", [(200.0, "above grid", ("lo", 640)), (1.0, "below grid", ("hi", 10))])
def test_curves_that_do_not_cross_in_the_grid_give_only_a_bound(level, status, bound):
    e = est.crossing(power_law(2.0, 0.5, noise=0.05), [(1, level), (2, level)], direction=+1)
    assert e["status"] == status and e["dcrit"] is None
    assert e[bound[0]] == bound[1] and e["lo" if bound[0] == "hi" else "hi"] is None


def test_no_trend_and_too_few_points_give_no_number():
    flat = power_law(20.0, 0.0, noise=0.3)  # no dependence on D
    e = est.crossing(flat, [(1, 20.0)], direction=+1)
    assert e["status"] == "no trend" and e["dcrit"] is None and e["slope_lo"] <= 0  # not clearly rising
    wrong = est.crossing(power_law(2.0, 0.5, noise=0.05), [(1, 20.0)], direction=-1)  # rising where it should fall
    assert wrong["status"] == "no trend" and wrong["dcrit"] is None
    assert est.crossing([(10, 1, 3.0), (10, 2, 3.1)], [(1, 20.0)], direction=+1)["status"] == "too few points"
    assert est.crossing(power_law(2.0, 0.5), [], direction=+1)["status"] == "too few points"
    with pytest.raises(ValueError):
        est.crossing(power_law(2.0, 0.5), [(1, 20.0)], direction=0)


# ---- the C_gen check on a hand-built model -----------------------------------------------------------
def test_logit_subspace_check_on_a_hand_built_circuit():
    model, _, _, _, expected_gen, expected_mem, _ = hand_built_model()
    logits, labels = all_logits(model)
    idx = torch.arange(P * P)
    g2, m2 = expected_gen.pow(2).sum().item(), expected_mem.pow(2).sum().item()  # both centred over classes already
    keys, frac = est.key_subspace_fraction(model, logits, labels, idx)
    assert keys == KEYS
    assert frac == pytest.approx(g2 / (g2 + m2), rel=1e-9)
    assert frac >= est.SUBSPACE_MIN  # the small lookup table leaves the circuit a C_gen network
    # a memoriser 100x louder (its output weights scaled) fails the check, by the known amount
    with torch.no_grad():
        model.blocks[0].mlp.W_out[N_GEN:] *= 100
    keys, loud = est.key_subspace_fraction(model, all_logits(model)[0], labels, idx)
    assert keys == KEYS and loud == pytest.approx(g2 / (g2 + 1e4 * m2), rel=1e-9)
    assert loud < est.SUBSPACE_MIN


# ---- the summary of a fake sweep ---------------------------------------------------------------------
def fake_stage(out, grid, base):
    spec = Spec({"task": "mod_add", "p": 13, "steps": 400, **base}, grid)
    members = expand(spec)
    out.mkdir(parents=True)
    (out / "sweep.json").write_text(json.dumps({"spec": spec.to_dict(), "members": [{"name": m.name} for m in members]}))
    ok = {"status": "ok", "train_99_step": 10, "test_99_step": None, "final_step": 100, "final_train_acc": 1.0, "final_test_acc": 0.1,
          "final_test_loss": 1.0, "final_param_norm": 9.0, "wall_s": 1.0, "reason": ""}
    write_results(out, spec, members, {m.name: ok for m in members})


WDS = (0.5, 1.0, 2.0)


def fake_experiment(out, gen_sizes=(150,), gen_norm=lambda d, seed: 20.0, capped=(("C_mem", 160, 3, 2.0),)):
    """Stages of a fake dcrit experiment, and a ``member_record`` with known equilibria.

    At weight decay w a member's correct logit is 10 w^-0.5, its loss that logit^-4 and its norm
    A (logit / 10)^0.5, so across the weight decays its norm at logit 10 (loss 1e-4) is exactly A.
    A is 2 sqrt(D) x (1, 1.1, 1.2) by seed for C_mem (meets 20 at D = 100 / those squared), and
    ``gen_norm`` for C_gen. The members in ``capped`` reached the cap without equilibrium."""
    for wd in WDS:
        fake_stage(out / dcrit.stage_name("mem", wd), {"train_size": [10, 40, 160], "seed": [1, 2, 3]}, {"label_noise": 1.0, "wd": wd})
        fake_stage(out / dcrit.stage_name("gen", wd), {"train_size": list(gen_sizes), "seed": [1, 2]}, {"wd": wd})

    def record(run_dir, family, diverged=False):
        if diverged:  # as dcrit.member_record returns a member that diverged
            return {"family": family, "run": run_dir.name, "flags": "diverged", "diverged": True, "wd": float(run_dir.parent.parent.name.split("_wd")[1]),
                    **dict(zip(("D", "seed"), (int(x) for x in run_dir.name.removeprefix("train_size").split("_seed")))),
                    "steps": 50, "cap": 400, "final_train_loss": None, "final_test_acc": None, "param_norm": None,
                    "correct_logit": None, "efficiency": None, "cgen_frac": None}
        d, seed = (int(x) for x in run_dir.name.removeprefix("train_size").split("_seed"))
        wd = float(run_dir.parent.parent.name.split("_wd")[1])
        a = 2 * math.sqrt(d) * (1 + 0.1 * (seed - 1)) if family == "C_mem" else gen_norm(d, seed)
        logit = 10 * wd ** -0.5
        norm = a * (logit / 10) ** 0.5
        at_eq = (family, d, seed, wd) not in capped
        return {"family": family, "run": run_dir.name, "wd": wd, "D": d, "seed": seed, "steps": 100 if at_eq else 400, "cap": 400,
                "equilibrium": at_eq, "ended": "equilibrium_tol 0.01: ..." if at_eq else "", "final_train_loss": logit ** -4,
                "final_train_acc": 1.0, "final_test_acc": 1.0 if family == "C_gen" else 0.1, "param_norm": norm,
                "correct_logit": logit, "efficiency": logit / norm, "key_frequencies": "1 4" if family == "C_gen" else None,
                "cgen_frac": 0.97 if family == "C_gen" else None, "flags": "" if at_eq else "no equilibrium by the cap (400 steps)"}

    return record


def test_summary_known_answer_from_a_fake_sweep(tmp_path, monkeypatch):
    out = tmp_path / "d"
    monkeypatch.setattr(dcrit, "member_record", fake_experiment(out, gen_sizes=(150, 300), gen_norm=lambda d, s: 20.0 * (1 + 0.01 * s)))
    rows = dcrit.summarise(out)
    assert list(rows[0]) == dcrit.SUMMARY_COLUMNS
    per_wd = [r for r in rows if r["row"] != "D_crit" and r["wd"] is not None]
    matched = [r for r in rows if r["row"] != "D_crit" and r["wd"] is None]
    dc = [r for r in rows if r["row"] == "D_crit"]
    assert [(r["row"], r["wd"], r["D"]) for r in per_wd] == [("C_mem", w, d) for w in WDS for d in (10, 40, 160)] + [
        ("C_gen", w, d) for w in WDS for d in (150, 300)]
    assert [(r["row"], r["D"]) for r in matched] == [("C_mem", 10), ("C_mem", 40), ("C_mem", 160), ("C_gen", 150), ("C_gen", 300)]
    # per weight decay: the member capped without equilibrium is reported, not used
    capped = next(r for r in per_wd if (r["row"], r["wd"], r["D"]) == ("C_mem", 2.0, 160))
    assert (capped["seeds"], capped["used"], capped["flags"]) == (3, 2, "seed 3: no equilibrium by the cap (400 steps)")
    assert capped["norm_max"] == pytest.approx(2 * math.sqrt(160) * 1.1 * 2 ** -0.25)  # seed 3 (x 1.2) left out
    assert capped["steps_median"] == 100 and capped["cap"] == 400
    m10 = next(r for r in per_wd if (r["row"], r["wd"], r["D"]) == ("C_mem", 1.0, 10))
    assert (m10["norm_median"], m10["logit_median"], m10["loss_median"]) == pytest.approx((2 * math.sqrt(10) * 1.1, 10.0, 1e-4))
    # matched across weight decays: the norm at logit 10 and at loss 1e-4 is A, also for seed 3 at D = 160 (two weight decays left)
    for r in matched:
        a = [2 * math.sqrt(r["D"]) * (1 + 0.1 * (s - 1)) for s in (1, 2, 3)] if r["row"] == "C_mem" else [20.2, 20.4]
        for m in dcrit.MATCHED:
            assert (r[f"{m}_min"], r[f"{m}_max"]) == pytest.approx((min(a), max(a)), rel=1e-9), (r, m)
        assert (r["used"], r["extrapolated"], r["flags"]) == (len(a), 0, "")
    # the estimates: matched loss (primary), matched logit, then the equilibrium norm at each weight decay
    assert [(r["measure"], r["wd"], r["primary"]) for r in dc] == [("norm_at_loss", None, True), ("norm_at_logit", None, False)] + [
        ("norm", w, False) for w in WDS]
    assert [r["matched_at"] for r in dc[:2]] == pytest.approx([1e-4, 10.0])
    pts = [(d, 2 * math.sqrt(d) * (1 + 0.1 * (s - 1))) for d in (10, 40, 160) for s in (1, 2, 3)]
    b, a = np.polyfit([math.log(d) for d, _ in pts], [math.log(y) for _, y in pts], 1)
    level = math.exp(np.mean([math.log(20.2), math.log(20.4)] * 2))
    for r in dc:
        assert r["status"] == "crossed" and r["slope"] == pytest.approx(0.5, abs=0.02)
        assert 100 / 1.2 ** 2 < r["dcrit_lo"] < r["dcrit"] < r["dcrit_hi"] < 105
        assert r["gen_check"] == "independent" and "C_gen level" not in r["flags"]
    for r in dc[:2]:  # the matched reads are exact: the same least squares as numpy's
        assert r["dcrit"] == pytest.approx(math.exp((math.log(level) - a) / b), rel=1e-9)
        assert r["used"] == 9 + 4
    assert [r["used"] for r in dc[2:]] == [13, 13, 12]  # at wd 2 the capped member is left out
    with open(out / dcrit.MEMBERS_FILE) as f:
        assert len(list(csv.DictReader(f))) == 3 * (9 + 4)
    back = dcrit.read_members(out)
    assert len(back) == 39 and {type(r["equilibrium"]) for r in back} == {bool}


def test_a_diverged_member_counts_and_every_row_says_how_many(tmp_path, monkeypatch, tiny_run):
    """Issue 24 item 4: a member forced to NaN is not dropped: its row counts it among the seeds, says
    "1 of 3 diverged", and leaves it out of the measures; dcrit.member_record flags it without reading its weights."""
    from interp import tables

    out = tmp_path / "d"
    real_record = dcrit.member_record
    monkeypatch.setattr(dcrit, "member_record", fake_experiment(out))
    stage = out / dcrit.stage_name("mem", WDS[0])
    rs = tables.read_csv(stage / "results.csv")
    victim = next(r for r in rs if r["train_size"] == 40 and r["seed"] == 2)
    victim.update(status="failed", reason="training loss is not finite at step 50")
    tables.write_csv(stage / "results.csv", rs)
    rows = dcrit.summarise(out)
    r = next(r for r in rows if (r["row"], r["wd"], r["D"]) == ("C_mem", WDS[0], 40))
    assert (r["seeds"], r["used"], r["diverged"]) == (3, 2, 1) and "seed 2: diverged" in r["flags"]
    assert r["norm_max"] == pytest.approx(2 * math.sqrt(40) * 1.2 * WDS[0] ** -0.25)  # seeds 1 and 3 only
    assert all(x["diverged"] == 0 for x in rows if x["row"] != "D_crit" and x["wd"] is not None and x is not r)
    table = tables.experiment_tables(rows, dcrit.TABLES)[0]
    headers, cells = table[1], table[2]
    assert "1 of 3" in [c[headers.index("diverged")] for c in cells]
    rec = real_record(tiny_run, "C_mem", diverged=True)
    assert rec["flags"] == "diverged" and rec["param_norm"] is None and rec["diverged"] is True


def test_a_c_gen_level_that_moves_with_d_is_flagged(tmp_path, monkeypatch):
    out = tmp_path / "d"  # C_gen 20 at D = 150 and 25 at D = 300 (seeds within 1 %): not independent of D
    monkeypatch.setattr(dcrit, "member_record", fake_experiment(out, gen_sizes=(150, 300),
                                                                gen_norm=lambda d, s: (20.0 if d == 150 else 25.0) * (1 + 0.01 * s)))
    dc = [r for r in dcrit.summarise(out) if r["row"] == "D_crit"]
    assert len(dc) == 5
    for r in dc:
        assert r["gen_check"] == "depends on D" and r["gen_ratio"] == pytest.approx(1.25, rel=1e-6)
        assert r["gen_spread"] == pytest.approx(1.02 / 1.01)
        assert "C_gen level depends on D (median at D = 300 / at D = 150 = 1.25, beyond the seed spread 1.01)" in r["flags"]
    e = dcrit.estimates(dcrit.read_members(out))
    assert list(e) == ["norm_at_loss", "norm_at_logit", "norm@wd=0.5", "norm@wd=1", "norm@wd=2"]
    assert "C_gen level depends on D" in dcrit.sentence(e["norm_at_loss"], "norm_at_loss")
    assert dcrit.sentence(e["norm_at_loss"], "norm_at_loss").startswith("D_crit by parameter norm at train loss 0.0001: ")


@pytest.mark.parametrize("ended, metrics, expected", [
    ({"step": 300, "reason": "equilibrium_tol 0.01: parameter norm moved 0.005 of itself over steps 240-300"}, None, True),
    ({"step": 300, "reason": "stop_after_grok 0: ..."}, None, False),
    (None, [(s, 30.0 * math.exp(-s / 400)) for s in range(0, 401, 10)], False),  # capped, still decaying
    (None, [(s, 20.0 + 0.001 * s / 400) for s in range(0, 401, 10)], True),  # capped, but flat over its last fifth
    (None, [(s, 20.0) for s in range(0, 101, 10)], False),  # flat, but before min_steps
])
def test_equilibrium_on_synthetic_member_curves(ended, metrics, expected):
    rows = [{"step": s, "param_norm": n} for s, n in (metrics or [(s, 20.0) for s in range(0, 301, 10)])]
    assert dcrit.equilibrium(rows, 400, 200, ended) is expected
    assert ("no equilibrium by the cap (400 steps)" == dcrit.equilibrium_flag(expected, 1.0, 400)) is not expected


def test_a_flat_norm_with_a_falling_loss_is_not_equilibrium():
    # the norm sat still over steps 480-600 while the loss fell 2.5x (as at p = 31, lr 1e-2): flagged
    falling = [{"step": s, "train_loss": 1e-4 * math.exp(-s / 109), "param_norm": 28.7} for s in range(0, 601, 25)]
    drop = dcrit.loss_drop(falling)
    assert drop == pytest.approx(math.exp(100 / 109))  # from step 500 to 600: the evaluations in the last fifth (>= 480)
    assert dcrit.equilibrium_flag(True, drop, 1500) == f"norm flat but train loss still falling (x{drop:.3g} over the last fifth)"
    settled = [{**r, "train_loss": 6.7e-8 * (1 + 0.01 * (r["step"] % 50 == 0))} for r in falling]
    assert dcrit.loss_drop(settled) < dcrit.LOSS_DROP_MAX and dcrit.equilibrium_flag(True, dcrit.loss_drop(settled), 1500) == ""
    assert dcrit.loss_drop(falling[:1]) is None


# ---- the command ------------------------------------------------------------------------------------
@pytest.mark.parametrize("p, message", [("12", "--p 12"), ("7", "--p 7"), ("1", "--p 1")])
def test_bad_modulus_exits_2_and_writes_nothing(tmp_path, capsys, p, message):
    assert experiment_main(["dcrit", "--quick", "--p", p, "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "prime" in err[0], err
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("noise", [-0.1, 1.5])
def test_label_noise_outside_0_1_is_refused_by_the_config(tmp_path, capsys, noise):
    from interp.sweep import main as sweep_main

    assert sweep_main(["mod_add", "--p", "13", "--label-noise", str(noise), "--grid", "seed=1,2", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--label-noise" in err[0] and "[0, 1]" in err[0]
    assert not (tmp_path / "s").exists()


def test_the_quick_and_full_grids():
    from argparse import Namespace

    quick, full = dcrit.specs(Namespace(quick=True, p=None)), dcrit.specs(Namespace(quick=False, p=None))
    assert list(full) == [f"{f}_wd{w}" for w in ("0.5", "1", "2") for f in ("mem", "gen")]
    assert list(quick) == [f"{f}_wd{w}" for w in ("1", "2") for f in ("mem", "gen")]  # two weight decays: minutes
    for name, spec in full.items():
        b = spec.base
        assert b["p"] == 113 and b["equilibrium_tol"] == 0.01 and ("label_noise" in b) == name.startswith("mem")
        # the same number of decay times 1 / (lr wd) at every weight decay: 20 (the cap) and 10 (min_steps)
        assert b["lr"] == 1e-3 and b["steps"] * b["lr"] * b["wd"] == pytest.approx(20) and b["min_steps"] * b["lr"] * b["wd"] == pytest.approx(10)
        assert len(spec.grid["seed"]) >= 5
        assert b["steps"] % b["eval_every"] == 0 and b["steps"] % b["save_every"] == 0
    for spec in quick.values():
        assert spec.base["p"] == 31 and spec.base["equilibrium_tol"] == 0.01 and 0 < spec.base["min_steps"] < spec.base["steps"]
    # the quick version's measured configuration (lr 3e-3): 5 000 and 2 500 steps at weight decay 1
    assert (quick["mem_wd1"].base["steps"], quick["mem_wd1"].base["min_steps"], quick["mem_wd2"].base["steps"]) == (5000, 2500, 2500)
    d = full["mem_wd1"].grid["train_size"]
    assert d[0] == round(0.02 * 113 ** 2) and d[-1] == round(0.32 * 113 ** 2) and len(d) == 7
    ratios = [b / a for a, b in zip(d, d[1:])]
    assert max(ratios) / min(ratios) < 1.01  # geometric
    assert max(full["gen_wd1"].grid["train_size"]) == round(0.9 * 113 ** 2)


def test_budgets_are_decay_times_so_the_full_version_waits_as_long_as_the_pilot_needed(monkeypatch):
    """Known answer (issue 24, item 7): a decay time is 1 / (lr wd) steps. The pilot (lr 3e-3, weight decay 1)
    reached equilibrium with a settled loss only at step 3 200, i.e. 9.6 decay times; the full version trains
    at lr 1e-3, where 9.6 decay times are 9 600 steps at weight decay 1. Its min_steps and cap must cover
    that at every weight decay, and both must follow the learning rate, not only the weight decay."""
    from argparse import Namespace

    from interp.config import TrainConfig

    pilot = 3200 * 3e-3 * 1.0  # the pilot's last equilibrium step x its lr x its weight decay
    for quick in (False, True):
        for spec in dcrit.specs(Namespace(quick=quick, p=None)).values():
            b = spec.base
            times = lambda n: n * b.get("lr", TrainConfig.lr) * b["wd"]  # noqa: E731
            assert times(b["steps"]) >= 1.5 * pilot
            if not quick:
                assert times(b["min_steps"]) >= pilot  # the old 5 000 / wd steps were 5 decay times
    assert dcrit.PILOT_DECAY_TIMES == pytest.approx(pilot)
    # the same plan at three times the learning rate takes a third of the steps
    slow = dcrit.specs(Namespace(quick=False, p=None))["mem_wd1"].base
    monkeypatch.setitem(dcrit.FULL, "base", {**dcrit.FULL["base"], "lr": 3e-3})
    fast = dcrit.specs(Namespace(quick=False, p=None))["mem_wd1"].base
    assert (fast["steps"], fast["min_steps"]) == (round(slow["steps"] / 3 / 50) * 50, round(slow["min_steps"] / 3 / 50) * 50)


def test_plan_counts_every_stage(capsys):
    assert experiment_main(["dcrit", "--quick", "--plan", "--out", "/nonexistent/x", "--workers", "1"]) == 0
    text = capsys.readouterr().out
    plan = json.loads(text.strip().splitlines()[-1])
    specs = dcrit.specs(__import__("argparse").Namespace(quick=True, p=None))
    assert plan["members"] == sum(len(s.grid["train_size"]) * len(s.grid["seed"]) for s in specs.values())
    assert plan["member_steps"] == sum(len(s.grid["train_size"]) * len(s.grid["seed"]) * s.base["steps"] for s in specs.values())


def test_tiny_real_run_end_to_end(tiny_dcrit):
    out, code = tiny_dcrit
    assert code in (0, 1)
    with open(out / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    fam = [(r["row"], int(r["D"])) for r in rows if r["row"] != "D_crit" and r["wd"] != ""]
    assert fam == [("C_mem", d) for d in dcrit.sizes(13, TINY["mem_fracs"])] + [("C_gen", d) for d in dcrit.sizes(13, TINY["gen_fracs"])]
    recs = dcrit.read_members(out)
    assert len(recs) == len(fam) * len(TINY["seeds"])
    for r in rows[: len(fam)]:
        mine = [m for m in recs if m["family"] == r["row"] and m["D"] == int(r["D"]) and m["wd"] == float(r["wd"])]
        used = [m for m in mine if not m["flags"]]
        assert int(r["seeds"]) == len(mine) and int(r["used"]) == len(used)
        if used:
            assert float(r["norm_median"]) == pytest.approx(sorted(m["param_norm"] for m in used)[(len(used) - 1) // 2] if len(used) % 2
                                                            else sum(sorted(m["param_norm"] for m in used)[len(used) // 2 - 1:][:2]) / 2, rel=1e-5)
    for m in recs:  # the flags follow the recorded numbers
        assert ("no equilibrium by the cap" in m["flags"]) == (not m["equilibrium"])
        assert ("train acc < 1" in m["flags"]) == (m["final_train_acc"] < 1)
        assert m["equilibrium"] == m["ended"].startswith("equilibrium_tol") or (m["steps"] == m["cap"] and not m["ended"])
        assert m["efficiency"] == pytest.approx(m["correct_logit"] / m["param_norm"], rel=1e-4)
        if m["family"] == "C_gen":
            assert m["cgen_frac"] is None or (("in key subspace" in m["flags"]) == (m["cgen_frac"] < est.SUBSPACE_MIN))
    # the C_mem labels are random: the members' own training labels, not a + b
    d = dcrit.sizes(13, TINY["mem_fracs"])[-1]
    from interp import runs

    r = runs.load_run(out / "mem_wd1" / "runs" / f"train_size{d}_seed1")
    assert r.config.label_noise == 1.0 and (r.dataset.train_labels != r.dataset.labels[r.dataset.train_idx]).float().mean() > 0.5
    dc = [r for r in rows if r["row"] == "D_crit"]
    assert [r["measure"] for r in dc] == ["norm_at_loss", "norm_at_logit", "norm"]  # one weight decay: one per-wd row
    assert all(r["status"] in ("crossed", "below grid", "above grid", "no trend", "too few points") for r in dc)
    assert all((r["dcrit"] != "") == (r["status"] == "crossed") for r in dc)
    # the report draws the experiment's figure with a caption from these numbers
    from interp.report import main as report_main

    assert report_main([str(out), "--quiet"]) == 0
    page = (out / "report.html").read_text()
    n_mem = sum(m["family"] == "C_mem" for m in recs)
    assert f"p = 13: {n_mem} C_mem-only members (random labels) and {len(recs) - n_mem} C_gen-only members" in page
    assert "D_crit by parameter norm at train loss" in page

