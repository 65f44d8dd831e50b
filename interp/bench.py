"""Benchmarks, as ratios measured in one process (the machine is noisy; absolute numbers drift).

    python -m interp.bench            # p = 113, full batch: HookedTransformer.forward vs the fast path
    python -m interp.bench --run checkpoints/mod_add_p113   # also time the analysis of that run

Training: two copies of the same initial model, one trained through ``HookedTransformer.forward``
(``model(inputs)[:, -1]``) and one through ``interp.model.fast_loss`` (what ``interp.train`` runs),
each with its own AdamW, full batch, float64 loss. Before timing, both paths compute the loss of
the same initial weights; ``loss_abs_diff`` (their difference) shows that the two time the same
computation. Rounds alternate between the two and last equally long (0.5 s of steps
each), so that drift in machine speed hits both alike; the per-step time of each is the median over
rounds. Float32 denormals are flushed for both, as in ``interp.train``. The glibc allocator is left
at its defaults, so the hooked path is the plain TransformerLens loop as a user runs it (about 200
ms per step here); ``--tune-allocator`` tunes it for both paths, as ``interp.train`` does
(``interp.speed``), which speeds up both (the hooked path to about 140 ms per step here).

Stack against sequential (``--stack-vs-sequential``): the same ``--sweep-runs`` runs trained one after
another with ``interp.train.train`` and as one stack (``interp.stack.train_pack``) in this process,
alternating which goes first; ``--sweep-p 113`` at the canonical model size (200 steps).

Late training (``late_over_early``): on the canonical run's own checkpoints (``--run``), the time of
a training step (``fast_loss`` forward and backward, AdamW) from an early checkpoint (step 1 000)
and from the last one, at 1 and at 2 torch threads. Late in training the wrong classes'
probabilities fall below 1e-38; without ``interp.speed``'s denormal handling the late step was ~5x
slower at 2 threads on an AVX-512 Xeon. The ratio is the number to read; it should be near 1.

Sweeps (``--sweep``) compare, on the same members (the small preset, seeds 0..``--sweep-runs``-1,
``--sweep-steps`` steps each): one ``python -m interp.train`` process after another (the loop a user
writes), one process per core side by side, each taking its share of the runs (what ``xargs -P``
does), and one ``python -m interp.sweep`` (its default ``--workers``, one per core, ``--pack auto``).
All three are timed as whole commands, start-up included. Last line:
``sequential_runs_per_hour``, ``per_core_runs_per_hour``, ``sweep_runs_per_hour``,
``speedup_vs_sequential``, ``speedup_vs_per_core``.

Stacks (``--stacks 1,8,64,256``, with ``--device``): member-steps per second of stacks of that many
canonical p = 113 members, and (``--to-grok``) the canonical run's wall time to 99 % test accuracy
on that device.

MLPs (``--mlp``): ms per full-batch training step of the papers' MLP shapes (``MLP_SHAPES``: Chughtai et al.'s,
devinterp's, Prieto et al.'s) against the canonical transformer's fast path, at p = 113 and 53 on the same
30 % split, rounds alternating; the ratios to the transformer are the numbers to read.

Analysis: ``interp.analyze.analysis_throughput`` on the run given by ``--run`` (default: the default
p = 113 run if it exists): every analyser over every checkpoint, nothing cached or written.

The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from interp.cli import Parser, number_list
from interp.config import ConfigError, TrainConfig
from interp.device import name as machine_name
from interp.device import resolve
from interp.families import build_model, to_device
from interp.model import fast_loss, hooked_logits
from interp.losses import loss_fn
from interp.runs import DEFAULT_ROOT
from interp.speed import deterministic, flush_denormals, tune_allocator
from interp.tasks import make_dataset
from interp.train import make_optimizer


def bench_training(cfg: TrainConfig, rounds: int, round_seconds: float, device: torch.device = torch.device("cpu")) -> dict[str, float]:
    data = make_dataset(cfg).to(device)
    x, y = data.inputs[data.train_idx], data.labels[data.train_idx]
    paths = {
        "hooked": lambda m: loss_fn(hooked_logits(m, x), y),
        "fast": lambda m: fast_loss(m, x[:, 0], x[:, 1], y, cfg.eq_token),
    }
    state = {}
    for name in paths:
        model = to_device(build_model(cfg), device)
        state[name] = (model, make_optimizer(model, cfg))
    with torch.no_grad():
        loss_abs_diff = abs(paths["hooked"](state["hooked"][0]).item() - paths["fast"](state["fast"][0]).item())

    def run(name: str, seconds: float) -> float:
        """Steps until ``seconds`` have passed (at least one); milliseconds per step."""
        model, opt = state[name]
        n, t = 0, time.perf_counter()
        while n == 0 or time.perf_counter() - t < seconds:
            paths[name](model).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            n += 1
        return (time.perf_counter() - t) / n * 1000

    for name in paths:  # warm-up
        run(name, 0.0)
        run(name, 0.0)
    times: dict[str, list[float]] = {name: [] for name in paths}
    for r in range(rounds):
        order = list(paths) if r % 2 == 0 else list(paths)[::-1]
        for name in order:
            times[name].append(run(name, round_seconds))
    hooked, fast = statistics.median(times["hooked"]), statistics.median(times["fast"])
    return {"p": cfg.p, "n_train": len(y), "hooked_ms_per_step": round(hooked, 2), "fast_ms_per_step": round(fast, 2),
            "speedup": round(hooked / fast, 2), "loss_abs_diff": loss_abs_diff}


# the model shapes --mlp times (full batch, the canonical 30 % split; the papers' own batches and splits aside):
# the canonical transformer through its fast path, and the papers' MLPs (their widths, embeddings and depth)
MLP_SHAPES = {
    "transformer": {},
    "mlp_chughtai": dict(family="mlp", mlp_embed="untied", mlp_combine="concat", mlp_init="chughtai", d_model=256, d_mlp=128),
    "mlp_devinterp": dict(family="mlp", mlp_embed="tied", mlp_combine="sum", act_fn="gelu", d_model=12, d_mlp=48,
                          freeze_biases=False, mlp_out_bias=False),
    "mlp_prieto": dict(family="mlp", mlp_embed="onehot", mlp_depth=2, d_mlp=200),
}


def bench_configs(configs: dict[str, TrainConfig], rounds: int, round_seconds: float) -> dict[str, float]:
    """Median ms per training step (``interp.train``'s loss closure and AdamW; a fresh batch each step with
    infinite data) of each config's model, rounds alternating between them as in ``bench_training``."""
    from interp.train import loss_closure

    state = {}
    for name, cfg in configs.items():
        model = build_model(cfg)
        state[name] = (model, make_optimizer(model, cfg), loss_closure(model, cfg, make_dataset(cfg)))

    def run(name: str, seconds: float) -> float:
        model, opt, loss = state[name]
        n, t = 0, time.perf_counter()
        while n == 0 or time.perf_counter() - t < seconds:
            loss(n).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            n += 1
        return (time.perf_counter() - t) / n * 1000

    times: dict[str, list[float]] = {name: [] for name in state}
    for name in state:
        run(name, 0.0)
    for r in range(rounds):
        for name in (list(state) if r % 2 == 0 else list(state)[::-1]):
            times[name].append(run(name, round_seconds))
    return {name: statistics.median(t) for name, t in times.items()}


def bench_mlp(ps: list[int], rounds: int, round_seconds: float) -> list[dict]:
    """ms per full-batch training step of each ``MLP_SHAPES`` model at each p (``bench_configs``); one row per p."""
    out = []
    for p in ps:
        ms = bench_configs({name: TrainConfig(p=p, **shape) for name, shape in MLP_SHAPES.items()}, rounds, round_seconds)
        row = {"p": p, "n_train": TrainConfig(p=p).n_train}
        row.update({f"{name}_ms_per_step": round(v, 2) for name, v in ms.items()})
        row.update({f"{name}_over_transformer": round(v / ms["transformer"], 3) for name, v in ms.items() if name != "transformer"})
        out.append(row)
    return out


def sequence_shapes() -> dict[str, TrainConfig]:
    """The sequence tasks' presets and ``phase --quick``'s settings, finite and infinite data, next to the canonical
    run; each full-batch one also through the hooked engine (``{name}_hooked``), against the fast path."""
    from interp.config import PRESETS
    from interp.experiments.phase import QUICK

    out = {"canonical": TrainConfig()}
    for task in ("add5", "repeat_subseq", "max_elem"):
        for tag, base in (("preset", PRESETS[task]), ("quick", QUICK.get(task))):
            if base is not None:
                out[f"{task}_{tag}"] = TrainConfig(task=task, **base)
                out[f"{task}_{tag}_hooked"] = TrainConfig(task=task, **base, engine="hooked")
                if task != "max_elem":
                    out[f"{task}_{tag}_infinite"] = TrainConfig(task=task, **base, infinite_data=True)
    return out


def bench_sequence(rounds: int, round_seconds: float) -> dict:
    """ms per training step of every ``sequence_shapes`` config, its ratio to the canonical run's, and the fast
    path's ratio to the hooked engine's on the same shape."""
    ms = bench_configs(sequence_shapes(), rounds, round_seconds)
    return {"ms_per_step": {k: round(v, 2) for k, v in ms.items()},
            "over_canonical": {k: round(v / ms["canonical"], 3) for k, v in ms.items() if k != "canonical"},
            "fast_over_hooked": {k[: -len("_hooked")]: round(ms[k[: -len("_hooked")]] / v, 3) for k, v in ms.items() if k.endswith("_hooked")}}


def bench_sweep(base: dict, n_runs: int, steps: int, rounds: int) -> dict[str, float]:
    """Runs per hour: ``n_runs`` seeds trained one by one with ``interp.train`` vs as one stack."""
    import tempfile

    from interp.stack import Member, train_pack
    from interp.train import train

    cfgs = [TrainConfig(**{**base, "steps": steps, "seed": s}) for s in range(n_runs)]
    times: dict[str, list[float]] = {"sequential": [], "stacked": []}
    for r in range(rounds):
        order = ["sequential", "stacked"] if r % 2 == 0 else ["stacked", "sequential"]
        for how in order:
            with tempfile.TemporaryDirectory() as d:
                t = time.perf_counter()
                if how == "sequential":
                    for i, c in enumerate(cfgs):
                        train(c, Path(d) / f"r{i}", progress=False)
                else:
                    train_pack([Member(c, Path(d) / f"r{i}") for i, c in enumerate(cfgs)])
                times[how].append(time.perf_counter() - t)
    seq, stk = statistics.median(times["sequential"]), statistics.median(times["stacked"])
    return {"sweep_p": cfgs[0].p, "sweep_runs": n_runs, "sweep_steps": steps, "sequential_s": round(seq, 2), "stacked_s": round(stk, 2),
            "sequential_runs_per_hour": round(n_runs / seq * 3600, 1), "stacked_runs_per_hour": round(n_runs / stk * 3600, 1),
            "speedup": round(seq / stk, 2)}


def _step_ms(model, opt, cfg: TrainConfig, x, y, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fast_loss(model, x[:, 0], x[:, 1], y, cfg.eq_token).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / n * 1000


def bench_late_over_early(run_dir: Path, device: torch.device, early: int = 1000, rounds: int = 5, steps: int = 5) -> dict:
    """ms per training step from the run's checkpoint ``early`` and its last one, at 1 and 2 threads.

    Each round loads the checkpoint's weights afresh (a fresh AdamW) and times ``steps`` steps after
    one warm-up step; rounds alternate early/late; the median is reported."""
    from interp import runs

    run = runs.load_run(run_dir)
    if early not in run.steps:
        early = min(run.steps, key=lambda s: abs(s - early))
    late = run.steps[-1]
    cfg = run.config
    data = run.dataset.to(device)
    x, y = data.inputs[data.train_idx], data.train_labels
    out: dict = {"late_run": str(run_dir), "early_step": early, "late_step": late}
    before = torch.get_num_threads()
    for threads in (1, 2):
        torch.set_num_threads(threads)
        times: dict[int, list[float]] = {early: [], late: []}
        with flush_denormals():
            for r in range(rounds):
                for step in ((early, late) if r % 2 == 0 else (late, early)):
                    model = to_device(run.load_model(step), device).train()
                    opt = make_optimizer(model, cfg)
                    _step_ms(model, opt, cfg, x, y, 1)
                    times[step].append(_step_ms(model, opt, cfg, x, y, steps))
        e, l_ = statistics.median(times[early]), statistics.median(times[late])
        out.update({f"early_ms_{threads}t": round(e, 2), f"late_ms_{threads}t": round(l_, 2), f"late_over_early_{threads}t": round(l_ / e, 3)})
    torch.set_num_threads(before)
    out["late_over_early"] = max(out["late_over_early_1t"], out["late_over_early_2t"])
    return out


def _timed(cmds: list[list[str]], env: dict | None = None) -> float:
    """Wall seconds of running ``cmds`` side by side (each a list of argv run one after another)."""
    import os
    import subprocess

    def chain(argvs):
        return " && ".join(" ".join(a) for a in argvs)

    t = time.perf_counter()
    procs = [subprocess.Popen(["bash", "-c", chain(c)], env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL) for c in cmds]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise RuntimeError(f"a benchmarked command failed (exit codes {codes})")
    return time.perf_counter() - t


def bench_sweep_ways(n_runs: int, steps: int) -> dict:
    """Runs per hour of the same members three ways (see the module docstring)."""
    import os
    import tempfile

    py, cores = sys.executable, os.cpu_count() or 1
    flags = ["--preset", "small", "--steps", str(steps), "--quiet"]
    with tempfile.TemporaryDirectory() as d:
        def run(i: int, tag: str) -> list[str]:
            return [py, "-m", "interp.train", "mod_add", *flags, "--seed", str(i), "--out", f"{d}/{tag}{i}"]

        seq = _timed([[run(i, "s") for i in range(n_runs)]])
        per_core = _timed([[run(i, "c") for i in range(k, n_runs, cores)] for k in range(cores)], env={"OMP_NUM_THREADS": "1"})
        grid = ",".join(str(i) for i in range(n_runs))
        sweep = _timed([[[py, "-m", "interp.sweep", "mod_add", *flags, "--grid", f"seed={grid}", "--out", f"{d}/sweep"]]])
    per_hour = lambda t: round(n_runs / t * 3600, 1)  # noqa: E731
    return {"sweep_runs": n_runs, "sweep_steps": steps, "cores": cores, "sequential_s": round(seq, 1), "per_core_s": round(per_core, 1),
            "sweep_s": round(sweep, 1), "sequential_runs_per_hour": per_hour(seq), "per_core_runs_per_hour": per_hour(per_core),
            "sweep_runs_per_hour": per_hour(sweep), "speedup_vs_sequential": round(seq / sweep, 2),
            "speedup_vs_per_core": round(per_core / sweep, 2)}


def bench_stacks(sizes: list[int], device: torch.device, steps: int = 5) -> dict:
    """Member-steps per second of stacks of ``sizes`` canonical p = 113 members on ``device``."""
    from interp.stack import Member, Pack

    out = {}
    with flush_denormals():
        for k in sizes:
            pack = Pack([Member(TrainConfig(seed=i), None) for i in range(k)], device)
            for _ in range(2):
                pack.train_step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(steps):
                pack.train_step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            out[f"stack_{k}_member_steps_per_s"] = round(k * steps / (time.perf_counter() - t), 2)
            del pack
    return out


def bench_to_grok(device: torch.device) -> dict:
    """The canonical run trained on ``device`` until test accuracy first reaches 99 % (then it stops)."""
    import tempfile

    from interp import runs
    from interp.train import train

    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        train(TrainConfig(stop_after_grok=0), Path(d) / "run", progress=False, device=device)
        wall = time.perf_counter() - t
        end = runs.ended(Path(d) / "run")
    return {"canonical_grok_step": end["step"] if end else None, "canonical_to_99_s": round(wall, 1) if end else None}


def main(argv: list[str] | None = None) -> int:
    ap = Parser(prog="python -m interp.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--p", type=int, default=113, help="modulus (default: 113)")
    ap.add_argument("--rounds", type=int, default=10, help="alternating rounds per path (default: 10)")
    ap.add_argument("--round-seconds", type=float, default=0.5, help="length of a round: each path steps for this long, so that both see the same machine noise (default: 0.5)")
    ap.add_argument("--run", type=Path, default=DEFAULT_ROOT / "mod_add_p113", help="run directory whose analysis is timed (default: %(default)s; skipped if absent)")
    ap.add_argument("--tune-allocator", action="store_true", help="tune glibc's allocator for both paths, as python -m interp.train does (default: leave it as it is)")
    ap.add_argument("--sweep", action="store_true", help="instead: the same runs one interp.train after another, one process per core, and one interp.sweep (last line: runs per hour of each and the speedups)")
    ap.add_argument("--sweep-runs", type=int, default=8, help="runs in the --sweep comparison (default: 8)")
    ap.add_argument("--sweep-steps", type=int, default=1000, help="steps per run in --sweep (default: 1000)")
    ap.add_argument("--stack-vs-sequential", action="store_true", help="instead: one stack vs the same runs one after another in this process (--sweep-p sets p)")
    ap.add_argument("--sweep-p", type=int, default=None, help="--stack-vs-sequential at the canonical model size with this p instead of the small preset")
    ap.add_argument("--stacks", default=None, metavar="K1,K2,...", help="instead: member-steps per second of stacks of these many canonical members (e.g. 1,8,64,256) on --device")
    ap.add_argument("--to-grok", action="store_true", help="with --stacks: also the canonical run's wall time to 99%% test accuracy on --device")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    ap.add_argument("--mlp", action="store_true", help="instead: ms per full-batch training step of the papers' MLPs against the canonical "
                    "transformer at p = 113 and 53 (last line: JSON rows with each model's ratio to the transformer)")
    ap.add_argument("--sequence", action="store_true", help="instead: ms per training step of the sequence tasks' presets and of "
                    "phase --quick's settings, finite and infinite data, against the canonical run (last line: JSON with each ratio)")
    args = ap.parse_args(argv)
    try:
        device = resolve(args.device)
    except ConfigError as e:
        ap.error(str(e))
    if args.stacks is not None:
        try:
            sizes = number_list(args.stacks, "--stacks", int, positive=True)
        except ValueError as e:
            ap.error(str(e))
        tune_allocator()
        r = {"device": str(device), "machine": machine_name(device), **bench_stacks(sizes, device)}
        if args.to_grok:
            r.update(bench_to_grok(device))
        print(json.dumps(r))
        return 0
    if args.mlp:
        if args.rounds < 1:
            ap.error(f"--rounds {args.rounds}: must be >= 1")
        tune_allocator()  # as interp.train runs
        with flush_denormals():
            rows = bench_mlp([113, 53], args.rounds, args.round_seconds)
        for r in rows:
            print(f"p={r['p']} full batch ({r['n_train']} examples): transformer {r['transformer_ms_per_step']} ms/step; "
                  + ", ".join(f"{k[:-len('_ms_per_step')]} {v} ms/step" for k, v in r.items() if k.startswith("mlp_") and k.endswith("_ms_per_step"))
                  + f" (torch threads: {torch.get_num_threads()})", flush=True)
        print(json.dumps({"mlp": rows, "machine": machine_name("cpu")}))
        return 0
    if args.sequence:
        if args.rounds < 1:
            ap.error(f"--rounds {args.rounds}: must be >= 1")
        tune_allocator()  # as interp.train runs
        with flush_denormals(), deterministic():  # sequence tasks train with deterministic kernels
            r = bench_sequence(args.rounds, args.round_seconds)
        print("; ".join(f"{k} {v} ms/step" for k, v in r["ms_per_step"].items()) + f" (torch threads: {torch.get_num_threads()})", flush=True)
        print(json.dumps({**r, "threads": torch.get_num_threads(), "machine": machine_name("cpu")}))
        return 0
    if args.sweep:
        if args.sweep_runs < 1 or args.sweep_steps < 1:
            ap.error(f"--sweep-runs {args.sweep_runs} / --sweep-steps {args.sweep_steps}: must be >= 1")
        r = bench_sweep_ways(args.sweep_runs, args.sweep_steps)
        print(f"{r['sweep_runs']} small-preset runs of {r['sweep_steps']} steps on {r['cores']} cores: one after another {r['sequential_s']} s, "
              f"one process per core {r['per_core_s']} s, interp.sweep {r['sweep_s']} s", flush=True)
        print(json.dumps({k: r[k] for k in ("sequential_runs_per_hour", "per_core_runs_per_hour", "sweep_runs_per_hour",
                                            "speedup_vs_sequential", "speedup_vs_per_core")} | r | {"machine": machine_name("cpu")}))
        return 0
    try:
        cfg = TrainConfig(p=args.p)
    except ConfigError as e:
        ap.error(str(e))
    if args.rounds < 1:
        ap.error(f"--rounds {args.rounds}: must be >= 1")
    if not args.round_seconds >= 0:
        ap.error(f"--round-seconds {args.round_seconds}: must be >= 0")
    if args.tune_allocator:
        tune_allocator()
    if args.stack_vs_sequential:
        from interp.config import PRESETS

        base = PRESETS["small"] if args.sweep_p is None else {"p": args.sweep_p}
        steps = args.sweep_steps if args.sweep_p is None else 200
        tune_allocator()  # as interp.train and interp.sweep run
        r = bench_sweep(base, args.sweep_runs, steps, max(1, min(args.rounds, 3)))
        print(f"{r['sweep_runs']} runs of {r['sweep_steps']} steps at p={r['sweep_p']}: sequential {r['sequential_s']} s, "
              f"stacked {r['stacked_s']} s, speedup {r['speedup']}x (torch threads: {torch.get_num_threads()})", flush=True)
        print(json.dumps({k: r[k] for k in ("sequential_runs_per_hour", "stacked_runs_per_hour", "speedup")} | r))
        return 0
    with flush_denormals():
        result = bench_training(cfg, args.rounds, args.round_seconds, device)
    result["allocator"] = "tuned" if args.tune_allocator else "default"
    result["machine"] = machine_name(device)
    print(f"training, p={result['p']} full batch ({result['n_train']} examples, allocator {result['allocator']}): "
          f"hooked {result['hooked_ms_per_step']} ms/step, fast {result['fast_ms_per_step']} ms/step, "
          f"speedup {result['speedup']}x (torch threads: {torch.get_num_threads()})", flush=True)
    if (args.run / "config.json").is_file():
        from interp.analyze import analysis_throughput

        lo = bench_late_over_early(args.run, device)
        result.update(lo)
        print(f"late training on {args.run}: step {lo['early_step']} {lo['early_ms_1t']} / {lo['early_ms_2t']} ms, step {lo['late_step']} "
              f"{lo['late_ms_1t']} / {lo['late_ms_2t']} ms at 1 / 2 threads: late_over_early {lo['late_over_early_1t']} / {lo['late_over_early_2t']}", flush=True)

        a = analysis_throughput(args.run)
        result.update(analysis_run=str(args.run), analysis_checkpoints=a["n_checkpoints"],
                      analysis_seconds=a["seconds"], analysis_checkpoints_per_s=a["checkpoints_per_s"])
        print(f"analysis of {args.run}: {a['n_checkpoints']} checkpoints in {a['seconds']} s "
              f"({a['checkpoints_per_s']} checkpoints/s)", flush=True)
    else:
        print(f"analysis: skipped, {args.run} is not a run directory (train it or pass --run)", flush=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
