"""``init_from``: a run (alone or stacked) that starts from another run's checkpoint instead of the seeded init."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from interp import load_run
from interp.config import TrainConfig
from interp.runs import ckpt_path, default_run_name
from interp.stack import Member, train_pack
from interp.sweep import Spec, SweepError, run_sweep
from interp.train import main as train_main
from interp.train import train
from tests.conftest import tiny_config

TINY_FLAGS = ["mod_add", "--p", "13", "--frac", "0.5", "--d-model", "32", "--d-mlp", "64", "--lr", "0.003", "--steps", "10", "--quiet"]


def _same_weights(run_dir, step, ref: dict) -> bool:
    got = load_file(ckpt_path(run_dir, step))
    return got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref)


def test_init_source_parsing():
    assert TrainConfig(init_from="runs/a").init_source == ("runs/a", None)
    assert TrainConfig(init_from="runs/a@1200").init_source == ("runs/a", 1200)
    assert TrainConfig(init_from="runs/x@y@30").init_source == ("runs/x@y", 30)
    assert TrainConfig(init_from="runs/x@y").init_source == ("runs/x@y", None)  # not digits: part of the name
    assert TrainConfig().init_source is None
    assert default_run_name(TrainConfig(init_from="/tmp/src/mod_add_p113@900", train_size=500)).startswith("mod_add_p113_train_size500_from-mod_add_p113@900")


def test_run_starts_from_the_checkpoint_weights(tiny_run, tmp_path):
    for spec, step in ((f"{tiny_run}@20", 20), (str(tiny_run), 40)):  # no step: the run's last checkpoint
        out = train(tiny_config(init_from=spec, seed=7, steps=10), tmp_path / f"from{step}", progress=False)
        assert _same_weights(out, 0, load_file(ckpt_path(tiny_run, step)))
        assert not _same_weights(out, 10, load_file(ckpt_path(tiny_run, step)))  # and it trains on from there
        assert json.loads((out / "config.json").read_text())["config"]["init_from"] == spec
    fresh = train(tiny_config(seed=7, steps=10), tmp_path / "fresh", progress=False)
    assert not _same_weights(fresh, 0, load_file(ckpt_path(tiny_run, 20)))


def test_resume_does_not_need_the_source_any_more(tiny_run, tmp_path):
    src = shutil.copytree(tiny_run, tmp_path / "src")
    out = train(tiny_config(init_from=str(src), steps=20), tmp_path / "r", progress=False)
    shutil.rmtree(src)
    train(tiny_config(init_from=str(src), steps=30), out, resume=True, progress=False)
    assert load_run(out).steps[-1] == 30


def test_stacked_members_with_init_from_match_training_alone(tiny_run, tmp_path):
    """As tests/test_stack.py's stack == alone check, with members that start from checkpoints."""
    cfgs = [tiny_config(init_from=f"{tiny_run}@20", train_size=60, data_seed=3, steps=30),
            tiny_config(init_from=str(tiny_run), train_size=90, data_seed=4, wd=0.3, steps=30),
            tiny_config(seed=5, train_size=70, steps=30)]  # a seeded member in the same pack
    members = train_pack([Member(c, tmp_path / f"s{i}") for i, c in enumerate(cfgs)])
    assert all(m.failed is None for m in members)
    assert _same_weights(tmp_path / "s0", 0, load_file(ckpt_path(tiny_run, 20)))
    assert _same_weights(tmp_path / "s1", 0, load_file(ckpt_path(tiny_run, 40)))
    for i, cfg in enumerate(cfgs):
        lone, stacked = load_run(train(cfg, tmp_path / f"l{i}", progress=False)), load_run(tmp_path / f"s{i}")
        assert stacked.steps == lone.steps
        for (name, pa), (_, pb) in zip(lone.load_model().named_parameters(), stacked.load_model().named_parameters()):
            if pa.norm() > 0:
                assert ((pa - pb).norm() / pa.norm()).item() < 1e-4, (i, name)
        for ra, rb in zip(lone.metrics, stacked.metrics):
            assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("spec, extra, message", [
    ("{tmp}/nothing", [], "not a run directory"),
    ("{tmp}", [], "not a run directory"),  # a directory, but not a run
    ("{run}@15", [], "no checkpoint at step 15 (it has 5 from step 0 to 40)"),
    ("{run}", ["--d-mlp", "128"], "its model has d_mlp 64, this config 128"),
    ("{run}", ["--p", "17"], "its model has p 13, this config 17"),
    ("{run}", ["--no-freeze-biases"], "its model has freeze_biases True"),
])
def test_bad_init_from_exits_2_and_writes_nothing(tiny_run, tmp_path, capsys, spec, extra, message):
    spec = spec.format(tmp=tmp_path, run=tiny_run)
    out = tmp_path / "out"
    assert train_main([*TINY_FLAGS, *extra, "--init-from", spec, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--init-from {spec}: " in err[0] and message in err[0], err
    assert not out.exists()


def test_sweep_refuses_bad_init_from_before_writing(tiny_run, tmp_path):
    spec = Spec({**tiny_config(d_mlp=128).to_dict(), "init_from": str(tiny_run)}, {"seed": [1, 2]})
    with pytest.raises(SweepError, match="its model has d_mlp 64"):
        run_sweep(spec, tmp_path / "sw", progress=False)
    assert not (tmp_path / "sw").exists()
