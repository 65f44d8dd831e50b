"""The critical-dataset-size experiment: its estimator on synthetic data, the C_gen check on a hand-built
model, the summary of a fake sweep, bad input, and a tiny real run end to end."""

import csv
import json
import math

import numpy as np
import pytest
import torch

from analyses import dcrit as est
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
def test_norm_at_loss_interpolates_in_log_loss():
    curve = [(4.0, 10.0), (1e-2, 20.0), (1e-6, 30.0), (1e-7, 31.0)]
    assert est.norm_at_loss(curve, 1e-4) == pytest.approx(25.0)  # halfway between 1e-2 and 1e-6 in log loss
    assert est.norm_at_loss(curve, 1e-2) == pytest.approx(20.0)
    assert est.norm_at_loss(curve, 1e-8) is None  # never gets there
    assert est.norm_at_loss([(1e-9, 5.0), (1e-9, 6.0)], 1e-8) is None  # there from the start: no curve to read


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
    spec = Spec({"task": "mod_add", "p": 13, "steps": 100, **base}, grid)
    members = expand(spec)
    out.mkdir(parents=True)
    (out / "sweep.json").write_text(json.dumps({"spec": spec.to_dict(), "members": [{"name": m.name} for m in members]}))
    ok = {"status": "ok", "train_99_step": 10, "test_99_step": None, "final_step": 100, "final_train_acc": 1.0, "final_test_acc": 0.1,
          "final_test_loss": 1.0, "final_param_norm": 9.0, "wall_s": 1.0, "reason": ""}
    write_results(out, spec, members, {m.name: ok for m in members})


def test_summary_known_answer_from_a_fake_sweep(tmp_path, monkeypatch):
    out = tmp_path / "d"
    fake_stage(out / "mem", {"train_size": [10, 40, 160], "seed": [1, 2, 3]}, {"label_noise": 1.0})
    fake_stage(out / "gen", {"train_size": [150], "seed": [1, 2]}, {})

    def record(run_dir, family):  # norm 2 sqrt(D) x (1, 1.1, 1.2) by seed: meets C_gen's 20 at D = 100
        d, seed = (int(x) for x in run_dir.name.removeprefix("train_size").split("_seed"))
        norm = 2 * math.sqrt(d) * (1 + 0.1 * (seed - 1)) if family == "C_mem" else 20.0
        flags = "not converged" if (family, d, seed) == ("C_mem", 160, 3) else ""
        return {"family": family, "run": run_dir.name, "D": d, "seed": seed, "steps": 100, "final_train_loss": 1e-5 * seed,
                "final_train_acc": 1.0, "final_test_acc": 1.0 if family == "C_gen" else 0.1, "param_norm": norm + 1,
                "correct_logit": 10.0, "efficiency": 10.0 / (norm + 1), "norm_at_loss": norm,
                "key_frequencies": "1 4" if family == "C_gen" else None, "cgen_frac": 0.97 if family == "C_gen" else None, "flags": flags}

    monkeypatch.setattr(dcrit, "member_record", record)
    rows = dcrit.summarise(out)
    assert [(r["row"], r["D"]) for r in rows] == [("C_mem", 10), ("C_mem", 40), ("C_mem", 160), ("C_gen", 150),
                                                  ("D_crit", None), ("D_crit", None)]
    m10, m40, m160, g, primary, ratio = rows
    assert (m10["seeds"], m10["used"], m10["flags"]) == (3, 3, "")
    assert m10["norm_at_loss_median"] == pytest.approx(2 * math.sqrt(10) * 1.1)
    assert (m10["norm_at_loss_min"], m10["norm_at_loss_max"]) == pytest.approx((2 * math.sqrt(10), 2 * math.sqrt(10) * 1.2))
    assert m40["norm_median"] == pytest.approx(2 * math.sqrt(40) * 1.1 + 1) and m40["logit_median"] == 10.0
    assert (m160["seeds"], m160["used"], m160["flags"]) == (3, 2, "seed 3: not converged")
    assert m160["norm_at_loss_max"] == pytest.approx(2 * math.sqrt(160) * 1.1)  # the flagged seed is left out
    assert m160["max_final_train_loss"] == pytest.approx(3e-5)  # but its loss is reported
    assert (g["used"], g["norm_at_loss_median"], g["min_cgen_frac"], g["median_final_test_acc"]) == (2, 20.0, 0.97, 1.0)
    assert (primary["measure"], primary["primary"], primary["status"]) == ("norm_at_loss", True, "crossed")
    assert primary["slope"] == pytest.approx(0.5, abs=0.02)
    # the point estimate: least squares through the 8 unflagged C_mem points (by numpy), met with log 20
    pts = [(d, 2 * math.sqrt(d) * (1 + 0.1 * (s - 1))) for d in (10, 40, 160) for s in (1, 2, 3) if (d, s) != (160, 3)]
    b, a = np.polyfit([math.log(d) for d, _ in pts], [math.log(y) for _, y in pts], 1)
    assert primary["dcrit"] == pytest.approx(math.exp((math.log(20) - a) / b), rel=1e-9)
    # each seed alone meets 20 between 100 / 1.2^2 (seed 3) and 100 (seed 1): so does every resample
    assert 100 / 1.2 ** 2 < primary["dcrit_lo"] < primary["dcrit"] < primary["dcrit_hi"] < 100
    assert primary["used"] == 8 + 2
    assert ratio["measure"] == "efficiency" and ratio["primary"] is False
    assert list(rows[0]) == dcrit.SUMMARY_COLUMNS
    with open(out / dcrit.MEMBERS_FILE) as f:
        assert len(list(csv.DictReader(f))) == 11
    assert len(dcrit.read_members(out)) == 11


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
    assert quick["mem"].base["p"] == 31 and quick["mem"].base["label_noise"] == 1.0 and "label_noise" not in quick["gen"].base
    assert full["mem"].base["p"] == 113
    d = full["mem"].grid["train_size"]
    assert d[0] == round(0.02 * 113 ** 2) and d[-1] == round(0.32 * 113 ** 2) and len(d) == 7
    ratios = [b / a for a, b in zip(d, d[1:])]
    assert max(ratios) / min(ratios) < 1.01  # geometric
    assert max(full["gen"].grid["train_size"]) == round(0.9 * 113 ** 2)


def test_tiny_real_run_end_to_end(tiny_dcrit):
    out, code = tiny_dcrit
    assert code in (0, 1)
    with open(out / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    fam = [(r["row"], int(r["D"])) for r in rows if r["row"] != "D_crit"]
    assert fam == [("C_mem", d) for d in dcrit.sizes(13, TINY["mem_fracs"])] + [("C_gen", d) for d in dcrit.sizes(13, TINY["gen_fracs"])]
    recs = dcrit.read_members(out)
    assert len(recs) == len(fam) * len(TINY["seeds"])
    for r in rows[: len(fam)]:
        mine = [m for m in recs if m["family"] == r["row"] and m["D"] == int(r["D"])]
        used = [m for m in mine if not m["flags"]]
        assert int(r["seeds"]) == len(mine) and int(r["used"]) == len(used)
        if used:
            assert float(r["norm_median"]) == pytest.approx(sorted(m["param_norm"] for m in used)[(len(used) - 1) // 2] if len(used) % 2
                                                            else sum(sorted(m["param_norm"] for m in used)[len(used) // 2 - 1:][:2]) / 2, rel=1e-5)
    for m in recs:  # the flags follow the recorded numbers
        assert ("not converged" in m["flags"]) == (not (m["final_train_acc"] == 1.0 and m["final_train_loss"] <= dcrit.CONVERGED_LOSS))
        assert m["efficiency"] == pytest.approx(m["correct_logit"] / m["param_norm"], rel=1e-4)
        if m["family"] == "C_gen":
            assert m["cgen_frac"] is None or (("in key subspace" in m["flags"]) == (m["cgen_frac"] < est.SUBSPACE_MIN))
    # the C_mem labels are random: the members' own training labels, not a + b
    d = dcrit.sizes(13, TINY["mem_fracs"])[-1]
    from interp import runs

    r = runs.load_run(out / "mem" / "runs" / f"train_size{d}_seed1")
    assert r.config.label_noise == 1.0 and (r.dataset.train_labels != r.dataset.labels[r.dataset.train_idx]).float().mean() > 0.5
    dc = [r for r in rows if r["row"] == "D_crit"]
    assert [r["measure"] for r in dc] == list(dcrit.MEASURES)
    assert all(r["status"] in ("crossed", "below grid", "above grid", "no trend", "too few points") for r in dc)
    assert all((r["dcrit"] != "") == (r["status"] == "crossed") for r in dc)
    # the report draws the experiment's figure with a caption from these numbers
    from interp.report import main as report_main

    assert report_main([str(out), "--quiet"]) == 0
    page = (out / "report.html").read_text()
    n_mem = sum(m["family"] == "C_mem" for m in recs)
    assert f"p = 13: {n_mem} C_mem-only members (random labels) and {len(recs) - n_mem} C_gen-only members" in page
    assert "D_crit by parameter norm at train loss" in page

