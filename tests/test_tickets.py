"""The tickets experiment: its summary (a known answer), checkpoints and masks, bad input, a tiny real run."""

import json

import pytest
import torch

from interp import load_run, prune, runs
from interp.experiment import main as experiment_main
from interp.experiments import tickets
from interp.model import build_model, hooked_logits, loss_fn
from interp.report import main as report_main
from interp.sweep import Spec, expand, write_results
from interp.tasks import make_dataset
from tests.conftest import tiny_config


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
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "masks.json").write_text(json.dumps({"ticket_seed1": {"k": 0.6}, "rescale_seed1": {"dense_l1": 0.5}}))
    rows = {r["method"]: r for r in tickets.summarise(tmp_path)}
    assert list(rows) == ["dense", "ticket", "dense_l1"]
    d, t, l1 = rows["dense"], rows["ticket"], rows["dense_l1"]
    assert (d["seeds"], d["k"], d["memorised"], d["median_t_mem"], d["min_t_mem"], d["max_t_mem"]) == (3, None, 3, 100, 100, 200)
    assert (d["generalised"], d["never"], d["median_t_gen"], d["min_t_gen"], d["max_t_gen"], d["budget"]) == (2, 1, 800, 600, 800, 1000)
    assert (t["k"], t["median_t_gen"], t["min_t_gen"], t["max_t_gen"], t["never"], t["speedup_vs_dense"]) == (0.6, 300, 200, 500, 0, 2.67)
    assert (l1["seeds"], l1["generalised"], l1["never"], l1["median_t_gen"], l1["speedup_vs_dense"]) == (3, 1, 2, None, None)
    assert l1["median_t_mem"] == 300


def test_source_checkpoints():
    metrics = [{"step": s, "train_acc": 1.0 if s >= 20 else 0.3, "test_acc": 1.0 if s >= 80 else 0.1} for s in range(0, 101, 10)]
    assert tickets.source_steps(metrics, list(range(0, 101, 10))) == {"ticket": 100, "ticket_mem": 20, "ticket_mid": 50}
    assert tickets.source_steps(metrics, [0, 50, 100]) == {"ticket": 100, "ticket_mem": 50, "ticket_mid": 50}
    never = [{**r, "test_acc": 0.1} for r in metrics]  # never generalised: mid-way between t_mem and the last checkpoint
    assert tickets.source_steps(never, list(range(0, 101, 10)))["ticket_mid"] == 60


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
    (["--k", "1.0"], "--k 1.0"), (["--k", "0"], "--k 0.0"), (["--arm-steps", "0"], "--arm-steps 0"), (["--scope", "row"], "invalid choice"),
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


TINY = Spec({"task": "mod_add", "p": 13, "frac": 0.5, "d_model": 32, "d_mlp": 64, "lr": 1e-2, "steps": 60, "eval_every": 10, "save_every": 10},
            {"seed": [1, 2, 3]})


def test_tiny_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tickets, "dense_spec", lambda args: TINY)
    monkeypatch.setattr(tickets, "SYNFLOW_ROUNDS", 3)
    out = tmp_path / "t"
    assert experiment_main(["tickets", "--quick", "--out", str(out), "--arm-steps", "30", "--quiet"]) == 0
    rows = {r["method"]: r for r in tickets.summarise(out)}
    assert list(rows) == list(tickets.METHODS) and all(r["seeds"] == 3 for r in rows.values())
    assert rows["dense"]["budget"] == 60 and rows["ticket"]["budget"] == 30
    info = json.loads((out / "masks" / "masks.json").read_text())
    for seed in (1, 2, 3):
        dense = out / "dense" / "runs" / f"seed{seed}"
        masks = prune.read_masks(out / "masks" / f"ticket_seed{seed}.safetensors", build_model(tiny_config()))
        n = sum(m.numel() for m in masks.values())
        assert sum(m.sum().item() for m in masks.values()) == n - round(0.6 * n)
        # the ticket is the last dense checkpoint's largest weights...
        final = dict(runs.load_checkpoint(dense, 60).named_parameters())
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
    capsys.readouterr()
    assert report_main([str(out), "--quiet"]) == 0
    page = (out / "report.html").read_text()
    d = rows["dense"]
    assert (f"dense: median t_gen {d['median_t_gen']:g} ({d['generalised']} of 3 seeds generalised within 60 steps)" if d["median_t_gen"] is not None
            else f"dense: {d['generalised']} of 3 seeds generalised within 60 steps, so no median.") in page
    # a re-run resumes: nothing is trained again and the masks are kept
    before = (out / "masks" / "snip_seed1.safetensors").stat().st_mtime_ns
    assert experiment_main(["tickets", "--quick", "--out", str(out), "--arm-steps", "30", "--quiet"]) == 0
    assert (out / "masks" / "snip_seed1.safetensors").stat().st_mtime_ns == before
