"""Reproduce one seed experiment on the sweep engine.

    python -m interp.experiment datafrac --quick --out experiments/datafrac_quick
    python -m interp.experiment datafrac --out experiments/datafrac_p113 --backend ray --address HOST:6379
    python -m interp.report experiments/datafrac_quick          # its figures
    python -m interp.experiment datafrac --markdown experiments/datafrac_quick   # its tables, for the docs

Each experiment (``interp/experiments/``) names the sweep it runs; this command runs (or resumes)
that sweep in ``--out`` exactly as ``python -m interp.sweep`` would, then writes ``DIR/summary.csv``
from ``DIR/results.csv`` and prints it, and ``DIR/experiment.json`` (``interp.tables``): the
command, the commit, the machine and the wall time (summed over the calls that resumed it).
Re-running the same command resumes the sweep; a finished one is only summarised again.

``--markdown DIR`` trains nothing: it prints the experiment's tables (the module's ``TABLES``) from
``DIR/summary.csv`` under a line naming the command, commit, machine and wall time that made them.
The docs' measured tables are this output, from the summaries stored in ``docs/data/``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from interp import tables
from interp.cli import Parser
from interp.config import ConfigError
from interp.experiments import EXPERIMENTS, load
from interp.speed import tune_allocator
from interp.sweep import SweepError, add_backend_flags, check_backend_args, format_plan, plan, report_outcome, run_sweep

SUMMARY_FILE = tables.SUMMARY_FILE
EXPERIMENT_FILE = tables.EXPERIMENT_FILE


def write_summary(out: Path, rows: list[dict]) -> str:
    """Write ``DIR/summary.csv`` atomically (floats to 6 significant digits); returns its text."""
    return tables.write_csv(out / SUMMARY_FILE, rows, digits=6)


def markdown(name: str, out: Path) -> str:
    """The experiment's tables (its module's ``TABLES``) from ``out/summary.csv``, under a line naming
    the command, commit, machine and wall time recorded in ``out/experiment.json``.

    Raises:
        FileNotFoundError: ``out`` has no ``summary.csv``.
    """
    out = Path(out)
    if not (out / SUMMARY_FILE).is_file():
        raise FileNotFoundError(f"{out / SUMMARY_FILE}: missing; run the experiment first")
    rows = tables.read_csv(out / SUMMARY_FILE)
    info = tables.provenance(out)
    if info:
        commit = (info.get("commit") or "unknown")[:10]
        head = (f"`{info['command']}` at commit `{commit}`, on {info.get('machine', 'an unrecorded machine')}, "
                f"{tables.duration(info['wall_s'])} wall time" + (f"; {info['note']}" if info.get("note") else ""))
    else:
        head = "no experiment.json: the command, commit, machine and wall time were not recorded"
    parts = [f"Made by {head}."]
    for title, headers, cells in tables.experiment_tables(rows, load(name).TABLES):
        if title:
            parts.append(title)
        parts.append("\n".join(["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
                                 *("| " + " | ".join(c) + " |" for c in cells)]))
    notes = getattr(load(name), "NOTES", None)
    text = notes(rows) if notes is not None and rows else ""
    if text:
        parts.append(f"The figure caption `python -m interp.report` writes from the same summary: {text}")
    return "\n\n".join(parts) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m interp.experiment", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="name", required=True, metavar="NAME", parser_class=Parser)
    for name in EXPERIMENTS:
        mod = load(name)
        sp = sub.add_parser(name, help=mod.DESCRIPTION.replace("%", "%%"), description=mod.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(sp)
        sp.add_argument("--quick", action="store_true", help="the small version (minutes on a laptop CPU)")
        sp.add_argument("--out", type=Path, default=None, help="experiment directory (a sweep directory plus summary.csv); required unless --markdown")
        sp.add_argument("--markdown", type=Path, default=None, metavar="DIR",
                        help="train nothing: print the tables of DIR/summary.csv in Markdown, headed by the command, commit, machine and wall time")
        add_backend_flags(sp)
    return p


def experiment_plan(mod, args: argparse.Namespace) -> dict:
    """``--plan``: the cost of the experiment's sweeps, every stage (a staged experiment builds them
    all beforehand with ``plan_specs``), without training or writing anything."""
    if hasattr(mod, "run"):
        return plan(mod.plan_specs(args), args, note=f"{args.name}: every stage counted")
    return plan([mod.spec(args)], args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    mod = load(args.name)
    prog = f"python -m interp.experiment {args.name}"
    if args.markdown is not None:
        if not (args.markdown / SUMMARY_FILE).is_file():
            print(f"{prog}: error: --markdown {args.markdown}: no {SUMMARY_FILE} there", file=sys.stderr)
            return 2
        print(markdown(args.name, args.markdown), end="")
        return 0
    if args.out is None:
        print(f"{prog}: error: --out: required (the experiment directory), unless --markdown DIR", file=sys.stderr)
        return 2
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
    seconds = time.perf_counter() - t
    argv = list(argv if argv is not None else sys.argv[1:])
    before = tables.provenance(args.out)
    total = seconds + (before.get("wall_s", 0.0) if before.get("argv") == argv else 0.0)
    tables.write_provenance(args.out, args.name, argv, total, args.device)
    return report_outcome(prog, args.out, rows, seconds, args.out / SUMMARY_FILE)


if __name__ == "__main__":
    sys.exit(main())
