"""Reproduce one seed experiment on the sweep engine.

    python -m interp.experiment datafrac --quick --out experiments/datafrac_quick
    python -m interp.experiment datafrac --out experiments/datafrac_p113 --backend ray --address HOST:6379
    python -m interp.report experiments/datafrac_quick          # its figures

Each experiment (``interp/experiments/``) names the sweep it runs; this command runs (or resumes)
that sweep in ``--out`` exactly as ``python -m interp.sweep`` would, then writes ``DIR/summary.csv``
from ``DIR/results.csv`` and prints it. Re-running the same command resumes the sweep; a finished
one is only summarised again.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from pathlib import Path

from interp import runs
from interp.cli import Parser
from interp.config import ConfigError
from interp.experiments import EXPERIMENTS, load
from interp.speed import tune_allocator
from interp.sweep import SweepError, add_backend_flags, check_backend_args, format_plan, plan, report_outcome, run_sweep

SUMMARY_FILE = "summary.csv"
EXPERIMENT_FILE = "experiment.json"


def _cell(v) -> str:
    if v is None:
        return ""
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def write_summary(out: Path, rows: list[dict]) -> str:
    """Write ``DIR/summary.csv`` atomically; returns its text."""
    buf = io.StringIO()
    if rows:
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(list(rows[0]))
        w.writerows([[_cell(v) for v in r.values()] for r in rows])
    runs.write_text(out / SUMMARY_FILE, buf.getvalue())
    return buf.getvalue()


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m interp.experiment", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="name", required=True, metavar="NAME", parser_class=Parser)
    for name in EXPERIMENTS:
        mod = load(name)
        sp = sub.add_parser(name, help=mod.DESCRIPTION.replace("%", "%%"), description=mod.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(sp)
        sp.add_argument("--quick", action="store_true", help="the small version (minutes on a laptop CPU)")
        sp.add_argument("--out", type=Path, required=True, help="experiment directory (a sweep directory plus summary.csv)")
        add_backend_flags(sp)
    return p


class _Planned(Exception):
    """Raised by the planning sweep after the first stage of a multi-stage experiment."""


def experiment_plan(mod, args: argparse.Namespace) -> dict:
    """``--plan``: the cost of the experiment's sweep (of its first stage, when later stages are built
    from the first one's results), without training anything."""
    if not hasattr(mod, "run"):
        return plan([mod.spec(args)], args)
    specs: list = []

    def record(spec, stage: str = ""):
        specs.append(spec)
        raise _Planned

    try:
        mod.run(args, record)
    except _Planned:
        pass
    return plan(specs, args, note=f"{args.name} runs in stages; this plan counts its first stage only: "
                                  "the later stages are built from that stage's results")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    mod = load(args.name)
    prog = f"python -m interp.experiment {args.name}"
    try:
        check_backend_args(args)
        if args.plan:
            print(format_plan(experiment_plan(mod, args)))
            return 0

        def sweep(spec, stage: str = "") -> dict[str, dict]:
            return run_sweep(spec, args.out / stage, args.backend, args.address, args.pack, args.device, progress=not args.quiet,
                             workers=args.workers)

        if hasattr(mod, "run"):
            tune_allocator()
            t = time.perf_counter()
            rows = mod.run(args, sweep)
        else:
            spec = mod.spec(args)
            tune_allocator()
            t = time.perf_counter()
            rows = sweep(spec)
    except (SweepError, ConfigError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; re-run the same command to continue {args.out}", file=sys.stderr)
        return 130
    print(write_summary(args.out, mod.summarise(args.out)), end="")
    runs.write_text(args.out / EXPERIMENT_FILE, json.dumps({"experiment": args.name, "argv": argv if argv is not None else sys.argv[1:]}) + "\n")
    return report_outcome(prog, args.out, rows, time.perf_counter() - t, args.out / SUMMARY_FILE)


if __name__ == "__main__":
    sys.exit(main())
