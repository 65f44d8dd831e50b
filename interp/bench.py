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

Sweeps (``--sweep``): the same ``--sweep-runs`` runs (the small preset with seeds 0, 1, ..., 1 000
steps each, writing their run directories) trained one after another with ``interp.train.train``
and as one stack (``interp.stack.train_pack``), alternating which goes first over ``--rounds``
repeats; runs per hour of each from the median times. ``--sweep-p 113`` does the same at the
canonical size (default model, 30% split; fewer steps, ``--sweep-steps``).

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

from interp.cli import Parser
from interp.config import ConfigError, TrainConfig
from interp.model import build_model, fast_loss, hooked_logits, loss_fn
from interp.runs import DEFAULT_ROOT
from interp.speed import flush_denormals, tune_allocator
from interp.tasks import make_dataset
from interp.train import make_optimizer


def bench_training(cfg: TrainConfig, rounds: int, round_seconds: float) -> dict[str, float]:
    data = make_dataset(cfg)
    x, y = data.inputs[data.train_idx], data.labels[data.train_idx]
    paths = {
        "hooked": lambda m: loss_fn(hooked_logits(m, x), y),
        "fast": lambda m: fast_loss(m, x[:, 0], x[:, 1], y, cfg.eq_token),
    }
    state = {}
    for name in paths:
        model = build_model(cfg)
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


def main(argv: list[str] | None = None) -> int:
    ap = Parser(prog="python -m interp.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--p", type=int, default=113, help="modulus (default: 113)")
    ap.add_argument("--rounds", type=int, default=10, help="alternating rounds per path (default: 10)")
    ap.add_argument("--round-seconds", type=float, default=0.5, help="length of a round: each path steps for this long, so that both see the same machine noise (default: 0.5)")
    ap.add_argument("--run", type=Path, default=DEFAULT_ROOT / "mod_add_p113", help="run directory whose analysis is timed (default: %(default)s; skipped if absent)")
    ap.add_argument("--tune-allocator", action="store_true", help="tune glibc's allocator for both paths, as python -m interp.train does (default: leave it as it is)")
    ap.add_argument("--sweep", action="store_true", help="instead: sequential interp.train runs vs one stack (last line: runs per hour of each and the speedup)")
    ap.add_argument("--sweep-runs", type=int, default=8, help="runs in the --sweep comparison (default: 8)")
    ap.add_argument("--sweep-steps", type=int, default=None, help="steps per run in --sweep (default: 1000 for the small preset, 200 with --sweep-p)")
    ap.add_argument("--sweep-p", type=int, default=None, help="--sweep at the canonical model size with this p instead of the small preset")
    args = ap.parse_args(argv)
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
    if args.sweep:
        from interp.config import PRESETS

        base = PRESETS["small"] if args.sweep_p is None else {"p": args.sweep_p}
        steps = args.sweep_steps or (1000 if args.sweep_p is None else 200)
        tune_allocator()  # as interp.train and interp.sweep run
        r = bench_sweep(base, args.sweep_runs, steps, max(1, min(args.rounds, 3)))
        print(f"{r['sweep_runs']} runs of {r['sweep_steps']} steps at p={r['sweep_p']}: sequential {r['sequential_s']} s, "
              f"stacked {r['stacked_s']} s, speedup {r['speedup']}x (torch threads: {torch.get_num_threads()})", flush=True)
        print(json.dumps({k: r[k] for k in ("sequential_runs_per_hour", "stacked_runs_per_hour", "speedup")} | r))
        return 0
    with flush_denormals():
        result = bench_training(cfg, args.rounds, args.round_seconds)
    result["allocator"] = "tuned" if args.tune_allocator else "default"
    print(f"training, p={result['p']} full batch ({result['n_train']} examples, allocator {result['allocator']}): "
          f"hooked {result['hooked_ms_per_step']} ms/step, fast {result['fast_ms_per_step']} ms/step, "
          f"speedup {result['speedup']}x (torch threads: {torch.get_num_threads()})", flush=True)
    if (args.run / "config.json").is_file():
        from interp.analyze import analysis_throughput

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
