"""Local complexity (Humayun et al.): known answers on hand-built ReLU networks, the MLP's input space, and the
analyser end to end (columns, table, the off switch, the radius flag, the families it does not apply to)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from analyses.local_complexity import cross_polytope, local_complexity, unit_offsets
from interp import runs
from interp.analysers import LC_TABLE, LocalComplexityOptions
from interp.analysis_files import load_table
from interp.analyze import analyze_run
from interp.analyze import main as analyze_main
from interp.config import TrainConfig
from interp.families import build_model
from interp.tasks import generator, make_dataset
from interp.train import train


def _layer(w, b):
    w, b = torch.tensor(w, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    return lambda z: z @ w.T + b


def _unit(rows):
    w = torch.tensor(rows, dtype=torch.float64)
    return (w / w.norm(dim=1, keepdim=True)).tolist()


def test_a_hyperplane_counts_when_it_cuts_the_neighbourhood_and_not_otherwise():
    """With P = D directions the cross-polytope of radius r holds the ball of radius r / sqrt(D) and lies inside the
    ball of radius r, whatever the directions: a neuron whose hyperplane is nearer than r / sqrt(D) is always
    counted, one farther than r never. Ten dimensions, eight neurons at known distances, 200 random neighbourhoods."""
    d, r = 10, 1.0
    w = _unit(torch.randn(8, d, generator=torch.Generator().manual_seed(0)).tolist())
    dist = [0.05, -0.2, 0.3, -0.31, 1.05, -1.5, 2.0, 4.0]  # the first four inside r / sqrt(10) = 0.316, the rest beyond r
    pre = _layer(w, [-x for x in dist])  # the hyperplane w.z = dist, at signed distance dist from the origin
    lc = local_complexity(lambda z: [pre(z)], torch.zeros(200, d, dtype=torch.float64), r, unit_offsets(200, d, d, generator("t", 0)))
    assert lc.shape == (200, 1) and (lc[:, 0] == 4).all()


def test_the_count_follows_the_point_and_each_layer_is_counted_on_its_own():
    """Two layers in 2-D. Layer 1 is the identity shifted by +10 (no boundary within reach of the points used),
    so layer 2's boundaries are straight lines in the input plane: a point near two of them counts two in layer 2,
    a point far from all counts none, and layer 1 counts none everywhere."""
    l1 = _layer([[1.0, 0.0], [0.0, 1.0]], [10.0, 10.0])
    # layer 2 reads h = z + 10: boundaries z1 = 0 and z2 = 0 and z1 + z2 = 6, written in h
    l2 = _layer([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], [-10.0, -10.0, -26.0])

    def net(z):
        a = l1(z)
        return [a, l2(torch.relu(a))]

    pts = torch.tensor([[0.1, -0.1], [0.1, 5.0], [3.0, 3.0], [-4.0, -4.0]], dtype=torch.float64)
    lc = local_complexity(net, pts, 0.5, unit_offsets(4, 2, 2, generator("t", 1)))
    # r / sqrt(2) = 0.354: (0.1, -0.1) is within it of z1 = 0 and z2 = 0; (0.1, 5) of z1 = 0 only (z1 + z2 = 6 is
    # 0.64 away, beyond r); (3, 3) of z1 + z2 = 6 only (distance 0); (-4, -4) of none
    assert lc[:, 0].tolist() == [0, 0, 0, 0]
    assert lc[:, 1].tolist() == [2, 1, 1, 0]


def test_cross_polytope_vertices_and_bad_settings():
    pts = torch.randn(5, 6, dtype=torch.float64)
    v = cross_polytope(pts, 0.3, 4, generator("t", 2))
    assert v.shape == (5, 8, 6)
    offsets = v - pts[:, None]
    assert torch.allclose(offsets.norm(dim=-1), torch.full((5, 8), 0.3, dtype=torch.float64))
    gram = offsets[:, :4] @ offsets[:, :4].transpose(1, 2)
    assert torch.allclose(gram, 0.09 * torch.eye(4, dtype=torch.float64).expand(5, 4, 4), atol=1e-12)  # orthonormal directions
    assert torch.allclose(offsets[:, 4:], -offsets[:, :4])
    for radius, p in ((0.0, 2), (-1.0, 2), (0.1, 0), (0.1, 7)):
        with pytest.raises(ValueError):
            cross_polytope(pts, radius, p, generator("t", 3))


@pytest.mark.parametrize("kw", [dict(task="digits", train_size=100, freeze_biases=False),
                                dict(task="mod_add", p=13, family="mlp"),
                                dict(task="mod_add", p=13, family="mlp", mlp_embed="onehot"),
                                dict(task="mod_add", p=13, family="mlp", mlp_embed="tied", mlp_combine="shared",
                                     mlp_unembed="project", freeze_biases=False),
                                dict(task="mod_add", p=13, family="mlp", mlp_combine="sum", freeze_biases=False, mlp_depth=2)])
def test_the_mlp_preactivations_of_its_input_space_are_its_own_computation(kw):
    cfg = TrainConfig(**kw)
    model, data = build_model(cfg), make_dataset(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # biases too, where there are any
        x = data.inputs[:60]
        pre, post = model.preactivations(model.input_space(x)), model.hidden(x)
        assert len(pre) == len(post) and all(torch.allclose(torch.relu(a), b, atol=1e-6) for a, b in zip(pre, post))
        assert torch.allclose(model(x), model.layers[-1](post[-1]) if model.n_out == 1 else model(x))


def _digits_run(tmp_path):
    cfg = TrainConfig(task="digits", train_size=200, d_mlp=16, steps=20, eval_every=10, save_every=10, lr=3e-3, loss="mse")
    return train(cfg, tmp_path / "digits", progress=False)


def test_the_analyser_fills_its_columns_and_table_and_a_new_radius_recomputes(tmp_path):
    run = _digits_run(tmp_path)
    rows, summary = analyze_run(run)
    assert "local_complexity" not in summary["skipped"]
    assert summary["lc_settings"] == {"radius": 0.05, "directions": 8, "points": 32}
    for r in rows:
        assert all(math.isfinite(r[c]) and 0 <= r[c] <= 32 for c in ("lc_train", "lc_test", "lc_random"))  # 2 layers x 16 neurons
    table = load_table(run, LC_TABLE)
    assert len(table) == len(rows) * 2 and [t["layer"] for t in table[:2]] == [0, 1]
    for split in ("train", "test", "random"):
        first = [t[split] for t in table if t["step"] == rows[0]["step"]]
        assert sum(first) == pytest.approx(rows[0][f"lc_{split}"])
    wide, s2 = analyze_run(run, local_complexity=LocalComplexityOptions(radius=0.5))
    assert s2["steps_computed"] == [r["step"] for r in rows]  # the radius changed: every checkpoint again
    assert sum(r["lc_train"] for r in wide) > sum(r["lc_train"] for r in rows)  # a wider neighbourhood meets more boundaries


def test_the_off_switch_and_the_families_it_does_not_apply_to(tmp_path, tiny_run):
    run = _digits_run(tmp_path)
    _, summary = analyze_run(run, local_complexity=LocalComplexityOptions(enabled=False))
    assert "turned off" in summary["skipped"]["local_complexity"]
    assert not (run / runs.ANALYSIS_DIR / LC_TABLE).exists()
    _, summary = analyze_run(tiny_run, write=False)
    assert "transformer" in summary["skipped"]["local_complexity"]


@pytest.mark.parametrize("value", ["0", "-0.1", "nan"])
def test_a_bad_radius_is_one_line_exit_2_and_writes_nothing(value, tmp_path, capsys):
    run = _digits_run(tmp_path)
    with pytest.raises(SystemExit) as e:
        analyze_main([str(run), "--lc-radius", value, "--quiet"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"--lc-radius {value}" in err.replace("nan", value) and len(err.strip().splitlines()) == 1
    assert not (run / runs.ANALYSIS_DIR).exists()


def test_the_command_line_turns_it_off(tmp_path, capsys):
    run = _digits_run(tmp_path)
    assert analyze_main([str(run), "--no-local-complexity", "--quiet"]) == 0
    summary = json.loads((run / runs.ANALYSIS_DIR / "summary.json").read_text())
    assert "turned off" in summary["skipped"]["local_complexity"]


def test_the_report_shows_it_with_a_caption_from_the_numbers(tmp_path):
    import html as _html

    from interp.report import write_report

    run = _digits_run(tmp_path)
    rows, _ = analyze_run(run)
    page = _html.unescape(write_report([run], tmp_path / "r.html").read_text())
    peak = max(rows, key=lambda r: r["lc_train"])
    assert "Local complexity across training" in page
    assert (f"Around training points it is {rows[0]['lc_train']:.3g} at step 0, highest ({peak['lc_train']:.3g}) at step "
            f"{peak['step']} and {rows[-1]['lc_train']:.3g} at step {rows[-1]['step']}") in page
