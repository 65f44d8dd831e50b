"""Speed and reach (interp.device, stop_after_grok, local workers, --plan, the bench's new lines)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from interp import kernel, runs, stack, stopping, sweep
from interp.experiments import tickets
from interp.config import TrainConfig
from interp.stack import Member, train_pack
from interp.sweep import Spec, auto_pack_size, member_bytes, run_sweep
from interp.train import train
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]
# a tiny run that passes test accuracy 0.5 within ~40 steps: the tests lower GROK_ACC to 0.5 to reach "grokked" fast
FAST = dict(frac=0.8, lr=1e-2, steps=200, eval_every=10, save_every=50)


@pytest.fixture
def low_grok(monkeypatch):
    monkeypatch.setattr(stopping, "GROK_ACC", 0.5)
    return 0.5


def _grok_step(metrics, level=0.5):
    return next(r["step"] for r in metrics if r["test_acc"] >= level)


def test_stop_after_grok_ends_the_run_and_records_why(tmp_path, low_grok):
    full = train(tiny_config(**FAST), tmp_path / "full", progress=False)
    g = _grok_step(runs.read_metrics(full))
    assert g + 20 < FAST["steps"]
    out = train(tiny_config(**FAST, stop_after_grok=20), tmp_path / "stop", progress=False)
    end = runs.ended(out)
    assert end["step"] == g + 20 and f"at step {g}" in end["reason"]
    assert runs.checkpoint_steps(out)[-1] == g + 20 and runs.read_metrics(out)[-1]["step"] == g + 20
    # the same computation as the run that went on, up to where it stopped
    strip = lambda rows: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]  # noqa: E731
    assert strip(runs.read_metrics(out)) == strip([r for r in runs.read_metrics(full) if r["step"] <= g + 20])
    before = sorted(p.name for p in (out / runs.CKPT_DIR).iterdir())
    train(tiny_config(**FAST, stop_after_grok=20), out, resume=True, progress=False)  # an ended run is finished
    assert sorted(p.name for p in (out / runs.CKPT_DIR).iterdir()) == before


def test_a_stopped_member_leaves_the_stack_and_matches_its_lone_run(tmp_path, low_grok):
    cfgs = [tiny_config(**FAST, stop_after_grok=0), tiny_config(**FAST, seed=5)]
    members = train_pack([Member(c, tmp_path / f"m{i}") for i, c in enumerate(cfgs)])
    lone = train(cfgs[0], tmp_path / "lone", progress=False)
    g = runs.ended(lone)["step"]
    assert members[0].ended and runs.ended(tmp_path / "m0")["step"] == g
    assert runs.checkpoint_steps(tmp_path / "m0")[-1] == g
    assert not members[1].ended and runs.checkpoint_steps(tmp_path / "m1")[-1] == FAST["steps"]  # its pack-mate went on
    a, _ = runs.read_tensors(runs.ckpt_path(tmp_path / "m0", g))
    b, _ = runs.read_tensors(runs.ckpt_path(lone, g))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def test_a_stopped_member_costs_no_per_example_work(monkeypatch):
    """stacked_loss skips members that are not live: their loss is 0 and their examples give no gradient."""
    cfgs = [tiny_config(seed=s) for s in (1, 2)]
    pack = stack.Pack([Member(c, None) for c in cfgs])
    calls = []
    real = kernel.float32_grad
    monkeypatch.setattr(kernel, "float32_grad", lambda g: calls.append(g.shape) or real(g))
    both = pack.losses().detach()
    n_both = len(calls)
    pack.members[1].ended = "test"
    one = pack.losses().detach()
    assert one[1] == 0 and one[0] == both[0] and len(calls) - n_both == n_both // 2


def test_workers_give_the_same_checkpoints_as_one_process(tmp_path):
    spec = Spec({"task": "mod_add", **{k: v for k, v in tiny_config(steps=30, save_every=10).to_dict().items() if k != "task"}},
                {"seed": [1, 2, 3]})
    run_sweep(spec, tmp_path / "one", progress=False, workers=1, pack_size="auto")
    run_sweep(spec, tmp_path / "two", progress=False, workers=2, pack_size="auto")
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("ckpt/*.safetensors"))
    assert len(files) == 3 * 4
    for f in files:
        a, _ = runs.read_tensors(tmp_path / "one" / f)
        b, _ = runs.read_tensors(tmp_path / "two" / f)
        assert all(torch.equal(a[k], b[k]) for k in a), f


def test_auto_pack_size_from_free_memory(monkeypatch):
    cfgs = [TrainConfig(seed=s) for s in range(300)]
    need = member_bytes(cfgs[0])
    assert 50e6 < need < 500e6  # a canonical member: tens to hundreds of MB, mostly the evaluation's activations
    monkeypatch.setattr(sweep, "_free_bytes", lambda dev: 100 * need)
    assert auto_pack_size(cfgs, "cuda") == 80                   # 80 % of the GPU's free memory
    assert auto_pack_size(cfgs, "cpu", workers=2) == 25         # half the RAM, shared by 2 workers
    monkeypatch.setattr(sweep.os, "cpu_count", lambda: 2)
    assert auto_pack_size(cfgs[:10], "cpu", workers=1) == 5     # and no more than gives each core a pack
    monkeypatch.setattr(sweep, "_free_bytes", lambda dev: 10**15)
    assert auto_pack_size(cfgs, "cuda") == sweep.MAX_AUTO_PACK
    monkeypatch.setattr(sweep, "_free_bytes", lambda dev: None)
    with pytest.raises(sweep.SweepError, match="--pack auto"):
        auto_pack_size(cfgs, "cpu")


def test_config_json_records_the_machine(tiny_run):
    meta = json.loads((tiny_run / runs.CONFIG_FILE).read_text())
    m = meta["machine"]
    assert m["device"] == "cpu" and m["cpu"] and isinstance(m["cpu_isa"], list) and m["torch_threads"] >= 1


def _cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *argv], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})


def test_plan_prints_the_cost_and_writes_nothing(tmp_path):
    r = _cli("interp.sweep", "mod_add", "--p", "13", "--d-model", "32", "--d-mlp", "64", "--steps", "100",
             "--grid", "seed=1,2,3", "--out", str(tmp_path / "s"), "--plan", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout.strip().splitlines()[-1])
    assert plan["members"] == 3 and plan["member_steps"] == 300 and plan["estimated_s"] >= 0
    assert not (tmp_path / "s").exists()
    r = _cli("interp.experiment", "tickets", "--quick", "--plan", "--out", str(tmp_path / "t"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout.strip().splitlines()[-1])
    # every stage: the dense runs and each arm, one member per seed (no k sweep in the quick version)
    assert plan["members"] == len(tickets.SEEDS) * len(tickets.METHODS) and "every stage" in plan["note"]
    assert not (tmp_path / "t").exists()


def test_every_staged_experiment_can_plan_all_its_stages():
    from interp.experiments import EXPERIMENTS, load

    staged = [n for n in EXPERIMENTS if hasattr(load(n), "run")]
    assert staged and all(callable(getattr(load(n), "plan_specs", None)) for n in staged), staged


BAD = [
    (["interp.train", "mod_add", "--device", "cuda:7"], "--device cuda:7"),
    (["interp.train", "mod_add", "--device", "tpu"], "--device 'tpu'"),
    (["interp.train", "mod_add", "--stop-after-grok", "-1"], "--stop-after-grok -1"),
    (["interp.sweep", "mod_add", "--grid", "seed=1,2", "--workers", "0"], "--workers 0"),
    (["interp.sweep", "mod_add", "--grid", "seed=1,2", "--pack", "0"], "--pack 0"),
    (["interp.sweep", "mod_add", "--grid", "seed=1,2", "--pack", "many"], "--pack 'many'"),
    (["interp.sweep", "mod_add", "--grid", "seed=1,2", "--device", "cuda:7"], "--device cuda:7"),
    (["interp.experiment", "datafrac", "--quick", "--device", "cuda:7"], "--device cuda:7"),
    (["interp.experiment", "datafrac", "--quick", "--workers", "0"], "--workers 0"),
    (["interp.analyze", "RUN", "--device", "cuda:7"], "--device cuda:7"),
    (["interp.bench", "--device", "cuda:7"], "--device cuda:7"),
]


@pytest.mark.skipif(torch.cuda.device_count() > 7, reason="this machine has a cuda:7")
@pytest.mark.parametrize("argv, expect", BAD, ids=[" ".join(a[:1] + a[-2:]) for a, _ in BAD])
def test_bad_device_workers_pack_and_stop_are_one_line(argv, expect, tmp_path):
    argv = [a.replace("RUN", str(tmp_path / "run")) for a in argv]
    if argv[0] != "interp.analyze" and argv[0] != "interp.bench":
        argv += ["--out", str(tmp_path / "out")]
    r = _cli(*argv, cwd=tmp_path)
    assert r.returncode == 2 and expect in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_bench_late_over_early_on_a_run(tiny_run):
    from interp.bench import bench_late_over_early

    r = bench_late_over_early(tiny_run, torch.device("cpu"), early=10, rounds=2, steps=1)
    assert r["early_step"] == 10 and r["late_step"] == 40
    for t in ("1t", "2t"):
        assert r[f"early_ms_{t}"] > 0 and r[f"late_over_early_{t}"] == pytest.approx(r[f"late_ms_{t}"] / r[f"early_ms_{t}"], rel=0.01)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_run_equals_cpu_run(tmp_path):
    cfg = tiny_config(steps=20)
    cpu = train(cfg, tmp_path / "cpu", progress=False)
    gpu = train(cfg, tmp_path / "gpu", progress=False, device="cuda")
    assert json.loads((gpu / runs.CONFIG_FILE).read_text())["machine"]["gpu"]
    for step in runs.checkpoint_steps(cpu):
        a, _ = runs.read_tensors(runs.ckpt_path(cpu, step))
        b, _ = runs.read_tensors(runs.ckpt_path(gpu, step))
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-4, msg=f"step {step} {k}")


@pytest.mark.integration
def test_killing_a_sweep_kills_its_workers(tmp_path):
    """A kill -9 of `interp.sweep` must not leave its worker processes training (and writing) on."""
    import os
    import signal
    import time

    out = tmp_path / "s"
    proc = subprocess.Popen([sys.executable, "-m", "interp.sweep", "mod_add", "--p", "13", "--d-model", "32", "--d-mlp", "64",
                             "--steps", "100000", "--eval-every", "100", "--save-every", "100", "--grid", "seed=1,2",
                             "--workers", "2", "--pack", "1", "--out", str(out), "--quiet"],
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not all(runs.checkpoint_steps(out / "runs" / f"seed{s}")[-1:] >= [200] for s in (1, 2)):
        time.sleep(0.2)
    children = {int(c) for t in os.listdir(f"/proc/{proc.pid}/task") for c in open(f"/proc/{proc.pid}/task/{t}/children").read().split()}
    assert len(children) >= 2, "the sweep should have started worker processes"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(3)
    alive = {c for c in children if os.path.exists(f"/proc/{c}") and open(f"/proc/{c}/stat").read().split()[2] != "Z"}
    assert not alive, f"worker processes {alive} outlived their sweep"


def test_a_summary_reports_the_budget_not_where_stopped_members_ended(tmp_path, low_grok):
    """datafrac's budget column (and the report's censoring line) is the configured steps, even when
    stop_after_grok ended every member earlier."""
    from interp.experiments import datafrac

    base = {"task": "mod_add", **{k: v for k, v in tiny_config(**FAST, stop_after_grok=0).to_dict().items() if k not in ("task", "frac")}}
    run_sweep(Spec(base, {"frac": [0.8], "seed": [1, 2]}), tmp_path / "s", progress=False, workers=1, pack_size=2)
    ends = [runs.ended(d)["step"] for d in sorted((tmp_path / "s" / "runs").iterdir())]
    assert max(ends) < FAST["steps"]
    assert [r["budget"] for r in datafrac.summarise(tmp_path / "s")] == [FAST["steps"]]
