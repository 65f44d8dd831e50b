"""interp.bench: each path's time is that path's, both time the same computation, bad flags are one line."""

import json
import time

import pytest

from interp import bench
from interp.bench import main


def _run(capsys, *flags):
    assert main(["--p", "13", "--rounds", "2", "--round-seconds", "0", *flags]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.parametrize("slow_path", ["hooked", "fast"])
def test_a_slower_path_shows_up_in_its_own_time(slow_path, tiny_run, monkeypatch, capsys):
    # make one path at least 40 ms slower per step: the bench must charge that to the path, not the other
    name = {"hooked": "hooked_logits", "fast": "fast_loss"}[slow_path]
    real = getattr(bench, name)

    def slowed(*args, **kwargs):
        time.sleep(0.04)
        return real(*args, **kwargs)

    monkeypatch.setattr(bench, name, slowed)
    result = _run(capsys, "--run", str(tiny_run))
    assert result[f"{slow_path}_ms_per_step"] >= 40
    assert result["n_train"] == int(0.3 * 13 * 13) and result["allocator"] == "default"
    assert result["loss_abs_diff"] < 1e-6  # the two paths compute the same loss of the same initial weights
    assert result["analysis_checkpoints"] == 5  # every checkpoint of the run was analysed


def test_the_two_paths_are_the_same_model(monkeypatch, capsys):
    real = bench.build_model
    seeds = iter([1, 2])
    monkeypatch.setattr(bench, "build_model", lambda cfg: real(cfg.replace(seed=next(seeds))))
    result = _run(capsys, "--run", "nowhere")  # two different initial models: the check must see it
    assert result["loss_abs_diff"] > 1e-4


@pytest.mark.parametrize("flags, expect", [
    (["--p", "1"], "--p 1"), (["--p", "abc"], "--p"), (["--rounds", "0"], "--rounds 0"),
    (["--round-seconds", "-1"], "--round-seconds -1.0"),
])
def test_bad_flags_are_one_line_and_exit_2(flags, expect, capsys):
    with pytest.raises(SystemExit) as e:
        main(flags)
    err = capsys.readouterr().err
    assert e.value.code == 2 and expect in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_mlp_line_charges_a_slower_model_to_itself(monkeypatch, capsys):
    """--mlp: each model's time is its own (one MLP made 30 ms slower per step shows up there only)."""
    real = bench.build_model

    def slowed_build(cfg):
        model = real(cfg)
        if cfg.family == "mlp" and cfg.mlp_embed == "onehot":
            model.register_forward_pre_hook(lambda *a: time.sleep(0.03))
        return model

    monkeypatch.setattr(bench, "build_model", slowed_build)
    monkeypatch.setattr(bench, "bench_mlp", lambda ps, r, s, real_fn=bench.bench_mlp: real_fn([13], r, s))
    assert main(["--mlp", "--rounds", "2", "--round-seconds", "0"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["mlp"]
    r = rows[0]
    assert r["p"] == 13 and r["mlp_prieto_ms_per_step"] >= 30 and r["mlp_devinterp_ms_per_step"] < 30
    assert r["mlp_prieto_over_transformer"] == pytest.approx(r["mlp_prieto_ms_per_step"] / r["transformer_ms_per_step"], rel=0.02)


def test_sequence_line_charges_a_slower_hooked_engine_to_itself(monkeypatch, capsys):
    """--sequence: the hooked engine made 30 ms slower per step shows up in its own time and in the fast path's ratio
    to it, not in the fast path's time (which runs no HookedTransformer.forward)."""
    from transformer_lens import HookedTransformer

    from interp.config import TrainConfig

    real = HookedTransformer.forward

    def slowed(self, *args, **kwargs):
        time.sleep(0.03)
        return real(self, *args, **kwargs)

    tiny = dict(task="add5", d_model=16, n_heads=2, d_mlp=32, train_size=32)
    monkeypatch.setattr(HookedTransformer, "forward", slowed)
    monkeypatch.setattr(bench, "sequence_shapes", lambda: {"canonical": TrainConfig(p=13), "add5_quick": TrainConfig(**tiny),
                                                          "add5_quick_hooked": TrainConfig(**tiny, engine="hooked")})
    assert main(["--sequence", "--rounds", "2", "--round-seconds", "0"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["ms_per_step"]["add5_quick_hooked"] >= 30 and r["ms_per_step"]["add5_quick"] < 30
    assert r["fast_over_hooked"]["add5_quick"] == pytest.approx(r["ms_per_step"]["add5_quick"] / r["ms_per_step"]["add5_quick_hooked"], rel=0.05)
