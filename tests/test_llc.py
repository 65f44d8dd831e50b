"""The LLC (devinterp): known answers (a regular and two degenerate models whose learning coefficient is
known analytically), the calibration rule (it refuses a setting the localisation dominates), the
columns, determinism, the cache and clean refusals."""

import math
import shutil

import pytest

pytest.importorskip("devinterp")

import torch  # noqa: E402

from interp import llc, runs  # noqa: E402
from interp.analyze import main  # noqa: E402


# ---- known answers ----------------------------------------------------------------------------------
# Hand-built models with a loss that is exactly known around w*: linear regression y = x.w with n = 100
# examples (full batch, so the SGLD gradient is exact) has L_n(w) - L_n(w*) = (w - w*)' H (w - w*) / 2
# with H = x'x / n, and learning coefficient lambda = rank(H) / 2: d / 2 for d independent features, less
# when features repeat (flat directions). The product model y = w1 w2 x has a curve of minima w1 w2 = a:
# lambda = 1/2 with d = 2. For a quadratic loss the SGLD chains (Euler steps) settle on a Gaussian, and the
# expected estimate is exact: sum_i n beta h_i var_i / 2 with var_i = 1 / (k_i (1 - epsilon k_i / 4)),
# k_i = n beta h_i + gamma (``sgld_quadratic``): lambda only when n beta h_i >> gamma, a sharpness
# n beta tr(H) / (2 gamma) when the localisation dominates.
N = 100
TOY = llc.LLCConfig(epsilon=1e-3, gamma=1.0, chains=4, draws=150, burnin=50, batch_size=N)
TOY_EPSILONS, TOY_GAMMAS = (1e-3, 5e-4), (1.0, 10.0, 100.0, 1000.0)


class Weights(torch.nn.Module):
    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = torch.nn.Parameter(w.clone())


def _ids(n: int) -> llc.IdsDataset:
    return llc.IdsDataset(torch.stack([torch.arange(n), torch.zeros(n, dtype=torch.long)], 1))


def regression(d: int = 6, rank: int = 6, scale: float = 3.0, seed: int = 0):
    """``(model at the least-squares w*, dataset, loss_fn, eigenvalues of H)``; features ``rank`` Gaussians
    times ``scale``, the last ``d - rank`` columns repeating the first ones."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(N, rank, generator=g) * scale
    x = torch.cat([z, z[:, : d - rank]], 1)
    y = x @ torch.ones(d) + 0.5 * torch.randn(N, generator=g)

    def loss_fn(model, ids):
        i = ids[:, 0]
        return (0.5 * (y[i] - x[i] @ model.w) ** 2)[:, None]

    return Weights(torch.linalg.pinv(x) @ y), _ids(N), loss_fn, torch.linalg.eigvalsh(x.T @ x / N).clamp(min=0).tolist()


def product(scale: float = 2.0, seed: int = 0):
    """``y = w1 w2 x``: the model at ``w1 = w2 = sqrt(a*)`` on the curve of minima, dataset, loss_fn."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, generator=g) * scale
    y = x + 0.5 * torch.randn(N, generator=g)
    a = float((x * y).sum() / (x * x).sum())

    def loss_fn(model, ids):
        i = ids[:, 0]
        return (0.5 * (y[i] - model.w[0] * model.w[1] * x[i]) ** 2)[:, None]

    return Weights(torch.tensor([a ** 0.5, a ** 0.5])), _ids(N), loss_fn


def sgld_quadratic(h: list[float], n_beta: float, cfg: llc.LLCConfig) -> float:
    """The expected estimate of settled Euler-SGLD chains on a quadratic loss with Hessian eigenvalues ``h``."""
    return sum(n_beta * x / (2 * (n_beta * x + cfg.gamma) * (1 - cfg.epsilon * (n_beta * x + cfg.gamma) / 4)) for x in h)


def _sampler(model, ds, loss_fn):
    return lambda cfg: llc.sample(model, ds, loss_fn, cfg, llc.default_n_beta(N), metrics=True)


def test_calibration_recovers_d_over_2_and_refuses_the_localisation_dominated_settings():
    """Regression with d = 6: the rule chooses gamma 1 (n beta h ~ 200 >> gamma) where the estimate is d/2
    within the chains' spread, and refuses gamma 100 and 1000, where the estimate is the sharpness
    n beta tr(H) / 2 gamma and the chains' distance is what the localisation alone gives. The old code
    had no rule: its calibration marked every finite setting above the initial loss 'ok' (the
    ``above_init`` check below), the prior-dominated one included."""
    model, ds, loss_fn, h = regression()
    rows, chosen = llc.calibrate_grid(_sampler(model, ds, loss_fn), TOY, TOY_EPSILONS, TOY_GAMMAS)
    by = {(r["epsilon"], r["gamma"]): r for r in rows}
    nb = llc.default_n_beta(N)
    for r in rows:  # the estimator reads what the theory says at every setting, prior-dominated or not
        expect = sgld_quadratic(h, nb, llc.LLCConfig(epsilon=r["epsilon"], gamma=r["gamma"]))
        assert abs(r["llc_mean"] - expect) <= 3 * r["llc_std"] + 0.03 * expect, (r["epsilon"], r["gamma"], r["llc_mean"], expect)
    assert (chosen["epsilon"], chosen["gamma"]) == (1e-3, 1.0) and chosen["passed"]
    assert abs(chosen["llc_mean"] - 3.0) <= 2 * chosen["llc_std"], chosen  # lambda = d / 2 = 3
    assert chosen["distance_ratio"] < 0.5  # the loss holds the chains
    dominated = by[1e-3, 1000.0]
    assert dominated["passed"] is None  # its 10x-gamma neighbour is off the grid: never a candidate
    refused = by[1e-3, 100.0]
    assert refused["passed"] is False and "gamma x10" in refused["why"]
    assert dominated["llc_mean"] < 0.5 * 3.0 and dominated["distance_ratio"] > 0.9  # sharpness, prior-held chains
    old_ok = [r for r in rows if r["finite"] and r["llc_mean"] > 0]  # the old calibration's 'ok'
    assert refused in old_ok and dominated in old_ok


@pytest.mark.parametrize("case, lam", [("flat directions", 1.5), ("product w1 w2", 0.5)])
def test_degenerate_models_recover_their_smaller_learning_coefficient(case, lam):
    """Regression with 6 weights on 3 independent features (the other 3 repeat them): lambda = 3/2, not 3;
    y = w1 w2 x: lambda = 1/2, not 1. At the setting the rule chose for the regular model the rule
    passes (each has flat directions, so the chains' distance is partly the localisation's, under 0.9
    of it) and the estimate is lambda within the chains' spread."""
    model, ds, loss_fn = regression(rank=3)[:3] if case == "flat directions" else product()
    sample_at = _sampler(model, ds, loss_fn)
    base = sample_at(TOY)
    v = llc.judge(base, sample_at(llc.dataclasses.replace(TOY, gamma=TOY.gamma * llc.GAMMA_FACTOR)),
                  sample_at(llc.dataclasses.replace(TOY, epsilon=TOY.epsilon * llc.EPSILON_FACTOR)))
    assert v["passed"], v
    assert 0.5 < v["distance_ratio"] < llc.DISTANCE_MAX
    assert abs(base["llc_mean"] - lam) <= 2 * base["llc_std"] + 0.05 * lam, (base["llc_mean"], base["llc_std"])
    assert abs(base["llc_mean"] - 2 * lam) > 3 * base["llc_std"] / TOY.chains ** 0.5  # d / 2 is excluded: the degeneracy is seen


def sgld_quadratic_trace(h: list[float], n_beta: float, cfg: llc.LLCConfig, t: int) -> float:
    """The expected ``n beta (L_n(w_t) - L_n(w*))`` of Euler-SGLD chains started at ``w*`` after ``t`` steps."""
    out = 0.0
    for x in h:
        k = n_beta * x + cfg.gamma
        r = 1 - cfg.epsilon * k / 2
        out += n_beta * x / 2 * cfg.epsilon * (1 - r ** (2 * t)) / (1 - r * r)
    return out


def test_burn_in_is_left_out_of_the_estimate():
    """A small step (epsilon 2e-4: the chains' loss takes ~25 of the 150 draws to rise): llc_mean, from
    the draws after the burn-in, is the settled chains' value within their spread; devinterp's average
    over every draw (what the old code reported as llc_mean) is lower by what the rise costs (theory:
    the expected trace of Euler-SGLD on this quadratic), about an eighth here."""
    model, ds, loss_fn, h = regression()
    cfg = llc.dataclasses.replace(TOY, epsilon=2e-4)
    nb = llc.default_n_beta(N)
    est = _sampler(model, ds, loss_fn)(cfg)
    settled = sgld_quadratic(h, nb, cfg)
    assert abs(est["llc_mean"] - settled) <= 2 * est["llc_std"] + 0.03 * settled, (est["llc_mean"], settled)
    expect_all = sum(sgld_quadratic_trace(h, nb, cfg, t + 1) for t in range(cfg.draws)) / cfg.draws
    expect_post = sum(sgld_quadratic_trace(h, nb, cfg, t + 1) for t in range(cfg.burnin, cfg.draws)) / (cfg.draws - cfg.burnin)
    assert expect_post - expect_all > 0.1 * settled  # the burn-in costs the all-draws average over 10 %
    # same chains, so their noise cancels in the difference: the old average is low by the burn-in's share
    assert est["llc_mean"] - est["llc_all_draws"] == pytest.approx(expect_post - expect_all, rel=0.3)
    assert est["burn_in_draws"] <= cfg.burnin


def test_judge_by_hand():
    """The rule on hand-made figures: each criterion alone refuses."""
    ok = {"llc_mean": 10.0, "drift": 0.05, "distance_ratio": 0.3, "finite": True}
    assert llc.judge(ok, {"llc_mean": 9.0}, {"llc_mean": 11.0})["passed"]
    assert "gamma x10 changes it by 50%" in llc.judge(ok, {"llc_mean": 5.0}, {"llc_mean": 10.0})["why"]
    assert "epsilon x0.5 changes it by 30%" in llc.judge(ok, {"llc_mean": 10.0}, {"llc_mean": 13.0})["why"]
    assert not llc.judge({**ok, "drift": 0.3}, {"llc_mean": 10.0}, {"llc_mean": 10.0})["passed"]
    assert not llc.judge({**ok, "distance_ratio": 0.97}, {"llc_mean": 10.0}, {"llc_mean": 10.0})["passed"]
    assert not llc.judge({**ok, "finite": False}, {"llc_mean": 10.0}, {"llc_mean": 10.0})["passed"]


def test_prior_distance_and_default_n_beta():
    assert llc.prior_distance(100, 1e-3, 10.0, 10 ** 6) == pytest.approx(math.sqrt(100 / 10.0 / (1 - 1e-3 * 10 / 4)))
    assert llc.prior_distance(4, 1e-2, 0.0, 25) == pytest.approx(1.0)  # no localisation: sqrt(d epsilon T)
    assert llc.default_n_beta(1000) == pytest.approx(1000 / math.log(1000))
    a, b = llc.resolve(llc.LLCConfig(), 500), llc.resolve(llc.LLCConfig(), 5000)  # follows the training-set size
    assert a.n_beta == pytest.approx(500 / math.log(500)) and b.n_beta == pytest.approx(5000 / math.log(5000))
    assert llc.resolve(llc.LLCConfig(n_beta=7.0), 500).n_beta == 7.0


# ---- a run ------------------------------------------------------------------------------------------
FAST = llc.LLCConfig(chains=2, draws=12, burnin=4, batch_size=32)


def test_llc_rows_are_finite_deterministic_and_cached(tiny_copy):
    with pytest.raises(llc.LLCError, match="--llc-force: .* no LLC calibration"):
        llc.run_llc(tiny_copy, FAST, every=2)  # not calibrated: refused
    rows = llc.run_llc(tiny_copy, FAST, every=2, force=True)
    assert [r["step"] for r in rows] == [0, 20, 40]  # every 2nd of 0..40 and the last
    n_train = len(runs.load_run(tiny_copy).dataset.train_idx)
    for r in rows:
        assert all(math.isfinite(r[c]) for c in ("llc_mean", "llc_std", "init_loss", "llc_all_draws", "drift", "seconds"))
        assert len(r["llc_per_chain"]) == 2 and r["rule"] == "forced" and r["burnin"] == FAST.burnin
        assert r["n_beta"] == pytest.approx(n_train / math.log(n_train))  # the default rule, recorded per row
        assert r["llc_mean"] == pytest.approx(sum(r["llc_per_chain"]) / 2, rel=1e-5)
        assert 0 <= r["burn_in_draws"] <= FAST.draws
    # the files round-trip, and the traces are the chains' losses per draw; llc_mean leaves the burn-in out
    back, meta = llc.load_llc(tiny_copy)
    assert [(r["step"], r["llc_mean"], r["rule"]) for r in back] == [(r["step"], r["llc_mean"], r["rule"]) for r in rows]
    tr = meta["traces"]["40"]
    assert meta["settings"]["draws"] == FAST.draws and len(tr) == 2 and len(tr[0]) == FAST.draws
    post = sum(sum(c[FAST.burnin:]) / (FAST.draws - FAST.burnin) for c in tr) / 2
    assert rows[-1]["llc_mean"] == pytest.approx(rows[-1]["n_beta"] * (post - rows[-1]["init_loss"]), rel=1e-6)
    # the init loss is the checkpoint's training loss (devinterp averages batches of the training set)
    run = runs.load_run(tiny_copy)
    train_loss = {m["step"]: m["train_loss"] for m in run.metrics}
    assert rows[-1]["init_loss"] == pytest.approx(train_loss[40], rel=0.05)
    # the same seed gives the same estimates on a fresh directory; a re-run estimates nothing new
    again = llc.run_llc(tiny_copy, FAST, every=2, write=False, force=True)
    assert [r["seconds"] for r in again] == [r["seconds"] for r in rows]
    fresh = tiny_copy.parent / "fresh"
    shutil.copytree(tiny_copy, fresh)
    shutil.rmtree(fresh / runs.ANALYSIS_DIR)
    assert [r["llc_per_chain"] for r in llc.run_llc(fresh, FAST, every=2, force=True)] == [r["llc_per_chain"] for r in rows]
    other = llc.run_llc(fresh, llc.dataclasses.replace(FAST, seed=5), every=4, force=True)
    assert [r["step"] for r in other] == [0, 40] and other[-1]["llc_per_chain"] != rows[-1]["llc_per_chain"]


def test_burn_in_by_hand():
    assert llc.burn_in([1.0, 2.0, 3.0, 3.0, 3.0, 3.0], init_loss=1.0) == 2  # 90% of the rise to 3 is 2.8
    assert llc.burn_in([1.0, 1.5, 1.9, 3.0, 3.0, 3.0], init_loss=1.0) == 3
    assert llc.burn_in([0.5, 0.4, 0.4, 0.4], init_loss=1.0) == 0  # no rise: nothing to burn in


def test_calibration_writes_table_json_and_figure_and_prints_the_rule(tiny_copy, capsys):
    argv = [str(tiny_copy), "--quiet", "--llc-calibrate", "--llc-step", "20", "--llc-chains", "2", "--llc-draws", "12",
            "--llc-burnin", "4", "--llc-batch-size", "32", "--llc-epsilons", "5e-5,1e-4", "--llc-gammas", "1000,100"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    d = tiny_copy / runs.ANALYSIS_DIR
    cal = llc.load_calibration(tiny_copy)
    assert cal["step"] == 20 and len(cal["candidates"]) == 1  # (1e-4, 100): the only point with both neighbours
    c = cal["candidates"][0]
    assert c["settings"]["epsilon"] == 1e-4 and c["settings"]["gamma"] == 100.0 and c["settings"]["draws"] == 12
    assert (d / llc.CALIBRATION_TABLE).read_text().count("\n") == 5 and (d / llc.CALIBRATION_FIGURE).stat().st_size > 1e5
    assert "LLC calibration at step 20" in out and "rule: the estimate changes by <= 20% with gamma x10" in out
    assert ("chosen: ε 0.0001, γ 100" in out) == c["passed"] and ("chosen: none" in out) == (not c["passed"])
    assert out.count("PASS") + out.count("fail: ") == 1


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def _write_calibration(run_dir, passed: bool, cfg=FAST, why="gamma x10 changes it by 80%"):
    n = len(runs.load_run(run_dir).dataset.train_idx)
    settings = llc.dataclasses.asdict(llc.resolve(cfg, n))
    runs.write_text(run_dir / runs.ANALYSIS_DIR / llc.CALIBRATION_FILE, llc.json.dumps({
        "step": 40, "n_train": n, "candidates": [{"settings": settings, "passed": passed, "why": "" if passed else why}],
        "chosen": settings if passed else None}))


def test_refused_settings_exit_2_naming_the_force_flag_and_forced_rows_are_flagged(tiny_copy, capsys):
    """Without a calibration, or at a setting the calibration refused, --llc exits 2 with one line naming
    --llc-force; --llc-force estimates and flags the rows; a passed setting is used by default."""
    base = [str(tiny_copy), "--quiet", "--llc", "--llc-every", "4", "--llc-chains", "2"]
    small = ["--llc-draws", "12", "--llc-burnin", "4", "--llc-batch-size", "32"]
    with pytest.raises(SystemExit) as e:
        main(base + small)
    line = _one_line(capsys)
    assert e.value.code == 2 and "add --llc-force to estimate anyway" in line and "no LLC calibration" in line
    _write_calibration(tiny_copy, passed=False)
    with pytest.raises(SystemExit) as e:
        main(base + small)
    line = _one_line(capsys)
    assert e.value.code == 2 and "--llc-force" in line and "gamma x10 changes it by 80%" in line
    assert not (tiny_copy / runs.ANALYSIS_DIR / llc.LLC_TABLE).exists()
    assert main(base + small + ["--llc-force"]) == 0
    assert "forced" in capsys.readouterr().out and {r["rule"] for r in llc.load_llc(tiny_copy)[0]} == {"forced"}
    _write_calibration(tiny_copy, passed=True)
    assert main(base) == 0  # the chosen settings (draws 12, burn-in 4, batch 32) without their flags
    rows, meta = llc.load_llc(tiny_copy)
    assert {r["rule"] for r in rows} == {"passed"} and meta["settings"]["draws"] == 12
    with pytest.raises(SystemExit) as e:
        main(base + ["--llc-gamma", "10"])  # another gamma: not what the calibration passed
    assert e.value.code == 2 and "did not check it" in _one_line(capsys)


@pytest.mark.parametrize("argv, words", [
    (["--llc", "--llc-every", "0"], "--llc-every 0"),
    (["--llc-every", "3"], "needs --llc"),
    (["--llc-step", "10"], "needs --llc-calibrate"),
    (["--llc-force"], "--llc-force: needs --llc"),
    (["--llc", "--llc-force", "--llc-chains", "0"], "--llc-chains 0"),
    (["--llc", "--llc-force", "--llc-epsilon", "nan"], "--llc-epsilon nan"),
    (["--llc", "--llc-force", "--llc-nbeta", "-1"], "--llc-nbeta -1"),
    (["--llc", "--llc-force", "--llc-draws", "10", "--llc-burnin", "9"], "--llc-burnin 9"),
    (["--llc", "--llc-force", "--llc-gammas", "1,10"], "--llc-gammas 1,10: needs --llc-calibrate"),
    (["--llc-calibrate", "--llc-gammas", "10,20,50"], "--llc-gammas 10,20,50: needs a value and that value x10"),
    (["--llc-calibrate", "--llc-epsilons", "1e-4,x"], "--llc-epsilons 1e-4,x: not a comma-separated list"),
    (["--llc-calibrate", "--llc-epsilons", "1e-4,0"], "--llc-epsilons 1e-4,0: every value must be a positive"),
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
        main([str(tiny_copy), "--quiet", "--llc", "--llc-force"])
    assert e.value.code == 2 and "optional extra 'llc'" in _one_line(capsys)


def test_cli_and_report_show_the_llc(tiny_copy, capsys):
    from interp import report

    argv = [str(tiny_copy), "--quiet", "--llc", "--llc-force", "--llc-every", "4", "--llc-chains", "2", "--llc-draws", "12",
            "--llc-burnin", "4", "--llc-batch-size", "32"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    rows, meta = llc.load_llc(tiny_copy)
    assert f"LLC of {len(rows)} checkpoints" in out and [r["step"] for r in rows] == [0, 40]
    view = report.collect(tiny_copy)
    fig = {f.key: f for f in report.stability_mechanism_figures([view])}["llc"]
    assert llc.llc_sentence(rows, view.rows, meta) in fig.caption and "too few checkpoints for a rank correlation" in fig.caption
    assert "NOT passed by the calibration rule (forced) at 2 of 2 checkpoints" in fig.caption
    trace = next(t for t in fig.fig.data if t.name.startswith("LLC"))
    assert [y for y in trace.y if y is not None] == pytest.approx([r["llc_mean"] for r in rows], rel=1e-6)
