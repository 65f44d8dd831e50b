"""The tickets experiment: its summary (a known answer), checkpoints and masks, bad input, a tiny real run."""

import json
from argparse import Namespace

import pytest
import torch

from interp import load_run, prune, runs
from interp.experiment import main as experiment_main
from interp.experiments import tickets
from interp.families import build_model
from interp.model import hooked_logits, loss_fn
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
    fake_method(tmp_path / "ticket_k" / "k0.3", {1: curve(100, 700), 2: curve(100, None)})
    fake_method(tmp_path / "ticket_k" / "k0.9", {1: curve(100, None), 2: curve(100, None)})
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "masks.json").write_text(json.dumps({
        "ticket_seed1": {"k": 0.6}, "ticket_k0.3_seed1": {"k": 0.3}, "rescale_seed1": {"dense_l1": 0.5},
        "dense_seed1": {"t_gen": 800, "ticket_step": 1000}, "dense_seed3": {"t_gen": None, "ticket_step": None}}))
    summary = tickets.summarise(tmp_path)
    assert [(r["method"], r["k"]) for r in summary] == [("dense", None), ("ticket", 0.6), ("dense_l1", 0.6), ("ticket", 0.3), ("ticket", 0.9)]
    assert tickets.labels(summary) == ["dense", "ticket", "dense_l1", "ticket k=0.3", "ticket k=0.9"]
    k3 = summary[3]
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
    assert tickets.tickets_note(summary) == ("Dense seed 3 never reached 95% test accuracy within 1 000 steps: no ticket was taken from it, "
                                             "and every arm left it out.").replace("1 000", tickets.fmt(1000))


def test_source_checkpoints():
    metrics = [{"step": s, "train_acc": 1.0 if s >= 20 else 0.3, "test_acc": 1.0 if s >= 80 else 0.1} for s in range(0, 101, 10)]
    assert tickets.source_steps(metrics, list(range(0, 101, 10))) == {"ticket": 100, "ticket_mem": 20, "ticket_mid": 50}
    assert tickets.source_steps(metrics, [0, 50, 100]) == {"ticket": 100, "ticket_mem": 50, "ticket_mid": 50}
    never = [{**r, "test_acc": 0.1} for r in metrics]  # never generalised: no ticket; mid-way between t_mem and the last checkpoint
    assert tickets.source_steps(never, list(range(0, 101, 10)))["ticket"] is None
    assert tickets.source_steps(never, list(range(0, 101, 10)))["ticket_mid"] == 60


def grokking_curve(t_gen, last=2000, every=100):
    """Test accuracy 0.1 until ``t_gen``, 0.95 there (the paper's threshold), 1.0 after; None: never."""
    return [{"step": s, "train_acc": 1.0, "test_acc": 0.1 if t_gen is None or s < t_gen else 0.95 if s == t_gen else 1.0}
            for s in range(0, last + 1, every)]


def test_the_ticket_is_taken_at_or_after_t_gen():
    grokked = grokking_curve(1200)
    assert tickets.ticket_step(grokked, list(range(0, 2001, 500))) == 2000  # the last checkpoint, after t_gen
    assert tickets.ticket_step(grokked, [0, 500, 1200]) == 1200  # a checkpoint exactly at t_gen counts
    assert tickets.ticket_step(grokked, [0, 500, 1000]) is None  # checkpoints only before t_gen: no ticket
    assert tickets.ticket_step(grokked, []) is None
    assert tickets.ticket_step(grokking_curve(None), list(range(0, 2001, 500))) is None  # never generalised
    # t_gen is at 95% test accuracy (the paper's threshold), not at 99%
    almost = [{**r, "test_acc": min(r["test_acc"], 0.96)} for r in grokked]
    assert tickets.ticket_step(almost, [0, 1000, 1500]) == 1500
    assert tickets.ticket_step([{**r, "test_acc": min(r["test_acc"], 0.94)} for r in grokked], [0, 1500]) is None
    assert tickets.ticket_step(almost, [0, 1000, 1500], threshold=0.99) is None


def _args(**kw):
    return Namespace(**{"quick": False, "p": None, "k": 0.6, "cap": None, "k_sweep": None, "ks": None, "ks_wd0": None, **kw})


def test_full_version_dense_cap_is_every_arms_budget_and_the_k_grids():
    full = _args()
    dense = tickets.dense_spec(full)
    assert dense.base["p"] == 113 and dense.base["steps"] == tickets.FULL_CAP == 50_000
    assert dense.base["stop_after_grok"] == tickets.STOP_AFTER_GROK and dense.grid == {"seed": tickets.SEEDS}
    arm = tickets.arm_base(full, dense)
    assert arm["steps"] == dense.base["steps"] and arm["stop_after_grok"] == dense.base["stop_after_grok"]
    assert {**arm, "save_every": 0} == {**dense.base, "save_every": 0}  # the arms change only what their masks or scale say
    capped = _args(cap=20_000)
    assert tickets.arm_base(capped, tickets.dense_spec(capped))["steps"] == tickets.dense_spec(capped).base["steps"] == 20_000
    # k is the fraction removed: 0.3 ... 0.9 with weight decay, 0.80 ... 0.90 without, the critical 0.81 among them
    ks, ks0 = tickets.sweep_rates(full)
    assert ks == (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    assert min(ks0) == 0.8 and max(ks0) == 0.9 and 0.81 in ks0 and list(ks0) == sorted(ks0)
    assert tickets.sweep_rates(_args(k_sweep=False)) == ((), ())
    assert tickets.mask_name(0.6, 0.6) == "ticket" and tickets.mask_name(0.81, 0.6) == "ticket_k0.81"
    # the quick version is what was measured: dense and every arm 3 000 steps, no early stop, no k sweep
    quick = _args(quick=True)
    qd = tickets.dense_spec(quick)
    assert qd.base["steps"] == tickets.arm_base(quick, qd)["steps"] == 3000 and "stop_after_grok" not in qd.base
    assert tickets.arm_base(quick, qd)["save_every"] == qd.base["save_every"] == 100
    assert tickets.sweep_rates(quick) == ((), ()) and tickets.sweep_rates(_args(quick=True, ks=(0.5, 0.3))) == ((0.3, 0.5), K0)


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
    (["--ks", "0.5,1.5"], "--ks 1.5"), (["--ks-wd0", "0"], "--ks-wd0 0.0"), (["--ks", ","], "--ks: give at least one"),
    (["--ks", "0.5,x"], "invalid comma-separated list of pruning rates value"), (["--p", "1"], "--p 1"),
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


# p = 13 at weight decay 2: on the development machine seed 1 never reaches 95% test accuracy within 100 steps
# (no ticket) and seed 2 does; the assertions hold whichever seeds generalise, as long as one does
TINY = Spec({"task": "mod_add", "p": 13, "frac": 0.8, "d_model": 32, "d_mlp": 64, "lr": 3e-2, "wd": 2.0, "steps": 100, "eval_every": 10,
             "save_every": 10}, {"seed": [1, 2]})


def test_tiny_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tickets, "dense_spec", lambda args: TINY)
    monkeypatch.setattr(tickets, "SEEDS", [1, 2])
    monkeypatch.setattr(tickets, "SYNFLOW_ROUNDS", 3)
    out = tmp_path / "t"
    argv = ["tickets", "--quick", "--out", str(out), "--ks", "0.5", "--ks-wd0", "0.85", "--quiet"]
    assert experiment_main(argv) == 0
    info = json.loads((out / "masks" / "masks.json").read_text())
    dense_runs = {s: out / "dense" / "runs" / f"seed{s}" for s in (1, 2)}
    steps = {s: tickets.ticket_step(runs.read_metrics(d), runs.checkpoint_steps(d)) for s, d in dense_runs.items()}
    assert {s: info[f"dense_seed{s}"]["ticket_step"] for s in (1, 2)} == steps
    with_ticket = [s for s in (1, 2) if steps[s] is not None]
    assert with_ticket, "no tiny dense run generalised: the rest of this test needs one"
    summary = tickets.summarise(out)
    assert [(r["method"], r["k"]) for r in summary] == [("dense", None)] + [(m, 0.6) for m in tickets.METHODS[1:]] + [("ticket", 0.5), ("ticket_wd0", 0.85)]
    assert summary[0]["no_ticket_seeds"] == (" ".join(str(s) for s in (1, 2) if steps[s] is None) or None)
    assert all(r["seeds"] == len(with_ticket) for r in summary[1:])  # seeds without a ticket are in no arm
    # every arm (controls, pruning at init, the k sweep) gets the dense run's cap as its budget
    configs = [json.loads(c.read_text())["config"] for c in out.rglob("config.json")]
    assert len(configs) == 2 + len(with_ticket) * (len(tickets.METHODS) - 1 + 2)
    assert {c["steps"] for c in configs} == {100} and all(r["budget"] == 100 for r in summary)
    for seed in with_ticket:
        dense = dense_runs[seed]
        masks = prune.read_masks(out / "masks" / f"ticket_seed{seed}.safetensors", build_model(tiny_config()))
        n = sum(m.numel() for m in masks.values())
        assert sum(m.sum().item() for m in masks.values()) == n - round(0.6 * n)  # k is the fraction removed
        # the ticket is the largest weights of the checkpoint at or after t_gen...
        assert info[f"ticket_seed{seed}"]["from_step"] == steps[seed] >= info[f"dense_seed{seed}"]["t_gen"]
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
        # the rescaled dense controls start at the ticket's L1 / L2 norm (weight matrices)
        ticket_norms = prune.norms({k: t0[k] for k in masks})
        for arm, i in (("dense_l1", 0), ("dense_l2", 1)):
            w = dict(runs.load_checkpoint(out / arm / f"seed{seed}" / "runs" / f"seed{seed}", 0).named_parameters())
            assert prune.norms({k: w[k] for k in masks})[i] == pytest.approx(ticket_norms[i], rel=1e-5)
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
    assert (f"dense: median t_gen {d['median_t_gen']:g} ({d['generalised']} of 2 seeds generalised within 100 steps)" if d["median_t_gen"] is not None
            else f"dense: {d['generalised']} of 2 seeds generalised within 100 steps, so no median.") in page
    assert "ticket k=0.5: " in page and "ticket_wd0 k=0.85: " in page
    # a re-run resumes: nothing is trained again and the masks are kept
    before = (out / "masks" / f"snip_seed{with_ticket[0]}.safetensors").stat().st_mtime_ns
    assert experiment_main(argv) == 0
    assert (out / "masks" / f"snip_seed{with_ticket[0]}.safetensors").stat().st_mtime_ns == before
