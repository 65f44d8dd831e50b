"""The tickets experiment: its summary (a known answer), checkpoints and masks, bad input, a tiny real run."""

import dataclasses
import json
from argparse import Namespace

import pytest
import torch

from interp import load_run, prune, runs
from interp.experiment import main as experiment_main
from interp.config import TrainConfig
from interp.experiments import tickets
from interp.families import build_model
from interp.model import hooked_logits
from interp.losses import loss_fn
from interp.report import main as report_main
from interp.sweep import Spec, expand, write_results
from interp.tasks import make_dataset
from tests.conftest import tiny_config

K0 = tickets.K_SWEEP_WD0


def fake_method(d, curves):
    """A sweep directory ``d`` over seeds whose members' metrics are ``curves[seed] = [(step, train_acc, test_acc), ...]``."""
    spec = Spec({"task": "mod_add", "p": 13}, {"seed": sorted(curves)})
    rows = {}
    for m in expand(spec):
        run = d / "runs" / m.name
        run.mkdir(parents=True)
        runs.write_metrics(run, [{"step": s, "train_acc": tr, "test_acc": te} for s, tr, te in curves[m.values["seed"]]])
        rows[m.name] = {"status": "ok", "reason": ""}
    write_results(d, spec, expand(spec), {n: {**{c: None for c in ("train_99_step", "test_99_step", "final_step", "final_train_acc",
                                                                  "final_test_acc", "final_test_loss", "final_param_norm", "wall_s")}, **r}
                                          for n, r in rows.items()})


def curve(t_mem, t_gen, last=1000):
    return [(s, 1.0 if t_mem is not None and s >= t_mem else 0.5, 1.0 if t_gen is not None and s >= t_gen else 0.1) for s in range(0, last + 1, 100)]


def test_summary_known_answer(tmp_path):
    fake_method(tmp_path / "dense", {1: curve(100, 800), 2: curve(200, 600), 3: curve(100, None)})
    fake_method(tmp_path / "ticket", {1: curve(100, 300), 2: curve(100, 200), 3: curve(100, 500, last=500)})
    for s, t in ((1, None), (2, 900), (3, None)):
        fake_method(tmp_path / "dense_l1" / f"seed{s}", {s: curve(300, t)})
    fake_method(tmp_path / "ticket_mem", {1: curve(100, None), 2: curve(100, 900)})
    fake_method(tmp_path / "ticket_k" / "k0.3", {1: curve(100, 700), 2: curve(100, None)})
    fake_method(tmp_path / "ticket_k" / "k0.9", {1: curve(100, None), 2: curve(100, None)})
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "masks.json").write_text(json.dumps({
        "ticket_seed1": {"k": 0.6, "from_step": 900}, "ticket_seed2": {"k": 0.6, "from_step": 1000}, "ticket_seed3": {"k": 0.6, "from_step": 700},
        "ticket_mem_seed1": {"k": 0.6, "from_step": 100}, "ticket_mem_seed2": {"k": 0.6, "from_step": 200},
        "ticket_k0.3_seed1": {"k": 0.3, "from_step": 900}, "rescale_seed1": {"dense_l1": 0.5},
        "dense_seed1": {"t_gen": 800, "ticket_step": 1000}, "dense_seed3": {"t_gen": None, "ticket_step": None}}))
    summary = tickets.summarise(tmp_path)
    assert [(r["method"], r["k"]) for r in summary] == [("dense", None), ("ticket", 0.6), ("dense_l1", 0.6), ("ticket_mem", 0.6),
                                                        ("ticket", 0.3), ("ticket", 0.9)]
    assert tickets.labels(summary) == ["dense", "ticket", "dense_l1", "ticket_mem", "ticket k=0.3", "ticket k=0.9"]
    # the dense step each ticket came from (masks.json), for the tickets at the arms' k only
    assert [(r["median_from_step"], r["min_from_step"], r["max_from_step"]) for r in summary] == [
        (None, None, None), (900, 700, 1000), (None, None, None), (150, 100, 200), (None, None, None), (None, None, None)]
    # the contrast table: the tickets by when they were taken, in the order of the dense run
    assert [r["method"] for r in tickets.stage_rows(summary)] == ["ticket_mem", "ticket"]
    k3 = summary[4]
    assert (k3["seeds"], k3["generalised"], k3["median_t_gen"], k3["min_t_gen"], k3["speedup_vs_dense"]) == (2, 1, None, 700, None)
    rows = {r["method"]: r for r in summary[:3]}
    d, t, l1 = rows["dense"], rows["ticket"], rows["dense_l1"]
    assert (d["seeds"], d["k"], d["memorised"], d["median_t_mem"], d["min_t_mem"], d["max_t_mem"]) == (3, None, 3, 100, 100, 200)
    assert (d["generalised"], d["never"], d["median_t_gen"], d["min_t_gen"], d["max_t_gen"], d["budget"]) == (2, 1, 800, 600, 800, 1000)
    assert (t["k"], t["median_t_gen"], t["min_t_gen"], t["max_t_gen"], t["never"], t["speedup_vs_dense"]) == (0.6, 300, 200, 500, 0, 2.67)
    assert (l1["seeds"], l1["generalised"], l1["never"], l1["median_t_gen"], l1["speedup_vs_dense"]) == (3, 1, 2, None, None)
    assert l1["median_t_mem"] == 300
    # the dense seed that never generalised is named in the dense row (and no other), and in the note
    assert d["no_ticket_seeds"] == "3" and all(r["no_ticket_seeds"] is None for r in summary[1:])
    assert tickets.tickets_note(summary) == ("Dense seed 3 gave no ticket: within 1 000 steps it never reached 99% test accuracy, or it did "
                                             "and cleanup had not ended by the rule (cleanup_end); every arm left it out.").replace("1 000", tickets.fmt(1000))


def test_a_diverged_member_counts_in_its_rows_seeds_and_is_said(tmp_path):
    """Issue 24 item 4: ticket seed 3 forced to NaN counts among the seeds as one that never generalised, and the row
    says 1 of 3 diverged (members() keeps it; the old count left the row silent)."""
    from interp import tables

    fake_method(tmp_path / "dense", {1: curve(100, 800), 2: curve(200, 600), 3: curve(100, 700)})
    fake_method(tmp_path / "ticket", {1: curve(100, 300), 2: curve(100, 200), 3: curve(100, None)})
    rs = tables.read_csv(tmp_path / "ticket" / "results.csv")
    rs[2].update(status="failed", reason="training loss is not finite at step 150")
    tables.write_csv(tmp_path / "ticket" / "results.csv", rs)
    rows = {r["method"]: r for r in tickets.summarise(tmp_path)}
    assert (rows["ticket"]["seeds"], rows["ticket"]["diverged"], rows["ticket"]["generalised"]) == (3, 1, 2)
    assert rows["dense"]["diverged"] == 0
    table = tables.experiment_tables(list(rows.values()), tickets.TABLES)[0]
    assert [c[table[1].index("diverged")] for c in table[2]] == ["0 of 3", "1 of 3"]


def test_source_checkpoints():
    steps = list(range(0, 301, 10))
    metrics = [{"step": s, "train_acc": 1.0 if s >= 20 else 0.3, "test_acc": 1.0 if s >= 80 else 0.96 if s >= 70 else 0.1} for s in steps]
    gini = [{"step": s, "gini_W_E": min(0.2 + 0.01 * s, 0.9)} for s in steps]  # rises until step 70, flat after
    # cleanup ends at the first s whose last fifth of steps (>= 0.8 s) holds >= 5 checkpoints that moved < 0.01:
    # 0.8 s >= 70 from s = 90 on, five checkpoints 10 apart from s = 200 on
    assert tickets.source_steps(metrics, steps, gini) == {"ticket": 200, "ticket_mem": 20, "ticket_mid": 40, "ticket_99": 80}
    assert tickets.source_steps(metrics, [0, 50, 100, 200], gini) == {"ticket": 200, "ticket_mem": 50, "ticket_mid": 50, "ticket_99": 100}
    never = [{**r, "test_acc": 0.1} for r in metrics]  # never generalised: no ticket; mid-way between t_mem and the last checkpoint
    assert tickets.source_steps(never, steps, gini)["ticket"] is None and tickets.source_steps(never, steps, gini)["ticket_99"] is None
    assert tickets.source_steps(never, steps, gini)["ticket_mid"] == 160


def nanda_gini_at(s, rise=(9_400, 14_000), low=0.25, high=0.9):
    """A Gini of W_E shaped like Nanda et al.'s p = 113 run: flat through memorisation and circuit
    formation, rising steeply through cleanup (9.4k-14k steps), flat after."""
    a, b = rise
    return low if s <= a else high if s >= b else low + (high - low) * (s - a) / (b - a)


def nanda_gini(every=500, last=40_000, rise=(9_400, 14_000)):
    """``nanda_gini_at`` at checkpoints every 500 steps (the full version's dense checkpoints)."""
    return [{"step": s, "gini_W_E": nanda_gini_at(s, rise)} for s in range(0, last + 1, every)]


def nanda_metrics(t_99=10_700, every=100, last=40_000):
    """Test accuracy 0.1 until 9 900, 0.95 from there, 0.99 from ``t_99`` (Nanda et al.: 99% at about 10.7k)."""
    return [{"step": s, "train_acc": 1.0, "test_acc": 0.1 if s < 9_900 else 0.95 if s < t_99 else 0.995} for s in range(0, last + 1, every)]


def test_cleanup_end_known_answer():
    """The ticket is taken after cleanup: on a Gini curve rising 9.4k-14k and flat after, the rule picks a step
    after 14k; the old rule (the last checkpoint of a dense run stopped 500 steps after 99 % test accuracy) took
    it at 11 200, with the Gini only 40 % of the way up."""
    gini, metrics = nanda_gini(), nanda_metrics()
    step = tickets.ticket_step(metrics, gini)
    assert step is not None and step > 14_000
    # the first checkpoint s whose last fifth [0.8 s, s] holds only checkpoints from the rise's end on:
    # 0.8 * 17 000 = 13 600, and the first checkpoint in [13 600, 17 000] is 14 000
    assert step == 17_000
    old = tickets.first_step(metrics, "test_acc", 0.99) + 500
    assert old == 11_200 and nanda_gini_at(old) < 0.25 + 0.5 * (0.9 - 0.25)  # mid-cleanup: the old rule's ticket was taken during the rise
    # a curve still rising at the end of the run, or a run that never reached 99%, gives no ticket
    assert tickets.ticket_step(metrics, nanda_gini(rise=(9_400, 40_000))) is None
    assert tickets.ticket_step([{**r, "test_acc": min(r["test_acc"], 0.98)} for r in metrics], gini) is None
    # a flat stretch before the run generalised does not count (the memorisation plateau is flat too)
    late = nanda_gini(rise=(20_000, 24_000))  # a long flat plateau before a late cleanup
    assert tickets.cleanup_end(late, grok_step=0) < 20_000  # without the gate the plateau would pass...
    assert tickets.ticket_step(nanda_metrics(t_99=21_000), late) > 24_000  # ...with it, the end of the late cleanup
    # small wobbles after cleanup (below the tolerance) do not stop the rule, larger ones do
    wobble = [{**r, "gini_W_E": r["gini_W_E"] + (0.004 if r["step"] % 1000 else 0.0)} for r in gini]
    assert tickets.ticket_step(metrics, wobble) == 17_000
    shaky = [{**r, "gini_W_E": r["gini_W_E"] + (0.02 if r["step"] % 1000 else 0.0)} for r in gini]
    assert tickets.ticket_step(metrics, shaky) is None


def _args(**kw):
    return Namespace(**{"quick": False, "p": None, "k": 0.6, "cap": None, "k_sweep": None, "ks": None, "ks_wd0": None, **kw})


def test_full_version_dense_cap_is_every_arms_budget_and_the_k_grids():
    full = _args()
    dense = tickets.dense_spec(full)
    assert dense.base["p"] == 113 and dense.base["steps"] == tickets.FULL_CAP == 50_000
    # the dense run trains its whole cap (its cleanup must end within it); the arms stop 500 steps after 99 %
    assert "stop_after_grok" not in dense.base and dense.grid == {"seed": tickets.SEEDS}
    arm = tickets.arm_base(full, dense)
    assert arm["steps"] == dense.base["steps"] and arm["stop_after_grok"] == tickets.STOP_AFTER_GROK
    assert {**arm, "save_every": 0, "stop_after_grok": None} == {**dense.base, "save_every": 0, "stop_after_grok": None}
    capped = _args(cap=20_000)
    assert tickets.arm_base(capped, tickets.dense_spec(capped))["steps"] == tickets.dense_spec(capped).base["steps"] == 20_000
    # k is the fraction removed: 0.3 ... 0.9 with weight decay, 0.80 ... 0.90 without, the critical 0.81 among them
    ks, ks0 = tickets.sweep_rates(full)
    assert ks == (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    assert min(ks0) == 0.8 and max(ks0) == 0.9 and 0.81 in ks0 and list(ks0) == sorted(ks0)
    assert tickets.sweep_rates(_args(k_sweep=False)) == ((), ())
    assert tickets.mask_name(0.6, 0.6) == "ticket" and tickets.mask_name(0.81, 0.6) == "ticket_k0.81"
    # the quick version: the dense run 8 000 steps (its cleanup must end within them), every arm 3 000, no early stop, no k sweep
    quick = _args(quick=True)
    qd = tickets.dense_spec(quick)
    assert qd.base["steps"] == tickets.QUICK_DENSE_STEPS == 8000 and tickets.arm_base(quick, qd)["steps"] == 3000
    assert "stop_after_grok" not in qd.base
    assert tickets.dense_spec(_args(quick=True, cap=10_000)).base["steps"] == 10_000
    assert tickets.arm_base(quick, qd)["save_every"] == 100 and qd.base["save_every"] == tickets.QUICK_DENSE_SAVE == 50
    assert "stop_after_grok" not in tickets.arm_base(quick, qd)
    assert tickets.sweep_rates(quick) == ((), ()) and tickets.sweep_rates(_args(quick=True, ks="0.5,0.3")) == ((0.3, 0.5), K0)


def test_norm_matched_controls_rescale_the_parameters_whose_norm_they_match():
    """``init_scale`` multiplies every parameter, so the factor must match the norm of every parameter: the
    rescaled dense network starts at exactly the ticket's L1 (L2) norm over all of its parameters. (The old
    factor matched the weight matrices' norm but was applied to the positional embedding too.)"""
    cfg = tiny_config(seed=3)
    model = build_model(cfg)
    weights = {n: q for n, q in model.named_parameters() if prune.is_prunable(n)}
    ticket = prune.keep_top(prune.magnitude(weights), 0.6)
    factors = tickets.rescale_factors(cfg, ticket)
    at_step0 = {n: q.detach() * ticket[n] if n in ticket else q.detach() for n, q in model.named_parameters()}  # the ticket's start
    want = prune.norms(at_step0)
    assert (factors["ticket_l1"], factors["ticket_l2"]) == pytest.approx(want, rel=1e-12)
    for arm, i in (("dense_l1", 0), ("dense_l2", 1)):
        scaled = build_model(dataclasses.replace(cfg, init_scale=factors[arm]))
        got = prune.norms(dict(scaled.named_parameters()))
        assert got[i] == pytest.approx(want[i], rel=1e-6)
        # the same parameters are multiplied: every one of them by the factor
        for n, q in scaled.named_parameters():
            torch.testing.assert_close(q.detach(), dict(model.named_parameters())[n].detach() * factors[arm])


def test_snip_masks_use_the_models_training_gradient():
    cfg = tiny_config(seed=4)
    got = tickets.init_masks(cfg, "snip", 0.6, "global")
    model, data = build_model(cfg), make_dataset(cfg)
    loss_fn(hooked_logits(model, data.inputs[data.train_idx]), data.train_labels).backward()
    want = prune.keep_top({n: (p.grad * p).abs() for n, p in model.named_parameters() if prune.is_prunable(n)}, 0.6)
    assert got.keys() == want.keys()
    agree = sum((got[n] == want[n]).sum().item() for n in got) / sum(m.numel() for m in got.values())
    assert agree > 0.999  # the same ranking up to float rounding at the threshold


@pytest.mark.parametrize("argv, message", [
    (["--k", "1.0"], "--k 1.0"), (["--k", "0"], "--k 0.0"), (["--cap", "0"], "--cap 0"), (["--scope", "row"], "invalid choice"),
    (["--ks", "0.5,1.5"], "--ks 1.5"), (["--ks-wd0", "0"], "--ks-wd0 0.0"), (["--ks", ","], "--ks ,: give at least one"),
    (["--ks", "0.5,x"], "--ks 0.5,x: not a comma-separated list of numbers"), (["--p", "1"], "--p 1"),
])
def test_bad_input_exit_2_and_write_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "x"
    try:
        code = experiment_main(["tickets", "--quick", "--out", str(out), *argv])
    except SystemExit as e:  # argparse refuses it
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err
    assert not out.exists()


# p = 13 at weight decay 2: the assertions hold whichever seeds give a ticket (generalise and end their cleanup
# within 200 steps), as long as one does
TINY = Spec({"task": "mod_add", "p": 13, "frac": 0.8, "d_model": 32, "d_mlp": 64, "lr": 3e-2, "wd": 2.0, "steps": 200, "eval_every": 5,
             "save_every": 5}, {"seed": [1, 2]})


def test_tiny_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tickets, "dense_spec", lambda args: TINY)
    monkeypatch.setattr(tickets, "SEEDS", [1, 2])
    monkeypatch.setattr(tickets, "SYNFLOW_ROUNDS", 3)
    out = tmp_path / "t"
    argv = ["tickets", "--quick", "--out", str(out), "--cap", "200", "--ks", "0.5", "--ks-wd0", "0.85", "--quiet"]
    assert experiment_main(argv) == 0
    info = json.loads((out / "masks" / "masks.json").read_text())
    dense_runs = {s: out / "dense" / "runs" / f"seed{s}" for s in (1, 2)}
    steps = {s: tickets.ticket_step(runs.read_metrics(d), tickets.gini_curve(d)) for s, d in dense_runs.items()}
    assert {s: info[f"dense_seed{s}"]["ticket_step"] for s in (1, 2)} == steps
    with_ticket = [s for s in (1, 2) if steps[s] is not None]
    assert with_ticket, "no tiny dense run gave a ticket: the rest of this test needs one"
    summary = tickets.summarise(out)
    assert [(r["method"], r["k"]) for r in summary] == [("dense", None)] + [(m, 0.6) for m in tickets.METHODS[1:]] + [("ticket", 0.5), ("ticket_wd0", 0.85)]
    assert summary[0]["no_ticket_seeds"] == (" ".join(str(s) for s in (1, 2) if steps[s] is None) or None)
    assert all(r["seeds"] == len(with_ticket) for r in summary[1:])  # seeds without a ticket are in no arm
    # every arm (controls, pruning at init, the k sweep) gets the dense run's cap as its budget
    configs = [json.loads(c.read_text())["config"] for c in out.rglob("config.json")]
    assert len(configs) == 2 + len(with_ticket) * (len(tickets.METHODS) - 1 + 2)
    assert {c["steps"] for c in configs} == {200} and all(r["budget"] == 200 for r in summary)
    for seed in with_ticket:
        dense = dense_runs[seed]
        masks = prune.read_masks(out / "masks" / f"ticket_seed{seed}.safetensors", build_model(tiny_config()))
        n = sum(m.numel() for m in masks.values())
        assert sum(m.sum().item() for m in masks.values()) == n - round(0.6 * n)  # k is the fraction removed
        # the ticket is the largest weights of the checkpoint where cleanup ended, after 99 % test accuracy...
        assert info[f"ticket_seed{seed}"]["from_step"] == steps[seed] >= info[f"dense_seed{seed}"]["t_99"] >= info[f"dense_seed{seed}"]["t_gen"]
        order = [info[f"{a}_seed{seed}"]["from_step"] for a in tickets.STAGES]  # the four moments, in the dense run's order
        assert order == sorted(order) and info[f"ticket_99_seed{seed}"]["from_step"] >= info[f"dense_seed{seed}"]["t_99"]
        final = dict(runs.load_checkpoint(dense, steps[seed]).named_parameters())
        kept = torch.cat([final[k].abs()[m > 0] for k, m in masks.items()])
        cut = torch.cat([final[k].abs()[m == 0] for k, m in masks.items()])
        assert kept.min() >= cut.max()
        # ...rewound to the dense run's step-0 weights, and its pruned weights stay 0 to the end
        init = dict(runs.load_checkpoint(dense, 0).named_parameters())
        ticket = out / "ticket" / "runs" / f"seed{seed}"
        t0, t_end = dict(runs.load_checkpoint(ticket, 0).named_parameters()), dict(load_run(ticket).load_model().named_parameters())
        for k, m in masks.items():
            assert torch.equal(t0[k], init[k] * m) and bool((t_end[k][m == 0] == 0).all())
        assert torch.equal(t0["pos_embed.W_pos"], init["pos_embed.W_pos"])
        # the rescaled dense controls start at the ticket's L1 / L2 norm (every parameter, as init_scale multiplies every one)
        ticket_norms = prune.norms(t0)
        for arm, i in (("dense_l1", 0), ("dense_l2", 1)):
            w = dict(runs.load_checkpoint(out / arm / f"seed{seed}" / "runs" / f"seed{seed}", 0).named_parameters())
            assert prune.norms(w)[i] == pytest.approx(ticket_norms[i], rel=1e-5)
        assert info[f"ticket_mid_seed{seed}"]["from_step"] in runs.checkpoint_steps(dense)
        wd0 = json.loads((out / "ticket_wd0" / "runs" / f"seed{seed}" / "config.json").read_text())["config"]
        assert wd0["wd"] == 0.0 and wd0["mask_from"].endswith("ticket_seed{seed}.safetensors")
        # the k sweep: the same checkpoint pruned at other rates, with and without weight decay
        for k, stage, wd in ((0.5, "ticket_k/k0.5", 2.0), (0.85, "ticket_wd0_k/k0.85", 0.0)):
            mk = prune.read_masks(out / "masks" / f"ticket_k{k:g}_seed{seed}.safetensors", build_model(tiny_config()))
            assert sum(m.sum().item() for m in mk.values()) == n - round(k * n)
            assert info[f"ticket_k{k:g}_seed{seed}"] == {**info[f"ticket_k{k:g}_seed{seed}"], "from_step": steps[seed], "k": k}
            cfg = json.loads((out / stage / "runs" / f"seed{seed}" / "config.json").read_text())["config"]
            assert cfg["wd"] == wd and cfg["mask_from"].endswith(f"ticket_k{k:g}_seed{{seed}}.safetensors")
    capsys.readouterr()
    assert report_main([str(out), "--quiet"]) == 0
    page = (out / "report.html").read_text()
    d = summary[0]
    assert (f"dense: median t_gen {d['median_t_gen']:g} ({d['generalised']} of 2 seeds generalised within 200 steps)" if d["median_t_gen"] is not None
            else f"dense: {d['generalised']} of 2 seeds generalised within 200 steps, so no median.") in page
    assert "99% test accuracy: taken at dense step" in page  # the contrast figure's caption
    assert "ticket k=0.5: " in page and "ticket_wd0 k=0.85: " in page
    # a re-run resumes: nothing is trained again and the masks are kept
    before = (out / "masks" / f"snip_seed{with_ticket[0]}.safetensors").stat().st_mtime_ns
    assert experiment_main(argv) == 0
    assert (out / "masks" / f"snip_seed{with_ticket[0]}.safetensors").stat().st_mtime_ns == before


# Minegishi et al.'s MLP shape (tickets-mlp: one table, one shared map, projected back) at a tiny size: both seeds
# give a ticket within 200 steps on this CPU (the assertions need one)
TINY_MLP = Spec({"task": "mod_add", "p": 13, "frac": 0.8, "family": "mlp", "mlp_embed": "tied", "mlp_combine": "shared",
                 "mlp_unembed": "project", "mlp_init": "minegishi", "d_model": 32, "d_mlp": 48, "lr": 3e-2, "wd": 2.0,
                 "steps": 200, "eval_every": 5, "save_every": 5}, {"seed": [1, 2]})


def test_tiny_end_to_end_on_minegishis_mlp(tmp_path, monkeypatch):
    """--setting mlp's model through the whole experiment: every weight matrix of the MLP is prunable, the ticket
    keeps the largest weights of the dense run where its cleanup ended (the Gini of the operand embedding), the
    pruned weights stay 0, and the pruned-at-init controls (SNIP, GraSP, SynFlow) read the MLP's logits."""
    monkeypatch.setattr(tickets, "dense_spec", lambda args: TINY_MLP)
    monkeypatch.setattr(tickets, "SEEDS", [1, 2])
    monkeypatch.setattr(tickets, "SYNFLOW_ROUNDS", 3)
    out = tmp_path / "t"
    assert experiment_main(["tickets", "--quick", "--setting", "mlp", "--out", str(out), "--cap", "200", "--quiet"]) == 0
    info = json.loads((out / "masks" / "masks.json").read_text())
    seeds = [s for s in (1, 2) if info[f"dense_seed{s}"]["ticket_step"] is not None]
    assert seeds, "no tiny dense MLP gave a ticket: the rest of this test needs one"
    cfg = TrainConfig(**{**TINY_MLP.base, "seed": 1})
    names = {n for n, _ in build_model(cfg).named_parameters()}
    for seed in seeds:
        masks = prune.read_masks(out / "masks" / f"ticket_seed{seed}.safetensors", build_model(cfg))
        assert set(masks) == {n for n in names if not n.endswith("bias")} == {"embed.0", "first.0.weight", "layers.0.weight", "layers.1.weight"}
        n = sum(m.numel() for m in masks.values())
        assert sum(m.sum().item() for m in masks.values()) == n - round(0.6 * n)
        dense = out / "dense" / "runs" / f"seed{seed}"
        step = info[f"ticket_seed{seed}"]["from_step"]
        assert step == tickets.ticket_step(runs.read_metrics(dense), tickets.gini_curve(dense))
        final = dict(runs.load_checkpoint(dense, step).named_parameters())
        assert torch.cat([final[k].abs()[m > 0] for k, m in masks.items()]).min() >= torch.cat([final[k].abs()[m == 0] for k, m in masks.items()]).max()
        t_end = dict(load_run(out / "ticket" / "runs" / f"seed{seed}").load_model().named_parameters())
        assert all(bool((t_end[k][m == 0] == 0).all()) for k, m in masks.items())
        for method in ("snip", "grasp", "synflow"):
            assert info[f"{method}_seed{seed}"]["kept"] == pytest.approx(0.4, abs=0.01)
    summary = tickets.summarise(out)
    assert summary[0]["method"] == "dense" and all(r["seeds"] == len(seeds) for r in summary[1:])
