"""Run directories: contents, reload, exact resume after kill -9, and clean refusals of bad input."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from interp import load_run
from interp.runs import RunError, ckpt_path, state_path
from interp.train import evaluate, logits_fn, main, train
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]


def test_run_directory_contents(tiny_run):
    meta = json.loads((tiny_run / "config.json").read_text())
    assert meta["config"] == tiny_config(engine="fast").to_dict()  # the engine used, not 'auto'
    assert "extensions" not in meta
    assert {"torch", "transformer-lens"} <= set(meta["versions"]) and "git_commit" in meta
    run = load_run(tiny_run)
    assert run.steps == [0, 10, 20, 30, 40]
    assert [r["step"] for r in run.metrics] == [0, 10, 20, 30, 40]
    assert {"step", "train_loss", "test_loss", "train_acc", "test_acc", "param_norm"} <= set(run.metrics[0])
    assert len(run.train_idx) == int(0.5 * 13 * 13) and len(run.train_idx) + len(run.test_idx) == 169
    assert not list(tiny_run.rglob("*.tmp"))  # no temporary file left behind


def test_load_run_rebuilds_the_model(tiny_run):
    run = load_run(tiny_run)
    model = run.load_model()  # last checkpoint
    saved = load_file(ckpt_path(tiny_run, 40))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    again = evaluate(model, run.dataset, logits_fn(model, run.config))
    assert again["test_acc"] == run.metrics[-1]["test_acc"] and again["train_loss"] == pytest.approx(run.metrics[-1]["train_loss"], rel=1e-12)
    assert not torch.equal(run.load_model(0).W_E, model.W_E)


def _final_weights(run_dir, step):
    return load_file(ckpt_path(run_dir, step))


@pytest.mark.integration
def test_resume_after_kill_9_is_bitwise_identical(tmp_path):
    flags = ["mod_add", "--p", "13", "--frac", "0.5", "--d-model", "32", "--d-mlp", "64", "--lr", "0.003",
             "--steps", "1500", "--eval-every", "10", "--save-every", "10", "--quiet"]
    cfg = tiny_config(steps=1500)
    reference = train(cfg, tmp_path / "ref", progress=False)

    out, marker = tmp_path / "killed", tmp_path / "saved"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # the child holds right after saving its step-300 checkpoint (before that step's metrics and resume
    # state), so the kill lands there on any machine
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "pause_after_save.py"), str(out), "300", str(marker),
                             "interp.train", *flags, "--out", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600  # a cap for a stuck child; a loaded machine can take minutes to import torch
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the child never saved its step-300 checkpoint"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert load_run(out).steps[-1] == 300 and int(marker.read_text()) == 300

    assert main([*flags, "--out", str(out), "--resume"]) == 0
    a, b = _final_weights(reference, 1500), _final_weights(out, 1500)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ref_metrics, res_metrics = load_run(reference).metrics, load_run(out).metrics
    assert [r["step"] for r in res_metrics] == [r["step"] for r in ref_metrics]
    assert [r["test_loss"] for r in res_metrics] == [r["test_loss"] for r in ref_metrics]


def test_resume_can_extend_steps(tmp_path):
    out = train(tiny_config(steps=20), tmp_path / "r", progress=False)
    train(tiny_config(steps=40), out, resume=True, progress=False)
    assert load_run(out).steps == [0, 10, 20, 30, 40]


TINY_FLAGS = ["mod_add", "--p", "13", "--frac", "0.5", "--d-model", "32", "--d-mlp", "64", "--lr", "0.003", "--quiet"]


def test_an_extension_is_recorded_and_a_later_plain_resume_is_a_no_op(tmp_path, caplog):
    out = tmp_path / "r"
    assert main([*TINY_FLAGS, "--steps", "20", "--out", str(out)]) == 0
    assert main([*TINY_FLAGS, "--steps", "40", "--out", str(out), "--resume"]) == 0  # extend
    meta = json.loads((out / "config.json").read_text())
    assert meta["config"]["steps"] == 40 and load_run(out).config.steps == 40
    assert [(e["from_steps"], e["to_steps"], e["at_step"]) for e in meta["extensions"]] == [(20, 40, 20)]
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    caplog.set_level(logging.INFO, logger="interp.train")
    # what `make run` does: --resume with no --steps, on a finished (extended) run
    assert main([*TINY_FLAGS, "--out", str(out), "--resume"]) == 0
    assert "already at step 40" in caplog.text and "nothing to do" in caplog.text
    assert main([*TINY_FLAGS, "--steps", "30", "--out", str(out), "--resume"]) == 0  # fewer steps than done: also a no-op
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    # and the extended run is the 40-step run trained in one go
    ref = train(tiny_config(steps=40), tmp_path / "ref", progress=False)
    a, b = _final_weights(ref, 40), _final_weights(out, 40)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_engine_used_is_recorded(tmp_path):
    out = train(tiny_config(steps=10, engine="hooked"), tmp_path / "h", progress=False)
    assert json.loads((out / "config.json").read_text())["config"]["engine"] == "hooked"
    # a resume that does not name an engine, or names 'auto', keeps the recorded one
    assert main([*TINY_FLAGS, "--steps", "20", "--engine", "auto", "--out", str(out), "--resume"]) == 0
    assert load_run(out).config.engine == "hooked" and load_run(out).steps[-1] == 20


@pytest.mark.parametrize("where", ["config_from_args", "tune_allocator"])
def test_ctrl_c_during_start_up_is_a_clean_exit(where, monkeypatch, tmp_path, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(f"interp.train.{where}", interrupted)
    assert main([*TINY_FLAGS, "--out", str(tmp_path / "r")]) == 130
    assert "interrupted before the run started" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("train_idx, test_idx, why", [
    ([0, 1, 2], list(range(2, 168)), "overlap"),
    ([0, 1, 1], list(range(3, 169)), "more than once"),
    ([0, 1, 169], list(range(2, 168)), "outside 0..168"),
    ([-1, 0, 1], list(range(2, 168)), "outside 0..168"),
])
def test_a_split_that_is_not_a_partition_is_refused(train_idx, test_idx, why, tmp_path):
    from interp.runs import SPLIT_FILE, write_tensors

    out = train(tiny_config(steps=10), tmp_path / "r", progress=False)
    assert len(train_idx) + len(test_idx) == 169  # the length check alone lets these through
    write_tensors(out / SPLIT_FILE, {"train_idx": torch.tensor(train_idx), "test_idx": torch.tensor(test_idx)})
    with pytest.raises(RunError, match=f"{out / SPLIT_FILE}: .*{why}"):
        load_run(out)


def test_results_are_flushed_to_disk_before_the_rename(tmp_path, monkeypatch):
    from interp import runs

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(runs.os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))), real_fsync(fd))[1])
    monkeypatch.setattr(runs.os, "replace", lambda a, b: (events.append(("replace", str(a), str(b))), real_replace(a, b))[1])
    out = train(tiny_config(steps=10), tmp_path / "r", progress=False)
    renames = [e for e in events if e[0] == "replace"]
    assert {Path(e[2]).name for e in renames} >= {"config.json", "split.safetensors", "metrics.jsonl", "state.safetensors",
                                                  "step_000010.safetensors"}
    for e in renames:
        i = events.index(e)
        assert ("fsync", e[1]) in events[:i], f"{e[2]} renamed before its data was flushed"
        assert events[i + 1] == ("fsync", str(Path(e[2]).parent)), f"the rename of {e[2]} was not flushed"
    assert not list(out.rglob("*.tmp"))


BAD = [
    (["mod_add", "--p", "1"], "--p 1"),
    (["mod_div", "--p", "12"], "prime"),
    (["mod_add", "--frac", "1.5"], "--frac 1.5"),
    (["mod_add", "--frac", "0"], "--frac 0"),
    (["mod_pow"], "invalid choice: 'mod_pow'"),
    (["mod_add", "--steps", "-5"], "--steps -5"),
    (["mod_add", "--lr", "abc"], "--lr"),
]


@pytest.mark.parametrize("argv, expect", BAD)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(argv, expect, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        sys.exit(main([*argv, "--out", str(out)]))
    err = capsys.readouterr().err
    assert e.value.code == 2 and expect in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_existing_run_without_resume_is_refused(tiny_run, capsys):
    before = sorted(p.stat().st_mtime_ns for p in tiny_run.rglob("*"))
    assert main(["mod_add", "--p", "13", "--out", str(tiny_run)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert sorted(p.stat().st_mtime_ns for p in tiny_run.rglob("*")) == before


def test_resume_with_a_changed_hyperparameter_is_refused(tiny_run, capsys):
    assert main(["mod_add", "--p", "13", "--frac", "0.5", "--d-model", "32", "--d-mlp", "64", "--lr", "0.1",
                 "--out", str(tiny_run), "--resume"]) == 2
    assert "--lr 0.1" in capsys.readouterr().err


def test_corrupt_or_missing_files_are_named(tmp_path, capsys):
    out = train(tiny_config(steps=20), tmp_path / "r", progress=False)
    ckpt = ckpt_path(out, 10)
    ckpt.write_bytes(b"\x00garbage")
    with pytest.raises(RunError, match=str(ckpt)):
        load_run(out).load_model(10)
    ckpt.unlink()
    with pytest.raises(RunError, match="missing"):
        load_run(out).load_model(10)
    state_path(out).write_bytes(b"not safetensors")
    assert main(["mod_add", "--p", "13", "--frac", "0.5", "--d-model", "32", "--d-mlp", "64", "--lr", "0.003",
                 "--steps", "40", "--out", str(out), "--resume", "--quiet"]) == 2
    assert str(state_path(out)) in capsys.readouterr().err
    with pytest.raises(RunError, match="no such run directory"):
        load_run(tmp_path / "nowhere")


def test_cli_exit_code_without_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "interp.train", "mod_div", "--p", "15", "--out", str(tmp_path / "x")],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2 and "Traceback" not in r.stderr and "prime" in r.stderr
    assert not (tmp_path / "x").exists()
