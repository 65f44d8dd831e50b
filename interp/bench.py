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


def main(argv: list[str] | None = None) -> int:
    ap = Parser(prog="python -m interp.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--p", type=int, default=113, help="modulus (default: 113)")
    ap.add_argument("--rounds", type=int, default=10, help="alternating rounds per path (default: 10)")
    ap.add_argument("--round-seconds", type=float, default=0.5, help="length of a round: each path steps for this long, so that both see the same machine noise (default: 0.5)")
    ap.add_argument("--run", type=Path, default=DEFAULT_ROOT / "mod_add_p113", help="run directory whose analysis is timed (default: %(default)s; skipped if absent)")
    ap.add_argument("--tune-allocator", action="store_true", help="tune glibc's allocator for both paths, as python -m interp.train does (default: leave it as it is)")
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
