"""python -m interp.sweep: grids, results table, resume after kill -9, failures, bad input, Ray backends."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from interp import load_run
from interp.runs import ckpt_path
from interp.config import TrainConfig
from interp.sweep import OUTCOME_COLUMNS, Spec, SweepError, main, run_sweep

ROOT = Path(__file__).resolve().parents[1]
BASE = ["mod_add", "--p", "13", "--d-mlp", "64", "--eval-every", "10", "--save-every", "10", "--quiet"]
TINY = [*BASE, "--d-model", "32", "--lr", "0.003"]


def rows(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def without_wall(rs: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rs]


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweeps") / "local"
    assert main([*TINY, "--steps", "60", "--grid", "train-size=40,80", "--grid", "seed=1,2,3", "--pack", "4", "--out", str(out)]) == 0
    return out


def test_results_table_and_member_runs(local_sweep):
    rs = rows(local_sweep)
    assert list(rs[0]) == ["run", "train_size", "seed", *OUTCOME_COLUMNS]
    assert [(r["train_size"], r["seed"]) for r in rs] == [(n, s) for n in ("40", "80") for s in ("1", "2", "3")]
    spec = json.loads((local_sweep / "sweep.json").read_text())
    assert spec["spec"]["grid"] == {"train_size": [40, 80], "seed": [1, 2, 3]} and len(spec["members"]) == 6
    for r in rs:
        run = load_run(local_sweep / r["run"])  # an ordinary run directory
        assert r["run"] == f"runs/train_size{run.config.train_size}_seed{run.config.seed}"
        assert len(run.train_idx) == run.config.train_size and run.steps[-1] == 60
        last = run.metrics[-1]
        assert r["status"] == "ok" and int(r["final_step"]) == 60
        assert float(r["final_test_acc"]) == last["test_acc"] and float(r["final_test_loss"]) == last["test_loss"]
        assert float(r["final_param_norm"]) == last["param_norm"]
        first = next((m["step"] for m in run.metrics if m["train_acc"] >= 0.99), None)
        assert r["train_99_step"] == ("" if first is None else str(first))
    assert {r["test_99_step"] for r in rs} == {""}  # 60 steps: nobody generalises yet


def test_rerun_of_a_finished_sweep_trains_nothing(local_sweep):
    before = {p: p.stat().st_mtime_ns for p in local_sweep.rglob("*.safetensors")}
    t = time.perf_counter()
    assert main([*TINY, "--steps", "60", "--grid", "train-size=40,80", "--grid", "seed=1,2,3", "--pack", "4", "--out", str(local_sweep)]) == 0
    assert {p: p.stat().st_mtime_ns for p in local_sweep.rglob("*.safetensors")} == before
    assert time.perf_counter() - t < 30


def test_failed_members_do_not_stop_the_others(tmp_path, capsys):
    out = tmp_path / "s"
    # lr 1e30 diverges; the other members train on in the same pack
    code = main([*BASE, "--steps", "30", "--d-model", "24", "--grid", "lr=0.003,1e30", "--grid", "seed=1,2", "--out", str(out)])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 of 4 members failed" in err[0]
    by = {(r["lr"], r["seed"]): r for r in rows(out)}
    assert [by[("0.003", s)]["status"] for s in "12"] == ["ok", "ok"]
    assert all(by[("1e+30", s)]["status"] == "failed" and "not finite" in by[("1e+30", s)]["reason"] for s in "12")
    assert load_run(out / by[("0.003", "2")]["run"]).steps[-1] == 30


def test_n_heads_clash_is_a_failed_member(tmp_path):
    out = tmp_path / "s"
    # each value is allowed with the base config (4 heads, d_model 128); 8 heads do not divide d_model 36
    assert main([*BASE, "--steps", "10", "--grid", "n-heads=4,8", "--grid", "d-model=32,36", "--out", str(out)]) == 1
    by = {(r["n_heads"], r["d_model"]): r for r in rows(out)}
    assert by[("8", "36")]["status"] == "failed" and "--n-heads" in by[("8", "36")]["reason"]
    assert [by[k]["status"] for k in (("4", "32"), ("4", "36"), ("8", "32"))] == ["ok"] * 3
    assert not (out / "runs" / "n_heads8_d_model36").exists()


@pytest.mark.parametrize("args, message", [
    (["--grid", "nonsense=1,2"], "unknown field"),
    (["--grid", "wd=abc"], "not a valid float"),
    (["--grid", "frac=0.5,1.5"], "--frac 1.5"),
    (["--grid", "seed="], "empty value"),
    (["--grid", "seed"], "expected FIELD=V1,V2"),
    (["--grid", "lr=0.1"], "also given as --lr"),
    (["--grid", "seed=1", "--grid", "seed=2"], "given twice"),
    ([], "no --grid given"),
    (["--grid", "seed=1", "--backend", "ray", "--address", "127.0.0.1:1"], "cannot reach a Ray head"),
    (["--grid", "seed=1", "--pack", "0"], "--pack 0"),
    (["--grid", "seed=1", "--device", "tpu"], "--device"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "s"
    assert main([*TINY, "--steps", "10", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_a_different_sweep_in_the_same_out_is_refused(local_sweep, capsys):
    before = (local_sweep / "results.csv").read_text()
    assert main([*TINY, "--steps", "60", "--grid", "train-size=40,80", "--grid", "seed=1,2", "--out", str(local_sweep)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds a different sweep" in err[0]
    assert (local_sweep / "results.csv").read_text() == before


def test_a_sweep_written_before_a_new_config_field_existed_resumes(tmp_path):
    """Experiments build the shared fields from a whole TrainConfig. A field added to TrainConfig later
    (here mask_from, default None) is absent from an older sweep.json: it is still the same sweep, and
    resuming it trains nothing; a real change of a shared field is still refused."""
    cfg = TrainConfig(task="mod_add", p=13, d_model=32, d_mlp=64, lr=0.003, steps=30, eval_every=10, save_every=10)
    spec = Spec({k: v for k, v in cfg.to_dict().items() if k != "seed"}, {"seed": [1, 2]})
    out = tmp_path / "s"
    run_sweep(spec, out, progress=False)
    d = json.loads((out / "sweep.json").read_text())
    del d["spec"]["base"]["mask_from"]
    for m in d["members"]:
        del m["config"]["mask_from"]
    (out / "sweep.json").write_text(json.dumps(d))
    before = (out / "results.csv").read_text()
    run_sweep(spec, out, progress=False)
    assert (out / "results.csv").read_text() == before
    with pytest.raises(SweepError, match="holds a different sweep"):
        run_sweep(Spec({**spec.base, "lr": 0.01}, spec.grid), out, progress=False)


@pytest.mark.integration
def test_resume_after_kill_9_mid_pack_gives_the_same_table(tmp_path):
    args = [*TINY, "--steps", "400", "--grid", "train-size=40,80", "--grid", "seed=1,2"]
    ref = tmp_path / "ref"
    assert main([*args, "--out", str(ref)]) == 0

    out, marker = tmp_path / "killed", tmp_path / "saved"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    probe = out / "runs" / "train_size40_seed1"
    # the sweep holds right after the probe member's step-100 checkpoint, in the middle of its pack's
    # checkpoint (before the metrics and the two-phase resume state), so the kill lands there on any machine;
    # --workers 1 keeps the packs in the process that pause_after_save patches (worker processes import afresh)
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "pause_after_save.py"), str(probe), "100", str(marker),
                             "interp.sweep", *args, "--workers", "1", "--out", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600  # a cap for a stuck child
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the sweep never saved the probe's step-100 checkpoint"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert load_run(probe).steps[-1] == 100, "the sweep must be killed mid-pack"

    assert main([*args, "--out", str(out)]) == 0
    assert without_wall(rows(out)) == without_wall(rows(ref))
    assert [r["step"] for r in load_run(probe).metrics] == [r["step"] for r in load_run(ref / "runs" / "train_size40_seed1").metrics]


# ---- Ray --------------------------------------------------------------------------------------
ray = pytest.importorskip("ray")
RAY_ARGS = [*TINY, "--steps", "60", "--grid", "train-size=40,80", "--grid", "seed=1,2,3", "--pack", "4"]


@pytest.mark.integration
@pytest.mark.xdist_group("ray")  # one Ray instance at a time
def test_ray_in_process_equals_local(local_sweep, tmp_path):
    out = tmp_path / "ray"
    assert main([*RAY_ARGS, "--backend", "ray", "--out", str(out)]) == 0
    assert without_wall(rows(out)) == without_wall(rows(local_sweep))
    assert not ray.is_initialized()


@pytest.mark.integration
@pytest.mark.xdist_group("ray")
def test_ray_cluster_head_joined_by_address(local_sweep, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import tempfile

    # Ray's socket paths must stay under 107 bytes: a short temporary directory, not pytest's
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray")}
    ray_bin = Path(sys.executable).with_name("ray")
    head = subprocess.Popen([str(ray_bin), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
                             "--include-dashboard=false", "--disable-usage-stats", "--block"], env=env,
                            stdout=open(tmp_path / "head.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        log = tmp_path / "head.log"
        deadline = time.time() + 120
        while "Ray runtime started" not in log.read_text() and time.time() < deadline:  # all its services are up
            assert head.poll() is None, "ray start --head exited: " + log.read_text()[-1500:]
            time.sleep(0.5)
        out = tmp_path / "cluster"
        code = subprocess.run([sys.executable, "-m", "interp.sweep", *RAY_ARGS, "--backend", "ray", "--address", f"127.0.0.1:{port}",
                               "--out", str(out)], env=env, capture_output=True, text=True, timeout=300)
        assert code.returncode == 0, code.stderr[-2000:]
        assert without_wall(rows(out)) == without_wall(rows(local_sweep))
    finally:  # stop the head (and the raylet, GCS and workers it started) by its own process group
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(head.pid, sig)
            except ProcessLookupError:
                break
            try:
                head.wait(timeout=30)
                break
            except subprocess.TimeoutExpired:
                continue
