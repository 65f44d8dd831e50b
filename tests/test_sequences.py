"""The sequence tasks (add5, repeat_subseq, max_elem): their examples, infinite data, bit-exact resume, the
per-position metrics, the refusals, and analysis and report end to end at tiny sizes."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from safetensors.torch import load_file

from interp import runs, sequences
from interp.analysers import POSITION_TABLE, HEAD_TABLE, ablated_logits, head_scores
from interp.analysis_files import load_table
from interp.analyze import analyze_run
from interp.analyze import main as analyze_main
from interp.config import ConfigError, TrainConfig
from interp.families import build_model
from interp.report import write_report
from interp.tasks import generator, infinite_batch, input_rows, make_dataset
from interp.train import main as train_main
from interp.train import train

TINY = dict(d_model=32, n_heads=4, d_mlp=64, lr=3e-3, eval_every=10, save_every=10)


def tiny_seq(task: str, **kw) -> TrainConfig:
    extra = dict(n_layers=2, attn_only=True) if task == "repeat_subseq" else {}
    return TrainConfig(task=task, **{**TINY, **extra, "train_size": 64, "steps": 20, **kw})


# ---- the examples --------------------------------------------------------------------------------------
def test_add5_examples_are_sums_written_most_significant_digit_first():
    x, y = sequences.sample_add5(500, generator("t", 0))
    a, b = sequences.add5_operands(x)
    num = lambda d: (d * torch.tensor([10**4, 10**3, 100, 10, 1])).sum(1)  # noqa: E731
    total = (y * torch.tensor([10**5, 10**4, 10**3, 100, 10, 1])).sum(1)
    assert torch.equal(total, num(a) + num(b))
    assert torch.equal(x[:, 5], torch.full((500,), sequences.PLUS)) and torch.equal(x[:, 11], torch.full((500,), sequences.EQUALS))
    assert torch.equal(x[:, 12:], y)  # teacher forcing: the answer is in the input, predicted from the position before
    hand = sequences.add_answer(torch.tensor([[9, 9, 9, 9, 9], [1, 2, 3, 4, 5]]), torch.tensor([[0, 0, 0, 0, 1], [5, 4, 3, 2, 1]]))
    assert hand.tolist() == [[1, 0, 0, 0, 0, 0], [0, 6, 6, 6, 6, 6]]


def test_repeat_subseq_repeats_a_slice_of_distinct_tokens_from_a_random_start():
    x, y = sequences.sample_repeat_subseq(300, generator("t", 1))
    prefix = x[:, : sequences.REPEAT_PREFIX]
    assert all(len(set(r)) == sequences.REPEAT_PREFIX for r in prefix.tolist())
    src = sequences.repeat_source(x)
    for row, s in zip(x.tolist(), src.tolist()):
        assert row[sequences.REPEAT_PREFIX:] == row[s : s + sequences.REPEAT_LEN]
    assert set(src.tolist()) == set(range(9))  # the start varies: no fixed offset copies the repeat
    assert torch.equal(y, x[:, sequences.REPEAT_PREFIX + 1:])


def test_max_elem_labels_are_the_maximum():
    x, y = sequences.sample_max_elem(200, generator("t", 2))
    assert torch.equal(y, x[:, 1:-1].amax(1)) and (x[:, 0] == sequences.MAX_START).all() and (x[:, -1] == sequences.MAX_END).all()


@pytest.mark.parametrize("task", ["add5", "repeat_subseq", "max_elem"])
def test_the_test_set_is_held_out_and_shared_by_finite_and_infinite_runs(task):
    fin, inf = make_dataset(TrainConfig(task=task)), make_dataset(TrainConfig(task=task, infinite_data=True))
    assert torch.equal(fin.inputs, inf.inputs)
    train_rows = input_rows(fin.inputs[fin.train_idx])
    assert not train_rows & input_rows(fin.inputs[fin.test_idx])
    assert len(fin.test_idx) == 1000 and len(fin.train_idx) == TrainConfig(task=task).task_spec.default_train_size


def test_an_infinite_batch_is_a_function_of_seed_and_step_and_never_a_test_example():
    cfg = TrainConfig(task="add5", infinite_data=True, seed=5)
    a, b = infinite_batch(cfg, 7, set()), infinite_batch(cfg, 7, set())
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], infinite_batch(cfg, 8, set())[0])
    assert len(a[0]) == 64  # Nanda et al.'s batch, the default with --infinite-data
    # exclude half of exactly the rows this step draws: they are redrawn, the rest stay
    held = input_rows(a[0][::2])
    c = infinite_batch(cfg, 7, held)
    assert len(c[0]) == 64 and not input_rows(c[0]) & held
    assert input_rows(a[0][1::2]) <= input_rows(c[0])


# ---- training ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task, infinite", [("add5", True), ("repeat_subseq", False), ("max_elem", True)])
def test_a_resumed_sequence_run_ends_with_the_same_bits(task, infinite, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the embedding's backward accumulated in no fixed order with two threads
    try:
        kw = dict(infinite_data=True, train_size=None) if infinite else {}
        whole = train(tiny_seq(task, steps=30, **kw), tmp_path / "whole", progress=False)
        part = train(tiny_seq(task, steps=20, **kw), tmp_path / "part", progress=False)
        train(tiny_seq(task, steps=30, **kw), part, resume=True, progress=False)
    finally:
        torch.set_num_threads(threads)
    a, b = load_file(runs.ckpt_path(whole, 30)), load_file(runs.ckpt_path(part, 30))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert runs.read_metrics(whole) == [{**r, "elapsed_s": r2["elapsed_s"]} for r, r2 in zip(runs.read_metrics(part), runs.read_metrics(whole))]


def test_metrics_record_the_loss_at_each_answer_position(tmp_path):
    out = train(tiny_seq("add5"), tmp_path / "r", progress=False)
    m = runs.read_metrics(out)
    for r in m:
        assert len(r["train_loss_pos"]) == len(r["test_loss_pos"]) == 6
        assert r["test_loss"] == pytest.approx(sum(r["test_loss_pos"]) / 6, rel=1e-9)  # the loss is the mean over answer tokens
        assert 0 <= r["test_seq_acc"] <= r["test_acc"] ** 0 and r["test_seq_acc"] <= min(1.0, r["test_acc"] * 6)


BAD = [
    (["add5", "--p", "13"], "--p 13"),
    (["add5", "--frac", "0.5"], "--frac 0.5"),
    (["add5", "--infinite-data", "--train-size", "100"], "--train-size 100"),
    (["mod_add", "--infinite-data"], "--infinite-data"),
    (["mod_add", "--preset", "add5"], "--preset add5"),
    (["add5", "--preset", "repeat_subseq"], "--preset repeat_subseq"),
    (["add5", "--family", "mlp"], "--family 'mlp'"),
    (["add5", "--label-noise", "0.1"], "--label-noise 0.1"),
    (["mod_add", "--family", "mlp", "--attn-only"], "--attn-only"),
]


@pytest.mark.parametrize("argv, expect", BAD)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(argv, expect, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        sys.exit(train_main([*argv, "--out", str(out)]))
    err = capsys.readouterr().err
    assert e.value.code == 2 and expect in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_presets_hold_the_papers_settings():
    add5 = TrainConfig(task="add5", **__import__("interp.config", fromlist=["PRESETS"]).PRESETS["add5"])
    assert (add5.d_model, add5.n_heads, add5.d_mlp, add5.n_layers, add5.lr, add5.wd, add5.warmup, add5.n_train) == (512, 4, 2048, 1, 1e-4, 0.1, 10, 700)
    inf = add5.replace(infinite_data=True)
    assert inf.batch_size == 64
    rep = TrainConfig(task="repeat_subseq", **__import__("interp.config", fromlist=["PRESETS"]).PRESETS["repeat_subseq"])
    assert (rep.n_layers, rep.attn_only, rep.n_train) == (2, True, 512)
    assert not any("mlp" in n for n, _ in build_model(rep).named_parameters())


# ---- the measures on cases whose answer is known ---------------------------------------------------------
def test_mean_ablation_changes_nothing_on_identical_inputs_and_something_otherwise():
    cfg = tiny_seq("repeat_subseq")
    model = build_model(cfg)
    x = make_dataset(cfg).inputs[:16]
    same = x[:1].repeat(8, 1)
    from interp.model import forward

    # the mean over identical inputs is each input's own value: nothing changes
    assert torch.allclose(ablated_logits(model, cfg, same, [[0, 0], [1, 2]]), forward(model, cfg, same), atol=1e-6)
    assert not torch.allclose(ablated_logits(model, cfg, x, [[1, 0], [1, 1], [1, 2], [1, 3]]), forward(model, cfg, x), atol=1e-4)
    assert torch.equal(ablated_logits(model, cfg, x, []), forward(model, cfg, x))


def test_head_scores_find_a_hand_built_previous_token_head():
    """Layer 0 of a 1-head model reads positions only (W_E = 0, orthonormal W_pos): its query at position q is e_q and its
    key at position k is e_{k+1}, so it attends to q - 1: previous-token score 1 (to within the softmax's leak)."""
    cfg = tiny_seq("repeat_subseq", d_model=64, n_heads=1)
    model = build_model(cfg)
    n = cfg.n_ctx
    shift = torch.zeros(64, 64)
    shift[torch.arange(n - 1), torch.arange(1, n)] = 1.0  # e_k -> e_{k+1}
    with torch.no_grad():
        model.W_E.zero_()
        model.W_pos.copy_(torch.eye(64)[:n] * 30.0)
        model.blocks[0].attn.W_Q[0] = torch.eye(64)
        model.blocks[0].attn.W_K[0] = shift
    scores = {(s["layer"], s["head"]): s for s in head_scores(model, make_dataset(cfg).inputs[:8])}
    assert scores[(0, 0)]["prev_token"] > 0.999
    assert scores[(0, 0)]["induction"] < 0.05  # attending to the previous position is not attending after an earlier copy


# ---- analysis and report end to end -----------------------------------------------------------------------
@pytest.mark.parametrize("task", ["add5", "repeat_subseq", "max_elem"])
def test_a_sequence_run_is_analysed_and_reported(task, tmp_path):
    out = train(tiny_seq(task), tmp_path / task, progress=False)
    rows, summary = analyze_run(out, progress=False)
    assert len(rows) == 3 and all(r["test_loss"] == r["test_loss"] for r in rows)
    assert "circuit" in summary["skipped"] and "layers" in summary["skipped"]
    pos = load_table(out, POSITION_TABLE)
    n_answers = len(TrainConfig(task=task).task_spec.answer_positions)
    assert len(pos) == 3 * n_answers
    carry = [r for r in pos if r["test_loss_carry"] == r["test_loss_carry"]]
    assert bool(carry) == (task == "add5")
    heads = load_table(out, HEAD_TABLE)
    cfg = runs.read_config(out)
    assert len(heads) == 3 * cfg.n_layers * cfg.n_heads
    assert len(summary["position_falls"]) == n_answers
    from interp.snapshot import markdown, snapshot

    facts = snapshot(out, "test")
    assert facts["position_falls"] == summary["position_falls"] and facts["p"] is None
    (tmp_path / "snap").mkdir()
    (tmp_path / "snap" / "run.json").write_text(json.dumps(facts))
    table = markdown(tmp_path / "snap")
    assert "each answer position's steepest fall" in table and ("largest induction score" in table) == (cfg.family == "transformer")
    html = write_report([out], tmp_path / f"{task}.html").read_text()
    assert "Attention heads across training" in html
    assert ("Loss at each answer position" in html) == (n_answers > 1)
    assert ("with and without a carry" in html) == (task == "add5")


def test_irrep_on_a_sequence_run_is_refused(tmp_path, capsys):
    out = train(tiny_seq("add5", steps=10), tmp_path / "r", progress=False)
    assert analyze_main([str(out), "--irrep", "standard"]) == 2
    err = capsys.readouterr().err
    assert "--irrep" in err and len(err.strip().splitlines()) == 1


def test_a_sequence_task_registered_here_trains(tmp_path):
    """docs/extending.md's example: a sequence task is a sampler and one register_sequence_task line."""
    from interp.tasks import TASKS, register_sequence_task

    def sample_copy(n, gen):
        first = torch.randint(10, (n, 4), generator=gen)
        tokens = torch.cat([first, first], dim=1)
        return tokens, tokens[:, 5:]

    register_sequence_task("copy4", "copy four digits", sample_copy, n_ctx=8, d_vocab=10, d_vocab_out=10, answers=(4, 5, 6),
                           train_size=200)
    try:
        out = train(TrainConfig(task="copy4", d_model=32, d_mlp=64, steps=200, eval_every=50, save_every=100, lr=3e-3),
                    tmp_path / "copy4", progress=False)
        last = runs.read_metrics(out)[-1]
        assert last["test_acc"] > 0.95 and len(last["test_loss_pos"]) == 3  # copying at a fixed offset is easy
    finally:
        TASKS.pop("copy4")


# ---- the phase experiment at a tiny size --------------------------------------------------------------------
TINY_PHASE = {
    "add5": dict(d_model=32, n_heads=4, d_mlp=64, lr=3e-3, wd=0.1, steps=40, eval_every=10, save_every=20),
    "repeat_subseq": dict(n_layers=2, attn_only=True, d_model=32, n_heads=4, lr=3e-3, wd=0.1, steps=40, eval_every=10,
                          save_every=20),
}


def test_the_phase_experiment_runs_summarises_and_reports(tmp_path, monkeypatch, capsys):
    from interp.experiment import main as experiment_main
    from interp.experiments import phase
    from interp.experiments.common import read_summary

    monkeypatch.setattr(phase, "QUICK", TINY_PHASE)
    out = tmp_path / "phase"
    assert experiment_main(["phase", "--quick", "--out", str(out), "--quiet"]) == 0
    rows = read_summary(out)
    assert sorted((r["task"], r["data"], r["seed"]) for r in rows) == sorted(
        (t, d, s) for t in ("add5", "repeat_subseq") for d in ("finite", "infinite") for s in (1, 2))
    for r in rows:
        metrics = runs.read_metrics(out / r["task"] / "runs" / next(
            m.name for m in __import__("interp.sweep", fromlist=["load_sweep"]).load_sweep(out / r["task"])[1]
            if m.config.seed == r["seed"] and m.config.infinite_data == (r["data"] == "infinite")))
        assert r["steps"] == metrics[-1]["step"] and r["final_test_loss"] == pytest.approx(metrics[-1]["test_loss"], rel=1e-4)
        if r["data"] == "infinite":
            assert len(str(r["position_falls"]).split()) == (6 if r["task"] == "add5" else 7)
    capsys.readouterr()
    assert experiment_main(["phase", "--markdown", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Infinite data" in text and "Finite data" in text
    from interp.report import main as report_main

    assert report_main([str(out), "--out", str(tmp_path / "phase.html")]) == 0
    page = (tmp_path / "phase.html").read_text()
    assert "infinite vs finite data" in page


def test_the_phase_experiment_refuses_bad_tasks_and_seeds(tmp_path, capsys):
    from interp.experiment import main as experiment_main

    for argv, flag in ((["--tasks", "mod_add"], "--tasks"), (["--seeds", "a,b"], "--seeds")):
        code = experiment_main(["phase", "--quick", "--out", str(tmp_path / "x"), *argv])
        err = capsys.readouterr().err
        assert code == 2 and flag in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "x").exists()


# ---- the fast path -------------------------------------------------------------------------------------
@pytest.mark.parametrize("task,extra", [("add5", {}), ("repeat_subseq", {}), ("max_elem", {}),
                                        ("add5", dict(n_layers=2)), ("repeat_subseq", dict(n_layers=3, n_heads=8))])
def test_sequence_fast_path_is_the_hooked_forward(task, extra):
    """``sequence_logits`` (training's path) against ``HookedTransformer.forward`` at the answer positions: the
    logits and the loss's gradient equal to float32 rounding, on a model with random (not zero) biases."""
    from interp.families import family_of
    from interp.losses import loss_fn
    from interp.model import forward, sequence_logits

    cfg = tiny_seq(task, freeze_biases=False, **extra)
    data = make_dataset(cfg)
    x, y = data.inputs[:200], data.labels[:200]
    hooked, fast = build_model(cfg), build_model(cfg)
    with torch.no_grad():
        for p in hooked.parameters():
            p.add_(0.1 * torch.randn_like(p))
    fast.load_state_dict(hooked.state_dict())
    assert family_of(cfg).fast.applies(fast, cfg)
    ref = forward(hooked, cfg, x)
    got = sequence_logits(fast, x, cfg.task_spec.answer_positions)
    assert got.shape == ref.shape == y.shape + (cfg.d_vocab_out,)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
    loss_fn(ref, y).backward()
    family_of(cfg).fast.loss(fast, cfg, x, y).backward()
    for (name, a), b in zip(hooked.named_parameters(), fast.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_sequence_fast_path_runs_hooks_and_is_recorded(tmp_path):
    """With a hook attached the fast path computes through ``HookedTransformer.forward`` (an ablation is never
    skipped); a run records which engine trained it, and ``--engine hooked`` trains the same model to rounding."""
    from interp.model import sequence_logits

    cfg = tiny_seq("repeat_subseq")
    model, data = build_model(cfg), make_dataset(cfg)
    x = data.inputs[:50]
    zero = lambda act, hook: act * 0  # noqa: E731
    with model.hooks(fwd_hooks=[("blocks.1.attn.hook_z", zero)]):
        ablated = sequence_logits(model, x, cfg.task_spec.answer_positions)
    assert not torch.equal(ablated, sequence_logits(model, x, cfg.task_spec.answer_positions))
    fast_dir, hooked_dir = train(cfg, tmp_path / "fast", progress=False), train(cfg.replace(engine="hooked"), tmp_path / "hooked", progress=False)
    assert runs.read_config(fast_dir).engine == "fast" and runs.read_config(hooked_dir).engine == "hooked"
    a, b = runs.read_metrics(fast_dir)[-1], runs.read_metrics(hooked_dir)[-1]
    assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4) and a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-4)
